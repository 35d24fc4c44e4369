"""``brainfm pretrain``: the loss falls, runs are reproducible, a killed run resumes exactly, torchrun works."""

import os
import signal
import subprocess
import sys
import time

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


@pytest.mark.slow
def test_loss_falls_and_the_model_embeds(tmp_path, corpus):
    out = _pretrain(corpus, tmp_path / "run", "--epochs", "15", "--lr", "3e-3", "--checkpoint-every", "100")
    assert out.returncode == 0, out.stderr
    m = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")
    assert len(m) == 30 and {"loss", "lr", "weight_decay", "grad_norm"} <= set(m.columns)
    assert m["loss"].tail(5).mean() < 0.8 * m["loss"].head(5).mean()
    import yaml

    card = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())
    assert card["embedding"]["width"] == TINY["brainlm"]["embed_dim"] and card["training"]["steps"] == 30
    emb = run_cli("embed", corpus, "--model", tmp_path / "run" / "model.yaml", "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 5


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
