"""``brainfm embed``: runs → a TSV of embeddings from a pretrained model (data contracts §3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def embed(
    inputs: Annotated[list[str], typer.Argument(
        help="Region time-series TSVs or folders (parcellate output), NIfTI runs / BIDS / fMRIPrep folders "
             "(parcellated on the fly with the model's atlas), or '-' for paths on standard input.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model name (see 'brainfm models') or a card YAML.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output TSV, or '-' for standard output.")] = "-",
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Checkpoint: brainfm's, the authors' published file/folder, or hf://ORG/REPO[/SUB].")] = None,
    pooling: Annotated[Optional[str], typer.Option(
        "--pooling", help="cls, mean, tokens (and cls_avg for Semantoks); default: the model's.")] = None,
    window: Annotated[Optional[int], typer.Option(
        "--window", help="Window length in model samples (default: the model's length).")] = None,
    stride: Annotated[Optional[int], typer.Option(
        "--stride", help="Step between windows in model samples (default: the window length).")] = None,
    aggregate: Annotated[str, typer.Option(
        "--aggregate", help="none: a row per window; mean: a row per run (windows averaged).")] = "none",
    missing_regions: o.MissingRegions = "error",
    coords: Annotated[Optional[Path], typer.Option(
        "--coords", help="Region coordinates for models that need them (e.g. A424_Coordinates.dat for BrainLM ViT-MAE).")] = None,
    gradients: Annotated[Optional[Path], typer.Option(
        "--gradients", help="Gradient matrix (CSV/TSV, regions × components) for Brain-JEPA's published model.")] = None,
    atlas: Annotated[Optional[str], typer.Option(
        "--atlas", help="Atlas for NIfTI inputs when the model's atlas is not built in (a NIfTI file).")] = None,
    atlas_labels: o.AtlasLabels = None,
    roi_mask: o.RoiMask = None,
    roi_atlas: o.RoiAtlas = None,
    roi_labels: o.RoiLabels = None,
    average_window: Annotated[Optional[float], typer.Option(
        "--average-window", help="Seconds averaged into one sample, for models that average runs over windows "
        "(SC-MBM; default: the model's).")] = None,
    confounds: o.ConfoundStrategy = "none",
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 8,
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    space: o.Space = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Embed runs with a pretrained model into a TSV of embeddings."""
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.embed import EmbedOptions, embed as run_embed

    space_args = {k: v for k, v in (("coords", coords), ("gradients", gradients)) if v is not None}
    opts = EmbedOptions(model=model, weights=weights, pooling=pooling, window=window, stride=stride,
                        aggregate=aggregate, batch_size=batch_size, missing=missing_regions, device=device,
                        dtype=dtype, tr=tr, seed=seed, average_window=average_window,
                        filters=RunFilter(participant_label, session, task, run), space=space, atlas=atlas,
                        atlas_labels=str(atlas_labels) if atlas_labels else None, confounds=confounds,
                        space_args=space_args, roi=o.roi_spec(roi_mask, roi_atlas, roi_labels, atlas_labels),
                        overwrite=overwrite)
    with progress("embed", quiet) as bar:
        sidecar = run_embed(inputs, output, opts, on_run=bar.advance, on_start=bar.total)
    if output != "-":
        stderr.print(f"wrote {sidecar.get('Rows', 0)} embedding row(s) from {sidecar['Runs']} run(s) "
                     f"({sidecar['Model']}, pooling {sidecar['Pooling']}) to {output}")
