"""``brainfm simulate``: a ground-truth BIDS dataset of simulated BOLD (regions or MNI images)."""

from __future__ import annotations

from typing import Annotated

import typer

from brainfm_cli.cli import _options as o
from brainfm_cli.cli._output import progress, stderr


def simulate(
    output: Annotated[str, typer.Option("-o", "--output", help="Folder for the BIDS dataset (created).")],
    atlas: o.AtlasOpt = "seitzman300",
    atlas_labels: o.AtlasLabels = None,
    transfer_networks: Annotated[bool, typer.Option(
        "--transfer-networks", help="Give an atlas without networks the nearest Seitzman-300 network.")] = False,
    participants: Annotated[int, typer.Option("--participants", help="Number of participants.")] = 10,
    sessions: Annotated[int, typer.Option("--sessions", help="Sessions per participant.")] = 1,
    runs: Annotated[int, typer.Option("--runs", help="Runs per session.")] = 1,
    duration: Annotated[float, typer.Option("--duration", help="Length of each run (s).")] = 600.0,
    tr: Annotated[float, typer.Option("--tr", help="Repetition time (s).")] = 2.0,
    space: Annotated[str, typer.Option(
        "--space", help="regions: region time series as 'parcellate' writes them; mni: 4-D NIfTI images.")] = "regions",
    voxel_size: Annotated[float, typer.Option("--voxel-size", help="Voxel size of MNI images (mm).")] = 3.0,
    model: Annotated[str, typer.Option(
        "--model", help="Neural dynamics: linear (stable linear stochastic) or hopf (Stuart-Landau).")] = "linear",
    task: Annotated[str, typer.Option("--task", help="BIDS task label.")] = "rest",
    noise: Annotated[float, typer.Option(
        "--noise", help="Measurement noise sd relative to the median region BOLD sd.")] = 0.15,
    dt: Annotated[float, typer.Option("--dt", help="Integration step (s).")] = 0.02,
    seed: o.Seed = 0,
    overwrite: o.Overwrite = False,
    quiet: o.Quiet = False,
) -> None:
    """Simulate BOLD with known coupling, phenotype effects and stimulation responses, as a BIDS dataset."""
    from brainfm_cli.atlases import load_atlas
    from brainfm_cli.tasks.simulate import SimulationConfig, simulate_dataset

    cfg = SimulationConfig(participants=participants, sessions=sessions, runs=runs, duration=duration, tr=tr,
                           space=space, voxel_size=voxel_size, seed=seed, model=model, task=task, dt=dt, noise=noise)
    cfg.validate()
    atlas_obj = load_atlas(atlas, atlas_labels, transfer=transfer_networks)
    with progress("simulate", quiet, total=participants * sessions * runs) as bar:
        result = simulate_dataset(output, atlas_obj, cfg, overwrite=overwrite, on_run=bar.advance)
    stderr.print(f"wrote {result.n_runs} simulated run(s) ({atlas_obj.name}, {atlas_obj.n_regions} regions, "
                 f"{cfg.space}) to {output}; ground truth in {output}/derivatives/simulation "
                 f"(dynamics {result.seconds_dynamics:.1f} s, writing {result.seconds_writing:.1f} s, "
                 f"stimulation truth {result.seconds_ground_truth:.1f} s)", markup=False)
