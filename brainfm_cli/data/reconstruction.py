"""Baselines for masked-value reconstruction, scored on exactly the values a model had to reconstruct.

Windows are ``[regions, time]`` arrays with a boolean ``hidden`` mask of the same shape. The baselines:
``mean`` (each region's mean over the fitting data), ``interpolation`` (linear in time within the region, from
its visible samples of the window) and ``ridge`` (each hidden value from the visible regions at the same time
point, a ridge regression whose weights and penalty come from the fitting data only, never from the scored
values). R² is ``1 − SSE/SST`` over the hidden values, with SST around their own mean.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from threadpoolctl import threadpool_limits

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # × the number of fitting time points


def r2_and_mse(truth: np.ndarray, prediction: np.ndarray) -> tuple[float, float, int]:
    """``(R², MSE, n)`` over paired values (1-D arrays); R² is NaN when the values are constant or absent."""
    truth, prediction = np.asarray(truth, float), np.asarray(prediction, float)
    n = truth.size
    if n == 0:
        return float("nan"), float("nan"), 0
    sse = float(((truth - prediction) ** 2).sum())
    sst = float(((truth - truth.mean()) ** 2).sum())
    return (1.0 - sse / sst if sst > 0 else float("nan")), sse / n, n


def interpolate(x: np.ndarray, hidden: np.ndarray) -> np.ndarray | None:
    """Linear interpolation in time of each region's hidden samples from its visible ones (the nearest visible
    value beyond the ends; the region's window mean of 0 when nothing is visible). None for one-sample windows."""
    R, T = x.shape
    if T < 2:
        return None
    out = np.zeros_like(x, dtype=np.float64)
    t = np.arange(T)
    for r in range(R):
        seen = ~hidden[r]
        out[r] = np.interp(t, t[seen], x[r, seen]) if seen.any() else 0.0
    return out


class RidgeFromVisible:
    """``x_H(t) ≈ Wᵀ x_V(t)``: hidden regions from the visible regions at the same time point, with
    ``W = (C_VV + λI)⁻¹ C_VH`` from the fitting data's covariance ``C`` (one solve per distinct visible set)."""

    def __init__(self, windows: list[np.ndarray], penalty: float = 1.0):
        data = np.concatenate([w for w in windows], axis=1).astype(np.float64)  # [R, N]
        self.mean = data.mean(axis=1)
        centred = data - self.mean[:, None]
        self.cov = centred @ centred.T
        self.n = data.shape[1]
        self.penalty = float(penalty)

    def with_penalty(self, penalty: float) -> "RidgeFromVisible":
        twin = object.__new__(RidgeFromVisible)
        twin.mean, twin.cov, twin.n, twin.penalty = self.mean, self.cov, self.n, float(penalty)
        return twin

    def predict(self, x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        """``x [R, T]`` with hidden values predicted (visible ones kept)."""
        with threadpool_limits(1):  # many small solves: threads only contend
            return self._predict(x, hidden)

    def _predict(self, x: np.ndarray, hidden: np.ndarray) -> np.ndarray:
        out = np.array(x, dtype=np.float64)
        columns, inverse = np.unique(hidden.T, axis=0, return_inverse=True)
        inverse = np.asarray(inverse).reshape(-1)
        lam = self.penalty * self.n
        for k, pattern in enumerate(columns):
            H = np.flatnonzero(pattern)
            if H.size == 0:
                continue
            V = np.flatnonzero(~pattern)
            ts = np.flatnonzero(inverse == k)
            if V.size == 0:
                out[np.ix_(H, ts)] = self.mean[H, None]
                continue
            A = self.cov[np.ix_(V, V)] + lam * np.eye(V.size)
            W = cho_solve(cho_factor(A, check_finite=False), self.cov[np.ix_(V, H)], check_finite=False)  # [V, H]
            xv = x[np.ix_(V, ts)] - self.mean[V, None]
            out[np.ix_(H, ts)] = W.T @ xv + self.mean[H, None]
        return out


def choose_penalty(groups: list[list[np.ndarray]], masks: list[list[np.ndarray]], folds: int = 5,
                   per_fold: int = 40) -> float:
    """The ridge penalty with the least squared error when each group (a participant's windows, with the masks
    drawn for them) is predicted from the others: participant-grouped cross-validation on the fitting data alone
    (leave one participant out up to ``folds`` participants, else ``folds`` folds of whole participants; at most
    ``per_fold`` scored windows per fold, evenly spaced, which bounds the cost on large corpora)."""
    if len(groups) < 2:
        return 1.0
    k = min(folds, len(groups))
    errors = np.zeros(len(PENALTIES))
    for f in range(k):
        held = [g for g in range(len(groups)) if g % k == f]
        rest = [w for h, ws in enumerate(groups) if h % k != f for w in ws]
        scored = [(w, m) for g in held for w, m in zip(groups[g], masks[g])]
        scored = [scored[i] for i in np.unique(np.linspace(0, len(scored) - 1, min(per_fold, len(scored))).astype(int))]
        base = RidgeFromVisible(rest)
        for i, penalty in enumerate(PENALTIES):
            model = base.with_penalty(penalty)
            for w, m in scored:
                errors[i] += float(((model.predict(w, m) - w)[m] ** 2).sum())
    return float(PENALTIES[int(np.argmin(errors))])
