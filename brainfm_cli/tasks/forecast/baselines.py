"""Forecasting baselines and metrics: what a model that predicts future brain activity has to beat.

Runs are model-ready ``[regions, time]`` arrays (resampled, normalised); nothing here preprocesses them. A
forecast maps a context ``[N, R, C]`` to the next ``H`` samples ``[N, R, H]``. Baselines follow scikit-learn's
shape (``__init__`` stores its arguments, ``fit`` learns attributes ending in ``_`` from the TRAINING runs only and
returns ``self``): ``mean``, ``persistence``, ``ridge_ar`` (each region from its own past), ``var`` (every region
from all regions' past) and ``lstm``. The ridge models choose their lags and penalty by participant-grouped
cross-validation on the training runs, never on the windows being scored. ``forecast_metrics`` scores a forecast
per horizon step (R², Pearson r, MSE) with a final row of the means over the steps (BrainLM's Table 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from brainfm_cli.data.reconstruction import r2_and_mse
from brainfm_cli.errors import BrainfmError

AR_LAGS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
VAR_LAGS = (1, 2, 3, 4, 6, 8)
PENALTIES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # × the number of fitting rows


@dataclass
class ForecastWindows:
    """Pairs of a context ``[N, R, C]`` and the ``H`` samples that follow it ``[N, R, H]`` (float32), with the
    participant each window came from."""

    context: np.ndarray
    future: np.ndarray
    participants: list[str]

    def __len__(self) -> int:
        return len(self.participants)


def _check_runs(runs: Sequence[np.ndarray], participants: Sequence[str]) -> list[np.ndarray]:
    """Runs as float64 ``[R, T]`` arrays, one participant each, all with the same regions."""
    if len(runs) != len(participants):
        raise BrainfmError(f"{len(runs)} runs but {len(participants)} participant labels",
                           fix="give one participant label per run")
    if not len(runs):
        raise BrainfmError("no runs to forecast from", fix="give at least one run")
    out = [np.asarray(r, dtype=np.float64) for r in runs]
    if any(r.ndim != 2 for r in out):
        raise BrainfmError("a run must be a [regions, time] array",
                           fix="pass each run as a 2-D array, regions first (model-ready, as Preprocessor.prepare "
                           "returns it)")
    counts = sorted({r.shape[0] for r in out})
    if len(counts) > 1:
        raise BrainfmError(f"the runs have different numbers of regions: {counts}",
                           fix="parcellate every run with the same atlas (and the same --missing-regions choice)")
    if any(not np.isfinite(r).all() for r in out):
        raise BrainfmError("a run holds NaN or infinite values",
                           fix="prepare the runs first (Preprocessor.prepare fills regions without data with 0)")
    return out


def _check_lengths(context: int, horizon: int, stride: int | None = None) -> None:
    if context < 1 or horizon < 1 or (stride is not None and stride < 1):
        raise BrainfmError(f"context ({context}), horizon ({horizon}) and stride ({stride}) must be positive",
                           fix="e.g. --context 180 --horizon 20")


def forecast_windows(runs: Sequence[np.ndarray], participants: Sequence[str], context: int, horizon: int,
                     stride: int | None = None) -> ForecastWindows:
    """Every (context, next ``horizon``) pair of every run, starting at 0 and every ``stride`` samples (default
    ``context + horizon``: windows that do not overlap). Runs shorter than ``context + horizon`` give none."""
    _check_lengths(context, horizon, stride)
    xs = _check_runs(runs, participants)
    length, stride = context + horizon, stride or context + horizon
    if all(x.shape[1] < length for x in xs):
        longest = max(x.shape[1] for x in xs)
        raise BrainfmError(f"context + horizon ({context} + {horizon} samples) is longer than every run (the "
                           f"longest has {longest} samples)",
                           fix=f"shorten --context or --horizon to fit in {longest} samples, or use longer runs")
    ctx, fut, subs = [], [], []
    for x, p in zip(xs, participants):
        for start in range(0, x.shape[1] - length + 1, stride):
            ctx.append(x[:, start:start + context])
            fut.append(x[:, start + context:start + length])
            subs.append(str(p))
    return ForecastWindows(np.stack(ctx).astype(np.float32), np.stack(fut).astype(np.float32), subs)


@dataclass
class _Corpus:
    """What a baseline learns from: whole runs (a training pair at every position) or given windows (one pair
    each); ``groups`` names the participant of each run or window."""

    runs: list[np.ndarray] | None
    windows: ForecastWindows | None
    groups: list[str]

    def values(self) -> np.ndarray:
        """Every training sample, ``[R, samples]``."""
        if self.runs is not None:
            return np.concatenate(self.runs, axis=1)
        w = self.windows
        return np.concatenate([w.context, w.future], axis=2).transpose(1, 0, 2).reshape(w.context.shape[1], -1)

    @property
    def regions(self) -> int:
        return self.windows.context.shape[1] if self.windows is not None else self.runs[0].shape[0]

    def max_context(self) -> int:
        return self.windows.context.shape[2] if self.windows is not None else max(x.shape[1] for x in self.runs)


def _corpus(train, participants, horizon: int) -> _Corpus:
    """Training runs (``participants``: one per run; None: each run its own group) or ForecastWindows."""
    if not isinstance(train, ForecastWindows):
        participants = [f"run-{i}" for i in range(len(train))] if participants is None else list(participants)
        return _Corpus(_check_runs(list(train), participants), None, [str(p) for p in participants])
    c, f = np.asarray(train.context), np.asarray(train.future)
    if c.ndim != 3 or f.shape != c.shape[:2] + (horizon,) or len(train.participants) != len(c) or not len(c):
        raise BrainfmError(f"training windows of shapes {list(c.shape)} → {list(f.shape)} with "
                           f"{len(train.participants)} participant labels, for a horizon of {horizon}",
                           fix="cut the training windows with forecast_windows and the same horizon")
    if not (np.isfinite(c).all() and np.isfinite(f).all()):
        raise BrainfmError("training windows hold NaN or infinite values", fix="prepare the runs first")
    return _Corpus(None, ForecastWindows(c, f, list(train.participants)), [str(p) for p in train.participants])


class Forecaster:
    """The shared shape: ``context`` and ``horizon`` in samples, a ``seed`` for anything random.

    ``fit`` takes training runs ``[R, T]`` with their participants (every position gives a training pair) or a
    ForecastWindows (each window is one pair, its context prepared however the caller chose)."""

    def __init__(self, context: int, horizon: int, seed: int = 0):
        self.context = context
        self.horizon = horizon
        self.seed = seed

    def fit(self, train, participants: Sequence[str] | None = None) -> "Forecaster":
        """Learn from the training runs (or windows); returns ``self``."""
        _check_lengths(self.context, self.horizon)
        corpus = _corpus(train, participants, self.horizon)
        self.n_regions_ = corpus.regions
        self._fit(corpus)
        return self

    def _fit(self, corpus: _Corpus) -> None:
        pass

    def _contexts(self, context: np.ndarray, needed: int = 1) -> np.ndarray:
        if not hasattr(self, "n_regions_"):
            raise BrainfmError(f"{type(self).__name__} is not fitted", fix="call fit on the training runs first")
        x = np.asarray(context, dtype=np.float64)
        if x.ndim != 3 or x.shape[1] != self.n_regions_ or x.shape[2] < needed:
            raise BrainfmError(f"contexts of shape {list(x.shape)} do not fit a forecaster trained on "
                               f"{self.n_regions_} regions needing {needed} samples of context",
                               fix=f"pass contexts as [windows, {self.n_regions_} regions, ≥{needed} samples], "
                               "prepared like the training runs (same atlas)")
        return x

    def predict(self, context: np.ndarray) -> np.ndarray:
        """Contexts ``[N, R, C]`` → forecasts ``[N, R, H]`` (float32)."""
        raise NotImplementedError


class MeanForecaster(Forecaster):
    """Each region's mean over the training corpus, at every future step (R² ≈ 0 by construction)."""

    def _fit(self, corpus):
        self.mean_ = corpus.values().mean(axis=1)

    def predict(self, context):
        x = self._contexts(context)
        return np.broadcast_to(self.mean_[None, :, None], (len(x), self.n_regions_, self.horizon)).astype(np.float32)


