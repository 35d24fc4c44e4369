"""Region signals from a 4-D image: an atlas-to-grid assignment computed once per grid, then one product.

The assignment (``RegionWeights``) is a sparse regions × voxels matrix: the mean over a sphere's or
label's voxels (as nilearn's spheres/labels maskers compute it, overlapping spheres allowed), or the
least-squares fit of probabilistic maps (as nilearn's maps masker). Extraction is then a gather of the
voxels the atlas touches and a matrix product, with no per-run resampling.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from brainfm_cli.atlases.base import Atlas


@dataclass
class RegionWeights:
    """Which voxels (flat, Fortran order) feed which region, and with what weight."""

    voxels: np.ndarray  # [V] flat voxel indices into the image grid
    matrix: sp.csr_matrix | np.ndarray  # [R, V] extraction weights
    membership: sp.csr_matrix  # [R, V] how much each voxel belongs to each region (for coverage)
    expected: np.ndarray  # [R] membership each region would have with an unlimited field of view
    shape: tuple[int, int, int]

    @property
    def n_regions(self) -> int:
        return self.matrix.shape[0]


_CACHE: dict[tuple, RegionWeights] = {}
CHUNK = 32  # volumes per float64 block: exact sums without a float64 copy of the whole run
_LOCK = threading.Lock()


def grid_key(shape, affine) -> str:
    return hashlib.sha1(repr((tuple(shape[:3]), np.round(np.asarray(affine), 6).tolist())).encode()).hexdigest()


def region_weights(atlas: Atlas, shape, affine) -> RegionWeights:
    """The assignment of ``atlas`` to an image grid, computed once per (atlas, grid) and reused."""
    key = (id(atlas), atlas.name, grid_key(shape, affine))
    with _LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    shape = tuple(int(s) for s in shape[:3])
    affine = np.asarray(affine, dtype=float)
    builder = {"spheres": _sphere_weights, "labels": _label_weights, "maps": _map_weights}[atlas.kind]
    weights = builder(atlas, shape, affine)
    with _LOCK:
        _CACHE[key] = weights
    return weights


def _flat(ijk: np.ndarray, shape) -> np.ndarray:
    return np.ravel_multi_index(tuple(ijk.T), shape, order="F")


def _sphere_weights(atlas: Atlas, shape, affine) -> RegionWeights:
    """Voxels whose centres lie within ``radius`` of each seed, plus the voxel nearest the seed
    (nilearn's rule, so small spheres on coarse grids are never empty); overlaps are allowed."""
    inv = np.linalg.inv(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    radii = atlas.radii()
    reach = int(np.ceil(radii.max() / zooms.min())) + 1
    offsets = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rows, cols, expected = [], [], np.zeros(atlas.n_regions)
    dims = np.array(shape)
    for r, (seed, radius) in enumerate(zip(atlas.coords, radii)):
        centre = inv[:3, :3] @ seed + inv[:3, 3]
        nearest = np.round(centre).astype(int)
        cand = nearest + offsets
        world = cand @ affine[:3, :3].T + affine[:3, 3]
        inside_ball = np.linalg.norm(world - seed, axis=1) <= radius
        inside_ball |= (offsets == 0).all(axis=1)  # the seed's own voxel always counts
        cand = cand[inside_ball]
        expected[r] = len(cand)
        in_fov = ((cand >= 0) & (cand < dims)).all(axis=1)
        flat = _flat(cand[in_fov], shape)
        rows.append(np.full(len(flat), r))
        cols.append(flat)
    return _from_membership(np.concatenate(rows), np.concatenate(cols), np.ones(sum(map(len, rows))),
                            atlas.n_regions, expected, shape)


def _from_membership(rows, flat, values, n_regions, expected, shape) -> RegionWeights:
    """Mean-extraction weights from (region, voxel, membership) triplets."""
    voxels, col = np.unique(flat, return_inverse=True)
    member = sp.csr_matrix((values, (rows, col)), shape=(n_regions, len(voxels)))
    counts = np.asarray(member.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        scale = np.where(counts > 0, 1.0 / counts, 0.0)
    matrix = sp.diags(scale) @ member
    return RegionWeights(voxels=voxels, matrix=sp.csr_matrix(matrix, dtype=np.float64), membership=member,
                         expected=np.asarray(expected, dtype=float), shape=shape)


def _resample(img, shape, affine, interpolation):
    from nilearn.image import resample_img

    if img.shape[:3] == tuple(shape) and np.allclose(img.affine, affine):
        return np.asanyarray(img.dataobj)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = resample_img(img, target_affine=affine, target_shape=shape, interpolation=interpolation,
                           force_resample=True, copy_header=True)
    return np.asanyarray(out.dataobj)


def _voxel_volume(affine) -> float:
    return float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))


def _label_weights(atlas: Atlas, shape, affine) -> RegionWeights:
    """Label atlas resampled to the image grid by nearest neighbour, as nilearn's labels masker does."""
    native = np.asanyarray(atlas.image.dataobj).astype(np.int64)
    labels = _resample(atlas.image, shape, affine, "nearest").astype(np.int64).reshape(-1, order="F")
    index_of = {v: i for i, v in enumerate(atlas.indices)}
    lut = np.full(max(max(atlas.indices), int(labels.max()), int(native.max())) + 1, -1)
    for v, i in index_of.items():
        lut[v] = i
    region = lut[labels.clip(min=0)]
    flat = np.nonzero(region >= 0)[0]
    native_counts = np.bincount(lut[native.ravel().clip(min=0)].clip(min=-1) + 1,
                                minlength=atlas.n_regions + 1)[1:]
    expected = native_counts * _voxel_volume(atlas.image.affine) / _voxel_volume(affine)
    return _from_membership(region[flat], flat, np.ones(len(flat)), atlas.n_regions, expected, shape)


def _map_weights(atlas: Atlas, shape, affine) -> RegionWeights:
    """Probabilistic maps resampled to the grid; signals are their least-squares fit (nilearn's maps masker)."""
    maps = _resample(atlas.image, shape, affine, "continuous").astype(np.float64)
    n = maps.shape[3]
    maps = maps.reshape(-1, n, order="F")
    flat = np.nonzero((maps != 0).any(axis=1))[0]
    sel = maps[flat]
    matrix = np.linalg.pinv(sel)  # [R, V]
    native = np.asanyarray(atlas.image.dataobj)
    mass = np.array([np.abs(native[..., i].astype(np.float64)).sum() for i in range(n)])
    expected = mass * _voxel_volume(atlas.image.affine) / _voxel_volume(affine)
    member = sp.csr_matrix(np.abs(sel).T)
    return RegionWeights(voxels=flat, matrix=matrix, membership=member, expected=expected, shape=tuple(shape))


@dataclass
class Extraction:
    signals: np.ndarray  # [T, R] float64
    coverage: np.ndarray  # [R] fraction of each region's voxels inside the image with signal
    n_nonfinite: int  # non-finite values among the voxels the atlas uses


def gather(data: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """The atlas's voxels over time as a time × voxels float32 array.

    One volume at a time: in a Fortran-ordered 4-D array each volume is contiguous, so every gather
    reads sorted offsets from one contiguous block instead of striding across the whole run.
    """
    n_vols = data.shape[3]
    flat = data.reshape(-1, n_vols, order="F")
    out = np.empty((n_vols, len(voxels)), dtype=np.float32)
    for t in range(n_vols):
        out[t] = flat[:, t][voxels]
    return out


def extract(data: np.ndarray, weights: RegionWeights) -> Extraction:
    """Region signals (time × regions) and per-region coverage from a 4-D array on the weights' grid."""
    x = gather(data, weights.voxels)
    finite = np.isfinite(x)
    n_bad = int(x.size - np.count_nonzero(finite))
    if n_bad:
        x = np.where(finite, x, np.float32(0))
    alive = (x.max(axis=0) != x.min(axis=0)).astype(np.float64)
    got = weights.membership @ alive
    with np.errstate(divide="ignore", invalid="ignore"):
        coverage = np.clip(np.where(weights.expected > 0, got / weights.expected, 0.0), 0.0, 1.0)
    signals = np.empty((x.shape[0], weights.n_regions))
    for t0 in range(0, x.shape[0], CHUNK):  # float64 accumulation, a few volumes at a time
        part = x[t0:t0 + CHUNK].astype(np.float64)
        signals[t0:t0 + CHUNK] = np.asarray(weights.matrix @ part.T).T
    return Extraction(signals=signals, coverage=coverage, n_nonfinite=n_bad)
