"""The ``probe`` task: how well do embeddings predict a phenotype, next to the functional-connectivity baseline?

Every model (each embedding file and the FC baseline) is evaluated on the same participants and the same folds.
Folds are grouped by participant (or by site), so one person's windows or runs never sit on both sides of a split.
Confound removal, standardisation and the choice of regularisation use the training folds only (nested). The
statistics are described in ``METHOD``, which the report and the sidecar quote.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import linalg, stats
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from brainfm_cli import __version__
from brainfm_cli.data.io import read_json, read_tsv, sidecar_path
from brainfm_cli.errors import BrainfmError


ID_COLUMNS = ("participant_id", "session_id", "task", "run", "window", "token", "source")
REGRESSION_METRICS = ("r2", "mae", "pearson_r")
CLASSIFICATION_METRICS = ("balanced_accuracy", "f1_macro", "roc_auc")
LOWER_IS_BETTER = frozenset({"mae"})
METRIC_RANGE = {"r2": (-np.inf, 1.0), "mae": (0.0, np.inf), "pearson_r": (-1.0, 1.0),
                "balanced_accuracy": (0.0, 1.0), "f1_macro": (0.0, 1.0), "roc_auc": (0.0, 1.0)}
# Penalty grids relative to the eigenvalue scale of standardised data, max(n_rows, n_features), strongest first
# (ties go to the simpler model): ridge alpha = scale x max(n, p), logistic C = 1 / (scale x max(n, p)).
RIDGE_SCALES = np.logspace(4, -4, 17)
LOGISTIC_SCALES = np.logspace(4, -4, 9)
MLP_ALPHAS = np.logspace(1, -3, 3)
FC_NAME = "fc"

METHOD = [
    "Score: the out-of-fold score of one repeat, over participants (each predicted once, from the average of its "
    "rows' predictions), averaged over repeats.",
    "95 % interval: corrected resampled t (Nadeau & Bengio 2003; Bouckaert & Frank 2004) around that mean. The "
    "variance comes from the J = repeats x folds per-fold scores, inflated by (1/J + n_test/n_train) because "
    "training sets overlap; J - 1 degrees of freedom.",
    "Permutation p-value: the target shuffled across participants (a participant's rows stay together), the first "
    "repeat's CV run again from scratch with the same seeds (folds re-drawn as for the real target); "
    "p = (1 + #{permuted score at least as good as observed}) / (1 + N), against the first repeat's score.",
    "Paired tests: the same corrected t on the per-fold differences between two models on the same folds; "
    "Holm-corrected within each metric. Every embedding is compared with the FC baseline (every pair of "
    "embeddings when there is no baseline).",
]


# --------------------------------------------------------------------------------------------------------------
# Seeds and splitters


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for one step (a repeat, a fold, a permutation), independent of the order steps run in."""
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0])


class ShuffledGroupKFold:
    """K folds of whole groups: the groups are shuffled, then each goes to the currently smallest fold.

    Like scikit-learn's ``GroupKFold`` with a seeded shuffle, on any scikit-learn version; balanced by rows.
    """

    def __init__(self, n_splits: int = 5, random_state: int | None = None):
        self.n_splits = n_splits
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y=None, groups=None):
        n = len(X)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        if len(uniq) < self.n_splits:
            raise ValueError(f"{len(uniq)} groups cannot fill {self.n_splits} folds")
        order = np.random.default_rng(self.random_state).permutation(len(uniq))
        order = order[np.argsort(-counts[order], kind="stable")]
        sizes = np.zeros(self.n_splits)
        fold_of_group = np.empty(len(uniq), dtype=int)
        for g in order:
            f = int(np.argmin(sizes))
            fold_of_group[g] = f
            sizes[f] += counts[g]
        fold = fold_of_group[inverse]
        for f in range(self.n_splits):
            yield np.flatnonzero(fold != f), np.flatnonzero(fold == f)


class StratifiedShuffledGroupKFold:
    """Stratified K folds of whole groups: groups in a seeded random order (largest first), each to the fold where
    its classes are least represented so far (relative to each class's total), ties to the smallest fold.

    When every group holds one class (a participant's rows share its target) each class is dealt out evenly.
    """

    def __init__(self, n_splits: int = 5, random_state: int | None = None):
        self.n_splits = n_splits
        self.random_state = random_state

    def get_n_splits(self, X=None, y=None, groups=None) -> int:
        return self.n_splits

    def split(self, X, y, groups=None):
        n = len(X)
        groups = np.arange(n) if groups is None else np.asarray(groups)
        _, y_idx = np.unique(np.asarray(y), return_inverse=True)
        uniq, g_idx = np.unique(groups, return_inverse=True)
        if len(uniq) < self.n_splits:
            raise ValueError(f"{len(uniq)} groups cannot fill {self.n_splits} folds")
        counts = np.zeros((len(uniq), y_idx.max() + 1))
        np.add.at(counts, (g_idx, y_idx), 1)
        share = counts / counts.sum(0)
        order = np.random.default_rng(self.random_state).permutation(len(uniq))
        order = order[np.argsort(-counts[order].sum(1), kind="stable")]
        fold_share = np.zeros((self.n_splits, counts.shape[1]))
        fold_size = np.zeros(self.n_splits)
        fold_of_group = np.empty(len(uniq), dtype=int)
        for g in order:
            f = int(np.lexsort((fold_size, fold_share @ counts[g]))[0])
            fold_of_group[g] = f
            fold_share[f] += share[g]
            fold_size[f] += counts[g].sum()
        fold = fold_of_group[g_idx]
        for f in range(self.n_splits):
            yield np.flatnonzero(fold != f), np.flatnonzero(fold == f)


def make_splitter(task: str, n_splits: int, random_state: int):
    """Grouped K-fold for regression, stratified grouped K-fold for classification, both shuffled by the seed."""
    if task == "classification":
        return StratifiedShuffledGroupKFold(n_splits=n_splits, random_state=random_state)
    return ShuffledGroupKFold(n_splits=n_splits, random_state=random_state)


def assign_folds(task: str, y, groups, n_splits: int, random_state: int) -> np.ndarray:
    """The fold of each participant (participant-level ``y`` and ``groups``)."""
    fold = np.full(len(y), -1)
    for k, (_, test) in enumerate(make_splitter(task, n_splits, random_state).split(np.zeros(len(y)), y, groups)):
        fold[test] = k
    return fold


# --------------------------------------------------------------------------------------------------------------
# Estimators (scikit-learn style): confounds, scaling and rotation fitted on the training rows; nested selection


