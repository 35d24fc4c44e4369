"""Denoising a run: what a run's confounds, filters and censoring will be (a plan), and applying it to signals.

Cleaning is nilearn's ``signal.clean`` on region or voxel signals, with fMRIPrep confounds loaded through
nilearn's ``load_confounds_strategy``; ``parcellate``, ``voxels`` and ``embed`` share this one plan.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import BoldRun, resolve_tr
from brainfm_cli.io.nifti import load_bold, read_data
from brainfm_cli.io.provenance import generated_by

log = logging.getLogger("brainfm.data")

STRATEGIES = ("none", "simple", "scrubbing", "compcor")


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
    if tr is not None and params.filtering:
        nyquist = 0.5 / tr
        for flag, cut in (("--low-pass", params.low_pass), ("--high-pass", params.high_pass)):
            if cut is not None and cut >= nyquist:
                raise BrainfmError(f"{flag} {cut} Hz is at or above the Nyquist frequency {nyquist:.4g} Hz of this "
                                   f"run (TR {tr:g} s): the filter cannot be applied", path=run.path,
                                   fix=f"give a cut-off below {nyquist:.4g} Hz, or leave {flag} out")
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


def clean_signals(signals: np.ndarray, plan: RunPlan, params: CleanParams, source=None) -> np.ndarray:
    """nilearn's ``signal.clean`` with the run's confounds, filters and censoring (only the kept volumes); a run
    too short for the band-pass filter is an error naming ``source``."""
    from nilearn import signal

    if not (params.filtering or params.detrend or params.standardize or plan.confounds is not None):
        return signals[plan.keep] if len(plan.keep) != plan.n_vols else signals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return signal.clean(
                signals, detrend=params.detrend, standardize="zscore_sample" if params.standardize else False,
                confounds=plan.confounds, low_pass=params.low_pass, high_pass=params.high_pass, t_r=plan.tr,
                sample_mask=None if len(plan.keep) == plan.n_vols else plan.keep, ensure_finite=False,
                standardize_confounds=True,
            )
        except ValueError as exc:
            if "padlen" not in str(exc):
                raise
            raise BrainfmError(f"{len(plan.keep)} volumes are too few for the band-pass filter (scipy: {exc})",
                               path=source, fix="use longer runs, or drop --high-pass/--low-pass") from None


def cleaning_sidecar(plan: RunPlan, run: BoldRun, params: CleanParams, n_volumes: int, command: str) -> dict:
    """The sidecar fields every extracted run records: timing, sources, the denoising applied, provenance."""
    tr = plan.tr
    return {
        "RepetitionTime": tr,
        "SamplingFrequency": None if tr is None else 1.0 / tr,
        "Sources": [str(run.path)] + ([str(run.confounds)] if plan.confounds is not None else []),
        "ConfoundsStrategy": params.confounds,
        "Detrend": params.detrend,
        "HighPass": params.high_pass,
        "LowPass": params.low_pass,
        "Standardize": "zscore_sample" if params.standardize else False,
        "SmoothingFWHM": params.smoothing_fwhm,
        "NumberOfVolumesDiscarded": int(plan.keep[0]) if len(plan.keep) else 0,
        "NumberOfVolumes": int(n_volumes),
        "GeneratedBy": generated_by(command),
    }
