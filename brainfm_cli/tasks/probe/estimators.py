"""Probe estimators in scikit-learn style: confounds, scaling and rotation fitted on training rows; nested
penalty selection by an inner grouped CV."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from brainfm_cli.tasks.probe.constants import LOGISTIC_SCALES, MLP_ALPHAS, RIDGE_SCALES
from brainfm_cli.tasks.probe.splits import make_splitter


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


class _MlpParams:
    """The parameters both MLP probes take (scikit-learn reads them from ``__init__``)."""

    def __init__(self, alphas=None, hidden: int = 64, inner_folds: int = 5, n_confounds: int = 0,
                 random_state: int | None = None):
        self.alphas = alphas
        self.hidden = hidden
        self.inner_folds = inner_folds
        self.n_confounds = n_confounds
        self.random_state = random_state


class MlpClassifierProbe(_MlpParams, _ClassifierProbe):
    """A one-hidden-layer MLP classifier (scikit-learn), weight decay chosen by stratified grouped inner CV."""

    def _make(self, alpha):
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(self.hidden,), alpha=float(alpha), max_iter=500,
                             random_state=self.random_state)


class MlpRegressorProbe(_MlpParams, RegressorMixin, _Probe):
    """A one-hidden-layer MLP regressor (scikit-learn), weight decay chosen by grouped inner CV.

    Like every probe it sees the standardised features rotated onto the training rows' span when features
    outnumber rows (the hidden layer then starts in that span)."""

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