def _standard_scale(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale exactly as scikit-learn's ``StandardScaler`` (constant features keep scale 1), faster."""
    n = len(F)
    mean = F.mean(0)
    var = ((F - mean) ** 2).mean(0)
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return mean, scale


class FoldPreprocessor:
    """Regress confounds out of the features, standardise, and rotate onto the training rows' principal axes.

    Everything is fitted on the rows given to ``fit`` (the training folds). The rotation is used when features
    outnumber rows: ``Z = X_s V`` with ``V`` spanning the training rows. It is computed from the rows' Gram matrix
    and loses nothing for an L2-penalised linear model, whose weights lie in that span. The last ``n_confounds``
    columns of ``X`` hold the confounds and are not features.
    """

    def __init__(self, n_confounds: int = 0):
        self.n_confounds = n_confounds

    def _split(self, X):
        if self.n_confounds:
            return X[:, : -self.n_confounds], X[:, -self.n_confounds:]
        return X, None

    def _residualise(self, F, C):
        if C is None:
            return F
        return F - np.column_stack([np.ones(len(C)), C]) @ self.confound_coef_

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        F, C = self._split(X)
        if C is not None:
            design = np.column_stack([np.ones(len(C)), C])
            self.confound_coef_ = linalg.lstsq(design, F, check_finite=False)[0]
            F = self._residualise(F, C)
        self.mean_, self.scale_ = _standard_scale(F)
        Fs = (F - self.mean_) / self.scale_
        n, p = Fs.shape
        self.basis_ = self.projection_ = None
        if p > n:
            gram = Fs @ Fs.T
            lam, vec = linalg.eigh(gram, check_finite=False)
            keep = lam > max(lam[-1], 0.0) * max(n, p) * np.finfo(float).eps
            lam, vec = lam[keep][::-1], vec[:, keep][:, ::-1]
            self.basis_ = Fs
            self.projection_ = vec / np.sqrt(lam)
            return vec * np.sqrt(lam)
        return Fs

    def transform(self, X: np.ndarray) -> np.ndarray:
        F, C = self._split(X)
        Fs = (self._residualise(F, C) - self.mean_) / self.scale_
        if self.basis_ is not None:
            return (Fs @ self.basis_.T) @ self.projection_
        return Fs


def ridge_alphas(n_rows: int, n_features: int) -> np.ndarray:
    """The ridge penalties tried by ``RidgeProbe`` on ``n_rows`` standardised rows of ``n_features``."""
    return RIDGE_SCALES * max(n_rows, n_features)


def logistic_Cs(n_rows: int, n_features: int) -> np.ndarray:
    """The inverse penalties C tried by ``LogisticProbe`` (ascending: the strongest penalty first)."""
    return 1.0 / (LOGISTIC_SCALES * max(n_rows, n_features))


def _inner_n_splits(inner_folds, groups, y=None) -> int:
    n_groups = len(np.unique(groups))
    limit = n_groups
    if y is not None:
        limit = min(limit, min(len(np.unique(groups[y == c])) for c in np.unique(y)))
    return int(max(2, min(inner_folds, limit)))


class _Probe(BaseEstimator):
    """Shared fit: preprocess the training rows, pick the hyper-parameter by inner grouped CV, refit on all rows."""

    _classifier = False
    _multi_output = False
    _grid_attr = "alphas"  # the constructor argument holding the grid (None: the default grid)

    def _default_grid(self, n_rows, n_features):
        return MLP_ALPHAS

    def inner_splits(self, X, y=None, groups=None) -> list[tuple[np.ndarray, np.ndarray]]:
        """The inner folds ``fit`` uses (grouped, seeded by ``random_state``): reproducible from outside."""
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        strat = np.asarray(y) if self._classifier else None
        n_splits = _inner_n_splits(self.inner_folds, groups, strat)
        task = "classification" if self._classifier else "regression"
        return list(make_splitter(task, n_splits, self.random_state).split(X, strat, groups))

    def _check_X(self, X):
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return X

    def fit(self, X, y, groups=None):
        X, y = check_X_y(X, y, dtype=np.float64, multi_output=self._multi_output, y_numeric=not self._classifier)
        self.n_features_in_ = X.shape[1]
        y = self._check_y(y)
        groups = np.arange(len(X)) if groups is None else np.asarray(groups)
        if len(np.unique(groups)) < 2:
            raise ValueError(f"n_samples = {len(X)} in one group: the inner CV needs at least two groups")
        splits = self.inner_splits(X, self._stratify_labels(y), groups)
        given = getattr(self, self._grid_attr)
        self.grid_ = np.asarray(self._default_grid(len(X), X.shape[1] - self.n_confounds) if given is None
                                else given, dtype=np.float64)
        self.prep_ = FoldPreprocessor(self.n_confounds)
        Z = self.prep_.fit_transform(X)
        loss = None
        for tr, va in splits:
            fold_loss = self._candidate_losses(Z[tr], y[tr], Z[va], y[va])
            loss = fold_loss if loss is None else loss + fold_loss
        self.cv_loss_ = loss / len(splits)
        self.best_index_ = np.argmin(self.cv_loss_, axis=0)
        self._fit_final(Z, y, self.best_index_)
        return self

    def _stratify_labels(self, y):
        return y


class RidgeProbe(RegressorMixin, _Probe):
    """Ridge regression with the penalty chosen by grouped inner CV (mean squared error, averaged over folds).

    Equivalent to ``make_pipeline(StandardScaler(), RidgeCV(alphas, cv=inner_splits, scoring=
    "neg_mean_squared_error"))``, solved through one SVD per fold for every penalty at once. A 2-D ``y`` fits each
    column separately (own penalty): the permutation test uses this to run all shuffled targets in one pass.
    """

    def __init__(self, alphas=None, inner_folds: int = 5, n_confounds: int = 0, random_state: int | None = None):
        self.alphas = alphas
        self.inner_folds = inner_folds
        self.n_confounds = n_confounds
        self.random_state = random_state

    _multi_output = True

    def _default_grid(self, n_rows, n_features):
        return ridge_alphas(n_rows, n_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn < 1.6
        return {"multioutput": True}

    def _check_y(self, y):
        y = np.asarray(y, dtype=np.float64)
        self._multi = y.ndim == 2
        return y

    def _stratify_labels(self, y):
        return None

    @staticmethod
    def _svd(Z, Y):
        mean_z, mean_y = Z.mean(0), Y.mean(0)
        u, s, vt = linalg.svd(Z - mean_z, full_matrices=False, check_finite=False, lapack_driver="gesdd")
        keep = s > s[0] * max(Z.shape) * np.finfo(float).eps if len(s) and s[0] > 0 else np.zeros(len(s), bool)
        u, s, vt = u[:, keep], s[keep], vt[keep]
        return mean_z, mean_y, s, vt, u.T @ (Y - mean_y)

    def _candidate_losses(self, Ztr, ytr, Zva, yva):
        Ytr, Yva = ytr.reshape(len(ytr), -1), yva.reshape(len(yva), -1)
        mean_z, mean_y, s, vt, uty = self._svd(Ztr, Ytr)
        alphas = self.grid_
        shrink = s[None, :] / (s[None, :] ** 2 + alphas[:, None])          # alphas × rank
        proj = (Zva - mean_z) @ vt.T                                         # val × rank
        pred = np.einsum("vr,ar,rm->avm", proj, shrink, uty) + mean_y       # alphas × val × columns
        return ((pred - Yva[None]) ** 2).mean(axis=1)                        # alphas × columns

    def _fit_final(self, Z, y, best):
        Y = y.reshape(len(y), -1)
        mean_z, mean_y, s, vt, uty = self._svd(Z, Y)
        alphas = self.grid_[np.atleast_1d(best)]
        coef = vt.T @ (s[:, None] / (s[:, None] ** 2 + alphas[None, :]) * uty)
        self.coef_z_ = coef
        self.intercept_ = mean_y - mean_z @ coef
        self.alpha_ = alphas if self._multi else float(alphas[0])

    def predict(self, X):
        check_is_fitted(self, "coef_z_")
        pred = self.prep_.transform(self._check_X(X)) @ self.coef_z_ + self.intercept_
        return pred if self._multi else pred[:, 0]


def _safe_log_loss(y_idx, proba) -> float:
    p = np.clip(proba[np.arange(len(y_idx)), y_idx], 1e-15, 1.0)
    return float(-np.log(p).mean())


class _ClassifierProbe(ClassifierMixin, _Probe):
    _classifier = True

    def _check_y(self, y):
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        return y_idx

    def _fit_one(self, Z, y_idx, param):
        present = np.unique(y_idx)
        if len(present) == 1:
            return ("constant", int(present[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return ("model", present, self._make(param).fit(Z, y_idx))

    def _proba(self, fitted, Z):
        out = np.zeros((len(Z), len(self.classes_)))
        if fitted[0] == "constant":
            out[:, fitted[1]] = 1.0
        else:
            out[:, fitted[1]] = fitted[2].predict_proba(Z)
        return out

    def _candidate_losses(self, Ztr, ytr, Zva, yva):
        return np.array([_safe_log_loss(yva, self._proba(self._fit_one(Ztr, ytr, c), Zva)) for c in self.grid_])

    def _fit_final(self, Z, y, best):
        self.best_param_ = float(self.grid_[int(best)])
        self.model_ = self._fit_one(Z, y, self.best_param_)

    def predict_proba(self, X):
        check_is_fitted(self, "model_")
        return self._proba(self.model_, self.prep_.transform(self._check_X(X)))

    def predict(self, X):
        check_is_fitted(self, "model_")
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def binary_logistic_path(Z, y01, sample_weight, Cs, tol: float = 1e-10, max_iter: int = 100) -> list[np.ndarray]:
    """L2 logistic regression (unpenalised intercept) for each C in turn, by damped Newton, warm-started.

    Minimises ``sum_i w_i log(1 + exp(-s_i f_i)) + ||coef||² / (2C)``, scikit-learn's objective, to machine
    precision. Faster than a fresh L-BFGS per C when the features are few (after the rotation: at most the rows).
    Returns ``[coef..., intercept]`` per C.
    """
    n, r = Z.shape
    A = np.column_stack([Z, np.ones(n)])
    w = np.zeros(r + 1)

    def objective(v, pen):
        e = A @ v
        return float(np.sum(sample_weight * (np.logaddexp(0.0, e) - y01 * e)) + 0.5 * np.sum(pen * v * v))

    path = []
    for C in Cs:
        pen = np.full(r + 1, 1.0 / float(C))
        pen[-1] = 0.0
        f = objective(w, pen)
        for _ in range(max_iter):
            p = 0.5 * (1.0 + np.tanh(0.5 * (A @ w)))
            grad = A.T @ (sample_weight * (p - y01)) + pen * w
            hess = (A.T * (sample_weight * p * (1.0 - p))) @ A
            hess[np.diag_indices_from(hess)] += pen + 1e-12
            step = np.linalg.solve(hess, grad)
            t, decrement = 1.0, float(grad @ step)
            while True:
                f_new = objective(w - t * step, pen)
                if f_new <= f - 1e-4 * t * decrement or t < 1e-10:
                    break
                t *= 0.5
            w, f = w - t * step, f_new
            if decrement < tol * max(1.0, abs(f)) or np.max(np.abs(t * step)) < tol * max(1.0, np.max(np.abs(w))):
                break
        path.append(w.copy())
    return path


class LogisticProbe(_ClassifierProbe):
    """L2 logistic regression, class-balanced, with C chosen by stratified grouped inner CV (log-loss).

    Equivalent to ``make_pipeline(StandardScaler(), GridSearchCV(LogisticRegression(class_weight="balanced"),
    {"C": Cs}, cv=inner_splits, scoring="neg_log_loss"))``. Two classes: Newton along the C path
    (``binary_logistic_path``); more: scikit-learn's multinomial L-BFGS.
    """

    def __init__(self, Cs=None, inner_folds: int = 5, n_confounds: int = 0, random_state: int | None = None):
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.n_confounds = n_confounds
        self.random_state = random_state

    _grid_attr = "Cs"

    def _default_grid(self, n_rows, n_features):
        return logistic_Cs(n_rows, n_features)

    def _make(self, C):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=float(C), class_weight="balanced", tol=1e-6, max_iter=2000)

    def _path(self, Z, y_idx, Cs):
        present, counts = np.unique(y_idx, return_counts=True)
        if len(present) != 2:
            return [self._fit_one(Z, y_idx, C) for C in Cs]
        weight = (len(y_idx) / (2.0 * counts))[(y_idx == present[1]).astype(int)]
        return [("binary", present, w)
                for w in binary_logistic_path(Z, (y_idx == present[1]).astype(float), weight, Cs)]

    def _proba(self, fitted, Z):
        if fitted[0] != "binary":
            return super()._proba(fitted, Z)
        _, present, w = fitted
        p = 0.5 * (1.0 + np.tanh(0.5 * (Z @ w[:-1] + w[-1])))
        out = np.zeros((len(Z), len(self.classes_)))
        out[:, present[0]], out[:, present[1]] = 1.0 - p, p
        return out

    def _candidate_losses(self, Ztr, ytr, Zva, yva):
        return np.array([_safe_log_loss(yva, self._proba(f, Zva)) for f in self._path(Ztr, ytr, self.grid_)])

    def _fit_final(self, Z, y, best):
        self.best_param_ = float(self.grid_[int(best)])
        self.model_ = self._path(Z, y, [self.best_param_])[0]


class MlpClassifierProbe(_ClassifierProbe):
    """A one-hidden-layer MLP classifier (scikit-learn), weight decay chosen by stratified grouped inner CV."""

    def __init__(self, alphas=None, hidden: int = 64, inner_folds: int = 5, n_confounds: int = 0,
                 random_state: int | None = None):
        self.alphas = alphas
        self.hidden = hidden
        self.inner_folds = inner_folds
        self.n_confounds = n_confounds
        self.random_state = random_state

    def _make(self, alpha):
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=float(alpha), max_iter=500,
                             random_state=self.random_state)


class MlpRegressorProbe(RegressorMixin, _Probe):
    """A one-hidden-layer MLP regressor (scikit-learn), weight decay chosen by grouped inner CV.

    Like every probe it sees the standardised features rotated onto the training rows' span when features
    outnumber rows (the hidden layer then starts in that span)."""

    def __init__(self, alphas=None, hidden: int = 64, inner_folds: int = 5, n_confounds: int = 0,
                 random_state: int | None = None):
        self.alphas = alphas
        self.hidden = hidden
        self.inner_folds = inner_folds
        self.n_confounds = n_confounds
        self.random_state = random_state

    def _check_y(self, y):
        return np.asarray(y, dtype=np.float64)

    def _stratify_labels(self, y):
        return None

    def _fit_one(self, Z, y, alpha):
        from sklearn.neural_network import MLPRegressor

        # standardise the target too: the MLP's loss and initialisation assume unit scale
        mu, sd = y.mean(), y.std() or 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPRegressor(hidden_layer_sizes=(self.hidden,), alpha=float(alpha), max_iter=500,
                                 random_state=self.random_state).fit(Z, (y - mu) / sd)
        return model, mu, sd

    def _candidate_losses(self, Ztr, ytr, Zva, yva):
        out = []
        for a in self.grid_:
            model, mu, sd = self._fit_one(Ztr, ytr, a)
            out.append(np.mean((model.predict(Zva) * sd + mu - yva) ** 2))
        return np.array(out)

    def _fit_final(self, Z, y, best):
        self.alpha_ = float(self.grid_[int(best)])
        self.model_ = self._fit_one(Z, y, self.alpha_)

    def predict(self, X):
        check_is_fitted(self, "model_")
        model, mu, sd = self.model_
        return model.predict(self.prep_.transform(self._check_X(X))) * sd + mu


def make_probe(task: str, head: str = "linear", n_confounds: int = 0, random_state: int | None = None,
               inner_folds: int = 5):
    """The estimator ``probe`` fits in each training fold."""
    kind = {("regression", "linear"): RidgeProbe, ("classification", "linear"): LogisticProbe,
            ("regression", "mlp"): MlpRegressorProbe, ("classification", "mlp"): MlpClassifierProbe}[(task, head)]
    return kind(inner_folds=inner_folds, n_confounds=n_confounds, random_state=random_state)


def chosen_param(est) -> tuple[float, int]:
    """The hyper-parameter the inner CV chose (for the first target column) and its index in the grid."""
    index = int(np.atleast_1d(est.best_index_)[0])
    return float(est.grid_[index]), index


def param_grid(task: str, head: str) -> dict:
    """The hyper-parameter grid, as the sidecar and the report describe it."""
    if head == "mlp":
        return {"name": "alpha", "values": list(MLP_ALPHAS)}
    if task == "regression":
        return {"name": "alpha", "values": "scale x max(n_rows, n_features)", "scale": list(RIDGE_SCALES)}
    return {"name": "C", "values": "1 / (scale x max(n_rows, n_features))", "scale": list(LOGISTIC_SCALES)}


# --------------------------------------------------------------------------------------------------------------
# Metrics and statistics


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
    n_test / n_train.
    """
    v = np.asarray(fold_values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    j = len(v)
    if j < 2 or not np.isfinite(estimate):
        return np.nan, np.nan, np.nan
    se = np.sqrt((1.0 / j + test_fraction) * v.var(ddof=1))
    if se == 0:
        return estimate, estimate, (1.0 if estimate == 0 else 0.0)
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


# --------------------------------------------------------------------------------------------------------------
# Inputs: participants, embeddings, region time series → feature sets


@dataclass
class FeatureSet:
    """One model's rows: identifiers (``participant_id`` first), a feature matrix, and where it came from."""

    name: str
    kind: str  # "embedding" or "fc"
    ids: pd.DataFrame
    X: np.ndarray
    source: str
    info: dict = field(default_factory=dict)


def normalise_participant_id(value) -> str:
    value = str(value).strip()
    return value if value.startswith("sub-") else f"sub-{value}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_participants(path) -> pd.DataFrame:
    """``participants.tsv`` indexed by ``participant_id`` (``sub-`` prefixed), every column kept as read."""
    df = read_tsv(path, dtype={"participant_id": str})
    if "participant_id" not in df.columns:
        raise BrainfmError(f"no 'participant_id' column (columns: {', '.join(map(str, df.columns))})", path=path,
                           fix="use a BIDS participants.tsv whose first column is participant_id")
    if df["participant_id"].isna().any():
        raise BrainfmError("empty participant_id in some rows", path=path, fix="give every row a participant_id")
    df["participant_id"] = df["participant_id"].map(normalise_participant_id)
    dup = df["participant_id"][df["participant_id"].duplicated()]
    if len(dup):
        raise BrainfmError(f"participant_id {dup.iloc[0]!r} appears more than once ({len(dup)} duplicate rows)",
                           path=path, fix="keep one row per participant")
    return df.set_index("participant_id")


def read_embeddings(path: str) -> FeatureSet:
    """An embeddings TSV (data contracts §3), checked: ids, numeric finite features, no duplicated rows."""
    name_for_errors = "<stdin>" if path == "-" else path
    df = read_tsv(path, dtype={c: str for c in ID_COLUMNS})
    id_cols = [c for c in df.columns if c in ID_COLUMNS]
    if "participant_id" not in df.columns:
        raise BrainfmError(f"no 'participant_id' column (columns: {', '.join(map(str, df.columns[:8]))}…)",
                           path=name_for_errors, fix="write embeddings with 'brainfm embed' (data contracts §3)")
    feat_cols = [c for c in df.columns if c not in ID_COLUMNS]
    stray = [c for c in feat_cols if not str(c).startswith("emb_")]
    if stray and len(stray) < len(feat_cols):
        raise BrainfmError(f"column(s) {', '.join(map(str, stray[:5]))} are neither identifiers nor embeddings "
                           f"(emb_0000 …)", path=name_for_errors,
                           fix=f"remove them; identifier columns are {', '.join(ID_COLUMNS)}")
    if not feat_cols:
        raise BrainfmError("no embedding columns (emb_0000 …) after the identifier columns", path=name_for_errors,
                           fix="write embeddings with 'brainfm embed'")
    for c in feat_cols:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            bad = df[c][pd.to_numeric(df[c], errors="coerce").isna() & df[c].notna()]
            sample = bad.iloc[0] if len(bad) else df[c].iloc[0]
            raise BrainfmError(f"non-numeric value {sample!r} in embedding column '{c}'", path=name_for_errors,
                               fix=f"embedding columns hold numbers only; identifier columns are "
                                   f"{', '.join(ID_COLUMNS)}")
    X = df[feat_cols].to_numpy(dtype=np.float64)
    if not np.isfinite(X).all():
        row, col = np.argwhere(~np.isfinite(X))[0]
        raise BrainfmError(f"missing or infinite value in column '{feat_cols[col]}' (row {row + 2} of the file)",
                           path=name_for_errors, fix="embeddings must be finite numbers; regenerate them")
    ids = df[id_cols].copy()
    if ids["participant_id"].isna().any():
        raise BrainfmError("empty participant_id in some rows", path=name_for_errors,
                           fix="give every row a participant_id")
    ids["participant_id"] = ids["participant_id"].map(normalise_participant_id)
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = ids[dup].iloc[0].to_dict()
        raise BrainfmError(f"{int(dup.sum())} rows share the same identifiers, e.g. {first}", path=name_for_errors,
                           fix="each row needs a distinct (participant_id, session_id, task, run, window); "
                               "remove the duplicates")
    info = {"rows": len(df), "features": len(feat_cols), "id_columns": id_cols}
    model = None
    if path != "-":
        p = Path(path)
        info["sha256"] = _sha256(p)
        side = sidecar_path(p)
        if side.is_file():
            sidecar = read_json(side)
            model = (sidecar.get("model") or sidecar.get("Model")) if isinstance(sidecar, dict) else None
            info["sidecar"] = str(side)
        name = str(model) if model else p.name[: -len(".tsv")] if p.name.endswith(".tsv") else p.stem
    else:
        name = "stdin"
    return FeatureSet(name=name, kind="embedding", ids=ids.reset_index(drop=True), X=X, source=name_for_errors,
                      info=info)


def _run_fc(path) -> dict:
    """One run's full correlation matrix (upper triangle, Fisher z; NaN where a region is absent or constant)."""
    from brainfm_cli.data.timeseries import read_timeseries

    ts = read_timeseries(path)
    if len(ts.data) < 3:
        raise BrainfmError(f"only {len(ts.data)} time points: too few for a correlation", path=ts.path,
                           fix="drop this run or re-run parcellate on the full run")
    values = ts.data.to_numpy()
    absent = np.isnan(values).all(axis=0)  # read_timeseries allows n/a only as a whole column
    flat = (values.max(axis=0) == values.min(axis=0)) & ~absent
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.corrcoef(values, rowvar=False)[np.triu_indices(values.shape[1], k=1)]
    e = ts.entities
    atlas = ts.sidecar.get("Atlas") if isinstance(ts.sidecar, dict) else None
    return {"regions": list(ts.data.columns), "z": np.arctanh(np.clip(r, -1 + 1e-7, 1 - 1e-7)), "absent": absent,
            "flat": flat, "atlas": atlas.get("name") if isinstance(atlas, dict) else atlas,
            "ids": {"participant_id": ts.participant_id, "session_id": f"ses-{e['ses']}" if e.get("ses") else None,
                    "task": e.get("task"), "run": e.get("run"), "source": str(ts.path)}}


def fc_features(inputs, n_jobs: int = 1) -> FeatureSet:
    """The FC baseline: per run, the Pearson correlation upper triangle, Fisher z (arctanh).

    Regions missing (all ``n/a``) or constant in any run are dropped from every run, and the sidecar names them.
    """
    from joblib import Parallel, delayed

    from brainfm_cli.data.timeseries import discover_timeseries

    files = discover_timeseries(list(inputs))
    runs = Parallel(n_jobs=n_jobs)(delayed(_run_fc)(f) for f in files) if n_jobs != 1 else [_run_fc(f) for f in files]
    regions = runs[0]["regions"]
    for f, run in zip(files, runs):
        if run["regions"] != regions:
            raise BrainfmError(f"regions differ from those of {files[0].name}", path=f,
                               fix="use time series parcellated with one atlas")
    absent = np.any([run["absent"] for run in runs], axis=0)
    flat = np.any([run["flat"] for run in runs], axis=0) & ~absent
    keep = ~(absent | flat)
    if keep.sum() < 2:
        raise BrainfmError(f"fewer than two usable regions ({int(absent.sum())} without coverage, "
                           f"{int(flat.sum())} constant)", path=files[0].parent,
                           fix="check the parcellation's coverage")
    iu = np.triu_indices(len(regions), k=1)
    pairs = keep[iu[0]] & keep[iu[1]]  # row-major order: the upper triangle of the kept regions' matrix
    X = np.stack([run["z"][pairs] for run in runs])
    ids = pd.DataFrame([run["ids"] for run in runs]).dropna(axis=1, how="all")
    dup = ids.drop(columns="source").duplicated(keep=False)
    if dup.any():
        raise BrainfmError(f"{int(dup.sum())} runs share the same participant/session/task/run, e.g. "
                           f"{ids[dup].iloc[0]['source']}", path=files[0].parent,
                           fix="point --timeseries at one atlas's output (or filter the runs)")
    info = {"runs": len(runs), "regions": len(regions), "regions_used": int(keep.sum()), "features": X.shape[1],
            "regions_without_coverage": [c for c, a in zip(regions, absent) if a],
            "regions_constant": [c for c, f in zip(regions, flat) if f],
            "atlas": runs[0]["atlas"],
            "recipe": "Pearson correlation of the region time series, upper triangle, Fisher z (arctanh)",
            "sources": [str(f) for f in files]}
    return FeatureSet(name=FC_NAME, kind="fc", ids=ids, X=X, source=str(Path(inputs[0])), info=info)


# --------------------------------------------------------------------------------------------------------------
# Target, covariates, and the shared participant set


def _label(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _missing(series: pd.Series) -> pd.Series:
    return series.isna() | series.astype(str).str.strip().eq("")


def resolve_target(participants: pd.DataFrame, target: str, task: str | None, path) -> tuple[str, pd.Series, int]:
    """The target per participant (missing dropped) and the task, inferred from the column unless given."""
    if target not in participants.columns:
        raise BrainfmError(f"no column '{target}' (columns: {', '.join(map(str, participants.columns))})",
                           path=path, fix="choose --target among the columns listed")
    col = participants[target]
    missing = _missing(col)
    values = col[~missing]
    numeric = pd.to_numeric(values, errors="coerce") if not pd.api.types.is_bool_dtype(values) else None
    is_numeric = numeric is not None and numeric.notna().all() and len(values) > 0
    n_unique = values.astype(str).nunique()
    if task is None and not is_numeric and numeric is not None and numeric.notna().mean() > 0.5:
        bad = sorted(values[numeric.isna()].astype(str).unique())
        raise BrainfmError(f"column '{target}' is numeric except for {', '.join(map(repr, bad[:5]))}", path=path,
                           fix="write n/a for missing values, or pass --task classification if it is categorical")
    if task is None:
        task = "regression" if is_numeric and numeric.nunique() > 2 else "classification"
    if task == "regression":
        if not is_numeric:
            bad = values[pd.to_numeric(values, errors="coerce").isna()]
            raise BrainfmError(f"column '{target}' is not numeric (e.g. {bad.iloc[0]!r}), so it cannot be regressed",
                               path=path, fix="use --task classification, or a numeric column")
        y = numeric.astype(np.float64)
        if not np.isfinite(y).all():
            raise BrainfmError(f"column '{target}' holds infinite values", path=path, fix="fix the values")
    else:
        y = values.map(_label) if not is_numeric else numeric.map(_label)
    if not len(y):
        raise BrainfmError(f"column '{target}' is n/a for every participant", path=path,
                           fix="choose another --target")
    if (n_unique < 2 or (task == "regression" and y.nunique() < 2)):
        raise BrainfmError(f"column '{target}' is constant ({y.iloc[0]!r} for every participant): nothing to predict",
                           path=path, fix="choose another --target")
    return task, y, int(missing.sum())


def encode_covariates(participants: pd.DataFrame, columns: list[str], path) -> pd.DataFrame:
    """Confound columns as numbers: numeric kept, categories one-hot (first level dropped); missing stays NaN."""
    parts = []
    for c in columns:
        if c not in participants.columns:
            raise BrainfmError(f"no confound column '{c}' (columns: {', '.join(map(str, participants.columns))})",
                               path=path, fix="choose --confounds among the columns listed")
        col = participants[c]
        missing = _missing(col)
        num = pd.to_numeric(col[~missing], errors="coerce")
        if num.notna().all() and not pd.api.types.is_bool_dtype(col):
            parts.append(pd.to_numeric(col.where(~missing), errors="coerce").rename(c).to_frame())
        else:
            levels = sorted(col[~missing].astype(str).unique())
            dummies = pd.DataFrame({f"{c}={lv}": (col.astype(str) == lv).astype(float) for lv in levels[1:]},
                                   index=participants.index)
            dummies[missing] = np.nan
            parts.append(dummies)
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=participants.index)


@dataclass
class Design:
    """A model's rows ready for CV: features (confounds appended), and the participant of each row."""

    features: FeatureSet
    X: np.ndarray
    unit: np.ndarray  # row → index into the shared participant list


@dataclass
class ProbeSetup:
    """Everything shared by the models: participants, target, groups, covariates, folds."""

    task: str
    participants: list[str]
    y: np.ndarray  # float (regression) or class index
    classes: list[str]
    groups: np.ndarray
    confound_names: list[str]
    designs: list[Design]
    accounting: dict


def build_setup(feature_sets: list[FeatureSet], participants: pd.DataFrame, target: str, task: str | None,
                participants_path, group_by: str | None, confounds: list[str], aggregate: str,
                folds: int) -> ProbeSetup:
    """Join every feature set to the phenotypes and keep the participants all models share."""
    task, y_all, n_missing_target = resolve_target(participants, target, task, participants_path)
    if target in confounds:
        raise BrainfmError(f"'{target}' is both the target and a confound", path=participants_path,
                           fix="remove it from --confounds")
    cov = encode_covariates(participants, confounds, participants_path)
    usable = pd.Series(True, index=participants.index)
    usable &= participants.index.isin(y_all.index)
    missing_cov = cov.isna().any(axis=1) & usable
    usable &= ~missing_cov
    if group_by is not None:
        if group_by not in participants.columns:
            raise BrainfmError(f"no column '{group_by}' for --group-by (columns: "
                               f"{', '.join(map(str, participants.columns))})", path=participants_path,
                               fix="choose --group-by among the columns listed")
        missing_group = _missing(participants[group_by]) & usable
        usable &= ~missing_group
    else:
        missing_group = pd.Series(False, index=participants.index)
    known = set(participants.index)
    per_model = []
    for fs in feature_sets:
        subs = pd.unique(fs.ids["participant_id"])
        matched = [s for s in subs if s in known]
        if not matched:
            raise BrainfmError(
                f"no participant of {fs.source} is in {participants_path} (the embeddings have "
                f"{', '.join(map(str, subs[:3]))}…; participants.tsv has "
                f"{', '.join(map(str, list(participants.index[:3])))}…)",
                path=fs.source, fix="check that both files describe the same dataset and use the same labels")
        per_model.append((fs, subs, matched))
    common = set(participants.index[usable])
    for _, subs, _ in per_model:
        common &= set(subs)
    common = sorted(common)
    accounting = {"participants_tsv_rows": len(participants), "missing_target": n_missing_target,
                  "missing_confounds": int(missing_cov.sum()), "missing_group": int(missing_group.sum()),
                  "models": {}}
    for fs, subs, matched in per_model:
        subs_set = set(subs)
        usable_here = [s for s in matched if usable[s]]
        accounting["models"][fs.name] = {
            "rows": len(fs.ids), "participants": len(subs_set),
            "not_in_participants_tsv": len(subs_set) - len(matched),
            "missing_target": sum(1 for s in matched if s not in y_all.index),
            "missing_confounds": sum(1 for s in matched if bool(missing_cov[s])),
            "missing_group": sum(1 for s in matched if bool(missing_group[s])),
            "not_shared_with_other_models": len(usable_here) - len(common),
            "used": len(common),
        }
    if not common:
        raise BrainfmError(f"no participant is usable by every model (with a '{target}' value"
                           f"{', covariates' if confounds else ''}{' and a group' if group_by else ''}): "
                           f"{accounting['models']}", path=participants_path,
                           fix="check the participant labels and missing values")
    index = {s: i for i, s in enumerate(common)}
    y_series = y_all.loc[common]
    if task == "classification":
        classes = sorted(y_series.unique(), key=_class_key)
        y = y_series.map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=int)
    else:
        classes = []
        y = y_series.to_numpy(dtype=np.float64)
    groups = (participants.loc[common, group_by].map(_label).to_numpy(dtype=str) if group_by
              else np.asarray(common, dtype=str))
    _check_folds(task, y, classes, groups, folds, target, group_by, participants_path)
    C = cov.loc[common].to_numpy(dtype=np.float64) if confounds else np.empty((len(common), 0))
    designs = []
    for fs, _, _ in per_model:
        rows = fs.ids["participant_id"].map(index)
        keep = rows.notna().to_numpy()
        unit = rows[keep].to_numpy(dtype=int)
        X = fs.X[keep]
        if aggregate == "mean":
            sums = np.zeros((len(common), X.shape[1]))
            np.add.at(sums, unit, X)
            X = sums / np.bincount(unit, minlength=len(common))[:, None]
            unit = np.arange(len(common))
        X = np.column_stack([X, C[unit]]) if C.shape[1] else np.ascontiguousarray(X)
        designs.append(Design(features=fs, X=X, unit=unit))
    return ProbeSetup(task=task, participants=common, y=y, classes=[str(c) for c in classes], groups=groups,
                      confound_names=list(cov.columns), designs=designs, accounting=accounting)


def _class_key(label: str):
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def _check_folds(task, y, classes, groups, folds, target, group_by, path):
    n_groups = len(np.unique(groups))
    if folds < 2:
        raise BrainfmError(f"--folds {folds}: need at least 2", fix="use --folds 5 (the default)")
    if n_groups < folds:
        what = f"distinct '{group_by}' values" if group_by else "participants"
        raise BrainfmError(f"only {n_groups} {what} for {folds} folds", path=path,
                           fix=f"use --folds {max(2, n_groups)} or fewer, or add participants")
    if task == "classification":
        counts = {c: int((y == i).sum()) for i, c in enumerate(classes)}
        small = {c: n for c, n in counts.items() if n < folds}
        if small:
            raise BrainfmError(f"class(es) of '{target}' with fewer participants than the {folds} folds: {small} "
                               f"(all counts: {counts})", path=path,
                               fix="merge or drop the rare classes, or use fewer --folds")


# --------------------------------------------------------------------------------------------------------------
# Cross-validation


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


# --------------------------------------------------------------------------------------------------------------
# The whole command


OUTPUT_FILES = ("metrics.tsv", "metrics.json", "predictions.tsv", "comparisons.tsv", "report.html")


def unique_names(names: list[str], reserved: set[str]) -> list[str]:
    out, seen = [], set(reserved)
    for name in names:
        candidate, i = name, 2
        while candidate in seen:
            candidate, i = f"{name}-{i}", i + 1
        seen.add(candidate)
        out.append(candidate)
    return out


def probe(embeddings: list[str], participants_path, target: str, output, *, task: str | None = None,
          baseline: str | None = None, timeseries: list[str] | None = None, folds: int = 5, repeats: int = 10,
          permutations: int = 100, group_by: str | None = None, confounds: list[str] | None = None,
          aggregate: str = "mean", head: str = "linear", seed: int = 0, n_jobs: int = 1, overwrite: bool = False,
          command: str | None = None, progress: Callable[[int, int], None] | None = None) -> ProbeResult:
    """Evaluate embeddings (and the FC baseline) against a phenotype; write metrics, predictions and a report."""
    confounds = list(confounds or [])
    _check_settings(embeddings, baseline, timeseries, task, aggregate, head, folds, repeats, permutations, seed,
                    n_jobs)
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise BrainfmError("the output exists and is not a folder", path=out, fix="choose another -o")
    existing = [f for f in OUTPUT_FILES if (out / f).exists()]
    if existing and not overwrite:
        raise BrainfmError(f"the report folder already holds {', '.join(existing)}", path=out,
                           fix="pass --overwrite or choose another -o")
    participants = read_participants(participants_path)
    feature_sets = [read_embeddings(str(p)) for p in embeddings]
    use_fc = bool(timeseries) and baseline != "none"
    for fs, name in zip(feature_sets, unique_names([fs.name for fs in feature_sets], {FC_NAME} if use_fc else set())):
        fs.name = name
    if use_fc:
        feature_sets.append(fc_features(timeseries, n_jobs))
    setup = build_setup(feature_sets, participants, target, task, participants_path, group_by, confounds,
                        aggregate, folds)
    models = cross_validate(setup, repeats, folds, permutations, seed, head, n_jobs, progress=progress)
    metrics = REGRESSION_METRICS if setup.task == "regression" else CLASSIFICATION_METRICS
    comparisons = compare(models, metrics, folds)
    settings = {
        "command": command, "target": target, "task": setup.task, "head": head, "aggregate": aggregate,
        "folds": folds, "repeats": repeats, "inner_folds": 5, "permutations": permutations, "seed": seed,
        "n_jobs": n_jobs, "group_by": group_by, "confounds": confounds, "baseline": FC_NAME if use_fc else "none",
        "participants": str(participants_path), "embeddings": [str(e) for e in embeddings],
        "timeseries": [str(t) for t in timeseries or []],
    }
    notes = _notes(setup, models, settings, baseline, timeseries)
    result = ProbeResult(setup=setup, models=models, comparisons=comparisons, metrics=_metrics_table(models, setup),
                         predictions=_predictions_table(models, setup), settings=settings, notes=notes)
    write_outputs(result, out)
    return result


def _check_settings(embeddings, baseline, timeseries, task, aggregate, head, folds, repeats, permutations, seed,
                    n_jobs):
    if sum(1 for e in embeddings if str(e) == "-") > 1:
        raise BrainfmError("standard input ('-') given more than once", fix="pass '-' at most once")
    if baseline == "fc" and not timeseries:
        raise BrainfmError("the FC baseline needs the region time series the embeddings came from",
                           fix="add --timeseries DIR (the output of 'brainfm parcellate'), or --baseline none")
    if not embeddings and (not timeseries or baseline == "none"):
        raise BrainfmError("nothing to evaluate: no embeddings file and no FC baseline",
                           fix="give embedding TSVs, or --timeseries DIR to evaluate the FC baseline alone")
    for name, value, allowed in (("--task", task, (None, "regression", "classification")),
                                 ("--baseline", baseline, (None, "fc", "none")),
                                 ("--aggregate", aggregate, ("mean", "none")), ("--head", head, ("linear", "mlp"))):
        if value not in allowed:
            raise BrainfmError(f"{name} {value!r} is not one of {', '.join(a for a in allowed if a)}")
    if repeats < 1 or permutations < 0 or seed < 0 or n_jobs == 0:
        raise BrainfmError("--repeats must be ≥ 1, --permutations ≥ 0, --seed ≥ 0, --n-jobs ≠ 0")


def _notes(setup: ProbeSetup, models, settings, baseline, timeseries) -> list[str]:
    notes = []
    acc = setup.accounting
    for name, a in acc["models"].items():
        dropped = {k: v for k, v in a.items() if k not in ("rows", "participants", "used") and v}
        if dropped:
            notes.append(f"{name}: {a['participants']} participants in the file, {a['used']} used; dropped: "
                         + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in dropped.items()))
    if acc["missing_target"]:
        notes.append(f"{acc['missing_target']} participants in participants.tsv have no '{settings['target']}' "
                     f"value (n/a): dropped, never imputed")
    fc = next((d.features for d in setup.designs if d.features.kind == "fc"), None)
    if fc is not None:
        lost = fc.info["regions_without_coverage"] + fc.info["regions_constant"]
        if lost:
            notes.append(f"FC baseline: {len(lost)} of {fc.info['regions']} regions dropped from every run "
                         f"({len(fc.info['regions_without_coverage'])} without coverage, "
                         f"{len(fc.info['regions_constant'])} constant): {', '.join(lost[:10])}"
                         f"{' …' if len(lost) > 10 else ''}")
    elif not timeseries and baseline is None:
        notes.append("no FC baseline: add --timeseries DIR (the region time series the embeddings came from) to "
                     "see whether the embeddings beat plain functional connectivity")
    name = param_grid(setup.task, settings["head"])["name"]
    for m in models:
        n_fits = sum(len(row) for row in m.params)
        if m.strongest > n_fits / 2:
            notes.append(f"{m.name}: the inner CV chose the strongest penalty ({name}) in {m.strongest} of {n_fits} "
                         f"folds: the model found little signal it could use")
    return notes


def _metrics_table(models: list[ModelResult], setup: ProbeSetup) -> pd.DataFrame:
    rows = []
    for m in models:
        for metric, s in m.summary.items():
            rows.append({"model": m.name, "metric": metric, **s, "n": len(setup.participants)})
    return pd.DataFrame(rows, columns=["model", "metric", "mean", "ci_low", "ci_high", "p_permutation", "n"])


def _predictions_table(models: list[ModelResult], setup: ProbeSetup) -> pd.DataFrame:
    frames = []
    ids = np.asarray(setup.participants)
    for m in models:
        for r, pred in enumerate(m.oof):
            df = pd.DataFrame({"model": m.name, "repeat": r, "fold": m.folds[r], "participant_id": ids})
            if setup.task == "regression":
                df["target"] = setup.y
                df["prediction"] = pred
            else:
                classes = np.asarray(setup.classes)
                df["target"] = classes[setup.y]
                df["prediction"] = classes[np.argmax(pred, axis=1)]
                for j, c in enumerate(classes):
                    df[f"proba_{c}"] = pred[:, j]
            frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _protocol(result: ProbeResult) -> dict:
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


def _sidecar(result: ProbeResult) -> dict:
    import joblib
    import scipy
    import sklearn

    s = result.setup
    return {
        "Description": "brainfm probe: out-of-fold prediction of a phenotype from embeddings and the FC baseline",
        "GeneratedBy": {"Name": "brainfm", "Version": __version__, "Command": result.settings["command"]},
        "Software": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                     "scikit-learn": sklearn.__version__, "pandas": pd.__version__, "joblib": joblib.__version__},
        "Settings": result.settings,
        "Protocol": {**_protocol(result), "statistics": METHOD},
        "Participants": {"file": result.settings["participants"],
                         "sha256": _sha256(Path(result.settings["participants"])),
                         "used": len(s.participants), "accounting": s.accounting,
                         "classes": s.classes or None,
                         "class_counts": ({c: int((s.y == i).sum()) for i, c in enumerate(s.classes)}
                                          if s.classes else None)},
        "Models": [{"name": d.features.name, "kind": d.features.kind, "source": d.features.source,
                    "rows_used": len(d.unit), **d.features.info}
                   for d in s.designs],
        "Confounds": s.confound_names,
        "HyperParameters": {**param_grid(s.task, result.settings["head"]),
                            "chosen": {m.name: m.params for m in result.models}},
        "Metrics": result.metrics.to_dict(orient="records"),
        "Comparisons": result.comparisons.to_dict(orient="records"),
        "Notes": result.notes,
    }


