"""``brainfm gradients``: functional gradients of a corpus of region time series (Brain-JEPA's positions)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import stderr


def gradients(
    corpus: Annotated[list[str], typer.Argument(help="Region time-series TSVs or folders of them (parcellate output).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output TSV (regions × components), or '-'.")],
    n_components: Annotated[int, typer.Option("--n-components", help="Number of gradients.")] = 30,
    sparsity: Annotated[float, typer.Option("--sparsity", help="Fraction of each FC row zeroed (BrainSpace).")] = 0.9,
    alpha: Annotated[float, typer.Option("--alpha", help="Diffusion-map anisotropy.")] = 0.5,
    atlas: Annotated[Optional[str], typer.Option(
        "--atlas", help="The corpus's atlas (a name, or an image FILE with --atlas-labels): columns are matched to "
                        "its regions by name and the rows written in its order.")] = None,
    atlas_labels: o.AtlasLabels = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    overwrite: o.Overwrite = False,
) -> None:
    """Compute functional gradients (group FC → diffusion map) for any atlas."""
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.gradients import gradients_from_corpus

    path = gradients_from_corpus(corpus, output, n_components=n_components, sparsity=sparsity, alpha=alpha,
                                 filters=RunFilter(participant_label, session, task, run), overwrite=overwrite,
                                 atlas=atlas, atlas_labels=str(atlas_labels) if atlas_labels else None)
    if path is not None:
        stderr.print(f"wrote {n_components} gradients to {path}")
