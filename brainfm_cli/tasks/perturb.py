"""The ``perturb`` task: in-silico perturbation of a region or network, read through the model.

A perturbation alters the chosen regions' model-ready input over the whole context (``scale``: multiply by the
value, ``clamp``: set to it, ``add``: add it). The response of every region is the change of the model's predicted
future (its forecast: BrainLM's future masking, or a forecast run's head) averaged over the horizon and the input
windows, beside the change of the model's embedding. A ridge VAR fitted on the same inputs answers the same
question (``method = var``), so a reader sees whether the model knows more about propagation than a linear model
of the data. With ``--all-networks`` each network is perturbed in turn; on ``brainfm simulate`` data the responses
are compared with the simulator's stimulation truth over the regions outside the perturbed network.

``optimise`` is BrainLM v1's analysis: an additive, L2-penalised input perturbation shared by every resting-state
window, found by gradient descent so that their embedding approaches the mean embedding of the target state's
windows; its mean magnitude per region and network says where the model "needs" input to move between states.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import Corpus, load_corpus, load_forecast_pairs, windows
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter
from brainfm_cli.io.files import check_output_folder, json_text, tsv_text
from brainfm_cli.io.provenance import generated_by
from brainfm_cli.tasks.networks import region_networks

MODES = ("scale", "clamp", "add")
RESPONSE_FILES = ("response.tsv", "response.json", "report.html")
NETWORK_FILES = ("network_response.tsv", "network_summary.tsv", "network_response.json", "report.html")
OPTIMISE_FILES = ("perturbation.tsv", "perturbation.json", "report.html")


@dataclass(frozen=True)
class PerturbOptions:
    """The model, what to perturb and how, and compute. ``context``: samples the model sees before it forecasts
    (a forecast run's own; for BrainLM without one, its window minus one time patch)."""

    model: str
    weights: str | None = None
    regions: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    all_networks: bool = False
    mode: str = "add"
    value: float = 1.0
    truth: str | None = None  # a stimulation_response.tsv (default: found above a simulated dataset's inputs)
    var: bool = True
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    filters: RunFilter = field(default_factory=RunFilter)
    tr: float | None = None
    missing: str = "error"
    overwrite: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise BrainfmError(f"unknown --mode '{self.mode}'", fix=f"use one of {', '.join(MODES)}")
        chosen = bool(self.regions) + bool(self.networks) + bool(self.all_networks)
        if chosen != 1:
            raise BrainfmError("say what to perturb: --region NAME…, --network NAME… or --all-networks (one of them)",
                               fix="e.g. --network Visual, or --all-networks")


class Responder:
    """A model (or a VAR) that forecasts contexts ``[N, R, C]`` → ``[N, R, H]`` and, for a model, embeds them."""

    def __init__(self, model, context: int, horizon: int, batch_size: int):
        self.model, self.context, self.horizon, self.batch = model, context, horizon, batch_size

    def _run(self, x: np.ndarray, fn) -> np.ndarray:
        import torch

        device = next(self.model.parameters()).device
        out = []
        with torch.inference_mode():
            for lo in range(0, len(x), self.batch):
                out.append(fn(torch.from_numpy(np.ascontiguousarray(x[lo:lo + self.batch])).to(device))
                           .float().cpu().numpy())
        return np.concatenate(out)

    def forecast(self, x: np.ndarray) -> np.ndarray:
        return self._run(x, self.model.forecast)

    def embed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        m = self.model
        poolings = [p for p in ("cls", "mean") if p in m.poolings and (p != "cls" or m.has_cls)]
        return {p: self._run(x, lambda xb, p=p: m.pool(m.encode(xb), p)) for p in poolings}


def load_responder(opts: PerturbOptions) -> Responder:
    """The model as a forecaster: a forecast run's own context and horizon; BrainLM's future masking over one time
    patch after its window minus one patch; other families without a forecast run cannot predict activity."""
    from brainfm_cli.models import load

    model = load(opts.model, weights=opts.weights, device=opts.device)
    spec = model.card.forecast
    if not spec:
        if type(model).forecast_method != "future_masking":
            raise BrainfmError(f"{model.card.name} does not predict future activity by itself (its family forecasts "
                               "through a trained head)", fix=f"fit one first: brainfm forecast fit CORPUS --model "
                               f"{opts.model} -o RUN, then perturb with --model RUN/model.yaml")
        p, L = int(model.card.input.patch), int(model.card.input.seq_len)
        model.enable_forecasting(L - p, p)
        spec = model.card.forecast
    return Responder(model, int(spec["context"]), int(spec["horizon"]), opts.batch_size)


def apply(x: np.ndarray, idx: np.ndarray, mode: str, value: float) -> np.ndarray:
    """``x [N, R, C]`` with the regions ``idx`` scaled by, clamped to, or shifted by ``value``."""
    y = np.array(x, copy=True)
    if mode == "scale":
        y[:, idx] *= value
    elif mode == "clamp":
        y[:, idx] = value
    else:
        y[:, idx] += value
    return y


def choose(names: list[str], wanted: tuple[str, ...], what: str) -> list[str]:
    """``wanted`` checked against ``names``; an unknown one is an error listing the closest."""
    unknown = [w for w in wanted if w not in names]
    if unknown:
        hints = "; ".join(f"'{u}' (closest: {', '.join(difflib.get_close_matches(u, names, n=3, cutoff=0.3)) or 'none'})"
                          for u in unknown[:3])
        raise BrainfmError(f"no {what} named {hints}", fix=f"the model's {what}s: {', '.join(names[:12])}"
                           + (" …" if len(names) > 12 else ""))
    return list(wanted)


def region_response(base: np.ndarray, moved: np.ndarray, idx: np.ndarray) -> pd.DataFrame:
    """Per region, from forecasts ``[N, R, H]`` without and with the perturbation: the mean change, the mean
    absolute change, the absolute change relative to the region's forecast SD, and the change of the correlation
    between the region's forecast and the perturbed regions' mean forecast (over the horizon, mean over windows)."""
    diff = moved - base
    sd = base.std(axis=(0, 2)) + 1e-12

    def corr(f: np.ndarray) -> np.ndarray:
        ref = f[:, idx].mean(axis=1, keepdims=True)  # [N, 1, H]
        a, b = f - f.mean(-1, keepdims=True), ref - ref.mean(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
        return np.nanmean(r, axis=0) if np.isfinite(r).any() else np.full(f.shape[1], np.nan)

    return pd.DataFrame({"delta": diff.mean(axis=(0, 2)), "abs_delta": np.abs(diff).mean(axis=(0, 2)),
                         "relative_change": np.abs(diff).mean(axis=(0, 2)) / sd,
                         "corr_change": corr(moved) - corr(base)})


def embedding_change(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict:
    """How far the embeddings moved: mean cosine distance and relative L2 change, per pooling."""
    out = {}
    for p, a in before.items():
        b = after[p]
        na = a / (np.linalg.norm(a, axis=-1, keepdims=True) + 1e-12)
        nb = b / (np.linalg.norm(b, axis=-1, keepdims=True) + 1e-12)
        out[p] = {"cosine_distance": float(np.mean(0.5 * ((na - nb) ** 2).sum(-1))),  # 1 − cos, exactly 0 unmoved
                  "relative_l2_change": float(np.mean(np.linalg.norm(b - a, axis=-1) /
                                                      (np.linalg.norm(a, axis=-1) + 1e-12)))}
    return out


def _contexts(inputs, card, context: int, opts: PerturbOptions) -> tuple[Corpus, np.ndarray]:
    """Non-overlapping windows of ``context`` samples of every run."""
    corpus = load_corpus(list(inputs), card, context, opts.filters, opts.tr, opts.missing)
    w = windows(corpus, context)
    if not len(w):
        raise BrainfmError(f"no run holds a context of {context} samples at TR {card.input.tr} s",
                           fix="use longer runs")
    return corpus, w.x


def _var(inputs, card, responder: Responder, opts: PerturbOptions):
    """A ridge VAR fitted on (context, future) pairs of the inputs whose contexts never see their future."""
    from brainfm_cli.tasks.forecast.baselines import VARForecaster
    from brainfm_cli.tasks.forecast.evaluate import as_windows

    C, H = responder.context, responder.horizon
    pairs = load_forecast_pairs(list(inputs), card, C, H, max(1, H // 2), opts.filters, opts.tr, opts.missing)
    return VARForecaster(C, H, seed=opts.seed).fit(as_windows(pairs, C))


def find_truth(inputs: list[str], given: str | None) -> Path | None:
    """The simulator's ``stimulation_response.tsv``: ``given``, else found in ``derivatives/simulation`` of a
    folder at or above the inputs (a dataset made by ``brainfm simulate``)."""
    if given:
        path = Path(given)
        if not path.is_file():
            raise BrainfmError("stimulation truth not found", path=path, fix="give derivatives/simulation/"
                               "stimulation_response.tsv of a 'brainfm simulate' dataset")
        return path
    for item in inputs:
        for folder in [Path(item).resolve(), *Path(item).resolve().parents][:6]:
            candidate = folder / "derivatives" / "simulation" / "stimulation_response.tsv"
            if candidate.is_file():
                return candidate
    return None


def perturb(inputs: list[str], output: str | Path, opts: PerturbOptions,
            progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """One perturbation (``--region``/``--network``) or every network in turn (``--all-networks``)."""
    out = Path(output)
    check_output_folder(out, NETWORK_FILES if opts.all_networks else RESPONSE_FILES, opts.overwrite)
    responder = load_responder(opts)
    card = responder.model.card
    nets, atlas_name, _source, coords = region_networks(card)
    regions = list(card.input.regions) if card.input.regions else _atlas_labels(card)
    names = list(dict.fromkeys(n for n in nets if n is not None))
    if opts.all_networks:
        targets = {n: np.flatnonzero([m == n for m in nets]) for n in names}
    elif opts.networks:
        chosen = choose(names, opts.networks, "network")
        targets = {"+".join(chosen): np.flatnonzero([m in chosen for m in nets])}
    else:
        chosen = choose(regions, opts.regions, "region")
        targets = {"+".join(chosen): np.array([regions.index(r) for r in chosen])}
    corpus, x = _contexts(inputs, card, responder.context, opts)
    var = _var(inputs, card, responder, opts) if opts.var else None
    base = responder.forecast(x)
    var_base = var.predict(x) if var is not None else None
    columns, var_columns, embedding = {}, {}, {}
    before = responder.embed(x)
    for k, (label, idx) in enumerate(targets.items()):
        moved_x = apply(x, idx, opts.mode, opts.value)
        columns[label] = region_response(base, responder.forecast(moved_x), idx)
        if var is not None:
            var_columns[label] = region_response(var_base, var.predict(moved_x), idx)
        embedding[label] = embedding_change(before, responder.embed(moved_x))
        if progress:
            progress(k + 1, len(targets))
    identity = pd.DataFrame({"region": regions, "network": [n or "n/a" for n in nets]})
    described = {"Model": card.name, "Weights": responder.model.weights_info.get("path"),
                 "WeightsSHA256": responder.model.weights_info.get("sha256"), "Atlas": atlas_name,
                 "Mode": opts.mode, "Value": opts.value, "Context": responder.context, "Horizon": responder.horizon,
                 "RepetitionTime": card.input.tr, "Windows": int(len(x)),
                 "Participants": sorted(set(corpus.participants)), "EmbeddingChange": embedding,
                 "VAR": _var_description(var), "GeneratedBy": generated_by("perturb")}
    if not opts.all_networks:
        label = next(iter(columns))
        table = pd.concat([identity, columns[label]], axis=1)
        if var is not None:
            table["var_delta"] = var_columns[label]["delta"].to_numpy()
        described.update(Description=_describe_response(opts, label), Perturbed=label,
                         PerturbedRegions=[regions[i] for i in targets[label]])
        _write_response(out, table, described, coords, label, card)
        return table
    frames = []
    for method, cols in (("model", columns), ("var", var_columns)):
        if cols:
            frame = identity[["region"]].copy()
            for label, resp in cols.items():
                frame[label] = resp["delta"].to_numpy()
            frame.insert(0, "method", method)
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    summary = network_summary(table, nets, names)
    truth_path = find_truth(inputs, opts.truth)
    agreement = truth_agreement(table, nets, names, truth_path) if truth_path else None
    described.update(Description=_describe_response(opts, "each network in turn"), Networks=
                     {n: int(len(i)) for n, i in targets.items()},
                     Truth=str(truth_path) if truth_path else None,
                     TruthAgreement=agreement.to_dict(orient="records") if agreement is not None else None)
    _write_networks(out, table, summary, agreement, described, coords, card)
    return table


def _atlas_labels(card) -> list[str]:
    from brainfm_cli.atlases import load_atlas

    return list(load_atlas(card.input.atlas, card.input.atlas_labels).labels)


def _var_description(var) -> dict | None:
    if var is None:
        return None
    chosen = {k: (v.item() if hasattr(v, "item") else v) for k, v in vars(var).items()
              if k.endswith("_") and isinstance(v, (int, float, np.integer, np.floating))}
    return {"method": "ridge vector auto-regression on every region's past, fitted on the inputs (lags and "
                      "penalty by participant-grouped cross-validation)", **chosen}


def _describe_response(opts: PerturbOptions, what: str) -> str:
    how = {"scale": f"multiplied by {opts.value:g}", "clamp": f"clamped to {opts.value:g}",
           "add": f"shifted by {opts.value:g}"}[opts.mode]
    return (f"the input of {what} {how} (model-ready units: z-scores) over the whole context; response = change "
            "of each region's forecast averaged over the horizon and the windows")


def network_summary(table: pd.DataFrame, nets: list, names: list[str]) -> pd.DataFrame:
    """Mean response of each network's regions (columns) to perturbing each network (rows), per method."""
    rows = []
    labels = np.array([n or "" for n in nets])
    for method, part in table.groupby("method", sort=False):
        for perturbed in names:
            resp = part[perturbed].to_numpy()
            rows.append({"method": method, "perturbed": perturbed,
                         **{n: float(resp[labels == n].mean()) for n in names}})
    return pd.DataFrame(rows)


def truth_agreement(table: pd.DataFrame, nets: list, names: list[str], truth_path: Path) -> pd.DataFrame | None:
    """Pearson r between each method's responses and the simulator's, over the regions outside the perturbed
    network (the self-response is trivial), per network and pooled over all networks ("overall")."""
    truth = pd.read_csv(truth_path, sep="\t")
    regions = table[table.method == table.method.iloc[0]]["region"].tolist()
    if "region" not in truth or set(regions) - set(truth["region"]):
        return None
    truth = truth.set_index("region").loc[regions]
    labels = np.array([n or "" for n in nets])
    rows = []
    for method, part in table.groupby("method", sort=False):
        pooled_a, pooled_b = [], []
        for n in names:
            if n not in truth.columns:
                continue
            out = labels != n
            a, b = part[n].to_numpy()[out], truth[n].to_numpy()[out]
            rows.append({"method": method, "network": n, "r": _pearson(a, b), "n_regions": int(out.sum())})
            pooled_a.append((a - a.mean()) / (a.std() + 1e-12))
            pooled_b.append((b - b.mean()) / (b.std() + 1e-12))
        if pooled_a:
            rows.append({"method": method, "network": "overall",
                         "r": _pearson(np.concatenate(pooled_a), np.concatenate(pooled_b)),
                         "n_regions": int(sum(len(a) for a in pooled_a))})
    return pd.DataFrame(rows)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    d = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / d) if d > 0 else float("nan")


def optimise(rest: list[str], target: list[str], output: str | Path, opts: PerturbOptions, steps: int = 200,
             penalty: float = 1e-2, lr: float = 0.05, progress: Callable[[int, int], None] | None = None
             ) -> pd.DataFrame:
    """BrainLM v1's perturbation: δ ``[R, T]`` minimising ``mean ‖z(rest + δ) − z̄(target)‖² / ‖z̄‖² + penalty·mean δ²``
    by Adam; per region the mean |δ| over time, ranked, per network, and the embedding distance before/after."""
    import torch

    from brainfm_cli.models import load

    out = Path(output)
    check_output_folder(out, OPTIMISE_FILES, opts.overwrite)
    model = load(opts.model, weights=opts.weights, device=opts.device)
    card = model.card
    L = int(card.input.seq_len)
    nets, atlas_name, _source, coords = region_networks(card)
    regions = list(card.input.regions) if card.input.regions else _atlas_labels(card)
    _, xr = _contexts(rest, card, L, opts)
    _, xt = _contexts(target, card, L, opts)
    pooling = "cls" if model.has_cls else model.default_pooling
    device = next(model.parameters()).device
    model.requires_grad_(False)

    def embed(x: torch.Tensor) -> torch.Tensor:
        return model.pool(model.encode(x), pooling)

    with torch.no_grad():
        goal = torch.cat([embed(torch.from_numpy(xt[i:i + opts.batch_size]).to(device))
                          for i in range(0, len(xt), opts.batch_size)]).mean(0)
    rest_x = torch.from_numpy(xr).to(device)
    scale = float(goal.pow(2).sum())
    torch.manual_seed(opts.seed)
    delta = torch.zeros(xr.shape[1:], device=device, requires_grad=True)
    optimiser = torch.optim.Adam([delta], lr=lr)

    def distance(d: torch.Tensor) -> torch.Tensor:
        parts = [(embed(rest_x[i:i + opts.batch_size] + d) - goal).pow(2).sum(-1)
                 for i in range(0, len(rest_x), opts.batch_size)]
        return torch.cat(parts).mean() / scale

    with torch.no_grad():
        before = float(distance(torch.zeros_like(delta)))
    for step in range(steps):
        optimiser.zero_grad()
        loss = distance(delta) + penalty * delta.pow(2).mean()
        loss.backward()
        optimiser.step()
        if progress:
            progress(step + 1, steps)
    with torch.no_grad():
        after = float(distance(delta))
    magnitude = delta.detach().abs().mean(-1).cpu().numpy()
    table = pd.DataFrame({"region": regions, "network": [n or "n/a" for n in nets], "magnitude": magnitude,
                          "mean_shift": delta.detach().mean(-1).cpu().numpy()})
    table["rank"] = table["magnitude"].rank(ascending=False, method="first").astype(int)
    table = table.sort_values("rank").reset_index(drop=True)
    by_net = table[table.network != "n/a"].groupby("network")["magnitude"].mean().sort_values(ascending=False)
    sidecar = {"Description": "an additive input perturbation, shared by every resting-state window, optimised by "
                              "gradient (Adam) so that their embedding approaches the mean embedding of the target "
                              "windows, with an L2 penalty on its size (BrainLM v1's in-silico perturbation)",
               "Model": card.name, "WeightsSHA256": model.weights_info.get("sha256"), "Pooling": pooling,
               "Steps": steps, "Penalty": penalty, "LearningRate": lr, "RestWindows": int(len(xr)),
               "TargetWindows": int(len(xt)), "RelativeDistanceBefore": before, "RelativeDistanceAfter": after,
               "NetworkMagnitude": by_net.to_dict(), "Atlas": atlas_name, "GeneratedBy": generated_by("perturb")}
    _write_optimised(out, table, by_net, sidecar, coords, card, regions)
    return table


# --- reports ---------------------------------------------------------------------------------------------------

def _brain(values: np.ndarray, coords: np.ndarray, title: str):
    """A glass brain of per-region values at the atlas coordinates (nilearn's plot_markers)."""
    from nilearn import plotting

    from brainfm_cli.io.report import new_figure

    fig = new_figure(8.0, 3.0)
    fig.set_layout_engine(None)
    lim = float(np.nanmax(np.abs(values))) or 1.0
    plotting.plot_markers(np.nan_to_num(values), coords, node_cmap="coolwarm", node_vmin=-lim, node_vmax=lim,
                          node_size=18, display_mode="lzr", figure=fig, title=title, colorbar=True)
    return fig


def _write_response(out: Path, table: pd.DataFrame, sidecar: dict, coords, label: str, card) -> None:
    from brainfm_cli.io.report import HtmlReport

    rep = HtmlReport(f"brainfm perturb: {label} ({card.name})")
    rep.paragraph(sidecar["Description"] + ".")
    emb = sidecar["EmbeddingChange"][label]
    rep.paragraph("Embedding change: " + "; ".join(f"{p}: cosine distance {v['cosine_distance']:.4f}, relative L2 "
                                                   f"change {v['relative_l2_change']:.4f}" for p, v in emb.items()))
    rep.figure(_brain(table["delta"].to_numpy(), coords, f"forecast change: {label}"),
               caption="Mean change of each region's forecast (model).")
    nets = table[table.network != "n/a"].groupby("network")[["delta", "abs_delta", "relative_change"]].mean()
    rep.table(nets.reset_index(), caption="Mean response per network", float_format="{:.4f}")
    top = table.reindex(table["abs_delta"].sort_values(ascending=False).index).head(20)
    rep.table(top, caption="The 20 regions whose forecast changed most", float_format="{:.4f}")
    _write_group(out, RESPONSE_FILES, [tsv_text(table, "%.6g"), json_text(sidecar), rep.render()])


def _write_networks(out: Path, table: pd.DataFrame, summary: pd.DataFrame, agreement, sidecar: dict, coords,
                    card) -> None:
    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm perturb --all-networks ({card.name})")
    rep.paragraph(sidecar["Description"] + ".")
    if agreement is not None:
        wide = agreement.pivot(index="network", columns="method", values="r")
        wide = wide.loc[[n for n in wide.index if n != "overall"] + ["overall"]].reset_index()  # overall last
        rep.table(wide, caption="Agreement with the simulator's stimulation truth: Pearson r over the regions "
                                "outside the perturbed network", float_format="{:.3f}")
        overall = agreement[agreement.network == "overall"].set_index("method")["r"]
        if {"model", "var"} <= set(overall.index):
            verdict = "more" if overall["model"] > overall["var"] else "no more"
            rep.paragraph(f"Overall the model's responses correlate r = {overall['model']:.3f} with the truth, the "
                          f"VAR's r = {overall['var']:.3f}: the model knows {verdict} about propagation than a linear "
                          "model of the same data.")
    else:
        rep.note("No simulator truth beside the inputs: nothing to compare the responses with.")
    for method, part in summary.groupby("method", sort=False):
        mat = part.set_index("perturbed").drop(columns="method")
        fig = new_figure(6.0, 5.0)
        ax = fig.subplots()
        lim = float(np.abs(mat.to_numpy()).max()) or 1.0
        im = ax.imshow(mat.to_numpy(), cmap="coolwarm", vmin=-lim, vmax=lim)
        ax.set_xticks(range(mat.shape[1]), mat.columns, rotation=90, fontsize=7)
        ax.set_yticks(range(mat.shape[0]), mat.index, fontsize=7)
        ax.set_xlabel("responding network")
        ax.set_ylabel("perturbed network")
        fig.colorbar(im, ax=ax, shrink=0.8, label="mean forecast change")
        rep.figure(fig, caption=f"Network × network response ({method}).")
    model_rows = table[table.method == "model"]
    first = [c for c in model_rows.columns if c not in ("method", "region")][0]
    rep.figure(_brain(model_rows[first].to_numpy(), coords, f"model: perturbing {first}"),
               caption=f"Each region's forecast change when {first} is perturbed (model).")
    _write_group(out, NETWORK_FILES, [tsv_text(table, "%.6g"), tsv_text(summary, "%.6g"), json_text(sidecar),
                                      rep.render()])


def _write_optimised(out: Path, table: pd.DataFrame, by_net: pd.Series, sidecar: dict, coords, card,
                     regions: list[str]) -> None:
    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm perturb optimise ({card.name})")
    rep.paragraph(sidecar["Description"] + f". Relative embedding distance to the target: "
                  f"{sidecar['RelativeDistanceBefore']:.4f} before, {sidecar['RelativeDistanceAfter']:.4f} after.")
    values = table.set_index("region").loc[regions, "magnitude"].to_numpy()
    rep.figure(_brain(values, coords, "mean |perturbation|"), caption="Mean magnitude of the perturbation per region.")
    fig = new_figure(6.0, 3.4)
    ax = fig.subplots()
    ax.barh(by_net.index[::-1], by_net.to_numpy()[::-1], color="#4c72b0")
    ax.set_xlabel("mean |perturbation| (z units)")
    rep.figure(fig, caption="Mean magnitude per network, ranked.")
    rep.table(table.head(20), caption="The 20 regions with the largest perturbation", float_format="{:.4f}")
    _write_group(out, OPTIMISE_FILES, [tsv_text(table, "%.6g"), json_text(sidecar), rep.render()])


def _write_group(out: Path, names: tuple[str, ...], texts: list[str]) -> None:
    from brainfm_cli.io.files import atomic_group

    out.mkdir(parents=True, exist_ok=True)
    with atomic_group([out / n for n in names]) as paths:
        for path, text in zip(paths, texts):
            path.write_text(text, encoding="utf-8")
