"""The probe's HTML report: verdicts, a comparison plot and a figure per model."""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfm_cli.tasks.probe.constants import DROP_REASONS, METHOD, METRIC_RANGE
from brainfm_cli.tasks.probe.cv import ModelResult, ProbeResult, protocol

METRIC_LABEL = {"r2": "R²", "mae": "MAE", "pearson_r": "Pearson r", "balanced_accuracy": "balanced accuracy",
                "f1_macro": "macro-F1", "roc_auc": "ROC-AUC"}
# The tables people read (console and report alike): metric names as in the text, numbers as they are printed.
SCORE_NUMBERS = ("mean", "95 % CI", "permutation p")
COMPARISON_NUMBERS = ("difference", "95 % CI", "p", "Holm p")


def clip_range(task: str) -> str:
    """The ranges the task's intervals are clipped to, in words."""
    return "R² and r at most 1" if task == "regression" else "every score between 0 and 1"


def clipped(metrics) -> bool:
    """Whether any interval of ``metrics`` (the metrics table) was clipped to its metric's range."""
    bounds = metrics.metric.map(METRIC_RANGE)
    return bool((metrics.ci_high == bounds.str[1]).any() or (metrics.ci_low == bounds.str[0]).any())

def _number(value: float, fmt: str) -> str:
    return "n/a" if value != value else format(value, fmt)


def _interval(low: float, high: float, fmt: str = ".3f") -> str:
    return "n/a" if low != low else f"{format(low, fmt)} – {format(high, fmt)}"


def scores_table(result: ProbeResult) -> pd.DataFrame:
    """Each model's scores in words and printed numbers: the console's table and the report's are this one."""
    rows = [{"model": r.model, "metric": METRIC_LABEL[r.metric], "mean": _number(r.mean, ".3f"),
             "95 % CI": _interval(r.ci_low, r.ci_high), "permutation p": _number(r.p_permutation, ".3g")}
            for r in result.metrics.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["model", "metric", *SCORE_NUMBERS])


def comparisons_table(result: ProbeResult) -> pd.DataFrame:
    """The paired tests in words and printed numbers."""
    rows = [{"model": r.model, "compared with": r.reference, "metric": METRIC_LABEL[r.metric],
             "difference": _number(r.difference, "+.3f"), "95 % CI": _interval(r.ci_low, r.ci_high, "+.3f"),
             "p": _number(r.p, ".3g"), "Holm p": _number(r.p_holm, ".3g")}
            for r in result.comparisons.itertuples(index=False)]
    return pd.DataFrame(rows, columns=["model", "compared with", "metric", *COMPARISON_NUMBERS])


def drop_reason(key: str, settings: dict) -> str:
    """Why participants were dropped, in words (``missing_target`` → "no age value")."""
    return DROP_REASONS[key].format(target=settings["target"], group_by=settings["group_by"])


def participants_table(result: ProbeResult) -> pd.DataFrame:
    """Participants per model: rows and participants in the file, one column per reason some were dropped (only
    the reasons that occurred), and how many were used."""
    st, models = result.settings, result.setup.accounting["models"]
    reasons = [k for k in DROP_REASONS if any(v.get(k) for v in models.values())]
    rows = [{"model": name, "rows": v["rows"], "participants": v["participants"],
             **{drop_reason(k, st): v[k] for k in reasons},
             "used": v["used"]} for name, v in models.items()]
    return pd.DataFrame(rows)


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
    from brainfm_cli.io.report import new_figure

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
    from brainfm_cli.io.report import new_figure

    s = result.setup
    mean_pred = np.mean(m.oof, axis=0)
    fig = new_figure(3.5, 3.3)
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
        rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # row-normalised: recall per observed class
        image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)  # one scale for every model's matrix
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the observed class")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{cm[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=9,
                        color="white" if rates[i, j] > 0.6 else "#111")
        ax.set_xticks(range(k), s.classes, rotation=45 if k > 4 else 0)
        ax.set_yticks(range(k), s.classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("observed")
    ax.set_title(m.name, fontsize=min(10.0, max(6.5, 10.0 * 30 / len(m.name))))  # long names fit
    return fig


def build_report(result: ProbeResult):
    """The HTML report: verdicts, tables, a comparison plot, a scatter or confusion matrix per model."""
    from brainfm_cli.io.report import HtmlReport

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
    rep.table(scores_table(result), numeric=SCORE_NUMBERS,
              caption=f"mean over repeats, 95 % corrected repeated-CV interval (clipped to the metric's range: "
                      f"{clip_range(result.setup.task)}), permutation p")
    chance = "dashed: chance level (R² 0, r 0; MAE has none)" if result.setup.task == "regression" else \
        "dashed: chance level (AUC 0.5, balanced accuracy 1 / classes)"
    rep.figure(_comparison_figure(result), caption=f"mean and 95 % interval (clipped to the metric's range); {chance}")
    if len(result.comparisons):
        rep.heading("Paired comparisons on the same folds")
        rep.table(comparisons_table(result), numeric=COMPARISON_NUMBERS,
                  caption="corrected resampled t-test on per-fold differences, Holm-corrected within each metric")
    rep.heading("Predictions")
    for m in result.models:
        rep.figure(_model_figure(result, m),
                   caption=f"{m.name}: out-of-fold predictions averaged over repeats")
    rep.heading("Participants")
    acc = participants_table(result)
    dropped = "dropped and why" if set(acc.columns) - {"model", "rows", "participants", "used"} else "none dropped"
    rep.table(acc, caption=f"participants per model: in the file, {dropped}, used")
    rep.heading("Method")
    rep.bullets([protocol(result)[k] for k in ("folds", "aggregate", "preprocessing", "model", "hyper_parameter")]
                + METHOD)
    if st.get("command"):
        rep.heading("Reproduce", 3)
        rep.code(st["command"])
    return rep
