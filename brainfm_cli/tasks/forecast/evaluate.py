"""``forecast evaluate``: a forecaster and the baselines on the same held-out windows, per horizon step.

The windows are cut from the test corpus in the model's input space (a context, then the next ``horizon``
samples, every ``stride`` samples), each context prepared from the raw samples up to its end only (resampling
and filtering reach ahead; ``data.corpus.load_forecast_pairs``); every method forecasts exactly them. The baselines (``baselines.BASELINES``)
learn from the run's own training participants (its corpus minus its validation split, re-drawn from the run's
configuration) or from ``--train``; never from the scored windows. ``--untrained-baseline`` fine-tunes the same
architecture from a random initialisation with the run's recipe: what pretraining adds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import Corpus, load_forecast_pairs, split_by_participant
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter
from brainfm_cli.io.files import check_output_folder, json_text, tsv_text
from brainfm_cli.io.provenance import generated_by
from brainfm_cli.tasks.forecast.baselines import BASELINES, ForecastWindows, forecast_metrics

OUTPUT_FILES = ("metrics.tsv", "metrics.json", "report.html")
METHODS = ("model", "mean", "persistence", "ridge_ar", "var", "lstm")


@dataclass(frozen=True)
class EvaluateOptions:
    """What to score beside the model, on which windows, and where the baselines learn."""

    methods: tuple[str, ...] = METHODS
    train: tuple[str, ...] = ()  # the baselines' training corpus (default: the run's training participants)
    stride: int | None = None  # samples between window starts (default: the horizon)
    untrained_baseline: bool = False
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    filters: RunFilter = field(default_factory=RunFilter)
    tr: float | None = None
    missing: str = "error"
    overwrite: bool = False

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise BrainfmError(f"unknown forecast method(s) {unknown}", fix=f"choose from {', '.join(METHODS)}")


def read_run(run: str | Path) -> tuple[Path, dict]:
    """A forecast run folder (``model.yaml`` with a ``forecast`` block, ``config.yaml``) and its configuration."""
    import yaml

    folder = Path(run)
    card, config = folder / "model.yaml", folder / "config.yaml"
    if not card.is_file() or not config.is_file():
        raise BrainfmError("not a finished forecast run (model.yaml and config.yaml are expected)", path=folder,
                           fix="give the -o folder of 'brainfm forecast fit' after it finished")
    cfg = yaml.safe_load(config.read_text()) or {}
    if not cfg.get("forecast"):
        raise BrainfmError("this run is not a forecaster (no forecast settings in config.yaml)", path=folder,
                           fix="make one with 'brainfm forecast fit CORPUS --model THIS_RUN/model.yaml -o NEW_RUN'")
    return card, cfg


def training_pairs(cfg: dict, card, context: int, horizon: int, opts: EvaluateOptions) -> Corpus:
    """The (context, future) pairs the baselines learn from: ``--train``, else the run's training participants (its
    corpus without the validation participants it held out, drawn again with its seed)."""
    stride = max(1, horizon // 2)
    if opts.train:
        return load_forecast_pairs(list(opts.train), card, context, horizon, stride, tr=opts.tr, missing=opts.missing)
    corpus = load_forecast_pairs(list(cfg["corpus"]), card, context, horizon, stride, tr=cfg.get("tr"),
                                 missing=cfg.get("missing", "error"))
    if cfg.get("val"):
        return corpus
    return split_by_participant(corpus, float(cfg.get("val_fraction", 0.2)), int(cfg.get("seed", 0)))[0]


def as_windows(pairs: Corpus, context: int) -> ForecastWindows:
    x = np.stack(pairs.runs)
    return ForecastWindows(x[:, :, :context], x[:, :, context:], list(pairs.participants))


def _model_forecasts(model, w: ForecastWindows, absent: np.ndarray, batch: int) -> np.ndarray:
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for lo in range(0, len(w), batch):
            xb = torch.from_numpy(w.context[lo:lo + batch]).to(device)
            a = absent[lo:lo + batch]
            out.append(model.forecast(xb, torch.from_numpy(a).to(device) if a.any() else None).float().cpu().numpy())
    return np.concatenate(out)


def evaluate(run: str | Path, inputs: list[str], output: str | Path, opts: EvaluateOptions,
             progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Score the run's forecaster and the baselines on ``inputs``; write metrics, sidecar and report."""
    from brainfm_cli.models import load

    out = Path(output)
    check_output_folder(out, OUTPUT_FILES, opts.overwrite)
    card_path, cfg = read_run(run)
    model = load(card_path, device=opts.device)
    card = model.card
    C, H = int(card.forecast["context"]), int(card.forecast["horizon"])
    stride = opts.stride or H
    test = load_forecast_pairs(list(inputs), card, C, H, stride, opts.filters, opts.tr, opts.missing)
    w, absent = as_windows(test, C), test.absent_of(list(range(len(test))))
    train = training_pairs(cfg, card, C, H, opts)
    overlap = sorted(set(train.participants) & set(test.participants))
    if overlap:
        raise BrainfmError(f"participants {overlap[:4]} are in the test corpus and in the training corpus the "
                           "baselines learn from", fix="evaluate on held-out participants (or give --train)")
    methods = list(opts.methods) + (["untrained"] if opts.untrained_baseline else [])
    total, done = len(methods), 0
    forecasts: dict[str, np.ndarray] = {}
    details: dict = {}
    for method in methods:
        if method == "model":
            forecasts[method] = _model_forecasts(model, w, absent, opts.batch_size)
        elif method == "untrained":
            scratch = _fit_from_scratch(run, cfg, out, opts)
            forecasts[method] = _model_forecasts(scratch, w, absent, opts.batch_size)
            details["untrained"] = str(out / "untrained")
        else:
            est = BASELINES[method](C, H, seed=opts.seed).fit(as_windows(train, C))
            forecasts[method] = est.predict(w.context)
            details[method] = {k: v for k, v in vars(est).items()  # what it chose (lags, penalty, …)
                               if k.endswith("_") and isinstance(v, (int, float, str, np.integer, np.floating))}
        done += 1
        if progress:
            progress(done, total)
    keep = np.nonzero(~absent)  # (window, region) pairs with data: regions without data are never scored
    tables = []
    for method, pred in forecasts.items():
        t = forecast_metrics(w.future[keep][:, None], pred[keep][:, None])
        t["n_windows"] = len(w)
        t.insert(0, "method", method)
        tables.append(t)
    metrics = pd.concat(tables, ignore_index=True)
    sidecar = {
        "Description": "forecasts of held-out windows: every method predicts the same windows' next samples from "
                       "the same context; R² = 1 − SSE/SST per horizon step over windows × regions (SST around "
                       "their mean); 'mean' rows average the steps",
        "Run": str(Path(run)), "Model": card.name, "WeightsSHA256": model.weights_info.get("sha256"),
        "Context": C, "Horizon": H, "Stride": stride, "RepetitionTime": card.input.tr, "Windows": len(w),
        "TestParticipants": sorted(set(test.participants)),
        "BaselineTraining": "--train" if opts.train else "the run's training participants",
        "TrainingParticipants": sorted(set(train.participants)), "Baselines": _describe(details),
        "Seed": opts.seed, "GeneratedBy": generated_by("forecast evaluate"),
    }
    _write(out, metrics, sidecar, w, forecasts, card)
    return metrics


