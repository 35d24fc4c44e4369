"""Voxel vectors inside a region of interest: which voxels (a voxel set, in a defined order) and their series.

A voxel set is chosen on a BOLD run's grid, from a mask image (its non-zero voxels) or from regions of an atlas
(label or sphere atlases), either resampled to the run's grid by nearest neighbour when the grids differ. Order:
region by region in the order the labels are given (a mask is one region), and inside a region by voxel index
in the image (first image axis fastest: NIfTI's on-disk order); a voxel in two regions counts once, in the
first. Voxels are named by their world coordinates (``vox_<x>_<y>_<z>``, mm rounded to 0.01), so a model
trained on one voxel set recognises another: another count, the same voxels in another order, or other voxels.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.atlases import load_atlas
from brainfm_cli.data.clean import CleanParams, clean_signals, cleaning_sidecar, plan_run, read_run
from brainfm_cli.data.extract import gather, grid_key, region_weights, resample_image
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import BoldRun
from brainfm_cli.io.files import read_json, read_tsv, sidecar_path
from brainfm_cli.io.nifti import load_image
from brainfm_cli.io.timeseries import RegionTimeseries

log = logging.getLogger("brainfm.voxels")

ORDER = "by region in the order given, then by voxel index (first image axis fastest, NIfTI on-disk order)"
VOXEL_LIST = "voxels.tsv"


def voxel_name(xyz) -> str:
    """``vox_<x>_<y>_<z>`` from world coordinates in mm (rounded to 0.01 mm)."""
    return "vox_" + "_".join(f"{round(float(v), 2) + 0.0:g}" for v in xyz)


def _digest(names) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


@dataclass
class VoxelSet:
    """Voxels in model order: world coordinates ``[V, 3]``, their flat (Fortran-order) grid indices when known,
    and the region each came from."""

    coords: np.ndarray
    flat: np.ndarray | None = None
    regions: list[str] | None = None
    source: str = ""

    @property
    def count(self) -> int:
        return len(self.coords)

    @property
    def names(self) -> list[str]:
        return [voxel_name(c) for c in self.coords]

    def identity(self) -> dict:
        """What a model card records: count, hashes of the ordered and of the sorted names, provenance."""
        names = self.names
        return {"count": len(names), "sha256": _digest(names), "set_sha256": _digest(sorted(names)),
                "source": self.source, "order": ORDER}

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame({"name": self.names, "x": self.coords[:, 0], "y": self.coords[:, 1],
                           "z": self.coords[:, 2]})
        if self.regions is not None:
            df["region"] = self.regions
        return df


def check_voxel_set(identity: dict, names: list[str], model: str, path=None) -> None:
    """The data's voxels (column names, in order) must be the model's voxel set: say how they differ if not."""
    want = int(identity["count"])
    where = identity.get("source") or "its mask"
    fix = f"extract the voxels with the mask the model was trained with ({where}), on the same grid"
    if len(names) != want:
        raise BrainfmError(f"{len(names)} voxels, but {model} was trained on {want} voxels ({where}): the voxel "
                           "count differs", path=path, fix=fix)
    if _digest(names) == identity.get("sha256"):
        return
    if _digest(sorted(names)) == identity.get("set_sha256"):
        raise BrainfmError(f"the same {want} voxels as {model} was trained on, but in another order", path=path,
                           fix="keep brainfm's voxel order (" + ORDER + ")")
    raise BrainfmError(f"{want} voxels, as {model} expects, but not the same voxels (other coordinates: another "
                       "mask, or another grid)", path=path, fix=fix)


@dataclass(frozen=True)
class RoiSpec:
    """Where the voxels come from: a ``mask`` image, or ``labels`` (names or shell patterns) of an ``atlas``."""

    mask: str | None = None
    atlas: str | None = None
    labels: tuple[str, ...] = ()
    atlas_labels: str | None = None  # the labels TSV of a user atlas image

    def __post_init__(self):
        if (self.mask is None) == (self.atlas is None):
            raise BrainfmError("give the voxels' region either as --roi-mask FILE or as --roi-atlas NAME with "
                               "--roi-labels", fix="use one of the two")
        if self.atlas is not None and not self.labels:
            raise BrainfmError(f"--roi-atlas {self.atlas} needs --roi-labels (region names or patterns, comma "
                               "separated)", fix="e.g. --roi-atlas aal --roi-labels 'Calcarine_*,Cuneus_*'")
        if self.mask is not None and self.labels:
            raise BrainfmError("--roi-labels goes with --roi-atlas, not with --roi-mask", fix="drop --roi-labels")

    @property
    def name(self) -> str:
        """A short label for file names (``<mask stem>voxels`` or ``<atlas>voxels``)."""
        stem = Path(self.mask).name.split(".")[0] if self.mask else Path(self.atlas).name.split(".")[0]
        return "".join(ch for ch in stem if ch.isalnum()) + "voxels"

    def describe(self) -> dict:
        if self.mask:
            return {"mask": str(self.mask)}
        return {"atlas": str(self.atlas), "labels": list(self.labels)}

    def source(self) -> str:
        if self.mask:
            return f"mask {Path(self.mask).name}"
        return f"atlas {Path(str(self.atlas)).name} regions {','.join(self.labels)}"

    def select(self, shape, affine) -> VoxelSet:
        """The voxel set on the grid ``shape``/``affine`` (computed once per grid)."""
        key = (self, grid_key(shape, affine))
        with _LOCK:
            hit = _CACHE.get(key)
        if hit is None:
            shape = tuple(int(s) for s in shape[:3])
            affine = np.asarray(affine, dtype=float)
            hit = self._mask_voxels(shape, affine) if self.mask else self._atlas_voxels(shape, affine)
            with _LOCK:
                _CACHE[key] = hit
        return hit

    def _mask_voxels(self, shape, affine) -> VoxelSet:
        img = load_image(self.mask, what="ROI mask")
        if img.ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if img.ndim != 3:
            raise BrainfmError(f"an ROI mask is a 3-D image, this one is {'x'.join(map(str, img.shape))}",
                               path=self.mask, fix="give a 3-D mask (non-zero inside the region)")
        data = np.asarray(resample_image(img, shape, affine, "nearest"))
        inside = np.isfinite(data) & (data != 0)
        flat = np.flatnonzero(inside.reshape(-1, order="F"))
        if flat.size == 0:
            where = "" if np.asarray(img.dataobj).any() else " (the mask is empty)"
            raise BrainfmError(f"the ROI mask selects no voxel of the run's grid{where}", path=self.mask,
                               fix="give a mask in the run's space (MNI) with non-zero voxels inside the region")
        return VoxelSet(_world(flat, shape, affine), flat, None, self.source())

    def _atlas_voxels(self, shape, affine) -> VoxelSet:
        atlas = load_atlas(self.atlas, self.atlas_labels)
        if atlas.kind == "maps":
            raise BrainfmError(f"atlas {atlas.name} is probabilistic (maps): its regions have no sharp voxel set",
                               fix="use a label or sphere atlas, or threshold a map into a mask for --roi-mask")
        chosen: list[int] = []
        for pattern in self.labels:
            hits = [i for i, lab in enumerate(atlas.labels) if fnmatch.fnmatchcase(lab, pattern)]
            if not hits:
                import difflib

                close = difflib.get_close_matches(pattern, atlas.labels, n=3, cutoff=0.5)
                raise BrainfmError(f"atlas {atlas.name} has no region '{pattern}'"
                                   + (f" (did you mean {', '.join(close)}?)" if close else ""),
                                   fix=f"'brainfm atlases' and the atlas's labels list its {atlas.n_regions} regions")
            chosen += [i for i in hits if i not in chosen]
        weights = region_weights(atlas, shape, affine)
        member = weights.membership.tocsr()
        flat, regions, seen = [], [], set()
        for r in chosen:
            vox = np.sort(weights.voxels[member[r].indices[member[r].data > 0]])
            vox = [v for v in vox.tolist() if v not in seen]
            seen.update(vox)
            flat += vox
            regions += [atlas.labels[r]] * len(vox)
        if not flat:
            raise BrainfmError(f"regions {list(self.labels)} of atlas {atlas.name} cover no voxel of the run's grid",
                               fix="check that the run is in MNI space and covers those regions")
        flat = np.asarray(flat, dtype=np.int64)
        return VoxelSet(_world(flat, shape, affine), flat, regions, self.source())


_CACHE: dict[tuple, VoxelSet] = {}
_LOCK = threading.Lock()


def _world(flat: np.ndarray, shape, affine) -> np.ndarray:
    ijk = np.stack(np.unravel_index(flat, shape, order="F"), axis=1).astype(np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def read_voxel_set(source) -> VoxelSet:
    """A voxel set from a voxel list (``voxels.tsv``: x, y, z columns), a folder holding one, or the header of a
    voxel time-series TSV (``vox_<x>_<y>_<z>`` columns)."""
    path = Path(source)
    if path.is_dir():
        path = path / VOXEL_LIST
    if not path.is_file():
        raise BrainfmError("voxel list not found", path=path,
                           fix="give the voxels.tsv that 'brainfm voxels' wrote beside the voxel time series")
    side = sidecar_path(path)
    origin = read_json(side).get("Source", "") if side.is_file() else ""
    header = list(pd.read_csv(path, sep="\t", nrows=0).columns)
    if {"x", "y", "z"} <= set(header):
        df = read_tsv(path)
        coords = df[["x", "y", "z"]].to_numpy(dtype=float)
        regions = [str(r) for r in df["region"]] if "region" in df else None
    else:
        try:
            coords = np.array([[float(v) for v in name.split("_")[1:]] for name in header])
        except ValueError:
            coords = np.zeros((0, 0))
        if coords.ndim != 2 or coords.shape[1] != 3 or not all(n.startswith("vox_") for n in header):
            raise BrainfmError("not a voxel list (x, y, z columns) nor a voxel time series (vox_<x>_<y>_<z> "
                               "columns)", path=path, fix="give the voxels.tsv written by 'brainfm voxels'")
        regions = None
    if len(coords) == 0:
        raise BrainfmError("the voxel list is empty", path=path, fix="extract voxels again with 'brainfm voxels'")
    return VoxelSet(coords, None, regions, origin or f"voxel list {path.name}")


def extract_voxel_run(run: BoldRun, roi: RoiSpec, params: CleanParams) -> RegionTimeseries:
    """One BOLD run → its voxel series (time × voxels, columns named by coordinates) with a sidecar.

    Denoising follows ``parcellate`` (``CleanParams``: dummy scans, confounds, filters) on the voxel signals.
    """
    plan = plan_run(run, params)
    tr, keep = plan.tr, plan.keep
    voxels = roi.select(plan.img.shape, plan.img.affine)
    data = read_run(plan, run, params)
    x = gather(data, voxels.flat).astype(np.float64)
    del data
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise BrainfmError(f"{bad} NaN or infinite values inside the ROI", path=run.path,
                           fix="replace them first (e.g. 'fslmaths IN -nan OUT') or use a mask that excludes them")
    flat_voxels = int(np.count_nonzero(x.max(axis=0) == x.min(axis=0)))
    if flat_voxels == voxels.count:
        raise BrainfmError("every voxel of the ROI is constant over time (no signal)", path=run.path,
                           fix="check the run is BOLD data in the mask's space")
    if flat_voxels:
        log.warning("%s: %d of %d ROI voxels are constant over time (outside the brain or field of view?)",
                    run.path.name, flat_voxels, voxels.count)
    x = clean_signals(x, plan, params, run.path)
    sidecar = {
        **cleaning_sidecar(plan, run, params, x.shape[0], "voxels"),
        "Voxels": {**voxels.identity(), "roi": roi.describe()},
        "ConstantVoxels": flat_voxels,
    }
    frame = pd.DataFrame(x, columns=voxels.names)
    return RegionTimeseries(data=frame, tr=tr, entities=dict(run.entities), sidecar=sidecar, path=None)
