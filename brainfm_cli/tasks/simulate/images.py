"""Region signals painted into 4-D MNI images: each region's voxels carry its series, plus smooth noise.

The painting uses the same atlas-to-grid assignment ``parcellate`` extracts with, so parcellating the
image returns the painted series up to the added noise. Files are gzip with mtime 0 and no stored
name, so the same seed gives byte-identical images.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from brainfm_cli.atlases.base import Atlas
from brainfm_cli.io.files import atomic_path

# MNI152 bounding box (mm), as the 2 mm template grid: x 90 → −90, y −126 → 90, z −72 → 108.
ORIGIN = (90.0, -126.0, -72.0)
EXTENT = (180.0, 216.0, 180.0)
BASELINE = 100.0  # image intensity at rest, so signal changes read as percent


def mni_grid(voxel_size: float) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of an MNI grid at ``voxel_size`` mm (x flipped, as in the MNI152 templates)."""
    v = float(voxel_size)
    shape = tuple(int(np.floor(e / v + 1e-9)) + 1 for e in EXTENT)
    affine = np.array([[-v, 0, 0, ORIGIN[0]], [0, v, 0, ORIGIN[1]], [0, 0, v, ORIGIN[2]], [0, 0, 0, 1.0]])
    return shape, affine


def brain_mask(shape, affine) -> np.ndarray:
    """nilearn's MNI152 brain mask (package data, offline) on the grid, by nearest neighbour."""
    import warnings

    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mask = resample_img(load_mni152_brain_mask(resolution=2), target_affine=affine, target_shape=shape,
                            interpolation="nearest", force_resample=True, copy_header=True)
    return np.asarray(mask.dataobj) > 0


@dataclass
class Painter:
    """Everything needed to turn region series into volumes on one grid."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    voxels: np.ndarray  # flat (Fortran) indices of the voxels painted with region signals
    paint: sp.csr_matrix  # [V, R]: a voxel's signal as a combination of region signals
    mask: np.ndarray  # flat bool: voxels with signal (brain ∪ atlas)
    smooth_sigma: float  # Gaussian sigma of the noise, in voxels
    smooth_scale: float  # makes smoothed white noise unit-variance

    @property
    def n_regions(self) -> int:
        return self.paint.shape[1]

    def covered(self) -> np.ndarray:
        """Regions that own at least one voxel on this grid."""
        return np.asarray((self.paint != 0).sum(axis=0)).ravel() > 0


def make_painter(atlas: Atlas, voxel_size: float, noise_fwhm_mm: float) -> Painter:
    """The painting matrix for ``atlas`` on the MNI grid: overlaps averaged, probabilistic maps as weights."""
    from brainfm_cli.data.extract import region_weights

    shape, affine = mni_grid(voxel_size)
    w = region_weights(atlas, shape, affine)
    member = sp.csr_matrix(w.membership, dtype=np.float64).T.tocsr()  # [V, R]
    if atlas.kind != "maps":
        per_voxel = np.asarray(member.sum(axis=1)).ravel()
        member = sp.diags(1.0 / np.where(per_voxel > 0, per_voxel, 1.0)) @ member
    mask = brain_mask(shape, affine).reshape(-1, order="F")
    mask[w.voxels] = True
    sigma = noise_fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / float(voxel_size)
    return Painter(shape=shape, affine=affine, voxels=w.voxels, paint=sp.csr_matrix(member), mask=mask,
                   smooth_sigma=sigma, smooth_scale=_unit_scale(sigma))


def _unit_scale(sigma: float) -> float:
    """1 / std of white noise after Gaussian smoothing with ``sigma`` voxels."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((15, 15, 15))
    delta[7, 7, 7] = 1.0
    k = gaussian_filter(delta, sigma, mode="constant")
    return float(1.0 / np.sqrt((k ** 2).sum()))


def baseline_field(painter: Painter, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative intensity field (about ±5 %), so images are not flat; flat Fortran order."""
    from scipy.ndimage import gaussian_filter

    sigma = 15.0 / (2 * np.sqrt(2 * np.log(2))) / abs(float(painter.affine[0, 0]))  # FWHM 15 mm
    field = gaussian_filter(rng.standard_normal(painter.shape), sigma, mode="nearest")
    field = 1.0 + 0.05 * field / max(field.std(), 1e-12)
    return field.reshape(-1, order="F")


def nifti_header(shape, affine, tr: float) -> bytes:
    """A NIfTI-1 single-file header (352 bytes, data offset 352) for float32 data in MNI space."""
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.float32)
    hdr.set_data_shape(tuple(shape))
    hdr.set_qform(affine, code=4)
    hdr.set_sform(affine, code=4)
    hdr.set_xyzt_units("mm", "sec")
    hdr.set_zooms(tuple(float(abs(affine[i, i])) for i in range(3)) + (float(tr),))
    hdr["descrip"] = b"brainfm simulate"
    hdr.set_data_offset(352)
    buf = io.BytesIO()
    hdr.write_to(buf)
    raw = buf.getvalue()
    return raw + b"\0" * (352 - len(raw))


def write_painted_run(path: str | Path, signals: np.ndarray, painter: Painter, rng: np.random.Generator, *,
                      tr: float, noise_sd: float, field: np.ndarray) -> None:
    """Write one run (``signals``: time × regions, percent change) as a gzipped 4-D float32 NIfTI.

    Voxel value = field · (BASELINE + painted signal) + noise_sd · spatially smooth white noise, inside
    the brain ∪ atlas mask; zero outside. Volumes are streamed, so only one is in memory at a time.
    """
    from scipy.ndimage import gaussian_filter

    n_vols = signals.shape[0]
    shape = painter.shape
    base = (BASELINE * field).astype(np.float64)
    header = nifti_header(shape + (n_vols,), painter.affine, tr)
    painted = np.asarray(painter.paint @ signals.T)  # [V, T]
    voxels, mask = painter.voxels, painter.mask
    with atomic_path(path) as tmp, open(tmp, "wb") as fh, \
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1, mtime=0) as gz:
        gz.write(header)
        for t in range(n_vols):
            noise = gaussian_filter(rng.standard_normal(shape), painter.smooth_sigma, mode="constant")
            vol = base.copy()
            vol[voxels] += field[voxels] * painted[:, t]
            vol += noise_sd * painter.smooth_scale * noise.reshape(-1, order="F")
            vol[~mask] = 0.0
            gz.write(vol.astype(np.float32).tobytes())
