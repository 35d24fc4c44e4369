"""The ``probe`` entry point: settings, the run, and its outputs (metrics, predictions, comparisons, sidecar)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.errors import BrainfmError
from brainfm_cli.tasks.probe.constants import CLASSIFICATION_METRICS, FC_NAME, METHOD, REGRESSION_METRICS
from brainfm_cli.tasks.probe.cv import ModelResult, ProbeResult, compare, cross_validate, protocol
from brainfm_cli.tasks.probe.design import ProbeSetup, build_setup
from brainfm_cli.tasks.probe.estimators import param_grid
from brainfm_cli.tasks.probe.figures import build_report, drop_reason
from brainfm_cli.io.files import check_output_folder
from brainfm_cli.io.provenance import generated_by, sha256sum
from brainfm_cli.tasks.probe.inputs import UNNAMED, fc_features, read_embeddings, read_participants

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


TASKS, BASELINES, AGGREGATES, HEADS = ("regression", "classification"), ("fc", "none"), ("mean", "none"), \
    ("linear", "mlp")


@dataclass(frozen=True)
class ProbeOptions:
    """How ``probe`` evaluates: task (None: inferred from the column), the FC baseline and its time series, the
    grouped CV (folds × repeats), permutations, grouping and confounds, aggregation, head, seed and workers, and
    the embeddings' names (one per file, in order; default: the model in each sidecar, else the file name).
    Every value is checked here, once, for the command line and the Python API alike."""

    task: str | None = None
    baseline: str | None = None
    timeseries: tuple[str, ...] = ()
    folds: int = 5
    repeats: int = 10
    permutations: int = 100
    group_by: str | None = None
    confounds: tuple[str, ...] = ()
    aggregate: str = "mean"
    head: str = "linear"
    seed: int = 0
    n_jobs: int = 1
    names: tuple[str, ...] = ()
    overwrite: bool = False
    command: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "timeseries", tuple(str(t) for t in self.timeseries or ()))
        object.__setattr__(self, "confounds", tuple(self.confounds or ()))
        object.__setattr__(self, "names", tuple(str(n).strip() for n in self.names or ()))
        if any(not n for n in self.names):
            raise BrainfmError("an empty --name", fix="give each embeddings file a name, e.g. --name brainlm")
        for name, value, allowed in (("--task", self.task, (None, *TASKS)), ("--baseline", self.baseline,
                                     (None, *BASELINES)), ("--aggregate", self.aggregate, AGGREGATES),
                                     ("--head", self.head, HEADS)):
            if value not in allowed:
                raise BrainfmError(f"{name} {value!r} is not one of {', '.join(a for a in allowed if a)}",
                                   fix=f"e.g. {name} {next(a for a in allowed if a)}")
        if self.folds < 2 or self.repeats < 1 or self.permutations < 0 or self.seed < 0 or self.n_jobs == 0:
            raise BrainfmError("--folds must be ≥ 2, --repeats ≥ 1, --permutations ≥ 0, --seed ≥ 0, --n-jobs ≠ 0",
                               fix="correct the option")
        if self.baseline == "fc" and not self.timeseries:
            raise BrainfmError("the FC baseline needs the region time series the embeddings came from",
                               fix="add --timeseries DIR (the output of 'brainfm parcellate'), or --baseline none")


def probe(embeddings: list[str], participants_path, target: str, output, options: ProbeOptions | None = None, *,
          progress: Callable[[int, int], None] | None = None, **settings) -> ProbeResult:
    """Evaluate embeddings (and the FC baseline) against a phenotype; write metrics, predictions and a report.

    ``options`` (or its fields as keywords, ``repeats=3, seed=1``) say how; ``progress(done, total)`` is told
    of each fitted fold."""
    o = options or ProbeOptions(**settings)
    if sum(1 for e in embeddings if str(e) == "-") > 1:
        raise BrainfmError("standard input ('-') given more than once", fix="pass '-' at most once")
    if o.names and len(o.names) != len(embeddings):
        raise BrainfmError(f"{len(o.names)} --name for {len(embeddings)} embeddings file(s)",
                           fix="give one --name per embeddings file, in the same order (or none)")
    if not embeddings and (not o.timeseries or o.baseline == "none"):
        raise BrainfmError("nothing to evaluate: no embeddings file and no FC baseline",
                           fix="give embedding TSVs, or --timeseries DIR to evaluate the FC baseline alone")
    out = Path(output)
    check_output_folder(out, OUTPUT_FILES, o.overwrite)
    participants = read_participants(participants_path)
    names = o.names or (None,) * len(embeddings)
    feature_sets = [read_embeddings(str(p), name) for p, name in zip(embeddings, names)]
    use_fc = bool(o.timeseries) and o.baseline != "none"
    for fs, name in zip(feature_sets, unique_names([fs.name for fs in feature_sets], {FC_NAME} if use_fc else set())):
        fs.name = name
    if use_fc:
        feature_sets.append(fc_features(list(o.timeseries), o.n_jobs))
    setup = build_setup(feature_sets, participants, target, o.task, participants_path, o.group_by, list(o.confounds),
                        o.aggregate, o.folds)
    models = cross_validate(setup, o.repeats, o.folds, o.permutations, o.seed, o.head, o.n_jobs, progress=progress)
    metrics = REGRESSION_METRICS if setup.task == "regression" else CLASSIFICATION_METRICS
    comparisons = compare(models, metrics, o.folds)
    settings = {
        "command": o.command, "target": target, "task": setup.task, "head": o.head, "aggregate": o.aggregate,
        "folds": o.folds, "repeats": o.repeats, "inner_folds": 5, "permutations": o.permutations, "seed": o.seed,
        "n_jobs": o.n_jobs, "group_by": o.group_by, "confounds": list(o.confounds),
        "baseline": FC_NAME if use_fc else "none",
        "participants": str(participants_path), "embeddings": [str(e) for e in embeddings],
        "names": list(o.names),
        "timeseries": list(o.timeseries),
    }
    notes = _notes(setup, models, settings, o.baseline, list(o.timeseries))
    result = ProbeResult(setup=setup, models=models, comparisons=comparisons, metrics=_metrics_table(models, setup),
                         predictions=_predictions_table(models, setup), settings=settings, notes=notes)
    write_outputs(result, out)
    return result


def _notes(setup: ProbeSetup, models, settings, baseline, timeseries) -> list[str]:
    notes = []
    acc = setup.accounting
    for name, a in acc["models"].items():
        dropped = {k: v for k, v in a.items() if k not in ("rows", "participants", "used") and v}
        if dropped:
            notes.append(f"{name}: {a['participants']} participants in the file, {a['used']} used; dropped: "
                         + ", ".join(f"{v} {drop_reason(k, settings)}" for k, v in dropped.items()))
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
    for d in setup.designs:
        if d.features.info.get("name_from") == UNNAMED:
            notes.append(f"the embeddings read from standard input are called '{d.features.name}': a pipe carries no "
                         f"sidecar, so their model is not known here; name them with --name (e.g. --name brainlm)")
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


def _sidecar(result: ProbeResult) -> dict:
    import joblib
    import scipy
    import sklearn

    s = result.setup
    return {
        "Description": "brainfm probe: out-of-fold prediction of a phenotype from embeddings and the FC baseline",
        "GeneratedBy": generated_by(result.settings["command"]),
        "Software": {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
                     "scikit-learn": sklearn.__version__, "pandas": pd.__version__, "joblib": joblib.__version__},
        "Settings": result.settings,
        "Protocol": {**protocol(result), "statistics": METHOD},
        "Participants": {"file": result.settings["participants"],
                         "sha256": sha256sum(Path(result.settings["participants"])),
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
    from brainfm_cli.io.files import atomic_group, json_text, tsv_text

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