class PersistenceForecaster(Forecaster):
    """The last context value, repeated over the horizon."""

    def predict(self, context):
        x = self._contexts(context)
        return np.repeat(x[:, :, -1:], self.horizon, axis=2).astype(np.float32)


def _lagged(corpus: _Corpus, lags: int, horizon: int, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs ``X [n, R, lags]`` (the last ``lags`` samples, oldest first) → ``Y [n, R, horizon]`` (the
    samples that follow), with each pair's participant. From runs: every position ``t = first … T-1-horizon``
    (``first ≥ lags - 1``); from windows: one pair per window (``first`` unused)."""
    if corpus.windows is not None:
        w = corpus.windows
        return (w.context[:, :, w.context.shape[2] - lags:].astype(np.float64), w.future.astype(np.float64),
                np.asarray(corpus.groups))
    xs, ys, groups = [], [], []
    for x, g in zip(corpus.runs, corpus.groups):
        if x.shape[1] - horizon <= first:
            continue
        w = sliding_window_view(x, lags + horizon, axis=1)[:, first - lags + 1:]  # [R, n, lags + horizon]
        xs.append(w[..., :lags].transpose(1, 0, 2))
        ys.append(w[..., lags:].transpose(1, 0, 2))
        groups += [g] * w.shape[1]
    if not xs:
        raise BrainfmError(f"no training run is longer than {first + 1} + {horizon} samples, which the ridge "
                           "baselines need", fix="train on longer runs, or shorten the horizon or the lags")
    return np.concatenate(xs), np.concatenate(ys), np.asarray(groups)


def _folds(groups: Sequence[str], k: int) -> dict[str, int]:
    """Participant → fold: leave one participant out when there are at most ``k``, else ``k`` folds of whole
    participants (sorted names dealt in turn)."""
    names = sorted(set(groups))
    if len(names) < 2:
        raise BrainfmError("choosing the lags and penalty of the ridge baselines needs at least two training "
                           "participants (cross-validation leaves participants out)",
                           fix="train on runs of two or more participants")
    return {p: i % min(k, len(names)) for i, p in enumerate(names)}


class _LaggedRidge(Forecaster):
    """Ridge regression of the next ``horizon`` samples on the last ``lags`` samples (direct multi-step: one
    coefficient vector per step), the lags and penalty chosen by participant-grouped CV on the training runs.

    Subclasses lay the lagged design out as a batch of ridge problems ``X [B, n, F] → Y [B, n, K]``; features are
    ordered by lag (oldest first), so the last ``p`` lags are the last ``p * _width`` columns."""

    def __init__(self, context: int, horizon: int, seed: int = 0, lags: Sequence[int] = AR_LAGS,
                 penalties: Sequence[float] = PENALTIES, folds: int = 5):
        super().__init__(context, horizon, seed)
        self.lags = lags
        self.penalties = penalties
        self.folds = folds

    def _layout(self, X: np.ndarray, Y: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _unlayout(self, P: np.ndarray, n: int) -> np.ndarray:
        raise NotImplementedError

    def _fit(self, corpus):
        limit = min(self.context, corpus.max_context())
        grid = sorted({int(p) for p in self.lags if 1 <= int(p) <= limit})
        if not grid:
            raise BrainfmError(f"no lag in {list(self.lags)} fits in a context of {limit} samples",
                               fix="give lags between 1 and the context length")
        self.lag_grid_ = grid
        self.cv_mse_ = self._cross_validate(corpus, grid)
        i, j = np.unravel_index(np.nanargmin(self.cv_mse_), self.cv_mse_.shape)
        self.lags_, self.penalty_ = grid[i], float(self.penalties[j])
        X3, Y3, _ = _lagged(corpus, self.lags_, self.horizon, self.lags_ - 1)
        X, Y = self._layout(X3, Y3)
        self.alpha_ = self.penalty_ * X.shape[1]
        mx, my = X.mean(axis=1, keepdims=True), Y.mean(axis=1, keepdims=True)
        Xc = X - mx
        if self._dual(X.shape[1], X.shape[2]):  # (XᵀX + αI)⁻¹XᵀY = Xᵀ(XXᵀ + αI)⁻¹Y, an n×n solve
            kernel = Xc @ Xc.transpose(0, 2, 1) + self.alpha_ * np.eye(X.shape[1])
            self.coef_ = Xc.transpose(0, 2, 1) @ np.linalg.solve(kernel, Y - my)  # [B, F, K]
        else:
            gram = Xc.transpose(0, 2, 1) @ Xc + self.alpha_ * np.eye(X.shape[2])
            self.coef_ = np.linalg.solve(gram, Xc.transpose(0, 2, 1) @ (Y - my))  # [B, F, K]
        self.intercept_ = my - mx @ self.coef_  # [B, 1, K]

    _form = "auto"  # "primal" or "dual" forces one form of the ridge solve (the tests compare them)

    def _dual(self, rows: int, features: int) -> bool:
        """Solve in the dual (from the kernel of the rows) when there are fewer rows than features: the same ridge
        solution, from an ``n × n`` problem instead of ``F × F``."""
        return rows < features if self._form == "auto" else self._form == "dual"

    def _cross_validate(self, corpus, grid) -> np.ndarray:
        """Held-out MSE ``[lags, penalties]``: each fold's participants predicted from the others' rows (centred
        by the others' means, so the intercept is not penalised); every pair is scored on the same rows (those the
        longest lag allows). A lag with more features than these rows is solved in the dual, others in the primal."""
        fold_of = _folds(corpus.groups, self.folds)
        top = grid[-1]
        X3, Y3, row_groups = _lagged(corpus, top, self.horizon, top - 1)
        row_fold = np.array([fold_of[g] for g in row_groups], dtype=int)
        if len(np.unique(row_fold)) < 2:
            raise BrainfmError(f"too few training runs are longer than {top} + {self.horizon} samples to choose "
                               "the lags by cross-validation", fix="train on longer runs or use fewer lags")
        width = self._width(X3)
        parts = [self._layout(X3[row_fold == f], Y3[row_fold == f]) for f in np.unique(row_fold)]
        dual = [self._dual(sum(X.shape[1] for X, _ in parts), p * width) for p in grid]
        primal = _PrimalFolds(parts, max(p for p, d in zip(grid, dual) if not d) * width) if not all(dual) else None
        dual_folds = _DualFolds(parts, width) if any(dual) else None
        sse = np.zeros((len(grid), len(self.penalties)))
        for i, p in enumerate(grid):
            for f, (_, Y) in enumerate(parts):
                preds = dual_folds.predictions(f, p, self.penalties) if dual[i] else \
                    primal.predictions(f, p * width, self.penalties)
                sse[i] += [float(((Y - pred) ** 2).sum()) for pred in preds]
        return sse / sum(Y.size for _, Y in parts)

    def _width(self, X3: np.ndarray) -> int:
        return 1

    def predict(self, context):
        x = self._contexts(context, self.lags_)
        X, _ = self._layout(x[:, :, x.shape[2] - self.lags_:], None)
        return self._unlayout(X @ self.coef_ + self.intercept_, len(x)).astype(np.float32)


class _PrimalFolds:
    """Ridge solves of ``features × features`` for each fold from the other folds' sufficient statistics (the
    totals less the fold's own) over the last ``columns`` features."""

    def __init__(self, parts, columns: int):
        self.parts, self.columns = parts, columns
        self.held = []
        for X, Y in parts:
            Xs = X[:, :, X.shape[2] - columns:]
            self.held.append((Xs.transpose(0, 2, 1) @ Xs, Xs.transpose(0, 2, 1) @ Y, Xs.sum(1), Y.sum(1), X.shape[1]))
        self.total = [sum(h[k] for h in self.held) for k in range(5)]

    def predictions(self, f: int, features: int, penalties):
        """Fold ``f`` predicted from the last ``features``: ``(X − x̄) V (E + λ)⁻¹ Vᵀ C + ȳ`` for each penalty, with
        ``V E Vᵀ`` the training rows' centred Gram and ``C`` their centred cross-products with the targets."""
        cols = slice(self.columns - features, self.columns)
        sxx, sxy, sx, sy, n = (t - h for t, h in zip(self.total, self.held[f]))
        mx, my = sx[:, cols] / n, sy / n
        gram = sxx[:, cols, cols] - n * mx[:, :, None] * mx[:, None, :]
        cross = sxy[:, cols] - n * mx[:, :, None] * my[:, None, :]
        e, V = np.linalg.eigh(gram)
        X = self.parts[f][0]
        XV, Vc = (X[:, :, X.shape[2] - features:] - mx[:, None, :]) @ V, V.transpose(0, 2, 1) @ cross
        for s in penalties:
            yield (XV / (np.maximum(e, 0) + s * n)[:, None, :]) @ Vc + my[:, None, :]


class _DualFolds:
    """Ridge solves of ``rows × rows`` for each fold from the kernel ``X Xᵀ`` of every row (the folds' rows in
    turn) over the last ``lags`` lags, grown one lag block at a time (features are lag-major, ``width`` a lag)."""

    def __init__(self, parts, width: int):
        self.X = np.concatenate([X for X, _ in parts], axis=1)
        self.Y = np.concatenate([Y for _, Y in parts], axis=1)
        self.bounds = np.cumsum([0] + [X.shape[1] for X, _ in parts])
        self.width, self.lags = width, 0
        self.kernel = np.zeros((self.X.shape[0], self.X.shape[1], self.X.shape[1]))

    def predictions(self, f: int, lags: int, penalties):
        """Fold ``f`` predicted from the last ``lags`` lags: ``Kₕ U (D + λ)⁻¹ Uᵀ (Y − ȳ) + ȳ`` for each penalty, with
        ``U D Uᵀ`` the training rows' kernel and ``Kₕ`` the fold's rows against them, both centred by the
        training means."""
        F, w = self.X.shape[2], self.width
        for k in range(self.lags, lags):
            block = self.X[:, :, F - (k + 1) * w:F - k * w]
            self.kernel += block @ block.transpose(0, 2, 1)
        self.lags = lags
        lo, hi = self.bounds[f], self.bounds[f + 1]
        train = np.r_[0:lo, hi:self.X.shape[1]]
        K, Kh = self.kernel[:, train][:, :, train], self.kernel[:, lo:hi][:, :, train]
        col = K.mean(axis=1, keepdims=True)  # [B, 1, n]: each training row's mean product with the training rows
        grand = col.mean(axis=2, keepdims=True)
        d, U = np.linalg.eigh(K - col - col.transpose(0, 2, 1) + grand)
        Y = self.Y[:, train]
        my = Y.mean(axis=1, keepdims=True)
        HU, Uy = (Kh - Kh.mean(axis=2, keepdims=True) - col + grand) @ U, U.transpose(0, 2, 1) @ (Y - my)
        for s in penalties:
            yield (HU / (np.maximum(d, 0) + s * len(train))[:, None, :]) @ Uy + my


class RidgeAR(_LaggedRidge):
    """Univariate ridge auto-regression: each region's future from its own last ``lags`` samples in the context.

    ``pooled=True`` (default) shares one coefficient vector per horizon step across regions (one ridge problem on
    every region's rows); ``pooled=False`` fits each region its own. Lags and penalty are one pair for all regions.
    """

    def __init__(self, context: int, horizon: int, seed: int = 0, lags: Sequence[int] = AR_LAGS,
                 penalties: Sequence[float] = PENALTIES, folds: int = 5, pooled: bool = True):
        super().__init__(context, horizon, seed, lags, penalties, folds)
        self.pooled = pooled

    def _layout(self, X, Y):
        n, R = X.shape[:2]
        if self.pooled:
            return X.reshape(1, n * R, -1), None if Y is None else Y.reshape(1, n * R, -1)
        return X.transpose(1, 0, 2), None if Y is None else Y.transpose(1, 0, 2)

    def _unlayout(self, P, n):
        return P.reshape(n, -1, self.horizon) if self.pooled else P.transpose(1, 0, 2)


class VARForecaster(_LaggedRidge):
    """Ridge vector auto-regression: every region's future from all regions' last ``lags`` samples
    (``lags × R`` features, lag-major), direct multi-step, lags and penalty chosen by grouped CV."""

    def __init__(self, context: int, horizon: int, seed: int = 0, lags: Sequence[int] = VAR_LAGS,
                 penalties: Sequence[float] = PENALTIES, folds: int = 5):
        super().__init__(context, horizon, seed, lags, penalties, folds)

    def _width(self, X3):
        return X3.shape[1]

    def _layout(self, X, Y):
        n = X.shape[0]
        return X.transpose(0, 2, 1).reshape(1, n, -1), None if Y is None else Y.reshape(1, n, -1)

    def _unlayout(self, P, n):
        return P.reshape(n, self.n_regions_, self.horizon)


class LSTMForecaster(Forecaster):
    """A one-layer LSTM reading all regions at each context step; a linear read-out of its last hidden state gives
    the ``horizon`` future samples of every region.

    Trained with Adam on MSE (gradient norm clipped at 1) for at most ``steps`` batches drawn from every position of
    the training runs (or from the given windows). A ``validation`` share of the training participants (at least
    one, when there are two or more) is held out: every ``eval_every`` steps the MSE on their windows is measured
    and the best state is kept, stopping after ``patience`` evaluations without improvement — on a few
    participants an LSTM otherwise overfits them and forecasts held-out people worse than their mean.
    Initialisation, the validation draw and batch sampling are seeded, so a CPU fit is reproducible."""

    def __init__(self, context: int, horizon: int, seed: int = 0, hidden: int = 64, steps: int = 500,
                 batch_size: int = 32, lr: float = 1e-3, validation: float = 0.2, eval_every: int = 25,
                 patience: int = 4):
        super().__init__(context, horizon, seed)
        self.hidden = hidden
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.validation = validation
        self.eval_every = eval_every
        self.patience = patience

    def _fit(self, corpus):
        import torch

        if corpus.windows is not None:
            w = corpus.windows
            runs, context = list(np.concatenate([w.context, w.future], axis=2)), w.context.shape[2]
        else:
            runs, context = corpus.runs, self.context
        length = context + self.horizon
        names = sorted(set(corpus.groups))
        n_val = min(len(names) - 1, max(1, round(self.validation * len(names)))) if self.validation > 0 else 0
        held = set(np.random.default_rng(self.seed).choice(names, n_val, replace=False)) if n_val else set()
        starts = [(i, s) for i, x in enumerate(runs) if corpus.groups[i] not in held
                  for s in range(x.shape[1] - length + 1)]
        if not starts:
            raise BrainfmError(f"no training run holds context + horizon ({length} samples)",
                               fix="train on longer runs, or shorten the context or horizon")
        data = [torch.from_numpy(np.ascontiguousarray(x.T, dtype=np.float32)) for x in runs]  # [T, R]
        val = [data[i][s:s + length] for i, x in enumerate(runs) if corpus.groups[i] in held
               for s in range(0, x.shape[1] - length + 1, self.horizon)]
        val = torch.stack(val) if val else None
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _lstm_net(self.n_regions_, self.hidden, self.horizon)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        mse = torch.nn.functional.mse_loss
        self.loss_, self.val_loss_, best, self.best_step_ = [], [], None, self.steps
        for step in range(1, self.steps + 1):
            pick = torch.randint(len(starts), (self.batch_size,), generator=g).tolist()
            batch = torch.stack([data[i][s:s + length] for i, s in (starts[k] for k in pick)])
            loss = mse(net(batch[:, :context]), batch[:, context:].transpose(1, 2))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            self.loss_.append(loss.item())
            if val is not None and (step % self.eval_every == 0 or step == self.steps):
                with torch.no_grad():
                    value = mse(net(val[:, :context]), val[:, context:].transpose(1, 2)).item()
                self.val_loss_.append((step, value))
                if best is None or value < best[1]:
                    best, stale = (step, value, {k: v.clone() for k, v in net.state_dict().items()}), 0
                elif (stale := stale + 1) >= self.patience:
                    break
        if best is not None:
            net.load_state_dict(best[2])
            self.best_step_ = best[0]
        self.net_ = net.eval()

    def predict(self, context):
        import torch

        x = torch.from_numpy(np.ascontiguousarray(self._contexts(context).transpose(0, 2, 1), dtype=np.float32))
        with torch.inference_mode():
            return np.concatenate([self.net_(x[i:i + 256]).numpy() for i in range(0, len(x), 256)]
                                  or [np.zeros((0, self.n_regions_, self.horizon), np.float32)])


def _lstm_net(regions: int, hidden: int, horizon: int):
    """``[N, C, R] → [N, R, H]``: LSTM over time, linear read-out of the last hidden state."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(regions, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, regions * horizon)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(h[-1]).view(len(x), regions, horizon)

    return Net()


BASELINES = {"mean": MeanForecaster, "persistence": PersistenceForecaster, "ridge_ar": RidgeAR,
             "var": VARForecaster, "lstm": LSTMForecaster}


def forecast_metrics(truth: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    """A row per horizon step (1…H): R² (``1 − SSE/SST`` over every window × region value of that step, SST around
    their own mean), Pearson r over the same pairs, MSE and the number of windows; then ``step = "mean"`` with the
    mean of each metric over the steps."""
    truth, pred = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    if truth.shape != pred.shape or truth.ndim != 3:
        raise BrainfmError(f"truth {list(truth.shape)} and forecast {list(pred.shape)} must both be "
                           "[windows, regions, horizon]", fix="forecast the same windows the truth comes from")
    rows = []
    for h in range(truth.shape[2]):
        a, b = truth[:, :, h].ravel(), pred[:, :, h].ravel()
        r2, mse, _ = r2_and_mse(a, b)
        rows.append({"step": h + 1, "r2": r2, "pearson_r": _pearson(a, b), "mse": mse, "n_windows": len(truth)})
    table = pd.DataFrame(rows, columns=["step", "r2", "pearson_r", "mse", "n_windows"])
    mean = {"step": "mean", **table[["r2", "pearson_r", "mse"]].mean(skipna=False).to_dict(), "n_windows": len(truth)}
    return pd.concat([table.astype({"step": object}), pd.DataFrame([mean])], ignore_index=True)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant or empty."""
    if not a.size:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else float("nan")
