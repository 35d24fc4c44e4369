"""The ``gradients`` task: read a corpus, compute group gradients, write TSV + sidecar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import read_corpus
from brainfm_cli.data.gradients import GradientRecipe, compute_gradients
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import atomic_group, json_text, sidecar_path, tsv_text, write_tsv
from brainfm_cli.io.provenance import generated_by


def gradients_from_corpus(inputs, output, n_components=30, sparsity=0.9, alpha=0.5, filters=None,
                          overwrite=False, atlas: str | None = None, atlas_labels: str | None = None) -> Path | None:
    """Group gradients of the corpus's regions; with ``atlas``, the columns are checked against it by name and the
    rows come in the atlas's order (the order a model trained with ``--atlas`` uses)."""
    recipe = GradientRecipe(n_components=n_components, sparsity=sparsity, alpha=alpha)
    if str(output) != "-" and Path(output).exists() and not overwrite:
        raise BrainfmError("the output file already exists", path=output, fix="pass --overwrite or choose another -o")
    runs, subs, regions, files = read_corpus(inputs, filters)
    atlas_name = None
    if atlas:
        from brainfm_cli.atlases import load_atlas
        from brainfm_cli.models._space import match_regions

        loaded = load_atlas(atlas, atlas_labels)
        ordered = match_regions(regions, loaded, files[0])
        runs = [r[:, [regions.index(name) for name in ordered]] for r in runs]
        regions, atlas_name = ordered, loaded.name
    maps, lam, _ = compute_gradients(runs, subs, recipe)
    table = pd.DataFrame(maps, columns=[f"gradient_{i + 1:02d}" for i in range(maps.shape[1])])
    table.insert(0, "region", regions)
    if str(output) == "-":
        write_tsv(table, "-", float_format="%.9g")
        return None
    sidecar = {
        "Description": "functional gradients (diffusion-map embedding of group FC), regions × components",
        "Recipe": recipe.__dict__,
        "Eigenvalues": lam,
        "Atlas": atlas_name,
        "NumberOfRuns": len(runs),
        "NumberOfParticipants": len(set(subs)),
        "Sources": [str(f) for f in files],
        "GeneratedBy": generated_by("gradients"),
    }
    out = Path(output)
    with atomic_group([out, sidecar_path(out)]) as (tmp, tmp_json):
        tmp.write_text(tsv_text(table, float_format="%.9g"), encoding="utf-8")
        tmp_json.write_text(json_text(sidecar), encoding="utf-8")
    return out
