"""Pretraining says how well it did: a participant-grouped validation, collapse warnings, schedules that follow
the run (--max-steps, --time-limit), and clear errors for settings that cannot work."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from brainfm_cli.engine import validate
from brainfm_cli.engine.validate import collapse_warning, embedding_spread, rankme, readout_r2
from conftest import TINY, run_cli
from test_reconstruct import low_rank_corpus

ARCH = [f"--arch={k}={v}" for k, v in TINY["brainlm"].items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return low_rank_corpus(tmp_path_factory.mktemp("five"), n_subjects=5, n_vols=220)


def test_rankme_and_correlation_tell_collapse_from_spread():
    rng = np.random.default_rng(0)
    spread = rng.standard_normal((40, 16))
    same = np.tile(rng.standard_normal(16), (40, 1)) + 1e-6 * rng.standard_normal((40, 16))
    assert rankme(spread) > 10 and rankme(same) < rankme(spread)
    assert embedding_spread(same) < 1e-9 < embedding_spread(spread)
    dead = {"val_prediction_sd": 0.01, "val_r2_0.2": 0.001, "val_embedding_spread": 1e-6}
    assert "step 7" in collapse_warning(dead, 7, 0.5) and "predicts the mean" in collapse_warning(dead, 7, 0.5)
    assert collapse_warning(dead, 7, 0.1) is None  # early in a run the mean is where every model starts
    assert "same embedding" in collapse_warning(dead, 7, 0.5, {"val_embedding_spread": 1e-3})
    alive = {"val_prediction_sd": 0.8, "val_r2_0.2": 0.3, "val_embedding_spread": 0.2, "val_rankme": 9.0}
    assert collapse_warning(alive, 7, 0.5, {"val_embedding_spread": 0.3}) is None


def test_the_fc_readout_tells_an_embedding_that_carries_fc_from_one_that_does_not():
    rng = np.random.default_rng(0)
    n, d, e = 60, 8, 45
    latent = rng.standard_normal((2 * n, 3))  # what varies from window to window
    fc = latent @ rng.standard_normal((3, e)) + 0.3 * rng.standard_normal((2 * n, e))
    carries = np.hstack([latent, rng.standard_normal((2 * n, d - 3))]) @ rng.standard_normal((d, d))
    blind = rng.standard_normal((2 * n, d))
    groups = [f"sub-{i % 4}" for i in range(n)]
    good = readout_r2(carries[:n], fc[:n], groups, carries[n:], fc[n:])
    bad = readout_r2(blind[:n], fc[:n], groups, blind[n:], fc[n:])
    assert good > 0.7 and bad < 0.05


def test_the_fc_readout_predicts_the_mean_where_held_out_embeddings_lie_far_from_the_fitted_ones(monkeypatch):
    rng = np.random.default_rng(0)
    z_fit, y_fit = rng.standard_normal((60, 8)), rng.standard_normal((60, 10))
    groups = [f"sub-{i % 4}" for i in range(60)]
    z, y = 30 * rng.standard_normal((20, 8)), rng.standard_normal((20, 10))  # nothing to read, far away
    np.testing.assert_array_equal(validate._ridge(z_fit, y_fit, z, float("inf")),
                                  np.tile(y_fit.mean(axis=0), (20, 1)))
    assert readout_r2(z_fit, y_fit, groups, z, y) == 0.0  # the fitting mean, as cross-validation chose
    monkeypatch.setattr(validate, "READOUT_PENALTIES", validate.READOUT_PENALTIES[:6])  # up to 100 only
    assert readout_r2(z_fit, y_fit, groups, z, y) < -0.2  # extrapolation is punished: why the grid goes to inf


def test_a_validation_split_reports_reconstruction_r2_and_the_plan(tmp_path, corpus):
    out = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "run", *ARCH, "--batch-size", "4",
                  "--max-steps", "4", "--val-every", "2", "-q")
    assert out.returncode == 0, out.stderr
    assert "pretrain: 4 steps" in out.stderr and "1 held out for validation" in out.stderr
    assert "2 crop(s) per run" in out.stderr  # 440 samples per run at TR 1 s, crops of 200
    val = pd.read_csv(tmp_path / "run" / "validation.tsv", sep="\t")
    assert val["step"].tolist() == [0, 2, 4]  # step 0: the untrained model
    assert {"val_loss", "val_r2_0.2", "val_r2_0.5", "val_r2_0.75", "val_prediction_sd", "val_rankme",
            "val_embedding_spread", "val_fc_r2"} <= set(val.columns)
    assert np.isfinite(val.drop(columns=["step", "epoch"]).to_numpy(dtype=float)).all()
    card = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())
    assert card["training"]["validation"]["val_r2_0.75"] == pytest.approx(val["val_r2_0.75"].iloc[-1], abs=1e-6)
    lr = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")["lr"]
    assert lr.iloc[-1] < lr.max()  # the schedule follows --max-steps: it has decayed by the last step


def test_a_learning_rate_that_destroys_the_model_is_caught_naming_the_step(tmp_path, corpus):
    out = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "run", *ARCH, "--batch-size", "4",
                  "--max-steps", "12", "--val-every", "4", "--lr", "1e-1", "-q")
    assert out.returncode == 0, out.stderr
    assert "step 8: the model looks collapsed" in out.stderr and "predicts the mean" in out.stderr


def test_settings_that_cannot_work_are_refused_before_any_output(tmp_path, corpus):
    bad = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "a", *ARCH, "--time-limit", "soon")
    assert bad.returncode == 1 and "not a duration" in bad.stderr and "15m" in bad.stderr
    bad = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "b", *ARCH, "--val-fraction", "1")
    assert bad.returncode == 1 and "none is left for training" in bad.stderr and not (tmp_path / "b").exists()
    bad = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "c", "--size", "enormous")
    assert bad.returncode == 1 and "tiny, small, base" in bad.stderr


def test_durations_read_like_a_scheduler_writes_them():
    from brainfm_cli.tasks.pretrain import parse_duration

    assert parse_duration("15m") == 900 and parse_duration("1h30m") == 5400 and parse_duration("90s") == 90
    assert parse_duration("2h") == 7200 and parse_duration("600") == 600 and parse_duration(None) is None
