"""Options shared by several commands (``Annotated`` aliases, one definition and help text each), the placeholders
every option shows in --help, and the BIDS-App form of the entity filters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

ParticipantLabel = Annotated[
    Optional[list[str]],
    typer.Option("--participant-label", help="Only these participants (with or without 'sub-'); repeatable."),
]
Session = Annotated[Optional[list[str]], typer.Option("--session", help="Only these sessions; repeatable.")]
Task = Annotated[Optional[list[str]], typer.Option("--task", help="Only these tasks; repeatable.")]
Run = Annotated[Optional[list[str]], typer.Option("--run", help="Only these runs; repeatable.")]
Space = Annotated[
    Optional[str],
    typer.Option("--space", help="fMRIPrep output space to use (default: MNI152NLin2009cAsym when present)."),
]
RepetitionTime = Annotated[
    Optional[float],
    typer.Option("--tr", help="Repetition time in seconds, for inputs without a BIDS sidecar or a usable header."),
]
NJobs = Annotated[int, typer.Option("--n-jobs", "-j", help="Parallel workers over runs (-1: all cores).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace output files that already exist.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for every stochastic step.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
AtlasOpt = Annotated[
    str,
    typer.Option("--atlas", help="Atlas name (see 'brainfm atlases') or a NIfTI file with --atlas-labels."),
]
AtlasLabels = Annotated[
    Optional[Path],
    typer.Option("--atlas-labels", help="TSV for a user atlas: index, name, optional network, x, y, z."),
]
RoiMask = Annotated[
    Optional[Path],
    typer.Option("--roi-mask", help="Voxels inside this mask (NIfTI, non-zero inside; resampled to the run's grid "
                 "by nearest neighbour) as the input vector, for voxel models (SC-MBM)."),
]
RoiAtlas = Annotated[
    Optional[str],
    typer.Option("--roi-atlas", help="Voxels of these atlas regions instead of a mask: an atlas name or a NIfTI "
                 "label image (with --atlas-labels), with --roi-labels."),
]
RoiLabels = Annotated[
    Optional[str],
    typer.Option("--roi-labels", help="Regions of --roi-atlas, comma separated, in order; shell patterns allowed "
                 "(e.g. 'Calcarine_*,Cuneus_*')."),
]
ConfoundStrategy = Annotated[
    str, typer.Option("--confounds", help="Denoising strategy: none, simple, scrubbing, compcor (fMRIPrep confounds).")
]
HighPass = Annotated[Optional[float], typer.Option("--high-pass", help="High-pass cut-off (Hz).")]
LowPass = Annotated[Optional[float], typer.Option("--low-pass", help="Low-pass cut-off (Hz).")]
Detrend = Annotated[bool, typer.Option("--detrend", help="Remove linear trends.")]
MissingRegions = Annotated[str, typer.Option(
    "--missing-regions", help="Regions without data (n/a columns): error; mask (kept out of the loss, and out of "
    "attention where a model has a token per region); or zero (filled with the mean; they count).")]
DummyScans = Annotated[Optional[int], typer.Option(
    "--dummy-scans", help="Initial volumes to drop (default: fMRIPrep's non-steady-state count, else 0).")]


# The training loop's options (pretrain, forecast fit): None means "the configuration file's, else the default".
Epochs = Annotated[Optional[int], typer.Option("--epochs", help="Passes over the corpus.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Crops per process per step.")]
Accumulation = Annotated[Optional[int], typer.Option("--accumulation", help="Gradient accumulation.")]
CropsPerRun = Annotated[Optional[int], typer.Option("--crops-per-run", help="Random crops drawn from each run per epoch.")]
LearningRate = Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate (default: the recipe's).")]
MaxSteps = Annotated[Optional[int], typer.Option(
    "--max-steps", help="The run's length in optimiser steps (the schedule follows it; default: --epochs).")]
TimeLimit = Annotated[Optional[str], typer.Option(
    "--time-limit", metavar="DURATION", help="Wall-time for this run (e.g. 15m, 1h30m): the schedule is fitted to "
                                             "it and the run stops cleanly at it with a checkpoint.")]
ValFraction = Annotated[Optional[float], typer.Option(
    "--val-fraction", help="Participants held out for validation (default 0.2; 0 for none).")]
Validation = Annotated[Optional[list[str]], typer.Option(
    "--val", help="A validation corpus instead of a split (repeatable).")]
ValEvery = Annotated[Optional[int], typer.Option("--val-every", help="Steps between validations (default: ten per run).")]
CheckpointEvery = Annotated[Optional[int], typer.Option("--checkpoint-every", help="Steps between checkpoints.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last checkpoint.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]
TrainConfigFile = Annotated[Optional[Path], typer.Option(
    "--config", help="YAML with any TrainConfig field (flags given on the command line win).")]


def roi_spec(mask=None, atlas: str | None = None, labels: str | None = None, atlas_labels=None):
    """The ``data.voxels.RoiSpec`` that ``--roi-mask``, or ``--roi-atlas`` with ``--roi-labels``, describe."""
    if mask is None and atlas is None and not labels:
        return None
    from brainfm_cli.data.voxels import RoiSpec

    names = tuple(x.strip() for x in (labels or "").split(",") if x.strip())
    return RoiSpec(mask=None if mask is None else str(mask), atlas=atlas, labels=names,
                   atlas_labels=None if atlas_labels is None or atlas is None else str(atlas_labels))


# Placeholders in --help: what a value is, in the words of the field (flags show none).
METAVARS = {
    "tr": "SECONDS", "high_pass": "HZ", "low_pass": "HZ", "smoothing_fwhm": "MM", "time_limit": "DURATION",
    "model": "NAME", "size": "NAME", "atlas": "NAME|FILE", "roi_atlas": "NAME|FILE", "weights": "FILE|hf://REPO",
    "participant_label": "LABEL", "session": "LABEL", "run": "LABEL", "space": "SPACE", "device": "DEVICE",
    "dtype": "DTYPE", "pooling": "POOLING", "aggregate": "none|mean", "missing_regions": "error|mask|zero",
    "confounds": "STRATEGY", "arch": "KEY=VALUE", "objective": "KEY=VALUE", "target": "COLUMN",
    "group_by": "COLUMN", "head": "linear|mlp", "baseline": "fc|none", "mask_ratio": "RATIO",
    "val_fraction": "FRACTION", "min_coverage": "FRACTION", "seed": "N", "roi_labels": "LABELS",
    "epochs": "N", "batch_size": "N", "accumulation": "N", "crops_per_run": "N", "max_steps": "N", "val_every": "N",
    "checkpoint_every": "N", "lr": "RATE", "context": "SAMPLES", "horizon": "SAMPLES", "stride": "SAMPLES",
    "config": "FILE", "coords": "FILE", "gradients": "FILE", "repeats": "N", "neighbors": "K", "run_label": "LABEL",
    "duration": "SECONDS", "dt": "SECONDS", "voxel_size": "MM", "atlas_labels": "FILE",
    "output": "PATH", "participants": "FILE", "timeseries": "PATH", "train": "PATH", "val": "PATH",
}
BY_TYPE = {"path": "PATH", "integer": "N", "float": "NUMBER", "text": "TEXT"}
BY_ANNOTATION = {int: "N", float: "NUMBER", Path: "PATH", str: "TEXT"}
PER_COMMAND = {("simulate", "participants"): "N"}  # a count there, a file in probe


def _annotated_kind(command, name: str) -> str | None:
    """The placeholder for a parameter from its Python annotation (``Annotated[Optional[int], …]`` → ``N``)."""
    import typing

    try:
        hint = typing.get_type_hints(command.callback, include_extras=False).get(name)
    except Exception:  # a callback whose hints cannot be resolved: fall back to the click type
        return None
    while typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else None
    if typing.get_origin(hint) is list:
        hint = typing.get_args(hint)[0]
    return BY_ANNOTATION.get(hint)


def name_placeholders(command) -> None:
    """Give every option of ``command`` (and its subcommands) a placeholder that says what the value is."""
    for sub in getattr(command, "commands", {}).values():
        name_placeholders(sub)
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) or param.metavar is not None or param.name in ("help", "version"):
            continue
        if getattr(param, "param_type_name", "") == "argument":
            param.metavar = param.name.upper()
            continue
        kind = getattr(getattr(param, "type", None), "name", None)
        meta = PER_COMMAND.get((command.name, param.name)) or METAVARS.get(param.name) or \
            (BY_TYPE.get(kind) if kind else None) or _annotated_kind(command, param.name) or "VALUE"
        if param.name == "task":  # a BIDS entity, except probe's regression|classification
            meta = "regression|classification" if command.name == "probe" else "LABEL"
        if param.name == "confounds" and command.name == "probe":
            meta = "COLUMNS"
        param.metavar = meta + ("..." if getattr(param, "multiple", False) or param.nargs == -1 else "")


ENTITY_FLAGS = ("--participant-label", "--session", "--task", "--run")


def expand_entity_lists(args: list[str]) -> list[str]:
    """BIDS-App filters take several values after one flag (``--participant-label 01 02``): the values that
    follow, up to the next option, become repeated flags. A value that is an existing path stays an input."""
    command = next((a for a in args if not a.startswith("-")), None)
    out, i = [], 0
    while i < len(args):
        out.append(args[i])
        flag = args[i]
        i += 1
        if flag in ENTITY_FLAGS and not (flag == "--task" and command == "probe") and i < len(args):
            out.append(args[i])
            i += 1
            while i < len(args) and not args[i].startswith("-") and not Path(args[i]).exists():
                out += [flag, args[i]]
                i += 1
    return out
