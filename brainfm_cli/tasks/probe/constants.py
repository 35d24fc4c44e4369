"""Names shared across the probe: identifier columns, metrics and their ranges, penalty grids, the method text."""

from __future__ import annotations

import numpy as np

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
# Why a participant was left out (the accounting's keys), in the words of the report and the console.
DROP_REASONS = {"not_in_participants_tsv": "not in participants.tsv", "missing_target": "no {target} value",
                "missing_confounds": "a confound missing", "missing_group": "no {group_by} value",
                "not_shared_with_other_models": "not in every model"}

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
