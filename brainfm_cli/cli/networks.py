"""``brainfm networks``: zero-shot functional networks from a model's attention and embeddings, beside raw data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def networks(
    inputs: Annotated[list[str], typer.Argument(help="Region time-series TSVs or folders (parcellate output).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name, card YAML, or a pretrain run's model.yaml.")],
    output: Annotated[Path, typer.Option(
        "-o", "--output", help="Folder for accuracy.tsv, accuracy.json, region_features.tsv, report.html.")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Checkpoint (default: the card's).")] = None,
    neighbors: Annotated[int, typer.Option("--neighbors", "-k", help="Neighbours of the kNN classifier.")] = 5,
    repeats: Annotated[int, typer.Option("--repeats", help="Random region splits per window.")] = 10,
    test_fraction: Annotated[float, typer.Option(
        "--test-fraction", help="Share of the regions held out in each split (the paper: 0.2).")] = 0.2,
    transfer_networks: Annotated[bool, typer.Option(
        "--transfer-networks", help="For a model on an atlas without networks: each region takes the network of "
                                    "the nearest Seitzman-300 ROI.")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 2,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    coords: Annotated[Optional[Path], typer.Option(
        "--coords", help="Region coordinates, for models that need them.")] = None,
    gradients: Annotated[Optional[Path], typer.Option(
        "--gradients", help="Gradient matrix (CSV/TSV, regions × components) for Brain-JEPA's published model."
    )] = None,
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
    """Classify regions into their atlas networks from the model's attention and embeddings (kNN, 80/20 region
    splits per window), beside the raw data, coordinates and chance."""
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.networks import NetworksOptions, networks as run_task

    space_args = {k: v for k, v in (("coords", coords), ("gradients", gradients)) if v is not None}
    opts = NetworksOptions(model=model, weights=weights, neighbors=neighbors, repeats=repeats,
                           test_fraction=test_fraction, transfer_networks=transfer_networks, seed=seed,
                           batch_size=batch_size, device=device,
                           filters=RunFilter(participant_label, session, task, run), tr=tr, missing=missing_regions,
                           space_args=space_args, overwrite=overwrite)
    with progress("networks", quiet) as bar:
        table = run_task(inputs, output, opts, progress=bar.update)
    from rich.console import Console
    from rich.table import Table

    shown = Table(title=f"network classification accuracy ({opts.model}, {int(table['n_networks'].iloc[0])} "
                        f"networks, {int(table['n_regions'].iloc[0])} regions)")
    for col in ("feature", "accuracy", "95% CI", "chance"):
        shown.add_column(col, justify="right")
    for row in table.itertuples():
        ci = f"{row.ci_low:.3f}–{row.ci_high:.3f}" if row.ci_low == row.ci_low else "n/a"
        shown.add_row(row.feature, f"{row.accuracy:.3f}", ci, f"{row.chance:.3f}")
    Console(highlight=False, markup=False).print(shown)
    stderr.print(f"wrote accuracy.tsv, accuracy.json, region_features.tsv and report.html to {output}", markup=False)
