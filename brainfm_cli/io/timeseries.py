"""Region time series files (data contracts §1): naming, writing with sidecar, finding and reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm_cli.io.bids import RunFilter, missing_input_fix, parse_entities
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import (atomic_group, json_text, read_json, read_tsv, sidecar_path, split_ext, tsv_text,
                                  write_json)
from brainfm_cli.io.provenance import dataset_generated_by

SUFFIX = "timeseries"
NAME_ENTITIES = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "echo")


@dataclass
class RegionTimeseries:
    """One run as regions over time: ``data`` is time × regions; a whole-NaN column is a low-coverage region."""

    data: pd.DataFrame
    tr: float | None
    entities: dict[str, str] = field(default_factory=dict)
    sidecar: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def missing_regions(self) -> list[str]:
        return [c for c in self.data.columns if self.data[c].isna().all()]

    @property
    def participant_id(self) -> str:
        return f"sub-{self.entities.get('sub', 'unknown')}"


def timeseries_name(entities: dict[str, str], atlas_name: str) -> str:
    """``sub-<l>[_ses-<l>]_task-<l>[_run-<i>]_atlas-<name>_timeseries.tsv`` (other BIDS entities kept)."""
    atlas = "".join(ch for ch in atlas_name if ch.isalnum())
    parts = [f"{k}-{entities[k]}" for k in NAME_ENTITIES if entities.get(k)]
    return "_".join(parts + [f"atlas-{atlas}", SUFFIX]) + ".tsv"


def timeseries_path(out_dir: str | Path, entities: dict[str, str], atlas_name: str) -> Path:
    """Where a run's region time series goes inside a derivatives folder."""
    folder = Path(out_dir) / f"sub-{entities['sub']}"
    if entities.get("ses"):
        folder = folder / f"ses-{entities['ses']}"
    return folder / "func" / timeseries_name(entities, atlas_name)


def write_dataset_description(out_dir: str | Path, pipeline: str = "parcellate") -> None:
    """A BIDS-derivatives ``dataset_description.json``, written once (kept if already present)."""
    path = Path(out_dir) / "dataset_description.json"
    if path.exists():
        return
    write_json({
        "Name": f"brainfm {pipeline}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": dataset_generated_by(pipeline),
    }, path)


def write_timeseries(data: pd.DataFrame, path: str | Path, sidecar: dict) -> None:
    """Write the TSV and its JSON sidecar together, atomically (both appear, or neither)."""
    path = Path(path)
    tsv, js = tsv_text(data), json_text(sidecar)
    with atomic_group([path, sidecar_path(path)]) as (tmp_tsv, tmp_json):
        tmp_tsv.write_text(tsv, encoding="utf-8")
        tmp_json.write_text(js, encoding="utf-8")


def discover_timeseries(inputs: list[str | Path], filters: RunFilter | None = None) -> list[Path]:
    """Region time-series TSVs named by ``inputs``: files, or derivatives folders searched recursively."""
    filters = filters or RunFilter()
    found: list[Path] = []
    for item in inputs:
        item = Path(item)
        if not item.exists():
            raise BrainfmError("input not found", path=item, fix=missing_input_fix(item))
        if item.is_dir():
            files = sorted(item.rglob(f"*_{SUFFIX}.tsv"))
            files = [f for f in files if "desc-confounds" not in f.name]
            if not files:
                raise BrainfmError(f"no *_{SUFFIX}.tsv files found", path=item,
                                   fix="point at the output folder of 'brainfm parcellate' or at TSV files")
            found.extend(files)
        else:
            found.append(item)
    selected = [f for f in found if filters.accepts(parse_entities(f.name)[0])]
    if not selected:
        raise BrainfmError(f"no time-series file matches the filters {filters.describe()}",
                           fix="check --participant-label/--session/--task/--run")
    return selected


def read_timeseries(path: str | Path, tr: float | None = None) -> RegionTimeseries:
    """Read a region time-series TSV and its sidecar, checking the contract (numeric, no stray n/a).

    ``tr`` is needed only when the TSV has no sidecar; if both exist they must agree.
    """
    path = Path(path)
    df = read_tsv(path)
    if df.shape[1] == 0 or df.shape[0] == 0:
        raise BrainfmError("the time-series TSV has no regions or no time points", path=path,
                           fix="regenerate it with 'brainfm parcellate'")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        col = bad[0]
        row = next((i for i, v in enumerate(df[col]) if not _is_number(v)), 0)
        sample = df[col].iloc[row]
        missing = str(sample).strip().lower() in ("nan", "na", "null", "none", "")
        raise BrainfmError(f"non-numeric value {sample!r} at line {row + 2}, column '{col}' ({len(bad)} "
                           "non-numeric column(s))", path=path,
                           fix="write missing values as n/a (BIDS), which may only fill a whole column" if missing
                           else "a time-series TSV holds only numbers, with n/a only as a whole column")
    values = df.to_numpy(dtype=np.float64)
    nan = np.isnan(values)
    partial = nan.any(axis=0) & ~nan.all(axis=0)
    if partial.any():
        col = int(np.flatnonzero(partial)[0])
        row = int(np.flatnonzero(nan[:, col])[0])
        raise BrainfmError(f"n/a inside the series of region(s) {list(df.columns[partial][:5])}: the first missing "
                           f"value (n/a or NaN) is at line {row + 2}, column '{df.columns[col]}'", path=path,
                           fix="n/a may only fill a whole column (a region without coverage); re-run parcellate")
    if np.isinf(values).any():
        raise BrainfmError("infinite values in the time series", path=path, fix="re-run parcellate on clean data")
    side = sidecar_path(path)
    sidecar = read_json(side) if side.is_file() else {}
    side_tr = sidecar.get("RepetitionTime")
    if side_tr is not None and tr is not None and abs(float(side_tr) - tr) > 1e-3:
        raise BrainfmError(f"--tr {tr} contradicts RepetitionTime {side_tr} in the sidecar", path=side,
                           fix="drop --tr, or correct the sidecar")
    final_tr = float(side_tr) if side_tr is not None else tr
    if final_tr is not None and final_tr <= 0:
        raise BrainfmError(f"repetition time {final_tr} is not positive", path=side if side_tr else path,
                           fix="give the repetition time in seconds")
    entities, _ = parse_entities(path.name)
    if "sub" not in entities:
        stem, _ = split_ext(path.name)
        entities["sub"] = "".join(ch for ch in stem if ch.isalnum()) or "unknown"
    return RegionTimeseries(data=df.astype(np.float64), tr=final_tr, entities=entities, sidecar=sidecar, path=path)


def _is_number(value) -> bool:
    """A finite number (``NaN`` written as text is a missing value, not a number)."""
    try:
        return bool(np.isfinite(float(value)))
    except (TypeError, ValueError):
        return False
