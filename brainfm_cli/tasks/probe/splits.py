"""Seeded, shuffled (stratified) group k-fold splitters: a participant's rows never straddle a split."""

from __future__ import annotations

import numpy as np


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
