"""The ``networks`` task: zero-shot functional networks, BrainLM's protocol (Caro et al. 2024, Fig. 5).

Every region of every window gets features read from the model without training it: the attention its tokens
receive (from CLS, averaged over heads and layers; the mean over all queries for a family without CLS) and its
token embeddings averaged over its time patches. Per window, the regions that belong to a network are split at
random 80/20, a kNN classifier fitted on the 80 % predicts the network of the 20 %, and the split is repeated with
seeds. The same splits score the raw data (each region's series in the window), the region's MNI coordinates
(the position alone, which the model's spatial code also carries) and chance (the training regions' majority
network). Accuracy is averaged per recording, then over recordings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brainfm_cli.data.corpus import Windows, expected_regions, load_corpus, windows
from brainfm_cli.data.preprocess import Preprocessor
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.bids import RunFilter
from brainfm_cli.io.files import check_output_folder, json_text, tsv_text
from brainfm_cli.io.provenance import generated_by
from brainfm_cli.tasks.simulate.connectome import has_network

FEATURES = ("attention", "embedding", "raw", "coordinates")
OUTPUT_FILES = ("accuracy.tsv", "accuracy.json", "region_features.tsv", "report.html")
COLUMNS = ["feature", "accuracy", "sd", "ci_low", "ci_high", "chance", "n_recordings", "n_windows", "n_repeats",
           "n_regions", "n_networks"]
PAPER = ("BrainLM paper (Caro et al., ICLR 2024): 7 Yeo networks, 424 A424 parcels, kNN on CLS-attention features "
         "with an 80/20 parcel split per recording: BrainLM 58.8 %, VAE 49.4 %, raw data 39.2 %, GCN 25.9 %")


@dataclass(frozen=True)
class NetworksOptions:
    """The model and its weights, the kNN protocol (neighbours, repeated splits, test fraction), where the
    regions' networks come from, the seed of the splits, and compute."""

    model: str
    weights: str | None = None
    neighbors: int = 5
    repeats: int = 10
    test_fraction: float = 0.2
    transfer_networks: bool = False
    seed: int = 0
    batch_size: int = 2
    device: str = "auto"
    filters: RunFilter = field(default_factory=RunFilter)
    tr: float | None = None
    missing: str = "error"
    space_args: dict = field(default_factory=dict)
    overwrite: bool = False

    def __post_init__(self):
        if self.neighbors < 1:
            raise BrainfmError("--neighbors must be at least 1", fix="e.g. --neighbors 5")
        if self.repeats < 1:
            raise BrainfmError("--repeats must be at least 1", fix="e.g. --repeats 10")
        if not 0 < self.test_fraction < 1:
            raise BrainfmError(f"--test-fraction must lie strictly between 0 and 1, got {self.test_fraction}",
                               fix="e.g. --test-fraction 0.2 (the paper's 80/20 split)")
        if self.batch_size < 1:
            raise BrainfmError("--batch-size must be at least 1", fix="e.g. --batch-size 2")


def region_networks(card, transfer: bool = False) -> tuple[list[str | None], str, str, np.ndarray]:
    """The network of each of the model's regions (None where the atlas assigns none), the atlas's name, where
    the networks come from, and the regions' MNI coordinates — all from the card's atlas."""
    from brainfm_cli.atlases import load_atlas

    space = card.input
    if not space.atlas:
        raise BrainfmError(f"{card.name}'s input space ({space.atlas_description or 'its regions'}) names no atlas "
                           "brainfm can read, so the networks of its regions are unknown",
                           fix="use a model trained on an atlas with networks (e.g. brainlm-sim, Seitzman-300), or "
                           "pretrain one with 'brainfm pretrain … --atlas NAME'")
    atlas = load_atlas(space.atlas, space.atlas_labels, transfer=transfer)
    if atlas.networks is None:
        raise BrainfmError(f"atlas {atlas.name} (the input space of {card.name}) has no network labels",
                           fix="add --transfer-networks (each region takes the network of the nearest Seitzman-300 "
                           "ROI), or use a model trained on an atlas with networks (e.g. seitzman300, "
                           "schaefer400-7)")
    regions = list(space.regions) if space.regions else list(atlas.labels)
    index = {label: i for i, label in enumerate(atlas.labels)}
    missing = [r for r in regions if r not in index]
    if missing or len(regions) != space.n_regions:
        raise BrainfmError(f"{card.name}'s regions are not those of atlas {atlas.name} (e.g. {missing[:3]})",
                           fix="give the model card's atlas")
    rows = [index[r] for r in regions]
    nets = [atlas.networks[i] if has_network(atlas.networks[i]) else None for i in rows]
    coords = np.asarray(atlas.region_coords(), dtype=float)[rows]
    return nets, atlas.name, atlas.network_source or "atlas", coords


