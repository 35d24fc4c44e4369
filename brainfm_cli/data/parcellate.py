"""BOLD runs to region time series: atlas extraction, confounds, filtering, coverage, BIDS-derivative output."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli import __version__
from brainfm_cli.atlases.base import Atlas
from brainfm_cli.data.bids import BoldRun, RunFilter, discover_bold, resolve_tr
from brainfm_cli.data.extract import RegionWeights, extract, region_weights
from brainfm_cli.data.nifti import load_bold, read_data
from brainfm_cli.data.timeseries import (
    RegionTimeseries,
    timeseries_path,
    write_dataset_description,
    write_timeseries,
)
from brainfm_cli.errors import BrainfmError

log = logging.getLogger("brainfm.parcellate")

STRATEGIES = ("none", "simple", "scrubbing", "compcor")
MOST_OF_ATLAS = 0.5  # below this fraction of covered regions the image does not match the atlas


@dataclass(frozen=True)
class CleanParams:
    """How a run is denoised after extraction (nilearn's ``signal.clean`` on the region signals)."""

    confounds: str = "none"
    high_pass: float | None = None
    low_pass: float | None = None
    detrend: bool = False
    standardize: bool = False
    smoothing_fwhm: float | None = None
    dummy_scans: int | None = None  # None: fMRIPrep's non-steady-state count when known, else 0
    min_coverage: float = 0.5
    tr: float | None = None

    def __post_init__(self):
        if self.confounds not in STRATEGIES:
            raise BrainfmError(f"unknown confounds strategy '{self.confounds}'",
                               fix=f"use one of {', '.join(STRATEGIES)}")
        for name in ("high_pass", "low_pass", "smoothing_fwhm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise BrainfmError(f"--{name.replace('_', '-')} must be positive, not {value}",
                                   fix="give a positive number or leave the option out")
        if self.high_pass and self.low_pass and self.high_pass >= self.low_pass:
            raise BrainfmError(f"--high-pass {self.high_pass} Hz is not below --low-pass {self.low_pass} Hz",
                               fix="give a band with high-pass < low-pass")
        if not 0 <= self.min_coverage <= 1:
            raise BrainfmError("--min-coverage is a fraction between 0 and 1", fix="e.g. --min-coverage 0.5")
        if self.dummy_scans is not None and self.dummy_scans < 0:
            raise BrainfmError("--dummy-scans cannot be negative", fix="give 0 or more")

    @property
    def filtering(self) -> bool:
        return bool(self.high_pass or self.low_pass)


def _load_confounds(run: BoldRun, strategy: str):
    """fMRIPrep confounds for ``strategy`` through nilearn's ``load_confounds_strategy``."""
    if run.confounds is None:
        raise BrainfmError(f"--confounds {strategy} needs fMRIPrep's *_desc-confounds_timeseries.tsv beside the run, "
                           "and none was found", path=run.path,
                           fix="run on fMRIPrep derivatives, or use --confounds none")
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conf, mask = load_confounds_strategy(str(run.path), denoise_strategy=strategy)
    except Exception as exc:  # nilearn raises ValueError/FileNotFoundError with its own wording
        raise BrainfmError(f"could not load confounds for strategy '{strategy}' ({exc})", path=run.confounds,
                           fix="check the confounds TSV/JSON are fMRIPrep's, or choose another --confounds") from None
    return conf, mask


def _non_steady_state(run: BoldRun) -> int:
    """Leading volumes fMRIPrep flagged as non-steady-state (0 when unknown)."""
    if run.confounds is None:
        return 0
    header = pd.read_csv(run.confounds, sep="\t", nrows=0).columns
    cols = [c for c in header if c.startswith("non_steady_state_outlier")]
    if not cols:
        return 0
    flags = pd.read_csv(run.confounds, sep="\t", usecols=cols).fillna(0).to_numpy().any(axis=1)
    return int(np.argmin(flags)) if not flags.all() else len(flags)


@dataclass
class RunPlan:
    """A run's header, repetition time, confounds and the volumes kept after dummy scans and censoring."""

    img: object
    tr: float | None
    n_vols: int
    confounds: np.ndarray | None
    keep: np.ndarray


def plan_run(run: BoldRun, params: CleanParams) -> RunPlan:
    """Open a run and decide what denoising will use, refusing runs that cannot be cleaned (no TR, no volumes)."""
    img = load_bold(run.path)
    tr = resolve_tr(run, img, params.tr)
    if tr is None and params.filtering:
        raise BrainfmError("filtering needs the repetition time, and neither a BIDS sidecar nor the NIfTI header "
                           "gives it", path=run.path, fix="pass --tr SECONDS")
    if tr is None:
        log.warning("%s: no repetition time in a sidecar or the header; RepetitionTime is left empty (use --tr)",
                    run.path.name)
    n_vols = img.shape[3]
    confounds, sample_mask = (None, None)
    if params.confounds != "none":
        confounds, sample_mask = _load_confounds(run, params.confounds)
        if len(confounds) != n_vols:
            raise BrainfmError(f"the confounds file has {len(confounds)} rows but the run has {n_vols} volumes",
                               path=run.confounds, fix="use the confounds file fMRIPrep wrote for this run")
    dummy = _non_steady_state(run) if params.dummy_scans is None else params.dummy_scans
    if dummy >= n_vols - 1:
        raise BrainfmError(f"dropping {dummy} dummy scans leaves fewer than 2 of {n_vols} volumes", path=run.path,
                           fix="lower --dummy-scans")
    keep = np.arange(dummy, n_vols) if sample_mask is None else np.asarray(sample_mask)[np.asarray(sample_mask) >= dummy]
    if len(keep) < 2:
        raise BrainfmError(f"'{params.confounds}' censors all but {len(keep)} of {n_vols} volumes (high motion)",
                           path=run.confounds, fix="exclude this run, or use a strategy without scrubbing (simple)")
    return RunPlan(img, tr, n_vols, None if confounds is None else confounds.to_numpy(dtype=float), keep)


def read_run(plan: RunPlan, run: BoldRun, params: CleanParams) -> np.ndarray:
    """The run's voxels as float32 (Fortran order), smoothed first when asked."""
    if params.smoothing_fwhm:
        from nilearn.image import smooth_img

        return read_data(smooth_img(plan.img, params.smoothing_fwhm), run.path)
    return read_data(plan.img, run.path)


def clean_signals(signals: np.ndarray, plan: RunPlan, params: CleanParams) -> np.ndarray:
    """nilearn's ``signal.clean`` with the run's confounds, filters and censoring (only the kept volumes)."""
    from nilearn import signal

    if params.filtering or params.detrend or params.standardize or plan.confounds is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return signal.clean(
                signals, detrend=params.detrend, standardize="zscore_sample" if params.standardize else False,
                confounds=plan.confounds, low_pass=params.low_pass, high_pass=params.high_pass, t_r=plan.tr,
                sample_mask=None if len(plan.keep) == plan.n_vols else plan.keep, ensure_finite=False,
                standardize_confounds=True,
            )
    return signals[plan.keep] if len(plan.keep) != plan.n_vols else signals


def extract_run(run: BoldRun, atlas: Atlas, params: CleanParams, weights: RegionWeights | None = None
                ) -> RegionTimeseries:
    """One run → region time series (time × regions; regions below ``min_coverage`` all-NaN) + sidecar."""
    plan = plan_run(run, params)
    img, tr, n_vols, keep = plan.img, plan.tr, plan.n_vols, plan.keep
    weights = weights or region_weights(atlas, img.shape, img.affine)
    data = read_run(plan, run, params)
    ex = extract(data, weights)
    del data
    if ex.n_nonfinite:
        raise BrainfmError(f"{ex.n_nonfinite} NaN or infinite values inside the atlas regions", path=run.path,
                           fix="replace them before parcellating (e.g. 'fslmaths IN -nan OUT') or mask them out")
    covered = ex.coverage >= params.min_coverage
    in_view = np.asarray(weights.membership.sum(axis=1)).ravel() >= params.min_coverage * weights.expected
    if in_view.mean() < MOST_OF_ATLAS:
        raise BrainfmError(f"the image's field of view misses most of the atlas: only {in_view.sum()} of "
                           f"{atlas.n_regions} regions lie inside it", path=run.path,
                           fix=f"use a whole-brain run normalised to MNI space (the atlas is in {atlas.space}, "
                           "e.g. fMRIPrep's space-MNI152NLin2009cAsym output)")
    if not covered.any() and ex.coverage.max(initial=0) == 0:
        raise BrainfmError("every voxel the atlas touches is constant over time (no signal)", path=run.path,
                           fix="check the file holds BOLD data in MNI space")
    if covered.mean() < MOST_OF_ATLAS:
        raise BrainfmError(f"most of the atlas has no signal in this image: only {covered.sum()} of "
                           f"{atlas.n_regions} regions have ≥ {params.min_coverage:.0%} coverage", path=run.path,
                           fix=f"use a run normalised to MNI space (the atlas is in {atlas.space}, e.g. fMRIPrep's "
                           "space-MNI152NLin2009cAsym output), or lower --min-coverage")
    missing = [lab for lab, ok in zip(atlas.labels, covered) if not ok]
    if missing:
        log.warning("%s: %d region(s) below %.0f%% coverage are written as n/a columns: %s%s", run.path.name,
                    len(missing), 100 * params.min_coverage, ", ".join(missing[:8]), " ..." if len(missing) > 8 else "")

    signals = clean_signals(ex.signals[:, covered], plan, params)
    out = np.full((signals.shape[0], atlas.n_regions), np.nan)
    out[:, covered] = signals
    frame = pd.DataFrame(out, columns=atlas.labels)
    leading = int(keep[0]) if len(keep) else 0
    censored = sorted(set(range(leading, n_vols)) - set(int(k) for k in keep))
    sidecar = {
        "RepetitionTime": tr,
        "SamplingFrequency": None if tr is None else 1.0 / tr,
        "Atlas": atlas.describe(),
        "Sources": [str(run.path)] + ([str(run.confounds)] if plan.confounds is not None else []),
        "ConfoundsStrategy": params.confounds,
        "Detrend": params.detrend,
        "HighPass": params.high_pass,
        "LowPass": params.low_pass,
        "Standardize": "zscore_sample" if params.standardize else False,
        "SmoothingFWHM": params.smoothing_fwhm,
        "NumberOfVolumesDiscarded": leading,
        "CensoredVolumes": censored,
        "NumberOfVolumes": int(signals.shape[0]),
        "MinCoverage": params.min_coverage,
        "RegionsBelowCoverage": missing,
        "Coverage": {lab: round(float(c), 4) for lab, c in zip(atlas.labels, ex.coverage)},
        "GeneratedBy": {"Name": "brainfm", "Version": __version__, "Command": "parcellate"},
    }
    if atlas.networks is not None:
        sidecar["Networks"] = dict(zip(atlas.labels, atlas.networks))
        sidecar["NetworksSource"] = atlas.network_source or "atlas"
    if censored:
        log.warning("%s: %d volume(s) censored by '%s'; rows are the kept volumes only", run.path.name,
                    len(censored), params.confounds)
    return RegionTimeseries(data=frame, tr=tr, entities=dict(run.entities), sidecar=sidecar, path=None)


def _job(run: BoldRun, atlas: Atlas, params: CleanParams, weights: RegionWeights, target: Path) -> tuple[Path, list]:
    ts = extract_run(run, atlas, params, weights)
    write_timeseries(ts.data, target, ts.sidecar)
    return target, ts.sidecar["RegionsBelowCoverage"]


def plan_outputs(runs: list[BoldRun], out_dir: Path, atlas: Atlas, overwrite: bool) -> list[Path]:
    """Output path per run; refuses collisions and existing files (unless ``overwrite``) before any work."""
    targets = [timeseries_path(out_dir, r.entities, atlas.name) for r in runs]
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
               overwrite: bool = False, on_done: Callable[[Path], None] | None = None) -> list[Path]:
    """Parcellate every selected run into ``out_dir`` (a BIDS-derivatives folder); returns written files.

    The atlas-to-grid assignment is computed once per distinct image grid and shared by all runs;
    runs are processed in parallel over ``n_jobs`` processes, each holding one run in memory.
    """
    from joblib import Parallel, delayed

    from brainfm_cli.data.extract import grid_key

    runs = discover_bold(inputs, filters, space)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BrainfmError("the output path exists and is not a folder", path=out_dir,
                           fix="choose a folder for -o (or '-' for one run to standard output)")
    targets = plan_outputs(runs, out_dir, atlas, overwrite)
    grids: dict[str, RegionWeights] = {}
    run_weights = []
    for run in runs:
        img = load_bold(run.path)
        key = grid_key(img.shape, img.affine)
        if key not in grids:
            grids[key] = region_weights(atlas, img.shape, img.affine)
        run_weights.append(grids[key])
    write_dataset_description(out_dir)
    jobs = [delayed(_job)(r, atlas, params, w, t) for r, w, t in zip(runs, run_weights, targets)]
    written = []
    if n_jobs == 1 or len(jobs) == 1:
        results = (fn(*a, **k) for fn, a, k in jobs)
    else:
        results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(jobs)
    for target, _missing in results:
        written.append(target)
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
