"""``brainfm forecast fit|evaluate|predict``: BrainLM's future masking and a head for the other families, scored
beside the baselines on the same held-out windows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.models import build, get_card
from conftest import TINY, run_cli
from test_pretrain import learnable_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fc")
    learnable_corpus(root / "train", n_subjects=3, n_vols=240)
    learnable_corpus(root / "test", n_subjects=1, n_vols=240, seed=9)
    test_file = next((root / "test").rglob("*.tsv"))  # another participant than the training ones
    renamed = test_file.parent.parent.parent / "sub-09" / "func" / test_file.name.replace("sub-01", "sub-09")
    renamed.parent.mkdir(parents=True)
    test_file.rename(renamed)
    test_file.with_suffix(".json").rename(renamed.with_suffix(".json"))
    (root / "test" / "sub-01").rename(root / "empty")
    return root


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("pre") / "run"
    res = run_cli("pretrain", corpus / "train", "--model", "brainlm", "--atlas", "seitzman300", "--size", "tiny",
                  "-o", out, "--max-steps", "6", "--batch-size", "4", "--val-fraction", "0", "-q")
    assert res.returncode == 0, res.stderr
    return out / "model.yaml"


@pytest.fixture(scope="module")
def forecaster(tmp_path_factory, corpus, pretrained):
    out = tmp_path_factory.mktemp("fit") / "run"
    res = run_cli("forecast", "fit", corpus / "train", "--model", pretrained, "--context", "180", "--horizon", "20",
                  "-o", out, "--max-steps", "6", "--batch-size", "4", "--val-fraction", "0.34", "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_brainlm_forecasts_by_hiding_the_future_patches():
    card = get_card("brainlm").with_architecture(**TINY["brainlm"])
    torch.manual_seed(0)
    model = build(card).eval()
    torch.nn.init.normal_(model.decoder_pred[-1].weight)  # the head starts at zero (the mean): make it say something
    model.enable_forecasting(180, 20)
    x = torch.randn(2, 300, 180)
    with torch.no_grad():
        y = model.forecast(x)
        same = model.forecast(x)
        later = x.clone()
        later[..., :20] += 5.0  # the context matters
        moved = model.forecast(later)
    assert y.shape == (2, 300, 20) and torch.equal(y, same) and not torch.allclose(y, moved)
    assert model.card.forecast == {"context": 180, "horizon": 20, "method": "future_masking"}


def test_head_families_start_at_the_mean_and_sc_mbm_cannot_forecast():
    from brainfm_cli.errors import BrainfmError

    card = get_card("semantoks").with_architecture(**TINY["semantoks"])
    model = build(card).eval()
    model.enable_forecasting(card.input.seq_len, 10)
    with torch.no_grad():
        y = model.forecast(torch.randn(2, card.input.n_regions, card.input.seq_len))
    assert y.shape == (2, card.input.n_regions, 10) and float(y.abs().max()) == 0.0  # zero head: the mean
    with pytest.raises(BrainfmError, match="must be one window"):
        model.enable_forecasting(card.input.seq_len - 20, 10)
    sc = build(get_card("sc-mbm").with_architecture(**TINY["sc-mbm"]))
    with pytest.raises(BrainfmError, match="cannot forecast"):
        sc.enable_forecasting(1, 1)


def test_fit_writes_a_forecaster_that_rebuilds_itself(forecaster):
    import yaml

    card = yaml.safe_load((forecaster / "model.yaml").read_text())
    assert card["forecast"] == {"context": 180, "horizon": 20, "method": "future_masking"}
    val = pd.read_csv(forecaster / "validation.tsv", sep="\t")
    assert {"val_forecast_r2", "val_forecast_r2_step1"} <= set(val.columns)


def test_evaluate_scores_every_method_on_the_same_windows(tmp_path, corpus, forecaster):
    out = tmp_path / "ev"
    res = run_cli("forecast", "evaluate", forecaster, corpus / "test", "-o", out, "--method", "model",
                  "--method", "mean", "--method", "persistence", "--method", "ridge_ar", "-q")
    assert res.returncode == 0, res.stderr
    m = pd.read_csv(out / "metrics.tsv", sep="\t", dtype={"step": str})
    assert list(m.columns) == ["method", "step", "r2", "pearson_r", "mse", "n_windows"]
    assert set(m.method) == {"model", "mean", "persistence", "ridge_ar"}
    assert (m.groupby("method").size() == 21).all()  # 20 steps + mean
    mean = m[m.step == "mean"].set_index("method")
    assert abs(mean.loc["mean", "r2"]) < 0.05  # the mean baseline scores ~0 by construction
    assert mean.loc["ridge_ar", "r2"] > mean.loc["persistence", "r2"]
    side = json.loads((out / "metrics.json").read_text())
    assert side["TestParticipants"] == ["sub-09"] and "sub-09" not in side["TrainingParticipants"]
    assert (out / "report.html").read_text().count("<img") >= 2


def test_predict_continues_the_run_in_its_units_and_tr(tmp_path, corpus, forecaster):
    source = next((corpus / "test").rglob("*.tsv"))
    res = run_cli("forecast", "predict", forecaster, source, "-o", tmp_path / "future.tsv")
    assert res.returncode == 0, res.stderr
    future = pd.read_csv(tmp_path / "future.tsv", sep="\t")
    past = pd.read_csv(source, sep="\t")
    assert list(future.columns) == list(past.columns) and len(future) == 10  # 20 s at the run's TR of 2 s
    assert abs(future.to_numpy().mean() - past.to_numpy().mean()) < 3 * past.to_numpy().std()
    side = json.loads((tmp_path / "future.json").read_text())
    assert side["RepetitionTime"] == 2.0 and side["Horizon"] == 20
    piped = run_cli("forecast", "predict", forecaster, source)
    assert piped.returncode == 0 and piped.stdout.splitlines()[0].split("\t") == list(past.columns)


def test_bad_forecast_requests_name_the_fix(tmp_path, corpus, pretrained, forecaster):
    long = run_cli("forecast", "fit", corpus / "train", "--model", pretrained, "--context", "200", "--horizon", "20",
                   "-o", tmp_path / "a", "-q")
    assert long.returncode == 1 and "longer than" in long.stderr and not (tmp_path / "a" / "model.yaml").exists()
    other = tmp_path / "other"
    learnable_corpus(other, n_subjects=1, n_vols=240, n_regions=20)
    space = run_cli("forecast", "evaluate", forecaster, other, "-o", tmp_path / "b", "-q")
    assert space.returncode == 1 and "regions" in space.stderr
    plain = run_cli("forecast", "evaluate", pretrained.parent, corpus / "test", "-o", tmp_path / "c", "-q")
    assert plain.returncode == 1 and "not a forecaster" in plain.stderr


def test_future_tokens_read_their_own_regions_history_in_the_same_time_decoder():
    card = get_card("brainlm").with_architecture(**TINY["brainlm"], decoder_attention="same_time")
    model = build(card)
    from brainfm_cli.masking.random import future_mask

    tm = future_mask(1, 300, 10, 1)
    keys, mask = model.decoder_reads(tm.keep, 3000, "cpu")  # [B, 1 + K] and [B, 1, 1 + N, 1 + K]
    assert keys.shape == (1, 1 + 300 * 9)
    allowed = torch.zeros(1 + 3000, 1 + 3000, dtype=torch.bool).index_put_(
        (torch.arange(1 + 3000)[:, None], keys[0][None, :]), mask[0, 0])  # over all tokens
    future_of_region_4 = 1 + 4 * 10 + 9
    reads = torch.nonzero(allowed[future_of_region_4]).flatten().tolist()
    assert reads == [0] + [1 + 4 * 10 + t for t in range(9)]  # CLS and region 4's nine visible patches
    past = 1 + 4 * 10 + 3  # a visible token still reads every visible token
    assert int(allowed[past].sum()) == 1 + 300 * 9


def test_a_context_never_sees_the_samples_after_it(tmp_path):
    """Resampling 2 s → 1 s reaches ~10 raw samples ahead: contexts are prepared from the raw run up to their end."""
    from brainfm_cli.data.corpus import load_forecast_pairs
    from brainfm_cli.data.preprocess import Preprocessor
    from conftest import write_timeseries_tsv

    card = get_card("brainlm").with_architecture(**TINY["brainlm"])
    labels = list(card.input.regions or []) or __import__("conftest").seitzman_labels()
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((140, len(labels)))
    later = raw.copy()
    later[90:] += 3.0  # everything after the first context's last raw sample (context 180 s at 1 s = raw 0..89)
    pairs = []
    for name, data in (("a", raw), ("b", later)):
        path = write_timeseries_tsv(tmp_path / name / "sub-01" / "func" / "sub-01_task-rest_timeseries.tsv", data,
                                    labels, 2.0)
        corpus = load_forecast_pairs([path.parent], card, 180, 20, 20)
        stats = Preprocessor.from_space(card.input).prepare_with_stats(data, 2.0)[2]
        x = corpus.runs[0]
        pairs.append(x[:, :180] * stats[1][:, None] + stats[0][:, None])  # the context in the run's units
    np.testing.assert_allclose(pairs[0], pairs[1], atol=1e-4)


def test_freeze_encoder_trains_only_the_decoder(tmp_path, corpus, pretrained):
    from safetensors.torch import load_file

    out = tmp_path / "frozen"
    res = run_cli("forecast", "fit", corpus / "train", "--model", pretrained, "--context", "180", "--horizon", "20",
                  "-o", out, "--max-steps", "3", "--batch-size", "4", "--val-fraction", "0", "--freeze-encoder", "-q")
    assert res.returncode == 0, res.stderr
    before, after = load_file(pretrained.parent / "model.safetensors"), load_file(out / "model.safetensors")
    encoder = [k for k in before if k.startswith(("blocks.", "patch_embed", "norm.", "region_embed", "xyz_embed"))]
    decoder = [k for k in before if k.startswith("decoder")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
