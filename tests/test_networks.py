"""``brainfm networks``: regions classified into their atlas networks from a model's attention and embeddings,
beside the raw data, coordinates and chance, on the same region splits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.atlases import load_atlas
from brainfm_cli.tasks.networks import NetworksOptions, split_scores
from conftest import TINY, invoke, run_cli, write_timeseries_tsv


def network_corpus(root, columns, networks, n_subjects=2, n_vols=160, tr=2.0, noise=1.0, seed=0):
    """Region series in which every region of network k follows the same latent time course plus independent
    noise; regions without a network are noise alone."""
    rng = np.random.default_rng(seed)
    names = sorted({n for n in networks if n is not None})
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    for s in range(n_subjects):
        latent = {n: np.convolve(rng.standard_normal(n_vols + 8), kernel, "valid") for n in names}
        data = noise * rng.standard_normal((n_vols, len(columns)))
        for j, n in enumerate(networks):
            if n is not None:
                data[:, j] += latent[n] / latent[n].std()
        name = f"sub-{s + 1:02d}_task-rest_timeseries.tsv"
        write_timeseries_tsv(root / f"sub-{s + 1:02d}" / "func" / name, data, columns, tr)
    return root


@pytest.fixture(scope="module")
def seitzman():
    atlas = load_atlas("seitzman300")
    nets = [n if n != "unassigned" else None for n in atlas.networks]
    return list(atlas.labels), nets


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, seitzman):
    return network_corpus(tmp_path_factory.mktemp("networks"), *seitzman)


def test_the_cli_writes_accuracy_beside_raw_data_and_chance(tmp_path, corpus, tiny_brainlm):
    out = run_cli("networks", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "n",
                  "--repeats", "3", "--seed", "4", "-q")
    assert out.returncode == 0, out.stderr
    acc = pd.read_csv(tmp_path / "n" / "accuracy.tsv", sep="\t")
    assert list(acc.feature) == ["attention", "embedding", "raw", "coordinates"]
    assert list(acc.columns[:6]) == ["feature", "accuracy", "sd", "ci_low", "ci_high", "chance"]
    # Seitzman-300: 285 regions in 13 networks (15 unassigned are left out); two participants, one window each
    assert (acc.n_regions == 285).all() and (acc.n_networks == 13).all() and (acc.n_recordings == 2).all()
    assert acc.chance.nunique() == 1 and 0.15 < acc.chance[0] < 0.35  # DefaultMode holds 67 of the 285
    raw = acc.set_index("feature").loc["raw"]
    assert raw.accuracy > acc.chance[0] + 0.4 and raw.ci_low <= raw.accuracy <= raw.ci_high
    regions = pd.read_csv(tmp_path / "n" / "region_features.tsv", sep="\t")
    assert len(regions) == 300 and regions.classified.sum() == 285
    assert 0.9 < regions.attention.sum() < 1  # the share of CLS's attention on patch tokens (the rest on itself)
    side = json.loads((tmp_path / "n" / "accuracy.json").read_text())
    assert side["Atlas"] == "seitzman300" and side["RegionsWithoutNetwork"] == 15 and side["Repeats"] == 3
    assert "from CLS" in side["Features"]["attention"] and 0 < side["ChanceByFrequencies"] < acc.chance[0]
    assert "58.8" in side["PaperReference"]
    html = (tmp_path / "n" / "report.html").read_text()
    assert "data:image/png;base64," in html and "raw-data baseline" in html
    again = run_cli("networks", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "n",
                    "--repeats", "3", "--seed", "4", "-q")
    assert again.returncode == 1 and "--overwrite" in again.stderr
    again = run_cli("networks", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "n2",
                    "--repeats", "3", "--seed", "4", "-q")
    pd.testing.assert_frame_equal(acc, pd.read_csv(tmp_path / "n2" / "accuracy.tsv", sep="\t"))  # seeded splits


def test_a_family_without_cls_uses_the_attention_each_token_receives(tmp_path, corpus):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    weights = tmp_path / "jepa.safetensors"
    load("brain-jepa", pretrained=False, architecture=TINY["brain-jepa"]).save(weights)
    out = run_cli("networks", corpus, "--model", "brain-jepa", "--weights", weights, "-o", tmp_path / "n",
                  "--repeats", "2", "-q")
    assert out.returncode == 0, out.stderr
    side = json.loads((tmp_path / "n" / "accuracy.json").read_text())
    assert "all query tokens" in side["Features"]["attention"] and side["WindowLength"] == 160
    regions = pd.read_csv(tmp_path / "n" / "region_features.tsv", sep="\t")
    assert regions.attention.sum() == pytest.approx(1, abs=1e-4)  # no CLS: every query's row sums to 1


def test_splits_score_informative_features_perfectly_and_chance_as_the_majority():
    labels = np.array([0] * 12 + [1] * 6 + [2] * 2 + [-1] * 3)
    onehot = np.eye(3)[np.maximum(labels, 0)][None]
    noise = np.random.default_rng(0).standard_normal((1, len(labels), 5))
    opts = NetworksOptions(model="x", neighbors=1, repeats=20, test_fraction=0.25)
    scores = split_scores({"perfect": onehot, "noise": noise}, labels, ["r"], np.zeros((1, len(labels)), bool), opts)
    acc = scores.groupby("feature")["accuracy"].mean()
    assert acc["perfect"] == 1.0 and acc["noise"] < 0.9
    assert set(scores.groupby(["window", "repeat"]).size()) == {4}  # every feature set and both chances per split
    # majority class 0 (12 of 20 used regions): chance is the share of network 0 among the 5 test regions
    assert 0.3 < acc["chance"] < 0.9 and acc["chance_frequencies"] < acc["chance"]


def test_attention_maps_are_distributions_and_leave_the_output_unchanged():
    from brainfm_cli.models import load

    torch.manual_seed(0)
    lm = load("brainlm", pretrained=False, architecture=TINY["brainlm"])
    x = torch.randn(2, 300, 200)
    with torch.inference_mode():
        out, maps = lm.forward_attention(x)
        torch.testing.assert_close(out, lm.forward_features(x))
        assert len(maps) == 2 and maps[0].shape == (2, 4, 3001, 3001)
        for a in maps:
            torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 3001))
        pad = lm.padding_mask([200, 150], 200)  # the second window's last 2 patches are padding
        enc = lm.encode_attention(x, pad)
        hidden = pad.reshape(2, -1)
        assert (enc["attention"][hidden] == 0).all() and (enc["attention"][~hidden] > 0).all()
        assert (enc["attention"].sum(-1) < 1).all()  # CLS keeps some attention on itself
    assert lm.token_regions(3000).tolist() == np.repeat(np.arange(300), 10).tolist()
    jepa = load("brain-jepa", pretrained=False, architecture=TINY["brain-jepa"])
    with torch.inference_mode():
        enc = jepa.encode_attention(torch.randn(1, 300, 160))
    assert enc["cls"] is None and enc["attention"].shape == (1, 3000)
    torch.testing.assert_close(enc["attention"].sum(-1), torch.ones(1))
    sem = load("semantoks", pretrained=False, architecture=TINY["semantoks"])
    assert sem.token_regions(100) is None and not sem.region_tokens


def test_families_without_region_tokens_are_refused_naming_those_that_fit(tmp_path, corpus):
    out = run_cli("networks", corpus, "--model", "semantoks", "-o", tmp_path / "n")
    assert out.returncode == 1
    assert "not (region, time patch) pairs" in out.stderr and "brainlm-sim" in out.stderr
    assert "brain-jepa" in out.stderr and not (tmp_path / "n").exists()
    bad = run_cli("networks", corpus, "--model", "brainlm", "-o", tmp_path / "n", "--test-fraction", "1")
    assert bad.returncode == 1 and "strictly between 0 and 1" in bad.stderr


def test_an_atlas_without_networks_is_refused_unless_networks_are_transferred(tmp_path):
    from brainfm_cli.models import get_card, load
    from brainfm_cli.models._space import space_for_atlas

    atlas = load_atlas("power264")
    assert atlas.networks is None
    card = space_for_atlas(get_card("brainlm").with_architecture(**TINY["brainlm"]), atlas, list(atlas.labels),
                           "power264")
    weights = tmp_path / "power.safetensors"
    torch.manual_seed(0)
    from brainfm_cli.models import build

    build(card).save(weights)
    assert load("brainlm", weights=weights).card.input.atlas == "power264"
    transferred = load_atlas("power264", transfer=True).networks
    corpus = network_corpus(tmp_path / "c", list(atlas.labels), transferred, n_subjects=2, n_vols=100)
    out = run_cli("networks", corpus, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "n")
    assert out.returncode == 1 and "has no network labels" in out.stderr and "--transfer-networks" in out.stderr
    assert not (tmp_path / "n").exists()
    out = run_cli("networks", corpus, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "n",
                  "--transfer-networks", "--repeats", "2", "-q")
    assert out.returncode == 0, out.stderr
    side = json.loads((tmp_path / "n" / "accuracy.json").read_text())
    assert "seitzman300" in side["NetworksSource"] and side["Atlas"] == "power264"


def test_the_help_page_renders_with_placeholders():
    for flag in ("--help", "-h"):
        res = invoke("networks", flag)
        assert res.exit_code == 0, res.output
        options = res.stdout.split("Options:")[-1]
        assert "--model NAME" in options and "--weights FILE|hf://REPO" in options and "--neighbors" in options
        for python_type in ("<str>", "<bool>", "<int>", "<float>", "<path>", "<list[str]>"):
            assert python_type not in options


def test_regions_without_data_take_no_part_when_masked(tmp_path, seitzman, tiny_brainlm):
    columns, nets = seitzman
    corpus = network_corpus(tmp_path / "c", columns, nets, n_vols=100)
    gone = columns.index(next(c for c, n in zip(columns, nets) if n == "Visual"))
    for f in corpus.rglob("*_timeseries.tsv"):
        table = pd.read_csv(f, sep="\t")
        table[columns[gone]] = np.nan
        table.to_csv(f, sep="\t", index=False, na_rep="n/a")
    refused = run_cli("networks", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "x")
    assert refused.returncode == 1 and "--missing-regions" in refused.stderr
    out = run_cli("networks", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "n",
                  "--missing-regions", "mask", "--repeats", "2", "-q")
    assert out.returncode == 0, out.stderr
    acc = pd.read_csv(tmp_path / "n" / "accuracy.tsv", sep="\t")
    assert (acc.n_regions == 284).all()
    regions = pd.read_csv(tmp_path / "n" / "region_features.tsv", sep="\t")
    assert not regions.classified[gone] and np.isnan(regions.attention[gone])
    assert regions.attention.drop(index=gone).notna().all()
