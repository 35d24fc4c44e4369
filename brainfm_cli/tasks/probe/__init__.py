"""The ``probe`` task: how well do embeddings predict a phenotype, next to the functional-connectivity baseline?

Every model (each embedding file and the FC baseline) is evaluated on the same participants and the same folds.
Folds are grouped by participant (or by site), so one person's windows or runs never sit on both sides of a split.
Confound removal, standardisation and the choice of regularisation use the training folds only (nested). The
statistics are described in ``constants.METHOD``, which the report and the sidecar quote.

Modules, in dependency order: ``constants``, ``splits``, ``estimators``, ``stats``, ``inputs``, ``design``, ``cv``,
``figures``, ``run``.
"""

from brainfm_cli.tasks.probe.constants import RIDGE_SCALES
from brainfm_cli.tasks.probe.cv import cross_validate
from brainfm_cli.tasks.probe.design import build_setup
from brainfm_cli.tasks.probe.estimators import (
    LogisticProbe,
    MlpClassifierProbe,
    MlpRegressorProbe,
    RidgeProbe,
    logistic_Cs,
    ridge_alphas,
)
from brainfm_cli.tasks.probe.figures import (
    METRIC_LABEL,
    comparisons_table,
    participants_table,
    scores_table,
    verdicts,
)
from brainfm_cli.tasks.probe.inputs import FeatureSet, fc_features, read_embeddings, read_participants
from brainfm_cli.tasks.probe.run import OUTPUT_FILES, ProbeOptions, probe
from brainfm_cli.tasks.probe.splits import ShuffledGroupKFold, StratifiedShuffledGroupKFold, assign_folds, derive_seed
from brainfm_cli.tasks.probe.stats import classification_scores, corrected_t, holm, permutation_p

__all__ = ["FeatureSet", "LogisticProbe", "METRIC_LABEL", "MlpClassifierProbe", "MlpRegressorProbe", "OUTPUT_FILES",
           "ProbeOptions", "RIDGE_SCALES", "RidgeProbe", "ShuffledGroupKFold", "StratifiedShuffledGroupKFold",
           "assign_folds", "build_setup", "classification_scores", "comparisons_table", "corrected_t",
           "cross_validate", "derive_seed", "fc_features", "holm", "logistic_Cs", "participants_table",
           "permutation_p", "probe", "read_embeddings", "read_participants", "ridge_alphas", "scores_table",
           "verdicts"]
