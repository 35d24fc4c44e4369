"""The target, covariates and the participant set shared by every model, checked before any fitting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfm_cli.errors import BrainfmError
from brainfm_cli.tasks.probe.inputs import FeatureSet


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
    """Checks on the participants actually used (after matching to every model), not on participants.tsv."""
    if (task == "classification" and len(classes) < 2) or (task == "regression" and np.ptp(y) == 0):
        value = classes[0] if task == "classification" and classes else (y[0] if len(y) else "n/a")
        raise BrainfmError(f"'{target}' is {value!r} for every one of the {len(y)} participant(s) left after "
                           "matching them to the embeddings: nothing to predict", path=path,
                           fix="check which participants have embeddings (the others are dropped), or choose "
                           "another --target")
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
