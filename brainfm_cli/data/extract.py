"""Region signals from a 4-D image: an atlas-to-grid assignment computed once per grid, then one product.

The assignment (``RegionWeights``) is a sparse regions × voxels matrix: the mean over a sphere's or
label's voxels (as nilearn's spheres/labels maskers compute it, overlapping spheres allowed), or the
least-squares fit of probabilistic maps (as nilearn's maps masker). Extraction is then a gather of the
voxels the atlas touches and a matrix product, with no per-run resampling.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from brainfm_cli.atlases.base import Atlas
from brainfm_cli.data.clean import CleanParams, clean_signals, cleaning_sidecar, plan_run, read_run
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import BoldRun
from brainfm_cli.io.timeseries import RegionTimeseries

log = logging.getLogger("brainfm.parcellate")


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


def resample_image(img, shape, affine, interpolation: str):
    """The image's data on the grid ``shape``/``affine`` (nilearn's ``resample_img``; as is when already there)."""
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
    labels = resample_image(atlas.image, shape, affine, "nearest").astype(np.int64).reshape(-1, order="F")
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
    maps = resample_image(atlas.image, shape, affine, "continuous").astype(np.float64)
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


MOST_OF_ATLAS = 0.5  # below this fraction of covered regions the image does not match the atlas


def extract_run(run: BoldRun, atlas: Atlas, params: CleanParams, weights: RegionWeights | None = None
                ) -> RegionTimeseries:
    """One run → region time series (time × regions; regions below ``min_coverage`` all-NaN) + sidecar."""
    plan = plan_run(run, params)
    img, tr, n_vols, keep = plan.img, plan.tr, plan.n_vols, plan.keep
    weights = weights or region_weights(atlas, img.shape, img.affine)
    data = read_run(plan, run, params)
    ex = extract(data, weights)
    del data
    if ex.n_nonfinite:
        raise BrainfmError(f"{ex.n_nonfinite} NaN or infinite values inside the atlas regions", path=run.path,
                           fix="replace them before parcellating (e.g. 'fslmaths IN -nan OUT') or mask them out")
    covered = ex.coverage >= params.min_coverage
    in_view = np.asarray(weights.membership.sum(axis=1)).ravel() >= params.min_coverage * weights.expected
    if in_view.mean() < MOST_OF_ATLAS:
        raise BrainfmError(f"the image's field of view misses most of the atlas: only {in_view.sum()} of "
                           f"{atlas.n_regions} regions lie inside it", path=run.path,
                           fix=f"use a whole-brain run normalised to MNI space (the atlas is in {atlas.space}, "
                           "e.g. fMRIPrep's space-MNI152NLin2009cAsym output)")
    if not covered.any() and ex.coverage.max(initial=0) == 0:
        raise BrainfmError("every voxel the atlas touches is constant over time (no signal)", path=run.path,
                           fix="check the file holds BOLD data in MNI space")
    if covered.mean() < MOST_OF_ATLAS:
        raise BrainfmError(f"most of the atlas has no signal in this image: only {covered.sum()} of "
                           f"{atlas.n_regions} regions have ≥ {params.min_coverage:.0%} coverage", path=run.path,
                           fix=f"use a run normalised to MNI space (the atlas is in {atlas.space}, e.g. fMRIPrep's "
                           "space-MNI152NLin2009cAsym output), or lower --min-coverage")
    missing = [lab for lab, ok in zip(atlas.labels, covered) if not ok]
    if missing:
        log.warning("%s: %d region(s) below %.0f%% coverage are written as n/a columns: %s%s", run.path.name,
                    len(missing), 100 * params.min_coverage, ", ".join(missing[:8]), " ..." if len(missing) > 8 else "")

    signals = clean_signals(ex.signals[:, covered], plan, params, run.path)
    out = np.full((signals.shape[0], atlas.n_regions), np.nan)
    out[:, covered] = signals
    frame = pd.DataFrame(out, columns=atlas.labels)
    leading = int(keep[0]) if len(keep) else 0
    censored = sorted(set(range(leading, n_vols)) - set(int(k) for k in keep))
    sidecar = {
        **cleaning_sidecar(plan, run, params, signals.shape[0], "parcellate"),
        "Atlas": atlas.describe(),
        "CensoredVolumes": censored,
        "MinCoverage": params.min_coverage,
        "RegionsBelowCoverage": missing,
        "Coverage": {lab: round(float(c), 4) for lab, c in zip(atlas.labels, ex.coverage)},
    }
    if atlas.networks is not None:
        sidecar["Networks"] = dict(zip(atlas.labels, atlas.networks))
        sidecar["NetworksSource"] = atlas.network_source or "atlas"
    if censored:
        log.warning("%s: %d volume(s) censored by '%s'; rows are the kept volumes only", run.path.name,
                    len(censored), params.confounds)
    return RegionTimeseries(data=frame, tr=tr, entities=dict(run.entities), sidecar=sidecar, path=None)
