"""``brainfm voxels``: BOLD runs → voxel time series inside an ROI (the input of voxel models such as SC-MBM)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def voxels(
    inputs: Annotated[list[str], typer.Argument(help="NIfTI runs, a BIDS dataset or an fMRIPrep derivatives folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output derivatives folder.")],
    roi_mask: o.RoiMask = None,
    roi_atlas: o.RoiAtlas = None,
    roi_labels: o.RoiLabels = None,
    atlas_labels: o.AtlasLabels = None,
    confounds: o.ConfoundStrategy = "none",
    high_pass: o.HighPass = None,
    low_pass: o.LowPass = None,
    detrend: o.Detrend = False,
    dummy_scans: o.DummyScans = None,
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    space: o.Space = None,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Extract the voxels inside an ROI mask (or atlas regions) as time series, plus the voxel list."""
    from brainfm_cli.data.clean import CleanParams
    from brainfm_cli.errors import BrainfmError
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.tasks.voxels import write_voxel_runs

    roi = o.roi_spec(roi_mask, roi_atlas, roi_labels, atlas_labels)
    if roi is None:
        raise BrainfmError("no region of interest given", fix="pass --roi-mask FILE.nii.gz, or --roi-atlas NAME "
                           "--roi-labels LABEL,…")
    params = CleanParams(confounds=confounds, high_pass=high_pass, low_pass=low_pass, detrend=detrend,
                         dummy_scans=dummy_scans, tr=tr)
    with progress("voxels", quiet) as bar:
        written = write_voxel_runs(inputs, output, roi, params, RunFilter(participant_label, session, task, run),
                                   space, overwrite, on_start=bar.total, on_done=bar.advance)
    stderr.print(f"wrote {len(written)} voxel time series to {output} (voxel list: {output / 'voxels.tsv'}; "
                 f"pretrain with --arch voxels={output / 'voxels.tsv'})")
