"""``brainfm pretrain``: the loss falls, runs are reproducible, a killed run resumes exactly, torchrun works."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from conftest import TINY, make_region_corpus, run_cli

ARCH = [f"--arch={k}={v}" for k, v in TINY["brainlm"].items()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_region_corpus(tmp_path_factory.mktemp("corpus"), n_subjects=4, n_vols=220)


def _pretrain(corpus, out, *extra):
    return run_cli("pretrain", corpus, "--model", "brainlm", "-o", out, *ARCH, "--batch-size", "2", "--quiet",
                   "--val-fraction", "0", "--crops-per-run", "1", *extra)


def learnable_corpus(root, n_subjects=5, n_regions=30, n_vols=400, seed=0):
    """Region series with one spatial structure shared by every participant (three smooth sources, the same mixing),
    on the first ``n_regions`` Seitzman-300 regions: masked values are predictable from the other regions."""
    from conftest import seitzman_labels, write_timeseries_tsv

    labels = seitzman_labels()[:n_regions]
    mixing = np.random.default_rng(123).standard_normal((3, n_regions))
    rng = np.random.default_rng(seed)
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    for s in range(n_subjects):
        sources = np.stack([np.convolve(rng.standard_normal(n_vols + 12), kernel, "valid") for _ in range(3)], 1)
        data = sources @ mixing + 0.3 * rng.standard_normal((n_vols, n_regions))
        name = f"sub-{s + 1:02d}_task-rest_atlas-seitzman300_timeseries.tsv"
        write_timeseries_tsv(root / f"sub-{s + 1:02d}" / "func" / name, data, labels, 2.0)
    return root


@pytest.mark.slow
def test_a_tiny_model_learns_a_planted_structure_and_embeds(tmp_path):
    """Not a loss that falls because a random head's noise is removed: held-out participants' hidden values are
    reconstructed better than by their mean, within a couple of hundred steps."""
    corpus = learnable_corpus(tmp_path / "c")
    out = run_cli("pretrain", corpus, "--model", "brainlm", "--atlas", "seitzman300", "--size", "tiny", "-o",
                  tmp_path / "run", "--max-steps", "200", "--val-every", "100", "--batch-size", "8", "--checkpoint-every",
                  "100", "-q")
    assert out.returncode == 0, out.stderr
    assert "collapsed" not in out.stderr
    m = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")
    assert len(m) == 200 and {"loss", "lr", "weight_decay", "grad_norm"} <= set(m.columns)
    assert m["loss"].tail(20).mean() < 0.8 * m["loss"].head(20).mean()
    val = pd.read_csv(tmp_path / "run" / "validation.tsv", sep="\t").set_index("step")
    assert abs(val.loc[0, "val_r2_0.75"]) < 0.02  # the untrained model predicts the mean (zero head)
    assert val.loc[200, "val_r2_0.75"] > 0.2 and val.loc[200, "val_r2_0.2"] > 0.2
    import yaml

    card = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())
    assert card["embedding"]["width"] == 64 and card["training"]["steps"] == 200
    emb = run_cli("embed", corpus, "--model", tmp_path / "run" / "model.yaml", "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 6


@pytest.mark.slow
def test_same_seed_same_model_and_resume_matches_an_uninterrupted_run(tmp_path, corpus):
    a = _pretrain(corpus, tmp_path / "a", "--epochs", "3", "--checkpoint-every", "2")
    b = _pretrain(corpus, tmp_path / "b", "--epochs", "3", "--checkpoint-every", "2")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != b""
    wa, wb = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all((wa[k] == wb[k]).all() for k in wa)
    # the time limit stops the run after its first step, with a checkpoint; the schedule is --max-steps's 6 steps
    part = _pretrain(corpus, tmp_path / "c", "--epochs", "3", "--checkpoint-every", "2", "--max-steps", "6",
                     "--time-limit", "0.001")
    assert part.returncode == 0, part.stderr
    assert "stopped at the time limit" in part.stderr and "after step 1 of 6" in part.stderr
    assert len(pd.read_csv(tmp_path / "c" / "metrics.tsv", sep="\t")) == 1
    again = _pretrain(corpus, tmp_path / "c", "--epochs", "3", "--checkpoint-every", "2")
    assert again.returncode == 1 and "--resume" in again.stderr
    wrong = _pretrain(corpus, tmp_path / "c", "--epochs", "4", "--resume")
    assert wrong.returncode == 1 and "epochs" in wrong.stderr
    done = _pretrain(corpus, tmp_path / "c", "--epochs", "3", "--checkpoint-every", "2", "--max-steps", "6", "--resume")
    assert done.returncode == 0, done.stderr
    wc = load_file(tmp_path / "c" / "model.safetensors")
    assert all((wa[k] == wc[k]).all() for k in wa)
    steps = pd.read_csv(tmp_path / "c" / "metrics.tsv", sep="\t")["step"].tolist()
    assert steps == list(range(1, 7))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path, corpus, sig):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "brainfm_cli", "pretrain", str(corpus), "--model", "brainlm", "-o", str(out), *ARCH,
           "--batch-size", "2", "--epochs", "200", "--checkpoint-every", "1", "--quiet", "--val-fraction", "0",
           "--crops-per-run", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, BRAINFM_OFFLINE="1"))
    ckpt = out / "checkpoints" / "last.pt"
    for _ in range(600):
        if ckpt.exists() and len((out / "metrics.tsv").read_text().splitlines()) > 3:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    assert not (out / "model.safetensors").exists()
    if sig == signal.SIGTERM:  # a clean stop leaves no temporary file; SIGKILL mid-write may (resume removes it)
        assert not [p for p in out.rglob("*.part")]
    import torch

    state = torch.load(ckpt, weights_only=True)
    assert state["step"] >= 1
    if sig == signal.SIGTERM:
        assert proc.returncode == 130
    done = _pretrain(corpus, out, "--epochs", "200", "--checkpoint-every", "1", "--resume", "--max-steps",
                     str(state["step"] + 2))
    assert done.returncode == 0, done.stderr
    steps = pd.read_csv(out / "metrics.tsv", sep="\t")["step"].tolist()
    assert steps == list(range(1, state["step"] + 3))
    assert not [p for p in out.rglob("*.part")]


@pytest.mark.slow
def test_torchrun_two_processes_on_gloo(tmp_path, corpus):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "brainfm_cli", "pretrain", str(corpus), "--model", "brainlm", "-o", str(tmp_path / "ddp"), *ARCH,
           "--batch-size", "1", "--epochs", "2", "--device", "cpu", "--quiet", "--val-fraction", "0", "--crops-per-run", "1"]
    env = dict(os.environ, BRAINFM_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    m = pd.read_csv(tmp_path / "ddp" / "metrics.tsv", sep="\t")
    assert len(m) == 4  # 4 runs / (1 crop × 2 processes) = 2 steps per epoch
    assert (tmp_path / "ddp" / "model.safetensors").exists()
