"""Inputs: participants.tsv, embedding TSVs and region time series (the FC baseline) as feature sets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm_cli.data.connectivity import fisher_z_fc
from brainfm_cli.data.corpus import check_same_regions
from brainfm_cli.io.files import read_json, read_tsv, sidecar_path, split_ext
from brainfm_cli.io.provenance import sha256sum
from brainfm_cli.io.timeseries import discover_timeseries, read_timeseries
from brainfm_cli.errors import BrainfmError
from brainfm_cli.tasks.probe.constants import FC_NAME, ID_COLUMNS


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


STDIN_NAME = "stdin"
UNNAMED = "standard input: no model name"  # info["name_from"] of unnamed embeddings read from a pipe


def read_embeddings(path: str, name: str | None = None) -> FeatureSet:
    """An embeddings TSV (data contracts §3), checked: ids, numeric finite features, no duplicated rows.

    Its name in the results: ``name`` if given, else the model in its sidecar, else the file name. Standard input
    has no sidecar and no file name (``embed -o -`` writes the model only to a file's sidecar), so unnamed it is
    ``stdin`` and ``info["name_from"]`` says so."""
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
        info["sha256"] = sha256sum(p)
        side = sidecar_path(p)
        if side.is_file():
            sidecar = read_json(side)
            model = (sidecar.get("model") or sidecar.get("Model")) if isinstance(sidecar, dict) else None
            info["sidecar"] = str(side)
    if name:
        info["name_from"] = "--name"
    elif model:
        name, info["name_from"] = str(model), "sidecar"
    elif path != "-":
        name, info["name_from"] = split_ext(Path(path).name)[0], "file name"
    else:
        name, info["name_from"] = STDIN_NAME, UNNAMED
    return FeatureSet(name=name, kind="embedding", ids=ids.reset_index(drop=True), X=X, source=name_for_errors,
                      info=info)


def _run_fc(path) -> dict:
    """One run's full correlation matrix (upper triangle, Fisher z; NaN where a region is absent or constant)."""
    ts = read_timeseries(path)
    if len(ts.data) < 3:
        raise BrainfmError(f"only {len(ts.data)} time points: too few for a correlation", path=ts.path,
                           fix="drop this run or re-run parcellate on the full run")
    values = ts.data.to_numpy()
    absent = np.isnan(values).all(axis=0)  # read_timeseries allows n/a only as a whole column
    flat = (values.max(axis=0) == values.min(axis=0)) & ~absent
    z = fisher_z_fc(values)[np.triu_indices(values.shape[1], k=1)]
    e = ts.entities
    atlas = ts.sidecar.get("Atlas") if isinstance(ts.sidecar, dict) else None
    return {"regions": list(ts.data.columns), "z": z, "absent": absent,
            "flat": flat, "atlas": atlas.get("name") if isinstance(atlas, dict) else atlas,
            "ids": {"participant_id": ts.participant_id, "session_id": f"ses-{e['ses']}" if e.get("ses") else None,
                    "task": e.get("task"), "run": e.get("run"), "source": str(ts.path)}}


def fc_features(inputs, n_jobs: int = 1) -> FeatureSet:
    """The FC baseline: per run, the Pearson correlation upper triangle, Fisher z (arctanh).

    Regions missing (all ``n/a``) or constant in any run are dropped from every run, and the sidecar names them.
    """
    from joblib import Parallel, delayed

    files = discover_timeseries(list(inputs))
    runs = Parallel(n_jobs=n_jobs)(delayed(_run_fc)(f) for f in files) if n_jobs != 1 else [_run_fc(f) for f in files]
    regions = runs[0]["regions"]
    for f, run in zip(files, runs):
        check_same_regions(run["regions"], regions, f, files[0])
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
