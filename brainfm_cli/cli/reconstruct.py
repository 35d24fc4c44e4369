"""``brainfm reconstruct``: masked-value reconstruction of held-out runs, beside mean, interpolation and ridge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def reconstruct(
    inputs: Annotated[list[str], typer.Argument(help="Held-out region time-series TSVs or folders (parcellate output).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name, card YAML, or a pretrain run's model.yaml.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for metrics.tsv, metrics.json, report.html.")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Checkpoint (default: the card's).")] = None,
    mask_ratio: Annotated[Optional[list[float]], typer.Option(
        "--mask-ratio", help="Fraction of patches hidden; repeatable (default 0.2, 0.5 and 0.75).")] = None,
    train: Annotated[Optional[list[str]], typer.Option(
        "--train", help="The training corpus: the ridge baseline's weights and penalty come from it (default: "
                        "the other participants of the inputs). Repeatable.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    coords: Annotated[Optional[Path], typer.Option("--coords", help="Region coordinates, for models that need them.")] = None,
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Hide patches of held-out runs as the model was trained, reconstruct them, and score it beside baselines."""
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.reconstruct import ReconstructOptions, reconstruct as run_task

    opts = ReconstructOptions(model=model, weights=weights, mask_ratios=tuple(mask_ratio or (0.2, 0.5, 0.75)),
                              train=tuple(train or ()), seed=seed, batch_size=batch_size, device=device,
                              filters=RunFilter(participant_label, session, task, run), tr=tr, missing=missing_regions,
                              space_args={"coords": coords} if coords else {}, overwrite=overwrite)
    with progress("reconstruct", quiet) as bar:
        metrics = run_task(inputs, output, opts, progress=bar.update)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"masked reconstruction R² ({opts.model})")
    for col in ("mask ratio", "model", "mean", "interpolation", "ridge"):
        table.add_column(col, justify="right")
    for ratio, part in metrics.groupby("mask_ratio"):
        r2 = part.set_index("method")["r2"]
        table.add_row(f"{ratio:g}", *(f"{r2[m]:.3f}" if r2[m] == r2[m] else "n/a"
                                      for m in ("model", "mean", "interpolation", "ridge")))
    Console(highlight=False, markup=False).print(table)
    stderr.print(f"wrote metrics.tsv, metrics.json and report.html to {output}", markup=False)
