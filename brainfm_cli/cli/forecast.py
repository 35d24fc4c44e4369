"""``brainfm forecast fit|evaluate|predict``: future brain states from a pretrained model, against the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr
from brainfm_cli.cli.pretrain import train_with_progress, training_flags

app = typer.Typer(help="Forecast future brain states: fine-tune a model, evaluate it beside baselines, predict.",
                  no_args_is_help=True, rich_markup_mode=None)

Run = Annotated[Path, typer.Argument(help="A forecast run folder (the -o of 'brainfm forecast fit').")]


@app.command("fit")
def fit(
    corpus: Annotated[list[str], typer.Argument(help="Region time-series TSVs or folders (parcellate output).")],
    model: Annotated[str, typer.Option(
        "--model", "-m", help="The pretrained model: a name, a card YAML or a pretrain run's model.yaml.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run folder: config, metrics, checkpoints, model.")],
    context: Annotated[int, typer.Option("--context", help="Samples the model sees (at the model's TR).")] = 180,
    horizon: Annotated[int, typer.Option("--horizon", help="Samples it predicts after the context.")] = 20,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", help="Start from these weights instead of the card's (a checkpoint or hf://ORG/REPO).")] = None,
    freeze_encoder: Annotated[bool, typer.Option(
        "--freeze-encoder", help="Train only what maps the encoder's output to the future (BrainLM's decoder, or "
                                 "the head of the other families).")] = False,
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="Start from a random initialisation of the same architecture (the no-pretraining "
                               "baseline).")] = False,
    config: o.TrainConfigFile = None,
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
    """Fine-tune a pretrained model to forecast the next --horizon samples from --context samples."""
    from brainfm_cli.tasks.pretrain import build_config

    flags = dict(model=model, corpus=tuple(corpus), output=str(output), weights=weights,
                 forecast={"context": context, "horizon": horizon, "freeze_encoder": freeze_encoder,
                           "from_scratch": from_scratch},
                 **training_flags(epochs=epochs, batch_size=batch_size, accumulation=accumulation,
                                  crops_per_run=crops_per_run, lr=lr, max_steps=max_steps, time_limit=time_limit,
                                  val_fraction=val_fraction, val=val, val_every=val_every,
                                  checkpoint_every=checkpoint_every, device=device, dtype=dtype,
                                  missing_regions=missing_regions, tr=tr, seed=seed))
    cfg = build_config(config, flags)
    path = train_with_progress(cfg, resume, quiet, "forecast fit")
    stderr.print(f"forecaster written to {path.parent} (evaluate: brainfm forecast evaluate {path.parent} "
                 "TEST_CORPUS -o DIR)", markup=False)


@app.command("evaluate")
def evaluate(
    run: Run,
    inputs: Annotated[list[str], typer.Argument(help="Held-out region time-series TSVs or folders.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for metrics.tsv, metrics.json, report.html.")],
    method: Annotated[Optional[list[str]], typer.Option(
        "--method", help="Methods to score (default: model, mean, persistence, ridge_ar, var, lstm); "
                         "repeatable.")] = None,
    train: Annotated[Optional[list[str]], typer.Option(
        "--train", help="The baselines' training corpus (default: the run's training participants). "
                        "Repeatable.")] = None,
    untrained_baseline: Annotated[bool, typer.Option(
        "--untrained-baseline", help="Also fine-tune the same architecture from a random initialisation with the "
                                     "run's recipe (into DIR/untrained) and score it.")] = False,
    stride: Annotated[Optional[int], typer.Option(
        "--stride", help="Samples between the starts of test windows (default: the horizon).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Windows per forward pass.")] = 16,
    device: o.Device = "auto",
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run_label: Annotated[Optional[list[str]], typer.Option("--run", help="Only these runs; repeatable.")] = None,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Score a forecaster beside mean, persistence, ridge AR, VAR and an LSTM on held-out runs, per horizon step."""
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.forecast.evaluate import METHODS, EvaluateOptions, evaluate as run_task

    opts = EvaluateOptions(methods=tuple(method or METHODS), train=tuple(train or ()), stride=stride,
                           untrained_baseline=untrained_baseline, seed=seed, batch_size=batch_size, device=device,
                           filters=RunFilter(participant_label, session, task, run_label), tr=tr,
                           missing=missing_regions, overwrite=overwrite)
    with progress("forecast evaluate", quiet) as bar:
        metrics = run_task(run, inputs, output, opts, progress=bar.update)
    from rich.console import Console
    from rich.table import Table

    mean = metrics[metrics.step.astype(str) == "mean"].set_index("method")
    first = metrics[metrics.step.astype(str) == "1"].set_index("method")
    table = Table(title=f"forecast R² ({run})")
    for col in ("method", "1 step ahead", "mean over the horizon", "Pearson r (mean)"):
        table.add_column(col, justify="right")
    for m in mean.index:
        table.add_row(m, f"{first.loc[m, 'r2']:.3f}", f"{mean.loc[m, 'r2']:.3f}", f"{mean.loc[m, 'pearson_r']:.3f}")
    Console(highlight=False, markup=False).print(table)
    stderr.print(f"wrote metrics.tsv, metrics.json and report.html to {output}", markup=False)


@app.command("predict")
def predict(
    run: Run,
    input_tsv: Annotated[Path, typer.Argument(help="One region time-series TSV (its sidecar gives the TR).")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output TSV, or - for standard output.")] = "-",
    device: o.Device = "auto",
    missing_regions: o.MissingRegions = "error",
    tr: o.RepetitionTime = None,
) -> None:
    """The next horizon of a run as a region time-series TSV (with its JSON sidecar)."""
    from brainfm_cli.tasks.forecast.predict import PredictOptions, predict as run_task

    table = run_task(run, input_tsv, output, PredictOptions(device=device, tr=tr, missing=missing_regions))
    if output != "-":
        stderr.print(f"wrote {len(table)} forecast samples to {output}", markup=False)
