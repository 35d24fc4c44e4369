"""The one place region time series become model-ready input: resample, filter, normalise, window, pad.

A :class:`Preprocessor` is built from a model card's input space; ``prepare`` turns a run (time × regions at its
own TR) into ``[regions, time]`` at the model's TR, and ``windows`` cuts it into the model's length, padding a
short run with a mask where the model supports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np

from brainfm_cli.errors import BrainfmError

EPS = 1e-8


def resample(data: np.ndarray, tr_in: float, tr_out: float) -> np.ndarray:
    """``[T, R]`` sampled every ``tr_in`` s → every ``tr_out`` s; polyphase with an anti-aliasing filter."""
    if abs(tr_in - tr_out) < 1e-6 * tr_out:
        return data
    from scipy.signal import resample_poly

    ratio = Fraction(tr_in / tr_out).limit_denominator(200)
    up, down = ratio.numerator, ratio.denominator
    return resample_poly(data, up, down, axis=0, padtype="line")


def average_windows(data: np.ndarray, tr_in: float, window: float, source=None) -> np.ndarray:
    """``[T, R]`` → ``[T // n, R]``: the mean of each window of ``n = ⌊window / tr_in⌋`` frames (MinD-Vis).

    Windows are cut as ``np.array_split(data, k = T // n)`` cuts them, as the authors do: every frame is used,
    so a window holds ``⌊T / k⌋`` or ``⌊T / k⌋ + 1`` frames (the longer ones first), ``n`` or a little more.
    """
    n = int(np.floor(window / tr_in + 1e-6))
    if n < 1:
        raise BrainfmError(f"the run's TR {tr_in} s is longer than the averaging window {window} s", path=source,
                           fix=f"average over a window of at least {tr_in} s (--average-window)")
    k = data.shape[0] // n
    if k == 0:
        raise BrainfmError(f"the run ({data.shape[0]} frames at TR {tr_in} s) is shorter than one averaging window "
                           f"of {n} frames ({window} s)", path=source,
                           fix="use longer runs or a shorter --average-window")
    sizes = np.full(k, data.shape[0] // k)
    sizes[:data.shape[0] % k] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.add.reduceat(data, starts, axis=0) / sizes[:, None]


def bandpass(data: np.ndarray, tr: float, low: float, high: float, order: int = 5) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``[T, R]`` (``order`` per direction); high edge clipped below Nyquist."""
    from scipy.signal import butter, sosfiltfilt

    nyquist = 0.5 / tr
    if low >= nyquist:
        raise BrainfmError(f"the band-pass low edge {low} Hz is above the Nyquist frequency {nyquist:.3f} Hz",
                           fix="this model's band needs a shorter TR")
    high = min(high, 0.99 * nyquist)
    sos = butter(order, [low / nyquist, high / nyquist], btype="band", output="sos")
    padlen = min(data.shape[0] - 1, 3 * (2 * len(sos) + 1))
    return sosfiltfilt(sos, data, axis=0, padlen=padlen)


def normalisation_stats(data: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(centre, scale)`` per region of ``[T, R]`` data such that the normalised run is ``(data − centre) / scale``:
    ``zscore_region``: each region's mean and SD over time; ``zscore_global``: the whole run's; ``robust_region``:
    median and IQR per region; ``none``: 0 and 1."""
    R = data.shape[1]
    if method == "none":
        return np.zeros(R), np.ones(R)
    if method == "zscore_region":
        return data.mean(axis=0), data.std(axis=0) + EPS
    if method == "zscore_global":
        return np.full(R, data.mean()), np.full(R, data.std() + EPS)
    if method == "robust_region":
        q1, med, q3 = np.percentile(data, [25, 50, 75], axis=0)
        return med, q3 - q1 + EPS
    raise ValueError(f"unknown normalisation {method!r}")


def normalise(data: np.ndarray, method: str) -> np.ndarray:
    """The normalised run (see ``normalisation_stats``)."""
    if method == "none":
        return data
    centre, scale = normalisation_stats(data, method)
    return (data - centre) / scale


@dataclass
class Window:
    """One model input: ``x [regions, length]``, its start (in model samples) and a pad mask over time."""

    index: int
    start: int
    x: np.ndarray
    valid: int  # samples of real data; the rest is zero padding


@dataclass
class Preprocessor:
    """Card-driven preprocessing (see ``InputSpace``): resample (or average) → band-pass → normalise → window."""

    tr: float
    seq_len: int
    normalisation: str = "zscore_region"
    bandpass: tuple[float, float] | None = None
    short_runs: str = "refuse"
    patch: int | None = None
    missing: str = "error"  # all-n/a regions: "error", "zero" (filled, and they count) or "mask" (filled with zeros
    # that the model keeps out of attention and loss where its design allows: ``BrainModel.padding_mask``)
    resampling: str = "polyphase"  # or "average": means over windows of ``tr`` seconds

    def __post_init__(self):
        if self.missing not in ("error", "mask", "zero"):
            raise BrainfmError(f"unknown --missing-regions '{self.missing}'", fix="use error, mask or zero")

    @classmethod
    def from_space(cls, space, missing: str = "error") -> "Preprocessor":
        return cls(tr=space.tr, seq_len=space.seq_len, normalisation=space.normalisation, bandpass=space.bandpass,
                   short_runs=space.short_runs, patch=space.patch, missing=missing,
                   resampling=getattr(space, "resampling", "polyphase"))

    def describe(self) -> dict:
        how = "polyphase, anti-aliased (scipy resample_poly)" if self.resampling == "polyphase" else \
            f"mean over windows of floor({self.tr} s / TR) frames (np.array_split: every frame used)"
        return {"RepetitionTime": self.tr, "Resampling": how,
                "BandPass": list(self.bandpass) if self.bandpass else None, "Normalisation": self.normalisation,
                "WindowLength": self.seq_len, "ShortRuns": self.short_runs, "MissingRegions": self.missing}

    def prepare(self, data: np.ndarray, tr: float | None, source=None, regions: list[str] | None = None
                ) -> tuple[np.ndarray, list[int]]:
        """Run ``[T, R]`` at ``tr`` → ``[R, T']`` model-ready; also the indices of all-n/a regions (zero-filled)."""
        x, missing, _ = self.prepare_with_stats(data, tr, source, regions)
        return x, missing

    def prepare_with_stats(self, data: np.ndarray, tr: float | None, source=None, regions: list[str] | None = None,
                           stats: tuple[np.ndarray, np.ndarray] | None = None
                           ) -> tuple[np.ndarray, list[int], tuple[np.ndarray, np.ndarray]]:
        """``prepare``, plus the normalisation's ``(centre, scale)`` per region (to bring model outputs back to the
        run's units; 0 and 1 for regions without data). ``stats`` normalises with given statistics instead (a
        part of a run prepared as the whole run was)."""
        if tr is None:
            raise BrainfmError("the repetition time is unknown: no RepetitionTime in the run's JSON sidecar (or no "
                               "sidecar) and no --tr", path=source,
                               fix="pass --tr SECONDS (or keep the JSON sidecar beside the TSV)")
        data = np.asarray(data, dtype=np.float64)
        nan = np.isnan(data)
        missing = list(np.flatnonzero(nan.all(axis=0)))
        if nan.any() and (nan.any(axis=0) & ~nan.all(axis=0)).any():
            raise BrainfmError("n/a values inside a region's series", path=source,
                               fix="n/a may only fill a whole column (a region without coverage); re-run parcellate")
        if missing and self.missing not in ("zero", "mask"):
            names = [regions[i] for i in missing[:6]] if regions else missing[:6]
            raise BrainfmError(f"{len(missing)} region(s) have no data (n/a columns, low coverage): {names}",
                               path=source, fix="pass --missing-regions mask to keep them out of the model's attention "
                               "and loss (or zero to fill them with the mean, 0 after normalisation), or re-parcellate "
                               "with better coverage")
        present = np.flatnonzero(~nan.all(axis=0))
        block = data[:, present]
        block = average_windows(block, tr, self.tr, source) if self.resampling == "average" else \
            resample(block, tr, self.tr)
        if self.bandpass is not None:
            block = bandpass(block, self.tr, *self.bandpass)
        centre, scale = normalisation_stats(block, self.normalisation) if stats is None else \
            (stats[0][present], stats[1][present])
        block = (block - centre) / scale
        out = np.zeros((block.shape[0], data.shape[1]))
        out[:, present] = block
        stats = np.zeros(data.shape[1]), np.ones(data.shape[1])
        stats[0][present], stats[1][present] = centre, scale
        return out.T.astype(np.float32), missing, stats

    def windows(self, x: np.ndarray, window: int | None = None, stride: int | None = None,
                source=None) -> Iterator[Window]:
        """Cut ``[R, T]`` into windows of the model length (starting at 0, every ``stride``); a run shorter
        than one window is zero-padded when the model masks padding, else refused."""
        length = window or self.seq_len
        stride = stride or length
        if stride <= 0 or length <= 0:
            raise BrainfmError("--window and --stride must be positive", fix="e.g. --stride 50")
        T = x.shape[1]
        if T < length:
            minimum = self.patch or 1
            if self.short_runs != "pad" or T < minimum:
                need = f"{length} samples at TR {self.tr} s ({length * self.tr:.0f} s)"
                raise BrainfmError(f"the run is shorter than one model window: {T} samples after resampling, the "
                                   f"model needs {need}", path=source,
                                   fix="use longer runs, or a model that accepts padded input")
            padded = np.zeros((x.shape[0], length), dtype=x.dtype)
            padded[:, :T] = x
            yield Window(0, 0, padded, T)
            return
        for i, start in enumerate(range(0, T - length + 1, stride)):
            yield Window(i, start, x[:, start:start + length], length)
