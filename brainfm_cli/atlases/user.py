"""A user's own atlas: a label (3-D) or probabilistic (4-D) NIfTI image plus a labels TSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainfm_cli.atlases.base import MNI_UNKNOWN, Atlas
from brainfm_cli.errors import BrainfmError

LABELS_FIX = "give a TSV with columns index, name and optionally network, x, y, z (one row per region)"


def load_user_atlas(image_path: str | Path, labels_path: str | Path | None) -> Atlas:
    """Read ``--atlas FILE.nii.gz --atlas-labels FILE.tsv`` into an ``Atlas``."""
    from brainfm_cli.io.files import read_tsv
    from brainfm_cli.io.nifti import load_image

    image_path = Path(image_path)
    img = load_image(image_path, what="atlas image")
    if labels_path is None:
        raise BrainfmError("a user atlas needs its region labels", path=image_path,
                           fix=f"add --atlas-labels FILE.tsv: {LABELS_FIX}")
    table = read_tsv(labels_path)
    missing = {"index", "name"} - set(table.columns)
    if missing:
        raise BrainfmError(f"labels TSV lacks column(s) {sorted(missing)} (has {list(table.columns)})",
                           path=labels_path, fix=LABELS_FIX)
    if table["index"].isna().any() or table["name"].isna().any():
        raise BrainfmError("labels TSV has empty index or name cells", path=labels_path, fix=LABELS_FIX)
    table = table.sort_values("index", kind="stable")
    names = [str(n) for n in table["name"]]
    if len(set(names)) != len(names):
        raise BrainfmError("region names in the labels TSV are not unique", path=labels_path,
                           fix="give every region its own name")
    indices = [int(i) for i in table["index"]]
    networks = [str(n) for n in table["network"]] if "network" in table.columns else None
    coords = None
    if {"x", "y", "z"} <= set(table.columns):
        coords = table[["x", "y", "z"]].to_numpy(float)
        if not np.isfinite(coords).all():
            coords = None
    common = dict(name=image_path.name.split(".")[0], labels=names, space=MNI_UNKNOWN, image=img,
                  networks=networks, network_source="atlas" if networks else None, coords=coords,
                  source=f"user files {image_path} + {labels_path}", licence="user-supplied", version="user")
    if img.ndim == 4:
        if img.shape[3] != len(names):
            raise BrainfmError(f"probabilistic atlas has {img.shape[3]} maps but the labels TSV lists "
                               f"{len(names)} regions", path=labels_path, fix="list one row per map, in map order")
        return Atlas(kind="maps", **common)
    if img.ndim != 3:
        raise BrainfmError(f"atlas image is {img.ndim}-D", path=image_path,
                           fix="give a 3-D label image or a 4-D stack of probabilistic maps")
    data = np.asanyarray(img.dataobj)
    if not np.allclose(data, np.round(data)):
        raise BrainfmError("a 3-D atlas image must hold integer labels", path=image_path,
                           fix="give an integer label image (0 = background)")
    present = set(np.unique(data).astype(int).tolist()) - {0}
    absent = [i for i in indices if i not in present]
    if absent:
        raise BrainfmError(f"{len(absent)} label(s) from the TSV do not occur in the image: {absent[:10]}",
                           path=labels_path, fix="remove those rows or fix their index")
    extra = sorted(present - set(indices))
    if extra:
        raise BrainfmError(f"the image has label values with no row in the TSV: {extra[:10]}",
                           path=labels_path, fix="add a row for each label value in the image")
    return Atlas(kind="labels", indices=indices, **common)
