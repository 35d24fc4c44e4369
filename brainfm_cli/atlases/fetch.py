"""Atlases fetched through nilearn when online, cached in brainfm's data directory (``$BRAINFM_DATA``)."""

from __future__ import annotations

import contextlib
import os
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np

from brainfm_cli._resources import data_dir
from brainfm_cli.atlases.base import Atlas
from brainfm_cli.errors import BrainfmError


@dataclass(frozen=True)
class Fetchable:
    pattern: str
    example: str
    description: str
    licence: str
    networks: bool
    fetch: Callable[[re.Match], Atlas]
    space: str = ""
    space_source: str = ""


# The template each family's files are in, as nilearn's fetchers and data descriptions name it.
SCHAEFER_SPACE = ("MNI152NLin6Asym", "nilearn fetch_atlas_schaefer_2018: template MNI152NLin6Asym (files "
                  "*_FSLMNI152_2mm.nii.gz)")
DIFUMO_SPACE = ("MNI152NLin6Asym", "nilearn fetch_atlas_difumo: template MNI152NLin6Asym")
BASC_SPACE = ("MNI152NLin2009aSym", "nilearn basc_multiscale_2015 description: 'MNI non-linear 2009a space', the "
              "symmetric template for version='sym'")
YEO_SPACE = ("MNI152NLin6Asym", "nilearn fetch_atlas_yeo_2011: template MNI152NLin6Asym (files "
             "*_MNI152_FreeSurferConformed1mm.nii.gz)")


def _cache() -> str:
    return str(data_dir() / "nilearn")