def model_features(model, w: Windows, batch_size: int, mask_absent: bool = False,
                   progress: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per window and region: the attention its tokens receive ``[W, R, P]`` (one value per token, in time order)
    and its token embeddings averaged over its tokens ``[W, R, D]``; with ``mask_absent``, regions without data
    are kept out of attention as the model's padding mask allows."""
    import torch

    device = next(model.parameters()).device
    R = model.card.input.n_regions
    attention, embedding = [], []
    with torch.inference_mode():
        for lo in range(0, len(w), batch_size):
            xb = torch.from_numpy(w.x[lo:lo + batch_size]).to(device)
            absent = torch.from_numpy(w.absent[lo:lo + batch_size])
            mask = model.padding_mask([xb.shape[-1]] * xb.shape[0], xb.shape[-1],
                                      absent if mask_absent and absent.any() else None)
            enc = model.encode_attention(xb, None if mask is None else mask.to(device))
            tokens, att = enc["tokens"].float().cpu().numpy(), enc["attention"].float().cpu().numpy()
            regions = model.token_regions(tokens.shape[1]).numpy()
            counts = np.bincount(regions, minlength=R)
            if (counts != counts[0]).any():
                raise BrainfmError(f"{model.card.name}: regions hold different numbers of tokens",
                                   fix="report this: the model's token_regions is inconsistent")
            order = np.argsort(regions, kind="stable")
            B, P = xb.shape[0], counts[0]
            attention.append(att[:, order].reshape(B, R, P))
            embedding.append(tokens[:, order].reshape(B, R, P, -1).mean(2))
            if progress:
                progress()
    return np.concatenate(attention), np.concatenate(embedding)


def knn_accuracy(train_x, train_y, test_x, test_y, k: int) -> float:
    """Accuracy of a k-nearest-neighbours vote (Euclidean; ties go to the lowest label)."""
    from sklearn.neighbors import KNeighborsClassifier

    clf = KNeighborsClassifier(n_neighbors=min(k, len(train_y)), algorithm="brute").fit(train_x, train_y)
    return float(np.mean(clf.predict(test_x) == test_y))


def split_scores(features: dict[str, np.ndarray], labels: np.ndarray, recordings: list[str], absent: np.ndarray,
                 opts: NetworksOptions) -> pd.DataFrame:
    """One row per window, repeat and feature set (and ``chance``): accuracy on the test regions of that split.
    Every feature set sees exactly the same splits; ``features[name]`` is ``[W, R, F]``; regions without a network
    (``labels`` −1) or without data in the window (``absent [W, R]``) take no part."""
    rows = []
    for w, recording in enumerate(recordings):
        used = np.flatnonzero((labels >= 0) & ~absent[w])
        n_test = max(1, int(round(opts.test_fraction * len(used))))
        for rep in range(opts.repeats):
            rng = np.random.default_rng(np.random.SeedSequence([opts.seed, w, rep]))
            perm = rng.permutation(used)
            test, train = perm[:n_test], perm[n_test:]
            base = dict(recording=recording, window=w, repeat=rep)
            for name, f in features.items():
                acc = knn_accuracy(f[w][train], labels[train], f[w][test], labels[test], opts.neighbors)
                rows.append({**base, "feature": name, "accuracy": acc})
            counts = np.bincount(labels[train], minlength=labels.max() + 1)
            rows.append({**base, "feature": "chance", "accuracy": float(np.mean(labels[test] == counts.argmax()))})
            test_freq = np.bincount(labels[test], minlength=len(counts)) / len(test)
            rows.append({**base, "feature": "chance_frequencies",
                         "accuracy": float(counts @ test_freq / counts.sum())})
    return pd.DataFrame(rows)


def _t_interval(values: np.ndarray) -> tuple[float, float, float]:
    """Mean's SD and 95 % t-interval over ``values`` (NaN with fewer than two)."""
    from scipy import stats

    n = len(values)
    if n < 2:
        return float("nan"), float("nan"), float("nan")
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.975, n - 1)) * sd / np.sqrt(n)
    return sd, float(np.mean(values) - half), float(np.mean(values) + half)


def _clip(interval: tuple[float, float, float]) -> tuple[float, float, float]:
    """An accuracy's interval within [0, 1]."""
    sd, lo, hi = interval
    return sd, float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1))