def _describe(details: dict) -> dict:
    """JSON-ready: numpy scalars as Python numbers."""
    return {k: {kk: (vv.item() if hasattr(vv, "item") else vv) for kk, vv in v.items()} if isinstance(v, dict) else v
            for k, v in details.items()}


def _fit_from_scratch(run, cfg: dict, out: Path, opts: EvaluateOptions):
    """The run's recipe from a random initialisation of the same architecture, into ``out/untrained``."""
    from brainfm_cli.engine.train import TrainConfig, Trainer
    from brainfm_cli.models import load

    values = {k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__}
    values.update(output=str(out / "untrained"), device=opts.device, weights=None,
                  forecast={**cfg["forecast"], "from_scratch": True, "freeze_encoder": False})
    config = TrainConfig.from_dict(values)
    resume = (out / "untrained" / "checkpoints" / "last.pt").exists() and not (out / "untrained" / "model.yaml").exists()
    if not (out / "untrained" / "model.yaml").exists():
        Trainer(config).run(resume=resume)
    return load(out / "untrained" / "model.yaml", device=opts.device)


def _write(out: Path, metrics: pd.DataFrame, sidecar: dict, w: ForecastWindows, forecasts: dict, card) -> None:
    from brainfm_cli.io.files import atomic_group
    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm forecast evaluate: {card.name}")
    rep.paragraph(sidecar["Description"] + f". {sidecar['Windows']} windows of {sidecar['Context']} + "
                  f"{sidecar['Horizon']} samples at TR {card.input.tr:g} s.")
    mean = metrics[metrics.step.astype(str) == "mean"].set_index("method")
    words = {"r2": "R²", "pearson_r": "Pearson r", "mse": "MSE", "n_windows": "windows"}
    rep.table(mean.reset_index()[["method", *words]].rename(columns=words),
              caption="Averaged over the horizon (BrainLM's Table 3 reports this)", float_format="{:.3f}")
    if "model" in mean.index:
        rivals = mean.drop(index="model")
        if len(rivals):
            best = rivals["r2"].idxmax()
            verdict = "beats" if mean.loc["model", "r2"] > rivals.loc[best, "r2"] else "does not beat"
            rep.paragraph(f"Averaged over the horizon the model's R² is {mean.loc['model', 'r2']:.3f}; it {verdict} "
                          f"the best baseline, {best} ({rivals.loc[best, 'r2']:.3f}).")
        first = metrics[metrics.step.astype(str) == "1"].set_index("method")["r2"]
        rep.paragraph("One step ahead: " + ", ".join(f"{m} {v:.3f}" for m, v in first.items()) + ".")
    steps = metrics[metrics.step.astype(str) != "mean"].copy()
    steps["step"] = steps["step"].astype(int)
    fig = new_figure(6.5, 3.8)
    ax = fig.subplots()
    for method, part in steps.groupby("method", sort=False):
        ax.plot(part["step"], part["r2"], marker="o", ms=3, lw=1.2, label=method)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel(f"horizon step (TR {card.input.tr:g} s)")
    ax.set_ylabel("R²")
    ax.legend(frameon=False, ncol=3, fontsize=8)
    rep.figure(fig, caption="R² by horizon step for every method (0: predicting the mean).")
    r = int(np.argmax(w.future[0].var(axis=1)))
    C, H = w.context.shape[2], w.future.shape[2]
    fig = new_figure(7.5, 3.2)
    ax = fig.subplots()
    ax.plot(np.arange(C), w.context[0, r], color="0.5", lw=1, label="context")
    ax.plot(np.arange(C, C + H), w.future[0, r], color="k", lw=1.4, label="truth")
    for method, pred in forecasts.items():
        ax.plot(np.arange(C, C + H), pred[0, r], lw=1, label=method)
    ax.set_xlim(max(0, C - 3 * H), C + H)
    ax.set_xlabel("sample")
    ax.set_ylabel("normalised signal")
    ax.legend(frameon=False, ncol=4, fontsize=8)
    rep.figure(fig, caption=f"The first window, region {card.input.regions[r] if card.input.regions else r}: the end "
                            "of the context, the truth and each forecast.")
    wide = steps.pivot(index="step", columns="method", values="r2")[list(forecasts)].reset_index()
    rep.table(wide, caption="R² of every method at every horizon step (metrics.tsv also has Pearson r and MSE)",
              float_format="{:.3f}")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_group([out / "metrics.tsv", out / "metrics.json", out / "report.html"]) as (tsv, js, html):
        tsv.write_text(tsv_text(metrics, float_format="%.6g"), encoding="utf-8")
        js.write_text(json_text(sidecar), encoding="utf-8")
        html.write_text(rep.render(), encoding="utf-8")
