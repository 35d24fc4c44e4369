"""``brainfm parcellate``: BOLD runs → region time series (BIDS derivatives, TSV + JSON sidecar)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def parcellate(
    inputs: Annotated[list[str], typer.Argument(help="NIfTI runs, a BIDS dataset or an fMRIPrep derivatives folder.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Output derivatives folder, or '-' for one run to stdout.")],
    atlas: o.AtlasOpt = "seitzman300",
    atlas_labels: o.AtlasLabels = None,
    transfer_networks: Annotated[bool, typer.Option(
        "--transfer-networks", help="Give an atlas without networks the nearest Seitzman-300 network.")] = False,
    confounds: o.ConfoundStrategy = "none",
    high_pass: o.HighPass = None,
    low_pass: o.LowPass = None,
    detrend: o.Detrend = False,
    standardize: Annotated[bool, typer.Option("--standardize", help="z-score each region (sample std).")] = False,
    smoothing_fwhm: Annotated[Optional[float], typer.Option("--smoothing-fwhm", help="Spatial smoothing (mm).")] = None,
    dummy_scans: o.DummyScans = None,
    min_coverage: Annotated[float, typer.Option(
        "--min-coverage", help="Regions covered by less than this fraction of their voxels become n/a columns.")] = 0.5,
    tr: o.RepetitionTime = None,
    participant_label: o.ParticipantLabel = None,
    session: o.Session = None,
    task: o.Task = None,
    run: o.Run = None,
    space: o.Space = None,
    n_jobs: o.NJobs = 1,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Parcellate BOLD runs into region time series with an atlas, confounds and filters applied."""
    from brainfm_cli.atlases import load_atlas
    from brainfm_cli.data.clean import CleanParams
    from brainfm_cli.io.bids import RunFilter
    from brainfm_cli.io.files import write_tsv
    from brainfm_cli.tasks import parcellate as lib

    atlas_obj = load_atlas(atlas, atlas_labels, transfer=transfer_networks)
    params = CleanParams(confounds=confounds, high_pass=high_pass, low_pass=low_pass, detrend=detrend,
                             standardize=standardize, smoothing_fwhm=smoothing_fwhm, dummy_scans=dummy_scans,
                             min_coverage=min_coverage, tr=tr)
    filters = RunFilter(participant_label, session, task, run)
    if output == "-":
        ts = lib.parcellate_to_stdout(inputs, atlas_obj, params, filters, space)
        write_tsv(ts.data, "-")
        return
    with progress("parcellate", quiet) as bar:
        written = lib.parcellate(inputs, Path(output), atlas_obj, params, filters, space, n_jobs, overwrite,
                                 on_start=bar.total, on_done=bar.advance)
    stderr.print(f"wrote {len(written)} region time series ({atlas_obj.name}, {atlas_obj.n_regions} regions) "
                 f"to {output}")
