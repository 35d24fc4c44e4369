"""The ``parcellate`` task: BOLD runs → region time series in a BIDS-derivatives folder (TSV + JSON sidecar).

The atlas-to-grid assignment is computed once per image grid and shared by all runs; runs are extracted in
parallel over processes, each holding one run in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from brainfm_cli.atlases.base import Atlas
from brainfm_cli.data.clean import CleanParams
from brainfm_cli.data.extract import RegionWeights, extract_run, grid_key, region_weights
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import BoldRun, RunFilter, discover_bold
from brainfm_cli.io.nifti import load_bold
from brainfm_cli.io.timeseries import RegionTimeseries, timeseries_path, write_dataset_description, write_timeseries


def _job(run: BoldRun, atlas: Atlas, params: CleanParams, weights: RegionWeights, target: Path) -> tuple[Path, list]:
    ts = extract_run(run, atlas, params, weights)
    write_timeseries(ts.data, target, ts.sidecar)
    return target, ts.sidecar["RegionsBelowCoverage"]


def plan_outputs(runs: list[BoldRun], out_dir: Path, name: str, overwrite: bool) -> list[Path]:
    """Output path per run (``name`` is the file names' ``atlas-`` label); refuses collisions and existing
    files (unless ``overwrite``) before any work."""
    targets = [timeseries_path(out_dir, r.entities, name) for r in runs]
    seen: dict[Path, BoldRun] = {}
    for run, target in zip(runs, targets):
        if target in seen:
            raise BrainfmError(f"two inputs would write the same output {target.name}: {seen[target].path} and "
                               f"{run.path}", fix="parcellate them into separate output folders, or filter one out")
        seen[target] = run
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        raise BrainfmError(f"{len(existing)} output file(s) already exist, e.g. {existing[0]}", path=out_dir,
                           fix="pass --overwrite to replace them, or choose another -o folder")
    return targets


def parcellate(inputs: list[str | Path], out_dir: str | Path, atlas: Atlas, params: CleanParams,
               filters: RunFilter | None = None, space: str | None = None, n_jobs: int = 1,
               overwrite: bool = False, on_start: Callable[[int], None] | None = None,
               on_done: Callable[[Path], None] | None = None) -> list[Path]:
    """Parcellate every selected run into ``out_dir`` (a BIDS-derivatives folder); returns written files.

    The atlas-to-grid assignment is computed once per distinct image grid and shared by all runs;
    runs are processed in parallel over ``n_jobs`` processes, each holding one run in memory.
    """
    from joblib import Parallel, delayed

    runs = discover_bold(inputs, filters, space)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainfmError("the output path exists and is not a folder", path=out_dir,
                           fix="choose a folder for -o (or '-' for one run to standard output)")
    targets = plan_outputs(runs, out_dir, atlas.name, overwrite)
    if on_start:
        on_start(len(runs))
    grids: dict[str, RegionWeights] = {}
    run_weights = []
    for run in runs:
        img = load_bold(run.path)
        key = grid_key(img.shape, img.affine)
        if key not in grids:
            grids[key] = region_weights(atlas, img.shape, img.affine)
        run_weights.append(grids[key])
    jobs = [delayed(_job)(r, atlas, params, w, t) for r, w, t in zip(runs, run_weights, targets)]
    written = []
    if n_jobs == 1 or len(jobs) == 1:
        results = (fn(*a, **k) for fn, a, k in jobs)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
    for target, _missing in results:
        written.append(target)
        if len(written) == 1:  # a folder that holds no run yet gets no description
            write_dataset_description(out_dir)
        if on_done:
            on_done(target)
    return written


def parcellate_to_stdout(inputs, atlas: Atlas, params: CleanParams, filters=None, space=None) -> RegionTimeseries:
    """``-o -``: exactly one run, its TSV on standard output."""
    runs = discover_bold(inputs, filters, space)
    if len(runs) != 1:
        raise BrainfmError(f"-o - writes one run to standard output, but {len(runs)} runs were selected",
                           fix="filter to one run, or give an output folder")
    return extract_run(runs[0], atlas, params)