def summarise(scores: pd.DataFrame, names: list[str], n_regions: int, n_networks: int, repeats: int
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The accuracy table (per recording first, then over recordings) and the per-recording means."""
    per_rec = scores.groupby(["feature", "recording"], sort=False)["accuracy"].mean().unstack("feature")
    n_windows = int(scores["window"].nunique())
    chance = float(per_rec["chance"].mean())
    rows = []
    for name in names:
        values = per_rec[name].to_numpy()
        sd, lo, hi = _clip(_t_interval(values))
        rows.append(dict(feature=name, accuracy=float(values.mean()), sd=sd, ci_low=lo, ci_high=hi, chance=chance,
                         n_recordings=len(values), n_windows=n_windows, n_repeats=repeats, n_regions=n_regions,
                         n_networks=n_networks))
    return pd.DataFrame(rows, columns=COLUMNS), per_rec


def networks(inputs: list[str], output: str | Path, opts: NetworksOptions,
             progress: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Classify regions into their atlas networks from the model's attention and embeddings, beside the raw
    data, coordinates and chance; write ``accuracy.tsv``, its sidecar, ``region_features.tsv`` and a report."""
    from brainfm_cli.models import architecture_class, get_card, load, registered_cards

    out = Path(output)
    check_output_folder(out, OUTPUT_FILES, opts.overwrite)
    card = get_card(opts.model)
    if not architecture_class(card.architecture["name"]).region_tokens:
        fitting = [n for n, c in registered_cards().items()
                   if c.input.atlas and architecture_class(c.architecture["name"]).region_tokens]
        raise BrainfmError(f"{card.name} ({card.family}): its tokens are not (region, time patch) pairs, so its "
                           "attention and embeddings cannot be read per region",
                           fix=f"use a model with region tokens: {', '.join(fitting)}, or a 'brainfm pretrain' run "
                           "of one of their families")
    model = load(opts.model, weights=opts.weights, device=opts.device, **opts.space_args)
    card = model.card
    nets, atlas_name, nets_source, coords = region_networks(card, opts.transfer_networks)
    names = sorted({n for n in nets if n is not None})
    labels = np.array([names.index(n) if n is not None else -1 for n in nets])
    if len(names) < 2:
        raise BrainfmError(f"the regions of {card.name} ({atlas_name}) fall in {len(names)} network(s); "
                           "classification needs at least two", fix="use a model on an atlas with several networks")
    if (labels >= 0).sum() * (1 - opts.test_fraction) < 2:
        raise BrainfmError("too few regions with a network to split", fix="use an atlas with more regions")
    prep = Preprocessor.from_space(card.input, missing=opts.missing)
    corpus = load_corpus(list(inputs), card, card.input.seq_len, opts.filters, opts.tr, opts.missing)
    w = windows(corpus, card.input.seq_len)
    if not len(w):
        raise BrainfmError(f"no run is at least one window long ({card.input.seq_len} samples at TR "
                           f"{card.input.tr} s)", fix="use longer runs")
    recordings = [str(corpus.files[k]) for k in w.runs]
    n_batches = -(-len(w) // opts.batch_size)
    total, done = n_batches + 1, 0

    def step():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    attention, embedding = model_features(model, w, opts.batch_size, opts.missing == "mask", step)
    features = {"attention": attention, "embedding": embedding, "raw": w.x}
    if np.isfinite(coords).all():
        features["coordinates"] = np.broadcast_to(coords, (len(w), *coords.shape))
    scores = split_scores(features, labels, recordings, w.absent, opts)
    step()
    classified = (labels >= 0) & ~w.absent.all(0)  # a network, and data in at least one window
    table, per_rec = summarise(scores, list(features), int(classified.sum()), len(names), opts.repeats)
    # each region's part of the attention (CLS's, or the mean query's), over the windows where it has data
    share, seen = attention.sum(-1), (~w.absent).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_mean = np.where(~w.absent, share, 0).sum(0) / seen
        share_sd = np.sqrt(np.where(~w.absent, (share - share_mean) ** 2, 0).sum(0) / seen)
    regions = list(card.input.regions) if card.input.regions else list(expected_regions(card) or [])
    region_table = pd.DataFrame({
        "region": regions or [str(i) for i in range(len(nets))],
        "network": [n if n is not None else "n/a" for n in nets],
        "classified": classified,
        "attention": share_mean, "attention_sd": share_sd,
    })
    received = "from CLS" if model.has_cls else "from all query tokens (mean; the family has no CLS token)"
    sidecar = {
        "Description": "zero-shot functional networks: per window, a random split of the regions with a network "
                       f"({1 - opts.test_fraction:.0%} / {opts.test_fraction:.0%}), kNN (k = {opts.neighbors}, "
                       "Euclidean) fitted on the training regions, accuracy on the test regions, repeated with "
                       "seeds; accuracy averaged per recording, then over recordings (sd and 95 % t-interval "
                       "across recordings, clipped to [0, 1]); every feature set on the same splits",
        "Model": card.name, "ModelFamily": card.family, "Weights": model.weights_info.get("path"),
        "WeightsSHA256": model.weights_info.get("sha256"),
        "Features": {
            "attention": f"attention each of the region's tokens receives {received}, averaged over heads and "
                         "layers: one value per time patch",
            "embedding": "the region's token embeddings (after the final norm) averaged over its time patches",
            "raw": "the region's model-ready series in the window (the paper's raw-data baseline)",
            "coordinates": "the region's MNI coordinates (position alone; the model's spatial code carries it)",
        },
        "Chance": "accuracy of predicting the training regions' majority network for every test region, on the "
                  "same splits",
        "ChanceByFrequencies": float(per_rec["chance_frequencies"].mean()),
        "ChanceByFrequenciesDescription": "expected accuracy of guessing each test region's network at random with "
                                          "the training regions' network frequencies",
        "Atlas": atlas_name, "NetworksSource": nets_source,
        "Networks": {n: int((labels == i).sum()) for i, n in enumerate(names)},
        "RegionsWithoutNetwork": int((labels < 0).sum()),
        "Neighbors": opts.neighbors, "Repeats": opts.repeats, "TestFraction": opts.test_fraction,
        "Seed": opts.seed, "Windows": len(w), "WindowLength": card.input.seq_len,
        "Recordings": sorted(set(recordings)), "Participants": sorted(set(w.participants)),
        "RegionsWithoutData": int(w.absent.any(0).sum()), "MissingRegions": opts.missing,
        "PerRecording": {rec: {k: float(v) for k, v in row.items()} for rec, row in per_rec.iterrows()},
        "PaperReference": PAPER,
        "Preprocessing": prep.describe(), "GeneratedBy": generated_by("networks"),
    }
    _write(out, table, region_table, per_rec, sidecar, card)
    return table


def _write(out: Path, table: pd.DataFrame, regions: pd.DataFrame, per_rec: pd.DataFrame, sidecar: dict,
           card) -> None:
    from brainfm_cli.io.files import atomic_group
    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport(f"brainfm networks: {card.name}")
    rep.paragraph(sidecar["Description"] + ".")
    rep.table(table, caption=f"Network classification accuracy ({len(sidecar['Networks'])} networks of "
                             f"{sidecar['Atlas']})", float_format="{:.3f}")
    acc = table.set_index("feature")["accuracy"]
    chance = float(table["chance"].iloc[0])
    rep.paragraph(f"Chance: {chance:.3f} ({sidecar['Chance']}); guessing by the training frequencies would score "
                  f"{sidecar['ChanceByFrequencies']:.3f}.")
    for name in ("attention", "embedding"):
        diff = (per_rec[name] - per_rec["raw"]).to_numpy()
        sd, lo, hi = _t_interval(diff)
        interval = f" (95 % CI {lo:+.3f} to {hi:+.3f} over {len(diff)} recordings)" if lo == lo else ""
        verdict = "beats" if lo == lo and lo > 0 else ("falls below" if hi == hi and hi < 0 else
                                                      "is not distinguishable from")
        rep.paragraph(f"{name}: {acc[name]:.3f} against raw data {acc['raw']:.3f}, a difference of "
                      f"{acc[name] - acc['raw']:+.3f}{interval}; it {verdict} the raw-data baseline.")
    rep.note(f"Reference: {sidecar['PaperReference']}. Networks here are {sidecar['Atlas']}'s, so the figures "
             "are not comparable with the paper's beyond their order.")
    fig = new_figure(5.5, 3.6)
    ax = fig.subplots()
    pos = np.arange(len(table))
    err = np.vstack([table["accuracy"] - table["ci_low"], table["ci_high"] - table["accuracy"]])
    ax.bar(pos, table["accuracy"], color=["C0", "C1", "0.55", "0.75"][:len(table)],
           yerr=None if np.isnan(err).any() else err, capsize=4)
    ax.axhline(chance, color="k", ls="--", lw=1, label=f"chance ({chance:.2f})")
    ax.set_xticks(pos, table["feature"])
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy on held-out regions")
    ax.legend(frameon=False, loc="upper right")
    rep.figure(fig, caption="Accuracy of each feature set (bars: mean over recordings, whiskers: 95 % interval "
                            "across recordings where there are several); dashed: chance.")
    used = regions[regions["classified"]]
    by_net = used.groupby("network")["attention"].mean().sort_values()
    fig = new_figure(5.5, 0.3 * len(by_net) + 1.2)
    ax = fig.subplots()
    ax.barh(np.arange(len(by_net)), by_net.to_numpy(), color="C0")
    ax.set_yticks(np.arange(len(by_net)), by_net.index)
    ax.set_xlabel("mean attention share per region")
    rep.figure(fig, caption="Mean attention each network's regions receive (region_features.tsv).")
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in OUTPUT_FILES]
    with atomic_group(paths) as (tsv, js, reg, html):
        tsv.write_text(tsv_text(table, float_format="%.6g"), encoding="utf-8")
        js.write_text(json_text(sidecar), encoding="utf-8")
        reg.write_text(tsv_text(regions, float_format="%.6g"), encoding="utf-8")
        html.write_text(rep.render(), encoding="utf-8")
