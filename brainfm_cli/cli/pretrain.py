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
    config: o.TrainConfigFile = None,
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
    epochs: o.Epochs = None,
    batch_size: o.BatchSize = None,
    accumulation: o.Accumulation = None,
    crops_per_run: o.CropsPerRun = None,
    lr: o.LearningRate = None,
    max_steps: o.MaxSteps = None,
    time_limit: o.TimeLimit = None,
    val_fraction: o.ValFraction = None,
    val: o.Validation = None,
    val_every: o.ValEvery = None,
    checkpoint_every: o.CheckpointEvery = None,
    resume: o.Resume = False,
    device: o.Device = "auto",
    dtype: o.Dtype = "auto",
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
    seed: o.Seed = 0,
    quiet: o.Quiet = False,
) -> None:
    """Pretrain a model self-supervised on your own corpus; resumable, and DDP under torchrun."""
    from brainfm_cli.tasks.pretrain import build_config

    flags = dict(model=model, corpus=tuple(corpus), output=str(output), size=size, atlas=atlas,
                 atlas_labels=str(atlas_labels) if atlas_labels else None,
                 transfer_networks=transfer_networks or None, **training_flags(
                     epochs=epochs, batch_size=batch_size, accumulation=accumulation, crops_per_run=crops_per_run,
                     lr=lr, max_steps=max_steps, time_limit=time_limit, val_fraction=val_fraction, val=val,
                     val_every=val_every, checkpoint_every=checkpoint_every, device=device, dtype=dtype,
                     missing_regions=missing_regions, tr=tr, seed=seed))
    cfg = build_config(config, flags, _pairs(arch, "--arch"), _pairs(objective, "--objective"))
    path = train_with_progress(cfg, resume, quiet, "pretrain")
    stderr.print(f"model written to {path} (card: {path.parent / 'model.yaml'}; embed with --model "
                 f"{path.parent / 'model.yaml'})")


def training_flags(*, time_limit, val, missing_regions, **flags) -> dict:
    """The training loop's command-line options as ``TrainConfig`` fields (pretrain, forecast fit)."""
    from brainfm_cli.tasks.pretrain import parse_duration

    return dict(flags, time_limit=parse_duration(time_limit), val=tuple(val) if val else None, missing=missing_regions)


def train_with_progress(cfg, resume: bool, quiet: bool, label: str) -> Path:
    """Run the engine with the plan printed before the first step and a progress bar (loss, validation)."""
    from brainfm_cli.tasks.pretrain import pretrain as run

    with progress(label, quiet, status="loading the corpus …") as bar:

        def on_plan(plan):
            held = (f", {plan['validation_participants']} held out for validation" if plan["validation_participants"]
                    else ", no validation split")
            stderr.print(f"{label}: {plan['total']} steps ({plan['steps_per_epoch']} per epoch; {plan['runs']} runs of "
                         f"{plan['participants']} participants, {plan['crops_per_run']} crop(s) per run{held})"
                         + (", fitted to the time limit after the first steps" if plan["time_limit"] else ""),
                         markup=False)

        def on_step(step, total, logs):
            text = f"loss {logs.get('loss', float('nan')):.4f}"
            for key, name in (("val_forecast_r2", "val R²"), ("val_r2_0.75", "val R²"), ("val_loss", "val")):
                if key in logs:
                    text += f" · {name} {logs[key]:.3f}"
                    break
            bar.update(step, total, text)

        return run(cfg, resume, on_step, on_plan)
