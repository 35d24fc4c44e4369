"""Loading NIfTI images with errors an analyst can act on (wrong file, wrong dimensionality, corrupt)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from brainfm_cli.errors import BrainfmError

NIFTI_EXT = (".nii.gz", ".nii")
_TIME_UNITS = {"sec": 1.0, "msec": 1e-3, "usec": 1e-6}


def is_nifti(path: str | Path) -> bool:
    """Whether a file name ends in a NIfTI extension (``.nii`` or ``.nii.gz``)."""
    return str(path).endswith(NIFTI_EXT)


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


def _gunzip(blob: bytes) -> bytes:
    """Decompress a whole .gz file in one call: ISA-L (``isal``) when installed, else the stdlib."""
    try:
        from isal import igzip
    except ImportError:  # optional speed-up; the stdlib's one-shot path is still faster than streaming
        import gzip as igzip
    return igzip.decompress(blob)


def _read_gz(img, path: Path) -> np.ndarray:
    """A .nii.gz's voxels as float32 (Fortran order), decompressed in one shot instead of streamed."""
    proxy = img.dataobj  # nibabel moves scaling from the header to the proxy on load
    raw = _gunzip(path.read_bytes())
    dtype = proxy.dtype
    offset = int(proxy.offset)
    count = int(np.prod(img.shape))
    if len(raw) < offset + count * dtype.itemsize:
        raise EOFError(f"{len(raw)} bytes of data, {offset + count * dtype.itemsize} expected")
    arr = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(img.shape, order="F")
    slope, inter = float(proxy.slope), float(proxy.inter)
    scaled = slope != 1.0 or inter != 0.0
    if not scaled:
        return arr.astype(np.float32, copy=False)
    out = np.empty(img.shape, dtype=np.float32, order="F")
    for t in range(img.shape[-1] if arr.ndim == 4 else 1):  # scale in float64, volume by volume, like nibabel
        sl = (Ellipsis, t) if arr.ndim == 4 else (Ellipsis,)
        out[sl] = arr[sl] * slope + inter
    return out


def read_data(img, path: str | Path) -> np.ndarray:
    """Read the voxel array as float32 (Fortran order, as on disk); a truncated file is a clear error."""
    path = Path(path)
    try:
        if path.name.endswith(".gz") and img.dataobj.is_proxy:
            return _read_gz(img, path)
        return np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"), order="F")
    except (EOFError, OSError, zlib.error, ValueError) as exc:
        raise BrainfmError(f"the image data could not be read ({type(exc).__name__}: {exc}); the file is "
                           "truncated or corrupt", path=path,
                           fix="re-copy or re-export the file; 'gzip -t FILE.nii.gz' checks a compressed file") from None


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
