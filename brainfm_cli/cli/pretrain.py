"""``brainfm pretrain``: self-supervised pretraining of a model family on your own corpus (one CPU or torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def _pairs(items: list[str] | None, flag: str) -> dict:
    """``key=value`` options (values parsed as YAML scalars: numbers, booleans, lists)."""
    import yaml

    from brainfm_cli.errors import BrainfmError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BrainfmError(f"{flag} takes key=value, got '{item}'", fix=f"e.g. {flag} depth=2")
        out[key.strip()] = yaml.safe_load(value)
    return out


def pretrain(
    corpus: Annotated[list[str], typer.Argument(help="Region time-series TSVs or folders (parcellate output).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model to train (see 'brainfm models').")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: config, metrics, checkpoints, model.")],
    config: Annotated[Optional[Path], typer.Option(
        "--config", help="YAML with any TrainConfig field (flags given on the command line win).")] = None,
    size: Annotated[Optional[str], typer.Option(
        "--size", help="A named size of the model's card: tiny, small, base or the published one "
                       "('brainfm models show NAME' lists them with their parameter counts).")] = None,
    atlas: Annotated[Optional[str], typer.Option(
        "--atlas", help="The corpus's atlas (a name from 'brainfm atlases', or an image FILE with --atlas-labels): "
                        "the model is made for the corpus's regions of it, all or a subset.")] = None,
    atlas_labels: o.AtlasLabels = None,
    transfer_networks: Annotated[bool, typer.Option(
        "--transfer-networks", help="Give an atlas without networks the nearest Seitzman-300 network "
                                    "(Brain-Semantoks tokenises per network).")] = False,
    arch: Annotated[Optional[list[str]], typer.Option(
        "--arch", help="Architecture override key=value (e.g. depth=2); repeatable.")] = None,
    objective: Annotated[Optional[list[str]], typer.Option(
        "--objective", help="Objective option key=value (e.g. mask_ratio=0.5); repeatable.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Passes over the corpus.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Crops per process per step.")] = None,
    accumulation: Annotated[Optional[int], typer.Option("--accumulation", help="Gradient accumulation.")] = None,
    crops_per_run: Annotated[Optional[int], typer.Option(
        "--crops-per-run", help="Random crops drawn from each run per epoch.")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: the family's).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(
        "--max-steps", help="The run's length in optimiser steps (the schedule follows it; default: --epochs).")] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", metavar="DURATION", help="Wall-time for this run (e.g. 15m, 1h30m): the schedule is fitted to "
                                                 "it and the run stops cleanly at it with a checkpoint.")] = None,
    val_fraction: Annotated[Optional[float], typer.Option(
        "--val-fraction", help="Participants held out for validation (default 0.2; 0 for none).")] = None,
    val: Annotated[Optional[list[str]], typer.Option(
        "--val", help="A validation corpus instead of a split (repeatable).")] = None,
    val_every: Annotated[Optional[int], typer.Option(
        "--val-every", help="Steps between validations (default: ten per run).")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last checkpoint.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
    seed: o.Seed = 0,
    quiet: o.Quiet = False,
) -> None:
    """Pretrain a model self-supervised on your own corpus; resumable, and DDP under torchrun."""
    from brainfm_cli.tasks.pretrain import build_config, parse_duration, pretrain as run

    flags = dict(model=model, corpus=tuple(corpus), output=str(output), size=size, atlas=atlas,
                 atlas_labels=str(atlas_labels) if atlas_labels else None,
                 transfer_networks=transfer_networks or None, epochs=epochs,
                 batch_size=batch_size, accumulation=accumulation, crops_per_run=crops_per_run, lr=lr,
                 max_steps=max_steps, checkpoint_every=checkpoint_every, device=device, dtype=dtype,
                 missing=missing_regions, tr=tr, seed=seed, time_limit=parse_duration(time_limit),
                 val_fraction=val_fraction, val=tuple(val) if val else None, val_every=val_every)
    cfg = build_config(config, flags, _pairs(arch, "--arch"), _pairs(objective, "--objective"))
    with progress("pretrain", quiet, status="loading the corpus …") as bar:

        def on_plan(plan):
            held = (f", {plan['validation_participants']} held out for validation" if plan["validation_participants"]
                    else ", no validation split")
            stderr.print(f"pretrain: {plan['total']} steps ({plan['steps_per_epoch']} per epoch; {plan['runs']} runs of "
                         f"{plan['participants']} participants, {plan['crops_per_run']} crop(s) per run{held})"
                         + (f", fitted to the time limit after the first steps" if plan["time_limit"] else ""),
                         markup=False)

        def on_step(step, total, logs):
            text = f"loss {logs.get('loss', float('nan')):.4f}"
            if "val_r2_0.75" in logs:
                text += f" · val R² {logs['val_r2_0.75']:.3f}"
            elif "val_loss" in logs:
                text += f" · val {logs['val_loss']:.4f}"
            bar.update(step, total, text)

        path = run(cfg, resume, on_step, on_plan)
    stderr.print(f"model written to {path} (card: {path.parent / 'model.yaml'}; embed with --model "
                 f"{path.parent / 'model.yaml'})")
