"""``brainfm reconstruct``: the model and the baselines scored on exactly the same hidden values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.data.reconstruction import PENALTIES, RidgeFromVisible, choose_penalty, interpolate, r2_and_mse
from conftest import TINY, run_cli, seitzman_labels, write_timeseries_tsv


def low_rank_corpus(root, n_subjects=3, n_vols=220, tr=2.0, rank=4, noise=0.3, seed=0):
    """Region series with one spatial structure shared by every participant: ``rank`` smooth sources mixed by
    the same matrix, plus independent noise (what ridge from the other regions can exploit)."""
    labels = seitzman_labels()
    mixing = np.random.default_rng(123).standard_normal((rank, len(labels)))
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    for s in range(n_subjects):
        sources = np.stack([np.convolve(rng.standard_normal(n_vols + 12), kernel, "valid") for _ in range(rank)], 1)
        data = sources @ mixing + noise * rng.standard_normal((n_vols, len(labels)))
        name = f"sub-{s + 1:02d}_task-rest_atlas-seitzman300_timeseries.tsv"
        write_timeseries_tsv(root / f"sub-{s + 1:02d}" / "func" / name, data, labels, tr)
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return low_rank_corpus(tmp_path_factory.mktemp("lowrank"))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "brainlm.safetensors"
    load("brainlm", pretrained=False, architecture=TINY["brainlm"]).save(path)
    return path


def test_baselines_on_a_planted_structure():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((3, 20))
    windows = [rng.standard_normal((50, 3)) @ mixing + 0.1 * rng.standard_normal((50, 20)) for _ in range(6)]
    windows = [w.T for w in windows]
    hidden = rng.random((20, 50)) < 0.3
    ridge = RidgeFromVisible(windows[:5], penalty=1e-3)
    pred = ridge.predict(windows[5], hidden)
    r2, mse, n = r2_and_mse(windows[5][hidden], pred[hidden])
    assert r2 > 0.95 and n == hidden.sum()
    np.testing.assert_array_equal(pred[~hidden], windows[5][~hidden])  # visible values are kept as they are
    smooth = np.sin(np.linspace(0, 3, 50))[None].repeat(2, 0)
    gaps = np.zeros((2, 50), bool)
    gaps[:, 10:20] = True
    assert np.abs(interpolate(smooth, gaps)[gaps] - smooth[gaps]).max() < 0.05
    assert interpolate(np.zeros((3, 1)), np.ones((3, 1), bool)) is None
    masks = [[h] for h in [hidden] * 6]
    assert choose_penalty([[w] for w in windows], masks) in (1e-3, 1e-2, 1e-1)  # little noise: little penalty
    assert np.isnan(r2_and_mse(np.ones(4), np.zeros(4))[0])


def test_reconstruct_writes_the_table_with_every_baseline(tmp_path, corpus, weights):
    out = run_cli("reconstruct", corpus, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "r",
                  "--mask-ratio", "0.2", "--mask-ratio", "0.75", "--seed", "3", "-q")
    assert out.returncode == 0, out.stderr
    m = pd.read_csv(tmp_path / "r" / "metrics.tsv", sep="\t")
    assert list(m.columns) == ["method", "mask_ratio", "r2", "mse", "n_values"]
    assert set(m.method) == {"model", "mean", "interpolation", "ridge"} and set(m.mask_ratio) == {0.2, 0.75}
    for _, part in m.groupby("mask_ratio"):
        assert part.n_values.nunique() == 1  # every method on exactly the same values
    r2 = m.set_index(["method", "mask_ratio"])["r2"]
    assert abs(r2["mean", 0.2]) < 0.02 and r2["ridge", 0.2] > 0.6 and r2["ridge", 0.2] > r2["ridge", 0.75]
    # 220 volumes at TR 2 s → 440 samples at 1 s → two 200-sample windows per participant, 300 regions
    assert m.n_values[(m.method == "model") & (m.mask_ratio == 0.2)].item() == 3 * 2 * 300 * 200 * 0.2
    side = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert side["Windows"] == 6 and side["Seed"] == 3 and "cross-fitted" in side["Baselines"]["ridge"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "R² by mask ratio" in html and "data:image/png;base64," in html
    again = run_cli("reconstruct", corpus, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "r2",
                    "--mask-ratio", "0.2", "--mask-ratio", "0.75", "--seed", "3", "-q")
    assert again.returncode == 0
    pd.testing.assert_frame_equal(m, pd.read_csv(tmp_path / "r2" / "metrics.tsv", sep="\t"))  # the seed fixes masks


def test_the_ridge_baseline_can_come_from_a_training_corpus(tmp_path, corpus, weights):
    held_out = low_rank_corpus(tmp_path / "test", n_subjects=1, seed=9)
    out = run_cli("reconstruct", held_out, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "r",
                  "--mask-ratio", "0.5", "--train", corpus, "-q")
    assert out.returncode == 0, out.stderr
    m = pd.read_csv(tmp_path / "r" / "metrics.tsv", sep="\t").set_index("method")
    assert m.loc["ridge", "r2"] > 0.5
    alone = run_cli("reconstruct", held_out, "--model", "brainlm", "--weights", weights, "-o", tmp_path / "x")
    assert alone.returncode == 1 and "--train" in alone.stderr


def test_models_without_a_value_decoder_are_refused_with_the_command_that_fits(tmp_path, corpus):
    out = run_cli("reconstruct", corpus, "--model", "semantoks", "-o", tmp_path / "r")
    assert out.returncode == 1
    assert "no decoder of values" in out.stderr and "brainfm probe" in out.stderr
    assert not (tmp_path / "r").exists()
    bad = run_cli("reconstruct", corpus, "--model", "brainlm", "-o", tmp_path / "r", "--mask-ratio", "1.5")
    assert bad.returncode == 1 and "strictly between 0 and 1" in bad.stderr


def test_the_ridge_penalty_is_chosen_leave_one_participant_out_and_bounded_on_large_corpora(monkeypatch):
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((3, 12))
    groups = [[(rng.standard_normal((40, 3)) @ mix + s * rng.standard_normal((40, 12))).T for _ in range(3)]
              for s in (0.3, 0.5, 1.0, 1.5)]
    masks = [[rng.random((12, 40)) < 0.4 for _ in g] for g in groups]

    def brute_force():  # leave one participant out, every window scored, written independently
        errors = []
        for penalty in PENALTIES:
            err = 0.0
            for g in range(len(groups)):
                model = RidgeFromVisible([w for h, ws in enumerate(groups) if h != g for w in ws], penalty)
                err += sum(float(((model.predict(w, m) - w)[m] ** 2).sum()) for w, m in zip(groups[g], masks[g]))
            errors.append(err)
        return float(PENALTIES[int(np.argmin(errors))])

    assert choose_penalty(groups, masks) == brute_force()
    calls = []
    original = RidgeFromVisible.predict
    monkeypatch.setattr(RidgeFromVisible, "predict", lambda self, w, m: calls.append(1) or original(self, w, m))
    many = [g * 20 for g in groups] * 3  # 12 participants of 60 windows
    choose_penalty(many, [m * 20 for m in masks] * 3, folds=5, per_fold=7)
    assert len(calls) == 5 * 7 * len(PENALTIES)  # 5 folds of whole participants, 7 windows scored in each