def write_outputs(result: ProbeResult, out: Path) -> None:
    """Write every output of the report folder together (atomically: all appear, or none)."""
    from brainfm_cli.data.io import atomic_group, json_text, tsv_text

    texts = {
        "metrics.tsv": tsv_text(result.metrics),
        "metrics.json": json_text(_sidecar(result)),
        "predictions.tsv": tsv_text(result.predictions),
        "comparisons.tsv": tsv_text(result.comparisons),
        "report.html": build_report(result).render(),
    }
    out.mkdir(parents=True, exist_ok=True)
    names = list(texts)
    with atomic_group([out / n for n in names]) as tmps:
        for n, tmp in zip(names, tmps):
            tmp.write_text(texts[n], encoding="utf-8")


# --------------------------------------------------------------------------------------------------------------
# Report


METRIC_LABEL = {"r2": "R²", "mae": "MAE", "pearson_r": "Pearson r", "balanced_accuracy": "balanced accuracy",
                "f1_macro": "macro-F1", "roc_auc": "ROC-AUC"}


def verdicts(result: ProbeResult) -> list[str]:
    """One plain sentence per model and per comparison, on the headline metric (R² or balanced accuracy)."""
    s = result.setup
    head = "r2" if s.task == "regression" else "balanced_accuracy"
    chance = 0.0 if s.task == "regression" else 1.0 / len(s.classes)
    out = []
    for m in result.models:
        v = m.summary[head]
        p = v["p_permutation"]
        ptxt = f", permutation p = {p:.3g}" if np.isfinite(p) else ""
        out.append(f"{m.name}: {METRIC_LABEL[head]} = {v['mean']:.3f} "
                   f"(95 % CI {v['ci_low']:.3f} to {v['ci_high']:.3f}; chance ≈ {chance:.2f}{ptxt})")
    comp = result.comparisons[result.comparisons["metric"] == head]
    for row in comp.itertuples(index=False):
        if not np.isfinite(row.p_holm):
            continue
        if row.p_holm < 0.05:
            word = "better than" if row.difference > 0 else "worse than"
        else:
            word = "within noise of"
        out.append(f"{row.model} is {word} {row.reference} on {METRIC_LABEL[head]}: difference "
                   f"{row.difference:+.3f} (95 % CI {row.ci_low:+.3f} to {row.ci_high:+.3f}), Holm p = "
                   f"{row.p_holm:.3g}")
    return out


