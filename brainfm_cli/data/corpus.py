"""Corpora of region time series: every run of a set of TSVs over the same regions, as read (``read_corpus``), or
checked against a model's input space and prepared for it (``check_regions``, ``load_corpus``).

A pretraining corpus is prepared (resampled, filtered, normalised) by the same :class:`Preprocessor` as
``embed``; batches are random crops drawn from a seeded generator, so a resumed or distributed run sees exactly
the data it would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm_cli.atlases import load_atlas
from brainfm_cli.data.preprocess import Preprocessor
from brainfm_cli.data.voxels import check_voxel_set
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter
from brainfm_cli.io.timeseries import RegionTimeseries, discover_timeseries, read_timeseries

log = logging.getLogger("brainfm.data")


def check_same_regions(columns: list[str], first: list[str], path, first_path) -> None:
    """Every run of a corpus has the first run's regions, in the same order."""
    if list(columns) != list(first):
        raise BrainfmError(f"regions differ from the corpus's first file ({Path(first_path).name})", path=path,
                           fix="use runs parcellated with one atlas")


def read_corpus(inputs, filters: RunFilter | None = None) -> tuple[list[np.ndarray], list[str], list[str], list[Path]]:
    """Every run of a corpus as arrays over the same regions: (runs, participant ids, region names, files)."""
    files = discover_timeseries(inputs, filters)
    runs, subs, regions = [], [], None
    for f in files:
        ts = read_timeseries(f)
        if regions is None:
            regions = list(ts.data.columns)
        check_same_regions(list(ts.data.columns), regions, f, files[0])
        runs.append(ts.data.to_numpy())
        subs.append(ts.participant_id)
    return runs, subs, regions, files


def expected_regions(card) -> list[str] | None:
    """The region names a model takes, in order: the card's own list, else its built-in atlas's labels (None for
    an input space brainfm cannot name, e.g. a voxel set or the authors' A424 parcels)."""
    space = card.input
    if getattr(space, "regions", None):
        return list(space.regions)
    if space.atlas and not space.voxels and not space.atlas_labels:
        return list(load_atlas(space.atlas).labels)
    return None


def check_regions(ts: RegionTimeseries, card, expected: list[str] | None, source) -> pd.DataFrame:
    """The run's columns must be the model's regions: same count, and same names where the atlas is known."""
    cols = list(ts.data.columns)
    space = card.input
    if space.voxels and space.voxels.get("sha256"):
        check_voxel_set(space.voxels, cols, card.name, source)
        return ts.data
    if expected is not None and space.regions and cols != expected and set(expected) < set(cols):
        log.info("%s: %d of its %d regions are %s's", Path(source).name, len(expected), len(cols), card.name)
        return ts.data[expected]  # the model was trained on a subset of this atlas
    if len(cols) != space.n_regions:
        where = space.atlas or space.atlas_description
        raise BrainfmError(f"{len(cols)} regions, but {card.name} needs {space.n_regions} ({where})", path=source,
                           fix="parcellate with the model's atlas" + (f": brainfm parcellate … --atlas {space.atlas}"
                                                                       if space.atlas else f" ({where})"))
    if expected is None or cols == expected:
        return ts.data
    if set(cols) == set(expected):
        log.warning("%s: regions are in another order than %s's atlas; re-ordered", Path(source).name, card.name)
        return ts.data[expected]
    diff = [c for c in cols if c not in set(expected)][:4]
    raise BrainfmError(f"region names differ from {card.name}'s atlas {space.atlas} (e.g. {diff})", path=source,
                       fix=f"parcellate with --atlas {space.atlas}")


