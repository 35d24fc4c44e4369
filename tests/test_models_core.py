"""The model core: registry and cards, checkpoint I/O (ours, foreign, unsafe, broken, hf://), devices."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from brainfm_cli.errors import BrainfmError
from brainfm_cli.models import get_card, list_models, load
from brainfm_cli.models.checkpoint import read_checkpoint, resolve_hf
from conftest import TINY


def test_registry_lists_every_card_and_suggests_close_names():
    names = {r["name"] for r in list_models()}
    assert {"brainlm", "brainlm-vitmae-111m", "brainlm-vitmae-650m"} <= names
    with pytest.raises(BrainfmError, match="did you mean brainlm"):
        get_card("brainlmm")


def test_own_checkpoint_round_trip_carries_the_card(tmp_path):
    torch.manual_seed(0)
    model = load("brainlm", pretrained=False, architecture=TINY["brainlm"])
    path = model.save(tmp_path / "m.safetensors")
    again = load("brainlm", weights=path)
    assert again.card.architecture["embed_dim"] == TINY["brainlm"]["embed_dim"]
    x = torch.randn(2, 300, 200)
    with torch.inference_mode():
        torch.testing.assert_close(model.encode(x)["cls"], again.encode(x)["cls"], atol=0, rtol=0)
    assert again.weights_info["sha256"] and again.weights_info["format"] == "brainfm"


def test_no_weights_is_an_error_naming_the_fix():
    with pytest.raises(BrainfmError, match="ships no weights"):
        load("brainlm")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = load("brainlm", pretrained=False, architecture=TINY["brainlm"]).save(tmp_path / "lm.safetensors")
    coords = np.random.default_rng(0).integers(-60, 60, (424, 3))
    with pytest.raises(BrainfmError, match="brainlm model"):
        load("brainlm-vitmae-111m", weights=path, coords=coords)
    bigger = dict(TINY["brainlm"], embed_dim=64)
    with pytest.raises(BrainfmError, match="shape mismatches"):
        load("brainlm", weights=_plain_state(tmp_path, path), architecture=bigger)


def _plain_state(tmp_path, path):
    """The same weights saved as a bare torch state dict (a foreign file without a card)."""
    from safetensors.torch import load_file

    out = tmp_path / "plain.pt"
    torch.save(load_file(str(path)), out)
    return out


def test_foreign_keys_are_listed(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(BrainfmError, match="missing keys: .*unexpected keys: encoder.weight"):
        load("brainlm", weights=tmp_path / "x.pt", architecture=TINY["brainlm"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state": _Exploit()}, path)
    with pytest.raises(BrainfmError, match="refused to load"):
        read_checkpoint(path)
    raw = tmp_path / "evil.pkl.pt"
    raw.write_bytes(pickle.dumps(_Exploit()))
    with pytest.raises(BrainfmError):
        read_checkpoint(raw)


def test_truncated_checkpoints_are_clear_errors(tmp_path):
    path = load("brainlm", pretrained=False, architecture=TINY["brainlm"]).save(tmp_path / "m.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BrainfmError, match="truncated or corrupt"):
        read_checkpoint(cut)
    torch.save({"w": torch.zeros(1000)}, tmp_path / "t.pt")
    blob = (tmp_path / "t.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(BrainfmError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "t.pt")


def test_hf_uri_resolves_from_a_local_cache_and_fails_clearly_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BrainfmError, match="could not get hf://org/repo"):
        resolve_hf("hf://org/repo/sub")
    # a cache laid out as huggingface_hub writes it: models--org--repo/{refs/main, snapshots/<rev>/...}
    rev = "0" * 40
    repo = tmp_path / "hub" / "models--org--repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev / "sub"
    snap.mkdir(parents=True)
    weights = load("brainlm", pretrained=False, architecture=TINY["brainlm"]).save(snap / "model.safetensors")
    folder = resolve_hf("hf://org/repo/sub")
    assert (folder / "model.safetensors").read_bytes() == weights.read_bytes()
    assert load("brainlm", weights="hf://org/repo/sub").weights_info["format"] == "brainfm"
    with pytest.raises(BrainfmError, match="not a Hugging Face address"):
        resolve_hf("hf://justone")


def test_devices():
    from brainfm_cli.device import resolve_device, resolve_dtype

    if not torch.cuda.is_available():
        with pytest.raises(BrainfmError, match="no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with pytest.raises(BrainfmError, match="unknown device"):
        resolve_device("tpu")
    with pytest.raises(BrainfmError, match="float16 is not supported on the CPU"):
        resolve_dtype("float16", torch.device("cpu"))


def test_card_show_and_models_list_cli():
    from conftest import run_cli

    out = run_cli("models", "--tsv")
    assert out.returncode == 0, out.stderr
    assert "brainlm-vitmae-111m" in out.stdout and "hf://vandijklab/brainlm/vitmae_111M" in out.stdout
    show = run_cli("models", "show", "brainlm", "--json")
    card = json.loads(show.stdout)
    assert card["input"]["n_regions"] == 300 and card["weights_present"] is False
    bad = run_cli("models", "show", "brain-lm")
    assert bad.returncode == 1 and "did you mean" in bad.stderr
