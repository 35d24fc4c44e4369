"""A pretraining corpus: every run of a set of region time series, model-ready, with random crops.

Runs are read once, checked against the model's input space and prepared (resampled, filtered, normalised)
by the same :class:`Preprocessor` as ``embed``; batches are random crops drawn from a seeded generator, so a
resumed or distributed run sees exactly the data it would have seen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainfm_cli.data.bids import RunFilter
from brainfm_cli.data.preprocess import Preprocessor
from brainfm_cli.errors import BrainfmError

log = logging.getLogger("brainfm.pretrain")


@dataclass
class Corpus:
    runs: list[np.ndarray]  # [regions, time] float32, model-ready
    files: list[Path]
    participants: list[str]
    length: int  # crop length in model samples

    def __len__(self) -> int:
        return len(self.runs)

    def sample(self, indices: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Crops ``[B, regions, length]`` of the runs ``indices`` at random starts, and their valid lengths."""
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
    from brainfm_cli.atlases import load_atlas
    from brainfm_cli.data.timeseries import discover_timeseries, read_timeseries
    from brainfm_cli.tasks.embed import check_regions

    prep = Preprocessor.from_space(card.input, missing=missing)
    length = length or card.input.seq_len
    expected = list(load_atlas(card.input.atlas).labels) if card.input.atlas else None
    runs, files, subs, short = [], [], [], 0
    for f in discover_timeseries(inputs, filters):
        ts = read_timeseries(f, tr=tr)
        data = check_regions(ts, card, expected, f)
        x, _ = prep.prepare(data.to_numpy(), ts.tr, f, list(data.columns))
        if x.shape[1] < length and (card.input.short_runs != "pad" or x.shape[1] < (card.input.patch or 1)):
            short += 1
            continue
        runs.append(np.ascontiguousarray(x))
        files.append(f)
        subs.append(ts.participant_id)
    if short:
        log.warning("%d run(s) shorter than %d samples at TR %s s were left out", short, length, card.input.tr)
    if not runs:
        raise BrainfmError(f"no run is long enough for {card.name} ({length} samples at TR {card.input.tr} s)",
                           fix="use longer runs or a model with a shorter window")
    return Corpus(runs, files, subs, length)