@dataclass
class Corpus:
    runs: list[np.ndarray]  # [regions, time] float32, model-ready
    files: list[Path]
    participants: list[str]
    length: int  # crop length in model samples
    absent: list[np.ndarray] | None = None  # per run, [regions] True for a region without data (zero-filled)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def has_absent(self) -> bool:
        return self.absent is not None and any(a.any() for a in self.absent)

    def absent_of(self, indices) -> np.ndarray:
        """``[B, regions]`` True for the regions without data in the runs ``indices``."""
        regions = self.runs[0].shape[0]
        if self.absent is None:
            return np.zeros((len(indices), regions), dtype=bool)
        return np.stack([self.absent[k] for k in indices]) if len(indices) else np.zeros((0, regions), dtype=bool)

    def subset(self, indices) -> "Corpus":
        return Corpus([self.runs[i] for i in indices], [self.files[i] for i in indices],
                      [self.participants[i] for i in indices], self.length,
                      None if self.absent is None else [self.absent[i] for i in indices])

    def sample(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Crops ``[B, regions, length]`` of the runs ``indices`` at random starts, and their valid lengths
        (``absent_of(indices)`` says which regions have no data)."""
        regions = self.runs[0].shape[0]
        out = np.zeros((len(indices), regions, self.length), dtype=np.float32)
        valid = np.empty(len(indices), dtype=np.int64)
        for i, k in enumerate(indices):
            run = self.runs[k]
            T = run.shape[1]
            if T <= self.length:
                out[i, :, :T] = run
                valid[i] = T
            else:
                start = int(rng.integers(0, T - self.length + 1))
                out[i] = run[:, start:start + self.length]
                valid[i] = self.length
        return out, valid


def load_corpus(inputs: list[str], card, length: int | None = None, filters: RunFilter | None = None,
                tr: float | None = None, missing: str = "error") -> Corpus:
    """Read and prepare every run of the corpus for ``card``'s input space."""
    prep = Preprocessor.from_space(card.input, missing=missing)
    length = length or card.input.seq_len
    expected = expected_regions(card)
    runs, files, subs, absent, short = [], [], [], [], 0
    for f in discover_timeseries(inputs, filters):
        ts = read_timeseries(f, tr=tr)
        data = check_regions(ts, card, expected, f)
        x, gone = prep.prepare(data.to_numpy(), ts.tr, f, list(data.columns))
        if x.shape[1] < length and (card.input.short_runs != "pad" or x.shape[1] < (card.input.patch or 1)):
            short += 1
            continue
        runs.append(np.ascontiguousarray(x))
        files.append(f)
        subs.append(ts.participant_id)
        absent.append(np.isin(np.arange(x.shape[0]), gone) & (missing == "mask"))  # zero: they count as data
    if short:
        log.warning("%d run(s) shorter than %d samples at TR %s s were left out", short, length, card.input.tr)
    if not runs:
        raise BrainfmError(f"no run is long enough for {card.name} ({length} samples at TR {card.input.tr} s)",
                           fix="use longer runs or a model with a shorter window")
    if any(a.any() for a in absent):
        log.info("%d run(s) have regions without data (--missing-regions %s)", sum(a.any() for a in absent), missing)
    return Corpus(runs, files, subs, length, absent)


def load_forecast_pairs(inputs: list[str], card, context: int, horizon: int, stride: int,
                        filters: RunFilter | None = None, tr: float | None = None, missing: str = "error") -> Corpus:
    """(context, future) pairs of every run, one ``[R, context + horizon]`` "run" each, every ``stride`` samples.

    A context never sees a sample after it: it is prepared from the run's raw samples up to its own last sample
    time (resampling and band-pass filters reach ahead, so a context cut from the whole prepared run would carry
    its own future), normalised with the whole run's statistics; the future is the whole prepared run's.
    """
    prep = Preprocessor.from_space(card.input, missing=missing)
    expected = expected_regions(card)
    pairs, files, subs, absent = [], [], [], []
    length = context + horizon
    for f in discover_timeseries(inputs, filters):
        ts = read_timeseries(f, tr=tr)
        data = check_regions(ts, card, expected, f)
        raw = data.to_numpy()
        tr_in = ts.tr if ts.tr is not None else tr
        full, gone, stats = prep.prepare_with_stats(raw, tr_in, f, list(data.columns))
        gone_mask = np.isin(np.arange(full.shape[0]), gone) & (missing == "mask")
        for end in range(context, full.shape[1] - horizon + 1, stride):
            if prep.tr == tr_in and prep.bandpass is None and prep.resampling == "polyphase":
                ctx = full[:, end - context:end]  # nothing reaches ahead
            else:
                known = int(np.floor((end - 1) * prep.tr / tr_in + 1e-9)) + 1  # raw samples at or before it
                part = prep.prepare_with_stats(raw[:known], tr_in, f, list(data.columns), stats)[0]
                if part.shape[1] < end:  # the last model sample lies past the last raw one: hold it
                    part = np.pad(part, ((0, 0), (0, end - part.shape[1])), mode="edge")
                ctx = part[:, end - context:end]
            pairs.append(np.ascontiguousarray(np.concatenate([ctx, full[:, end:end + horizon]], axis=1)))
            files.append(f)
            subs.append(ts.participant_id)
            absent.append(gone_mask)
    if not pairs:
        raise BrainfmError(f"no run holds a context of {context} and a horizon of {horizon} samples at TR "
                           f"{card.input.tr} s", fix="use longer runs, or a shorter --context/--horizon")
    return Corpus(pairs, files, subs, length, absent)


def split_by_participant(corpus: Corpus, fraction: float, seed: int) -> tuple[Corpus, Corpus | None]:
    """(training, validation) corpora with ``round(fraction × participants)`` participants held out, chosen by
    ``seed``; no validation when that rounds to none. A split that leaves no training participant is an error."""
    subjects = sorted(set(corpus.participants))
    n_val = int(round(fraction * len(subjects)))
    if fraction <= 0 or n_val == 0:
        return corpus, None
    if n_val >= len(subjects):
        raise BrainfmError(f"--val-fraction {fraction} holds out all {len(subjects)} participants: none is left for "
                           "training", fix="lower --val-fraction, give --val CORPUS, or add participants")
    held = set(np.random.default_rng(seed).permutation(subjects)[:n_val].tolist())
    parts = [[i for i, p in enumerate(corpus.participants) if (p in held) == keep] for keep in (False, True)]
    return corpus.subset(parts[0]), corpus.subset(parts[1])


@dataclass
class Windows:
    """Windows ``x [N, regions, length]`` cut from a corpus's runs, with each one's participant, run index and
    absent regions ``[N, regions]``."""

    x: np.ndarray
    participants: list[str]
    runs: np.ndarray
    absent: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def take(self, idx) -> "Windows":
        idx = np.asarray(idx, dtype=np.int64)
        return Windows(self.x[idx], [self.participants[i] for i in idx], self.runs[idx], self.absent[idx])


def windows(corpus: Corpus, length: int, stride: int | None = None) -> Windows:
    """Windows of every run, every ``stride`` samples from its start (default: not overlapping)."""
    xs, subs, runs = [], [], []
    for k, (run, sub) in enumerate(zip(corpus.runs, corpus.participants)):
        for start in range(0, run.shape[1] - length + 1, stride or length):
            xs.append(run[:, start:start + length])
            subs.append(sub)
            runs.append(k)
    regions = corpus.runs[0].shape[0]
    x = np.stack(xs).astype(np.float32) if xs else np.zeros((0, regions, length), dtype=np.float32)
    return Windows(x, subs, np.asarray(runs, dtype=np.int64), corpus.absent_of(runs))
