"""Options shared by several commands, as ``Annotated`` aliases (one definition, one help text)."""

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
DummyScans = Annotated[Optional[int], typer.Option(
    "--dummy-scans", help="Initial volumes to drop (default: fMRIPrep's non-steady-state count, else 0).")]


def roi_spec(mask=None, atlas: str | None = None, labels: str | None = None, atlas_labels=None):
    """The ``data.voxels.RoiSpec`` that ``--roi-mask``, or ``--roi-atlas`` with ``--roi-labels``, describe."""
    if mask is None and atlas is None and not labels:
        return None
    from brainfm_cli.data.voxels import RoiSpec

    names = tuple(x.strip() for x in (labels or "").split(",") if x.strip())
    return RoiSpec(mask=None if mask is None else str(mask), atlas=atlas, labels=names,
                   atlas_labels=None if atlas_labels is None or atlas is None else str(atlas_labels))
