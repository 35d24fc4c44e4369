"""Metrics and the statistics around them: corrected resampled t intervals, Holm correction, permutation p."""

from __future__ import annotations

import numpy as np
from scipy import stats


def regression_scores(y, pred) -> dict[str, np.ndarray]:
    """R², MAE and Pearson r of each column of ``pred`` (n × m) against ``y`` (n or n × m)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    y = np.broadcast_to(np.asarray(y, dtype=np.float64).reshape(len(pred), -1), pred.shape)
    resid = y - pred
    yc = y - y.mean(0)
    pc = pred - pred.mean(0)
    ss_tot = (yc**2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1 - (resid**2).sum(0) / ss_tot, np.nan)
        denom = np.sqrt(ss_tot * (pc**2).sum(0))
        r = np.where(denom > 0, (yc * pc).sum(0) / denom, np.nan)
    return {"r2": r2, "mae": np.abs(resid).mean(0), "pearson_r": r}


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.nan
    ranks = stats.rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_scores(y_idx, proba, n_classes: int) -> dict[str, float]:
    """Balanced accuracy, macro-F1 and ROC-AUC (one-vs-rest macro for several classes) from class probabilities.

    The definitions of scikit-learn's ``balanced_accuracy_score``, ``f1_score(average="macro", labels=all,
    zero_division=0)`` and ``roc_auc_score`` (NaN when a class is missing), computed directly: the permutation
    test calls this thousands of times.
    """
    y_idx = np.asarray(y_idx)
    pred = np.argmax(proba, axis=1)
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (y_idx, pred), 1)
    tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    present = support > 0
    bacc = float(np.mean(tp[present] / support[present]))
    denom = support + predicted
    f1 = float(np.mean(np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)))
    if n_classes == 2:
        auc = _binary_auc(y_idx == 1, proba[:, 1])
    else:
        auc = float(np.mean([_binary_auc(y_idx == c, proba[:, c]) for c in range(n_classes)]))
    return {"balanced_accuracy": bacc, "f1_macro": f1, "roc_auc": auc}


def corrected_t(estimate: float, fold_values: np.ndarray, test_fraction: float) -> tuple[float, float, float]:
    """95 % interval and two-sided p (against 0) of a repeated-CV estimate, Nadeau–Bengio corrected.

    ``fold_values`` are the J = repeats × folds per-fold scores (or paired differences); ``test_fraction`` is
    n_test / n_train. Folds that all score the same (e.g. a correlation of ±1 on two test participants) give no
    estimate of the spread: the interval and p are NaN (shown as n/a), not a zero-width certainty.
    """
    v = np.asarray(fold_values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    j = len(v)
    if j < 2 or not np.isfinite(estimate):
        return np.nan, np.nan, np.nan
    if np.ptp(v) == 0:
        return np.nan, np.nan, np.nan
    se = np.sqrt((1.0 / j + test_fraction) * v.var(ddof=1))
    q = stats.t.ppf(0.975, j - 1)
    p = 2 * stats.t.sf(abs(estimate) / se, j - 1)
    return estimate - q * se, estimate + q * se, float(p)


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if not len(ok):
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def permutation_p(observed: float, null: np.ndarray, lower_is_better: bool) -> float:
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    if not len(null) or not np.isfinite(observed):
        return np.nan
    as_good = (null <= observed) if lower_is_better else (null >= observed)
    return float((1 + as_good.sum()) / (1 + len(null)))
