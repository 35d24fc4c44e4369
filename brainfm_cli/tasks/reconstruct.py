"""The ``reconstruct`` task: hide values of held-out runs the way a masked model was trained, reconstruct them,
and score the model beside the baselines on exactly the same hidden values (BrainLM's Table 1 protocol).

For each mask ratio, every window of every input run gets a random mask drawn from ``--seed``; the model, the
region's mean, linear interpolation in time and ridge regression from the visible regions at the same time point
(``data.reconstruction``) each fill the hidden values. The ridge weights and penalty come from ``--train`` when
given, else from the other participants of the inputs (cross-fitted): never from the values being scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import Windows, load_corpus, windows
from brainfm_cli.data.preprocess import Preprocessor
from brainfm_cli.data.reconstruction import RidgeFromVisible, choose_penalty, interpolate, r2_and_mse
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter
from brainfm_cli.io.files import check_output_folder, json_text, tsv_text
from brainfm_cli.io.provenance import generated_by

METHODS = ("model", "mean", "interpolation", "ridge")
OUTPUT_FILES = ("metrics.tsv", "metrics.json", "report.html")


@dataclass(frozen=True)
class ReconstructOptions:
    """The model and its weights, the mask ratios, the corpus the ridge baseline is fitted on (empty: the other
    participants of the inputs), the seed of the masks, and compute."""

    model: str
    weights: str | None = None
    mask_ratios: tuple[float, ...] = (0.2, 0.5, 0.75)
    train: tuple[str, ...] = ()
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    filters: RunFilter = field(default_factory=RunFilter)
    tr: float | None = None
    missing: str = "error"
    space_args: dict = field(default_factory=dict)
    overwrite: bool = False

    def __post_init__(self):
        object.__setattr__(self, "mask_ratios", tuple(float(r) for r in self.mask_ratios))
        bad = [r for r in self.mask_ratios if not 0 < r < 1]
        if bad or not self.mask_ratios:
            raise BrainfmError(f"mask ratios must lie strictly between 0 and 1, got {list(self.mask_ratios)}",
                               fix="e.g. --mask-ratio 0.2 --mask-ratio 0.75")
        if self.batch_size < 1:
            raise BrainfmError("--batch-size must be at least 1", fix="e.g. --batch-size 8")


def read_windows(inputs, card, opts: ReconstructOptions) -> Windows:
    """Every non-overlapping full window of every run, checked against the model's regions (``absent`` marks the
    regions without data under ``--missing-regions mask|zero``)."""
    corpus = load_corpus(list(inputs), card, card.input.seq_len, opts.filters, opts.tr, opts.missing)
    return windows(corpus, card.input.seq_len)


def _masks(model, w: Windows, ratio: float, seed: int, salt: int) -> list:
    """One training-style mask per window, drawn from a generator seeded by (seed, ratio, salt); the hidden values
    exclude regions without data (never scored)."""
    import torch

    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, int(round(ratio * 1e6)), salt])
                                          .generate_state(1)[0]))
    out = []
    for x, absent in zip(w.x, w.absent):
        tm, hidden = model.value_mask(1, x.shape[1], ratio, g)
        hidden = hidden[0].numpy()
        out.append((tm, hidden & ~absent.reshape(-1, *[1] * (hidden.ndim - 1))))
    return out


def _model_predictions(model, w: Windows, masks: list, batch_size: int) -> list[np.ndarray]:
    import torch

    from brainfm_cli.masking.random import TokenMask

    device = next(model.parameters()).device
    preds = []
    with torch.inference_mode():
        for lo in range(0, len(w), batch_size):
            xb = torch.from_numpy(w.x[lo:lo + batch_size]).to(device)
            absent = w.absent[lo:lo + batch_size]
            tm = TokenMask.cat([m[0] for m in masks[lo:lo + batch_size]])
            preds += list(model.reconstruct_values(xb, tm, torch.from_numpy(absent).to(device) if absent.any()
                                                   else None).float().cpu().numpy())
    return preds


def reconstruct(inputs: list[str], output: str | Path, opts: ReconstructOptions,
                progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Score the model and the baselines at every mask ratio; write ``metrics.tsv``, its sidecar and a report."""
    from brainfm_cli.models import architecture_class, get_card, load

    out = Path(output)
    check_output_folder(out, OUTPUT_FILES, opts.overwrite)
    card = get_card(opts.model)
    if not hasattr(architecture_class(card.architecture["name"]), "reconstruct_values"):
        raise BrainfmError(f"{card.name} ({card.family}) has no decoder of values: its objective predicts latent "
                           "tokens, so there is nothing to reconstruct",
                           fix="evaluate it with 'brainfm embed' then 'brainfm probe', or reconstruct with a masked "
                           "reconstruction model (brainlm, sc-mbm)")
    model = load(opts.model, weights=opts.weights, device=opts.device, **opts.space_args)
    card = model.card
    prep = Preprocessor.from_space(card.input, missing=opts.missing)
    scored = read_windows(inputs, card, opts)
    if not len(scored):
        raise BrainfmError(f"no run is at least one window long ({card.input.seq_len} samples at TR "
                           f"{card.input.tr} s)", fix="use longer runs")
    fitting = read_windows(opts.train, card, opts) if opts.train else None
    groups = _groups(scored)
    if fitting is None and len(groups) < 2:
        raise BrainfmError("the ridge baseline is fitted on other participants, and the inputs hold only one",
                           fix="give --train CORPUS (the training participants), or more participants")
    rows, traces, penalties = [], [], {}
    total, done = len(opts.mask_ratios) * (len(groups) + 1), 0
    for ratio in opts.mask_ratios:
        masks = _masks(model, scored, ratio, opts.seed, 0)
        preds = _model_predictions(model, scored, masks, opts.batch_size)
        done += 1
        if progress:
            progress(done, total)
        filled = {m: [None] * len(scored) for m in METHODS}
        chosen = []
        shared = _fit_ridge(model, fitting, ratio, opts.seed) if fitting is not None else None  # --train: once
        for sub, idx in groups.items():
            penalty, ridge = shared or _fit_ridge(
                model, scored.take([i for i in range(len(scored)) if scored.participants[i] != sub]), ratio, opts.seed)
            chosen.append(penalty)
            for i in idx:
                x, hidden = scored.x[i], masks[i][1]
                unseen = hidden | _absent_values(scored, i)  # regions without data are no baseline's input
                filled["model"][i] = preds[i]
                filled["mean"][i] = np.broadcast_to(ridge.mean[:, None], x.shape)
                filled["interpolation"][i] = interpolate(x, unseen)
                filled["ridge"][i] = ridge.predict(x, unseen)
            done += 1
            if progress:
                progress(done, total)
        penalties[ratio] = chosen
        for method in METHODS:
            if any(f is None for f in filled[method]):
                rows.append(dict(method=method, mask_ratio=ratio, r2=float("nan"), mse=float("nan"), n_values=0))
                continue
            truth = np.concatenate([x[m[1]] for x, m in zip(scored.x, masks)])
            guess = np.concatenate([f[m[1]] for f, m in zip(filled[method], masks)])
            r2, mse, n = r2_and_mse(truth, guess)
            rows.append(dict(method=method, mask_ratio=ratio, r2=r2, mse=mse, n_values=n))
        if ratio == max(opts.mask_ratios):  # the report's example traces: the hardest ratio
            traces = (scored.x[0], masks[0][1], {m: filled[m][0] for m in METHODS})
    metrics = pd.DataFrame(rows, columns=["method", "mask_ratio", "r2", "mse", "n_values"])
    sidecar = {
        "Description": "masked-value reconstruction of held-out windows: the model and the baselines on exactly "
                       "the same hidden values; R² = 1 − SSE/SST over the hidden values (SST around their mean)",
        "Model": card.name, "ModelFamily": card.family, "Weights": model.weights_info.get("path"),
        "WeightsSHA256": model.weights_info.get("sha256"), "MaskRatios": list(opts.mask_ratios), "Seed": opts.seed,
        "Windows": len(scored.x), "Participants": sorted(groups), "WindowLength": card.input.seq_len,
        "Baselines": {
            "mean": "each region's mean over the fitting data",
            "interpolation": "linear in time within the region from its visible samples of the window",
            "ridge": "each hidden value from the visible regions at the same time point; weights and penalty "
                     "(leave-one-participant-out) from " + ("--train" if opts.train else
                                                          "the other participants of the inputs (cross-fitted)"),
        },
        "RidgePenalties": {str(r): v for r, v in penalties.items()},
        "Train": list(opts.train), "Preprocessing": prep.describe(), "GeneratedBy": generated_by("reconstruct"),
    }
    _write(out, metrics, sidecar, traces, card)
    return metrics


