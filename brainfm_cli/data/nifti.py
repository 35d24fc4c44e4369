"""Loading NIfTI images with errors an analyst can act on (wrong file, wrong dimensionality, corrupt)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from brainfm_cli.errors import BrainfmError

_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def load_image(path: str | Path, what: str = "image"):
    """Open a NIfTI header (data stays on disk); not a NIfTI file is a clear error."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise BrainfmError(f"{what} not found", path=path, fix="check the path")
    if path.is_dir():
        raise BrainfmError(f"expected a NIfTI {what}, found a folder", path=path,
                           fix="give the .nii/.nii.gz file, or a BIDS dataset folder where a folder is accepted")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises ImageFileError, EOFError, zlib/gzip errors, ValueError
        raise BrainfmError(f"not a readable NIfTI {what} ({type(exc).__name__}: {exc})", path=path,
                           fix="check that the file is a complete .nii or .nii.gz (re-copy or re-export it)") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise BrainfmError(f"{type(img).__name__} is not NIfTI", path=path,
                           fix="convert it to NIfTI (e.g. with dcm2niix or nibabel)")
    return img


def load_bold(path: str | Path):
    """Open a 4-D BOLD run's header; 3-D images and single volumes are refused."""
    img = load_image(path, what="BOLD run")
    if img.ndim != 4 or img.shape[3] < 2:
        shape = "x".join(map(str, img.shape))
        raise BrainfmError(f"a BOLD run must be 4-D with several volumes, this image is {shape}", path=path,
                           fix="give the 4-D functional run (not an anatomical, mask or single volume)")
    return img


def read_data(img, path: str | Path) -> np.ndarray:
    """Read the voxel array (float32, Fortran order as on disk), turning a truncated file into a clear error."""
    try:
        data = img.get_fdata(dtype=np.float32, caching="unchanged")
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise BrainfmError(f"the image data could not be read ({type(exc).__name__}: {exc}); the file is "
                           "truncated or corrupt", path=path,
                           fix="re-copy or re-export the file; 'gzip -t FILE.nii.gz' checks a compressed file") from None
    return data


def header_tr(img) -> float | None:
    """Repetition time from ``pixdim[4]`` with ``xyzt_units``; None when absent or meaningless."""
    if img.ndim < 4:
        return None
    zooms = img.header.get_zooms()
    if len(zooms) < 4:
        return None
    value = float(zooms[3])
    unit = img.header.get_xyzt_units()[1]
    value *= _TIME_UNITS.get(unit, 1.0)
    return value if value > 0 else None