def _comparison_figure(result: ProbeResult):
    from brainfm_cli.tasks.report import new_figure

    metrics = list(result.models[0].summary)
    names = [m.name for m in result.models]
    fig = new_figure(4.0 * len(metrics), 0.6 * len(names) + 1.6)
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
    ypos = np.arange(len(names))[::-1]
    for ax, metric in zip(axes, metrics):
        for yp, m in zip(ypos, result.models):
            s = m.summary[metric]
            err = [[max(s["mean"] - s["ci_low"], 0)], [max(s["ci_high"] - s["mean"], 0)]]
            ax.errorbar([s["mean"]], [yp], xerr=err if np.isfinite(s["ci_low"]) else None, fmt="o", capsize=4,
                        color="#444" if m.kind == "fc" else "#1f77b4")
        ref = {"r2": 0.0, "pearson_r": 0.0, "roc_auc": 0.5,
               "balanced_accuracy": 1.0 / max(len(result.setup.classes), 1)}.get(metric)
        if ref is not None:
            ax.axvline(ref, color="#b00", lw=0.8, ls="--")
        ax.set_title(METRIC_LABEL[metric])
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ypos, names)
    axes[0].set_ylim(-0.6, len(names) - 0.4)
    return fig


def _model_figure(result: ProbeResult, m: ModelResult):
    from brainfm_cli.tasks.report import new_figure

    s = result.setup
    mean_pred = np.mean(m.oof, axis=0)
    fig = new_figure(4.2, 3.8)
    ax = fig.subplots()
    if s.task == "regression":
        ax.scatter(s.y, mean_pred, s=12, alpha=0.7)
        lo, hi = float(min(s.y.min(), mean_pred.min())), float(max(s.y.max(), mean_pred.max()))
        ax.plot([lo, hi], [lo, hi], color="#b00", lw=0.8, ls="--")
        ax.set_xlabel(f"observed {result.settings['target']}")
        ax.set_ylabel("predicted (mean over repeats)")
    else:
        k = len(s.classes)
        cm = np.zeros((k, k), dtype=int)
        np.add.at(cm, (s.y, np.argmax(mean_pred, axis=1)), 1)
        ax.imshow(cm, cmap="Blues")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(k), s.classes, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), s.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed")
    ax.set_title(m.name)
    return fig


