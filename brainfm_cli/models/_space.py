"""Input-space arguments shared by families: region coordinates from an atlas, a file or an array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brainfm_cli.atlases import load_atlas
from brainfm_cli.errors import BrainfmError
from brainfm_cli.models.card import ModelCard


def read_coordinates(source, n_regions: int) -> np.ndarray:
    """``[n_regions, 3]`` MNI coordinates from an array or a text file (``x y z`` or ``index x y z`` rows)."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise BrainfmError("coordinate file not found", path=path, fix="check the path")
        try:
            text = path.read_text(encoding="utf-8").replace(",", " ").replace("\t", " ")
            rows = [line.split() for line in text.splitlines() if line.strip()]
            if rows and not _numeric(rows[0]):
                rows = rows[1:]  # a header line
            arr = np.array([[float(v) for v in row] for row in rows])
        except ValueError as exc:
            raise BrainfmError(f"not a coordinate table ({exc})", path=path,
                               fix="one region per line: x y z, or index x y z") from None
        if arr.ndim != 2 or arr.shape[1] not in (3, 4):
            raise BrainfmError(f"expected 3 (x y z) or 4 (index x y z) columns, found shape {arr.shape}",
                               path=path, fix="one region per line: x y z, or index x y z")
        arr = arr[:, -3:]
        where = path
    else:
        arr, where = np.asarray(source, dtype=float), None
    if arr.shape != (n_regions, 3):
        raise BrainfmError(f"expected coordinates for {n_regions} regions ([{n_regions}, 3]), got {list(arr.shape)}",
                           path=where, fix="give one x, y, z row per region of the model's atlas, in its order")
    if not np.isfinite(arr).all():
        raise BrainfmError("coordinates contain NaN or infinite values", path=where, fix="repair the coordinates")
    return arr


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
        return True
    except ValueError:
        return False


def atlas_coordinates(card: ModelCard, coords=None) -> np.ndarray:
    """Region coordinates: the ``coords`` argument, else the card's atlas (when brainfm has it offline)."""
    space = card.input
    if coords is not None:
        return read_coordinates(coords, space.n_regions)
    if space.coordinates:
        return read_coordinates(np.asarray(space.coordinates, dtype=float), space.n_regions)
    if space.atlas:
        atlas = load_atlas(space.atlas, space.atlas_labels)
        xyz = atlas.region_coords()
        if space.regions:
            index = {label: i for i, label in enumerate(atlas.labels)}
            xyz = xyz[[index[r] for r in space.regions]]
        return read_coordinates(xyz, space.n_regions)
    raise BrainfmError(f"{card.name} needs region coordinates ({card.input.atlas_description or 'its atlas'})",
                       fix="pass coords= (Python) or --coords FILE (CLI)")


def match_regions(columns: list[str], atlas, path=None) -> list[str]:
    """A corpus's regions (all of the atlas or a subset, in any order) in the atlas's order; a name the atlas
    does not have is an error listing its closest names."""
    import difflib

    known = set(atlas.labels)
    unknown = [c for c in columns if c not in known]
    if unknown:
        hints = "; ".join(f"'{u}' (closest: {', '.join(difflib.get_close_matches(u, atlas.labels, n=3, cutoff=0.4)) or 'none'})"
                          for u in unknown[:3])
        raise BrainfmError(f"{len(unknown)} column(s) match no region of atlas {atlas.name}: {hints}", path=path,
                           fix=f"parcellate with --atlas {atlas.name}, or give the atlas the corpus was made with")
    chosen = set(columns)
    return [label for label in atlas.labels if label in chosen]


def space_for_atlas(card: ModelCard, atlas, regions: list[str], atlas_ref: str,
                    labels_ref: str | None = None) -> ModelCard:
    """``card`` re-targeted to ``regions`` of ``atlas``: the region list, their coordinates (sphere centres or
    centroids of the label image) and the atlas's reference, so the trained model needs nothing more."""
    index = {label: i for i, label in enumerate(atlas.labels)}
    xyz = np.asarray(atlas.region_coords(), dtype=float)[[index[r] for r in regions]]
    part = "all" if len(regions) == atlas.n_regions else f"{len(regions)} of the {atlas.n_regions}"
    return card.with_input(atlas=atlas_ref, atlas_labels=labels_ref, n_regions=len(regions), regions=tuple(regions),
                           atlas_description=f"{atlas.name} ({part} regions, {atlas.space})",
                           coordinates=tuple(map(tuple, xyz)) if np.isfinite(xyz).all() else None)
