"""Cross-validation of every model on the same folds, in parallel, with permutations and paired comparisons."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.tasks.probe.constants import CLASSIFICATION_METRICS, LOWER_IS_BETTER, METRIC_RANGE, REGRESSION_METRICS
from brainfm_cli.tasks.probe.design import ProbeSetup
from brainfm_cli.tasks.probe.estimators import chosen_param, make_probe, param_grid
from brainfm_cli.tasks.probe.splits import assign_folds, derive_seed
from brainfm_cli.tasks.probe.stats import classification_scores, corrected_t, holm, permutation_p, regression_scores


def _fit_fold(X, unit, Y_units, groups_units, train_units, test_units, task, head, n_confounds, seed, inner_folds,
              n_classes):
    """Fit on the training participants' rows, predict the test participants (rows averaged per participant).

    Classification returns a probability for every class, 0 for a class absent from the training folds.
    """
    train_rows = np.isin(unit, train_units)
    test_rows = np.isin(unit, test_units)
    est = make_probe(task, head, n_confounds, seed, inner_folds)
    est.fit(X[train_rows], Y_units[unit[train_rows]], groups=groups_units[unit[train_rows]])
    if task == "classification":
        row_pred = np.zeros((int(test_rows.sum()), n_classes))
        row_pred[:, est.classes_.astype(int)] = est.predict_proba(X[test_rows])
    else:
        row_pred = est.predict(X[test_rows])
        row_pred = row_pred.reshape(len(row_pred), -1)
    local = np.searchsorted(test_units, unit[test_rows])
    sums = np.zeros((len(test_units), row_pred.shape[1]))
    np.add.at(sums, local, row_pred)
    return sums / np.bincount(local, minlength=len(test_units))[:, None], chosen_param(est)


@dataclass
class ModelResult:
    name: str
    kind: str
    source: str
    oof: list[np.ndarray]          # per repeat: participants (regression) or participants × classes
    folds: list[np.ndarray]        # per repeat: fold of each participant
    fold_scores: dict              # metric → repeats × folds
    pooled: dict                   # metric → repeats
    null: dict                     # metric → permutations
    params: list                   # chosen hyper-parameter per repeat × fold
    strongest: int = 0             # folds whose inner CV chose the strongest penalty of the grid
    summary: dict = field(default_factory=dict)  # metric → mean, ci_low, ci_high, p_permutation


@dataclass
class ProbeResult:
    setup: ProbeSetup
    models: list[ModelResult]
    comparisons: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    settings: dict
    notes: list[str]


def _run_jobs(jobs, n_jobs: int, progress: Callable[[int, int], None] | None):
    """Run fold jobs in order, in-process or in joblib workers, with single-threaded BLAS either way.

    One BLAS thread everywhere keeps the arithmetic, hence the output bytes, identical for any ``--n-jobs``.
    """
    from joblib import Parallel, delayed, parallel_config
    from threadpoolctl import threadpool_limits

    total = len(jobs)
    out = []
    if n_jobs == 1:
        with threadpool_limits(1):
            for i, (fn, args) in enumerate(jobs):
                out.append(fn(*args))
                if progress:
                    progress(i + 1, total)
        return out
    with parallel_config(backend="loky", inner_max_num_threads=1):
        results = Parallel(n_jobs=n_jobs, return_as="generator")(delayed(fn)(*args) for fn, args in jobs)
        for i, r in enumerate(results):
            out.append(r)
            if progress:
                progress(i + 1, total)
    return out


def cross_validate(setup: ProbeSetup, repeats: int, folds: int, permutations: int, seed: int, head: str = "linear",
                   n_jobs: int = 1, inner_folds: int = 5,
                   progress: Callable[[int, int], None] | None = None) -> list[ModelResult]:
    """Repeated grouped CV of every model on the same folds, plus the permutation runs."""
    if n_jobs == 1:
        return _cross_validate(setup, [d.X for d in setup.designs], repeats, folds, permutations, seed, head,
                               n_jobs, inner_folds, progress)
    with tempfile.TemporaryDirectory(prefix="brainfm-probe-") as tmp:
        # workers map the features from disk instead of receiving (and joblib hashing) a copy per fold
        shared = []
        for i, d in enumerate(setup.designs):
            np.save(Path(tmp) / f"X{i}.npy", d.X)
            shared.append(np.load(Path(tmp) / f"X{i}.npy", mmap_mode="r"))
        return _cross_validate(setup, shared, repeats, folds, permutations, seed, head, n_jobs, inner_folds,
                               progress)


def _cross_validate(setup, Xs, repeats, folds, permutations, seed, head, n_jobs, inner_folds, progress):
    task, y, groups = setup.task, setup.y, setup.groups
    n = len(y)
    n_conf = len(setup.confound_names)
    outer = [assign_folds(task, y, groups, folds, derive_seed(seed, 0, r)) for r in range(repeats)]
    perm_y = np.array([y[np.random.default_rng(derive_seed(seed, 2, p)).permutation(n)]
                       for p in range(permutations)]).reshape(permutations, n)
    vectorised = task == "regression" and head == "linear"
    perm_folds = ([outer[0]] * permutations if vectorised else
                  [assign_folds(task, yp, groups, folds, derive_seed(seed, 0, 0)) for yp in perm_y])
    jobs, keys = [], []
    for mi, d in enumerate(setup.designs):
        for r in range(repeats):
            Y = np.column_stack([y, perm_y.T]) if (vectorised and r == 0 and permutations) else y
            for k in range(folds):
                train, test = np.flatnonzero(outer[r] != k), np.flatnonzero(outer[r] == k)
                jobs.append((_fit_fold, (Xs[mi], d.unit, Y, groups, train, test, task, head, n_conf,
                                         derive_seed(seed, 1, r, k), inner_folds, len(setup.classes))))
                keys.append((mi, "cv", r, k))
        if not vectorised:
            for p in range(permutations):
                for k in range(folds):
                    train, test = np.flatnonzero(perm_folds[p] != k), np.flatnonzero(perm_folds[p] == k)
                    jobs.append((_fit_fold, (Xs[mi], d.unit, perm_y[p], groups, train, test, task, head, n_conf,
                                             derive_seed(seed, 1, 0, k), inner_folds, len(setup.classes))))
                    keys.append((mi, "perm", p, k))
    results = _run_jobs(jobs, n_jobs, progress)
    width = len(setup.classes) if task == "classification" else 1
    models = []
    for mi, d in enumerate(setup.designs):
        oof = [np.zeros((n, width)) for _ in range(repeats)]
        perm_oof = [np.zeros((n, width)) for _ in range(permutations)]
        params = [[None] * folds for _ in range(repeats)]
        strongest = 0
        for (m, kind, r, k), (pred, (param, index)) in zip(keys, results):
            if m != mi:
                continue
            if kind == "cv":
                test = np.flatnonzero(outer[r] == k)
                oof[r][test] = pred[:, :1] if task == "regression" else pred
                params[r][k] = param
                strongest += index == 0
                if vectorised and r == 0 and permutations:
                    for p in range(permutations):
                        perm_oof[p][test] = pred[:, 1 + p: 2 + p]
            else:
                test = np.flatnonzero(perm_folds[r] == k)
                perm_oof[r][test] = pred
        if task == "regression":
            oof = [o[:, 0] for o in oof]
            perm_oof = [o[:, 0] for o in perm_oof]
        fs = d.features
        models.append(ModelResult(name=fs.name, kind=fs.kind, source=fs.source, oof=oof, folds=outer,
                                  fold_scores={}, pooled={}, null={}, params=params, strongest=strongest))
        _score(models[-1], setup, perm_y, perm_oof, folds)
    return models


def _scores(task, y, pred, n_classes):
    if task == "regression":
        return {k: float(v[0]) for k, v in regression_scores(y, pred).items()}
    return classification_scores(y, pred, n_classes)


def _score(model: ModelResult, setup: ProbeSetup, perm_y, perm_oof, folds):
    task, y = setup.task, setup.y
    metrics = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    nc = len(setup.classes)
    repeats = len(model.oof)
    model.fold_scores = {m: np.full((repeats, folds), np.nan) for m in metrics}
    model.pooled = {m: np.full(repeats, np.nan) for m in metrics}
    for r in range(repeats):
        for m, v in _scores(task, y, model.oof[r], nc).items():
            model.pooled[m][r] = v
        for k in range(folds):
            test = model.folds[r] == k
            for m, v in _scores(task, y[test], model.oof[r][test], nc).items():
                model.fold_scores[m][r, k] = v
    if task == "regression" and len(perm_oof):
        null = regression_scores(perm_y.T, np.column_stack(perm_oof))
        model.null = {m: null[m] for m in metrics}
    else:
        model.null = {m: np.array([_scores(task, perm_y[p], perm_oof[p], nc)[m] for p in range(len(perm_oof))])
                      for m in metrics}
    test_fraction = 1.0 / (folds - 1)
    for m in metrics:
        mean = float(np.nanmean(model.pooled[m])) if np.isfinite(model.pooled[m]).any() else np.nan
        lo, hi, _ = corrected_t(mean, model.fold_scores[m], test_fraction)
        lo_b, hi_b = METRIC_RANGE[m]
        model.summary[m] = {
            "mean": mean, "ci_low": float(np.clip(lo, lo_b, hi_b)) if np.isfinite(lo) else np.nan,
            "ci_high": float(np.clip(hi, lo_b, hi_b)) if np.isfinite(hi) else np.nan,
            "p_permutation": permutation_p(model.pooled[m][0], model.null[m], m in LOWER_IS_BETTER)
            if len(perm_oof) else np.nan,
        }


def compare(models: list[ModelResult], metrics, folds: int) -> pd.DataFrame:
    """Paired corrected t-tests on the same folds: every embedding against the FC baseline (or every pair without
    one), Holm-corrected within each metric."""
    base = [m for m in models if m.kind == "fc"]
    embeddings = [m for m in models if m.kind != "fc"]
    if base:
        pairs = [(e, base[0]) for e in embeddings]
    else:
        pairs = [(a, b) for i, a in enumerate(embeddings) for b in embeddings[i + 1:]]
    rows = []
    for metric in metrics:
        block = []
        for a, b in pairs:
            diff = float(np.nanmean(a.pooled[metric] - b.pooled[metric]))
            lo, hi, p = corrected_t(diff, a.fold_scores[metric] - b.fold_scores[metric], 1.0 / (folds - 1))
            block.append({"model": a.name, "reference": b.name, "metric": metric, "difference": diff,
                          "ci_low": lo, "ci_high": hi, "p": p})
        for row, ph in zip(block, holm([r["p"] for r in block])):
            row["p_holm"] = ph
        rows.extend(block)
    cols = ["model", "reference", "metric", "difference", "ci_low", "ci_high", "p", "p_holm"]
    return pd.DataFrame(rows, columns=cols)


def protocol(result: ProbeResult) -> dict:
    s, st = result.setup, result.settings
    grid = param_grid(s.task, st["head"])
    values = (f"{len(grid['values'])} values ({grid['values'][0]:g} to {grid['values'][-1]:g})"
              if isinstance(grid["values"], list) else
              f"{len(grid['scale'])} values, {grid['values']} for scale in {grid['scale'][0]:g} … {grid['scale'][-1]:g}")
    model = ({"regression": "ridge regression", "classification": "class-balanced L2 logistic regression"}[s.task]
             if st["head"] == "linear" else "MLP with one hidden layer of 64 units (scikit-learn)")
    return {
        "folds": f"{st['folds']}-fold {'stratified ' if s.task == 'classification' else ''}CV grouped by "
                 f"{st['group_by'] or 'participant'}, repeated {st['repeats']} times with fresh shuffles; the same "
                 f"folds for every model.",
        "aggregate": ("A participant's rows are averaged before fitting." if st["aggregate"] == "mean" else
                      "Models are fitted on rows; predictions are averaged per participant."),
        "preprocessing": "Confounds regressed out of the features, then standardisation, both fitted on the training "
                         "folds; when features outnumber training rows, an exact rotation onto the training rows' "
                         "span.",
        "model": f"Model: {model}.",
        "hyper_parameter": f"{grid['name']} chosen among {values} by a "
                           f"{st['inner_folds']}-fold inner CV grouped like the outer one, on the standardised "
                           f"training folds (regression: mean squared error; classification: log-loss).",
    }