def _fit_ridge(model, fit: Windows, ratio: float, seed: int) -> tuple[float, RidgeFromVisible]:
    """The ridge baseline's penalty (chosen on ``fit`` alone, with training-style masks) and its fit."""
    fit_groups = list(_groups(fit).values())
    fit_masks = _masks(model, fit, ratio, seed, 1)
    penalty = choose_penalty([[fit.x[i] for i in g] for g in fit_groups],
                             [[fit_masks[i][1] | _absent_values(fit, i) for i in g] for g in fit_groups])
    return penalty, RidgeFromVisible(list(fit.x), penalty)


def _groups(w: Windows) -> dict[str, list[int]]:
    """Window indices per participant."""
    out: dict[str, list[int]] = {}
    for i, p in enumerate(w.participants):
        out.setdefault(p, []).append(i)
    return out


def _absent_values(w: Windows, i: int) -> np.ndarray:
    """``[R, T]`` True for the values of window ``i``'s regions without data."""
    return np.broadcast_to(w.absent[i][:, None], w.x[i].shape)


def _write(out: Path, metrics: pd.DataFrame, sidecar: dict, traces, card) -> None:
    from brainfm_cli.io.files import atomic_group
    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm reconstruct: {card.name}")
    rep.paragraph(sidecar["Description"] + ".")
    wide = metrics.pivot(index="mask_ratio", columns="method", values="r2").reset_index()
    rep.table(wide[["mask_ratio", *[m for m in METHODS if m in wide.columns]]], caption="R² by mask ratio",
              float_format="{:.3f}")
    best = metrics.loc[metrics.method != "model"].groupby("mask_ratio")["r2"].max()
    mine = metrics.loc[metrics.method == "model"].set_index("mask_ratio")["r2"]
    for ratio in mine.index:
        verdict = "beats" if mine[ratio] > best[ratio] else "does not beat"
        rep.paragraph(f"Mask ratio {ratio:g}: the model's R² is {mine[ratio]:.3f}; it {verdict} the best baseline "
                      f"({best[ratio]:.3f}).")
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    for method in METHODS:
        part = metrics[metrics.method == method]
        if part["r2"].notna().any():
            ax.plot(part["mask_ratio"], part["r2"], marker="o", label=method)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("mask ratio")
    ax.set_ylabel("R² on hidden values")
    ax.legend(frameon=False)
    rep.figure(fig, caption="R² of each method by mask ratio (0: predicting the mean).")
    x, hidden, filled = traces
    if x.shape[1] > 1:
        r = int(np.argmax(hidden.sum(axis=1)))
        fig = new_figure(7.5, 3.2)
        ax = fig.subplots()
        t = np.arange(x.shape[1])
        ax.plot(t, x[r], color="k", lw=1.2, label="truth")
        for method in ("model", "ridge", "interpolation"):
            if filled[method] is not None:
                ax.plot(t, np.where(hidden[r], filled[method][r], np.nan), lw=1, label=method)
        ax.set_xlabel(f"sample (TR {card.input.tr:g} s)")
        ax.set_ylabel("normalised signal")
        ax.legend(frameon=False, ncol=4)
        rep.figure(fig, caption=f"One window of region {r}: the truth, and each method on the hidden samples.")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_group([out / "metrics.tsv", out / "metrics.json", out / "report.html"]) as (tsv, js, html):
        tsv.write_text(tsv_text(metrics, float_format="%.6g"), encoding="utf-8")
        js.write_text(json_text(sidecar), encoding="utf-8")
        html.write_text(rep.render(), encoding="utf-8")
