"""Input-space arguments shared by families: region coordinates from an atlas, a file or an array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
    if coords is not None:
        return read_coordinates(coords, card.input.n_regions)
    if card.input.atlas:
        from brainfm_cli.atlases import load_atlas

        atlas = load_atlas(card.input.atlas)
        return read_coordinates(atlas.region_coords(), card.input.n_regions)
    raise BrainfmError(f"{card.name} needs region coordinates ({card.input.atlas_description or 'its atlas'})",
                       fix="pass coords= (Python) or --coords FILE (CLI)")