def build_report(result: ProbeResult):
    """The HTML report: verdicts, tables, a comparison plot, a scatter or confusion matrix per model."""
    from brainfm_cli.tasks.report import HtmlReport

    s, st = result.setup, result.settings
    rep = HtmlReport(f"brainfm probe: {st['target']} ({s.task})")
    rep.paragraph(f"{len(s.participants)} participants, {st['folds']}-fold CV grouped by "
                  f"{st['group_by'] or 'participant'}, repeated {st['repeats']} times; {st['permutations']} "
                  f"permutations; rows per participant: "
                  f"{'averaged before fitting' if st['aggregate'] == 'mean' else 'kept, predictions averaged'}; "
                  f"confounds: {', '.join(st['confounds']) or 'none'}; seed {st['seed']}.")
    rep.heading("Verdict")
    rep.bullets(verdicts(result))
    for note in result.notes:
        rep.note(note)
    rep.heading("Scores")
    rep.table(result.metrics, caption="mean over repeats, 95 % corrected repeated-CV interval, permutation p")
    rep.figure(_comparison_figure(result), caption="mean and 95 % interval; dashed: chance level")
    if len(result.comparisons):
        rep.heading("Paired comparisons on the same folds")
        rep.table(result.comparisons, caption="corrected resampled t-test on per-fold differences, Holm-corrected "
                                              "within each metric")
    rep.heading("Predictions")
    for m in result.models:
        rep.figure(_model_figure(result, m),
                   caption=f"{m.name}: out-of-fold predictions averaged over repeats")
    rep.heading("Participants")
    acc = pd.DataFrame([{"model": k, **v} for k, v in s.accounting["models"].items()])
    rep.table(acc, caption="participants per model: in the file, dropped and why, used")
    rep.heading("Method")
    rep.bullets([_protocol(result)[k] for k in ("folds", "aggregate", "preprocessing", "model", "hyper_parameter")]
                + METHOD)
    if st.get("command"):
        rep.heading("Reproduce", 3)
        rep.code(st["command"])
    return rep