def _offline() -> bool:
    return os.environ.get("BRAINFM_OFFLINE", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def _no_network():
    """Make any download attempt fail at once (a dead local proxy); files already cached still load."""
    keys = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
                       "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"})
    os.environ.pop("NO_PROXY", None)
    os.environ.pop("no_proxy", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _call(name: str, fetcher, **kwargs):
    """Run a nilearn fetcher against brainfm's cache; offline and uncached is a clear error."""
    folder = _cache()
    hint = (f"on a machine with internet run 'brainfm atlases --fetch {name}' and copy {folder} to this "
            f"machine (or set BRAINFM_DATA to a folder holding it), or pass your own files with "
            f"--atlas FILE.nii.gz --atlas-labels FILE.tsv")
    guard = _no_network() if _offline() else contextlib.nullcontext()
    with warnings.catch_warnings(), guard:
        warnings.simplefilter("ignore")
        try:
            return fetcher(data_dir=folder, verbose=0, **kwargs)
        except Exception as exc:  # nilearn raises many kinds of network and file errors
            reason = "BRAINFM_OFFLINE is set" if _offline() else f"{type(exc).__name__}: {str(exc)[:200]}"
            raise BrainfmError(f"atlas '{name}' is not in the cache and could not be downloaded ({reason})",
                               path=folder, fix=hint) from None


def _label_table(bunch) -> tuple[list[int], list[str]]:
    """(indices, names) of a nilearn label atlas, background excluded."""
    lut = getattr(bunch, "lut", None)
    if lut is not None:
        lut = lut[lut["index"] != 0]
        return [int(i) for i in lut["index"]], [str(n) for n in lut["name"]]
    labels = [x.decode() if isinstance(x, bytes) else str(x) for x in bunch.labels]
    if labels and labels[0].lower() == "background":
        labels = labels[1:]
    return list(range(1, len(labels) + 1)), labels


def _schaefer(m: re.Match) -> Atlas:
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_schaefer_2018

    n, k = int(m.group(1)), int(m.group(2))
    if n not in range(100, 1001, 100) or k not in (7, 17):
        raise BrainfmError(f"Schaefer-2018 comes with 100..1000 regions in steps of 100 and 7 or 17 networks, "
                           f"not {n}/{k}", fix="use e.g. --atlas schaefer400-7")
    bunch = _call(m.group(0), fetch_atlas_schaefer_2018, n_rois=n, yeo_networks=k, resolution_mm=2)
    indices, names = _label_table(bunch)
    networks = [name.split("_")[2] if name.count("_") >= 2 else "unknown" for name in names]
    return Atlas(name=m.group(0), labels=names, kind="labels", space=SCHAEFER_SPACE[0],
                 image=nib.load(bunch.maps) if isinstance(bunch.maps, str) else bunch.maps, indices=indices,
                 networks=networks, network_source="atlas", source="nilearn fetch_atlas_schaefer_2018 (2 mm)",
                 licence="MIT (CBIG)", version="2018", description=f"Schaefer-2018, {n} parcels, {k} networks")


def _difumo(m: re.Match) -> Atlas:
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_difumo

    dim = int(m.group(1))
    if dim not in (64, 128, 256, 512, 1024):
        raise BrainfmError(f"DiFuMo comes in 64, 128, 256, 512 or 1024 components, not {dim}",
                           fix="use e.g. --atlas difumo64")
    bunch = _call(m.group(0), fetch_atlas_difumo, dimension=dim, resolution_mm=2)
    labels = bunch.labels
    names = [str(x) for x in (labels["difumo_names"] if hasattr(labels, "columns") else labels)]
    from brainfm_cli.atlases.builtin import _unique

    return Atlas(name=m.group(0), labels=_unique(names), kind="maps", space=DIFUMO_SPACE[0],
                 image=nib.load(bunch.maps) if isinstance(bunch.maps, str) else bunch.maps,
                 source="nilearn fetch_atlas_difumo (2 mm)", licence="ODbL (Dadi et al. 2020)", version="2020",
                 description=f"DiFuMo, {dim} probabilistic components")


def _basc(m: re.Match) -> Atlas:
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_basc_multiscale_2015

    res = int(m.group(1))
    if res not in (7, 12, 20, 36, 64, 122, 197, 325, 444):
        raise BrainfmError(f"BASC comes in 7, 12, 20, 36, 64, 122, 197, 325 or 444 parcels, not {res}",
                           fix="use e.g. --atlas basc122")
    bunch = _call(m.group(0), fetch_atlas_basc_multiscale_2015, resolution=res, version="sym")
    img = nib.load(bunch.maps) if isinstance(bunch.maps, str) else bunch.maps
    values = sorted(int(v) for v in np.unique(np.asanyarray(img.dataobj)) if v != 0)
    return Atlas(name=m.group(0), labels=[f"BASC_{v:03d}" for v in values], kind="labels", space=BASC_SPACE[0],
                 image=img, indices=values, source="nilearn fetch_atlas_basc_multiscale_2015 (sym)",
                 licence="CC0 (Bellec et al.)", version="2015", description=f"BASC multiscale, {res} parcels")


def _yeo(m: re.Match) -> Atlas:
    import nibabel as nib
    from nilearn.datasets import fetch_atlas_yeo_2011

    k = int(m.group(1))
    if k not in (7, 17):
        raise BrainfmError(f"Yeo-2011 has 7 or 17 networks, not {k}", fix="use --atlas yeo7 or --atlas yeo17")
    bunch = _call(m.group(0), fetch_atlas_yeo_2011, n_networks=k, thickness="thick")
    maps = getattr(bunch, "maps", None) or bunch[f"thick_{k}"]
    img = nib.load(maps) if isinstance(maps, str) else maps
    if img.ndim == 4:
        img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine)
    indices, names = _label_table(bunch) if hasattr(bunch, "lut") else (list(range(1, k + 1)), [])
    names = names or [f"{k}Networks_{i}" for i in indices]
    return Atlas(name=m.group(0), labels=names, kind="labels", space=YEO_SPACE[0], image=img, indices=indices,
                 networks=list(names), network_source="atlas", source="nilearn fetch_atlas_yeo_2011 (thick)",
                 licence="see FreeSurfer/CBIG terms (Yeo et al. 2011)", version="2011",
                 description=f"Yeo-2011 {k} networks (each network one region)")


FETCHABLE = [
    Fetchable(r"schaefer(\d+)-(\d+)", "schaefer400-7", "Schaefer-2018, 100-1000 parcels, 7/17 networks",
              "MIT (CBIG)", True, _schaefer, *SCHAEFER_SPACE),
    Fetchable(r"difumo(\d+)", "difumo64", "DiFuMo probabilistic, 64-1024 components", "ODbL", False, _difumo,
              *DIFUMO_SPACE),
    Fetchable(r"basc(\d+)", "basc122", "BASC multiscale 2015, 7-444 parcels", "CC0", False, _basc, *BASC_SPACE),
    Fetchable(r"yeo(\d+)", "yeo7", "Yeo-2011 7/17 networks", "FreeSurfer/CBIG terms", True, _yeo, *YEO_SPACE),
]


@lru_cache(maxsize=None)
def fetch_atlas(name: str) -> Atlas | None:
    """The fetchable atlas called ``name`` (downloaded or read from the cache), or None if no such family."""
    for entry in FETCHABLE:
        m = re.fullmatch(entry.pattern, name)
        if m:
            return entry.fetch(m)
    return None
