"""``--dtype``: which precision ``auto`` picks on each kind of CPU (capabilities mocked), why, and the bfloat16
inference path of ``Linear``."""

import json

import pytest
import torch

from brainfm_cli import device
from brainfm_cli.device import BF16_AGREEMENT, BF16_MIN_COSINE, choose_dtype, cpu_bf16_native, resolve_dtype
from brainfm_cli.errors import BrainfmError

CPU = torch.device("cpu")
DESIGNS = ("brainlm", "brainlm_vitmae", "brain_jepa", "semantoks", "sc_mbm")


@pytest.fixture
def cpu(monkeypatch):
    """Set the CPU's flags and ATen's vector ISA: ``cpu(flags, capability="AVX512")``."""
    monkeypatch.delenv("BRAINFM_CPU_BF16", raising=False)

    def set_cpu(flags, capability="AVX512"):
        monkeypatch.setattr(device, "_cpu_flags", lambda: dict.fromkeys(flags, True))
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        cpu_bf16_native.cache_clear()

    yield set_cpu
    cpu_bf16_native.cache_clear()


def test_native_bfloat16_is_detected_from_the_flags_not_guessed(cpu):
    cpu(["avx512f", "avx512_bf16"])
    assert cpu_bf16_native() == "avx512_bf16"
    cpu(["avx512f", "amx_tile", "amx_bf16", "avx512_bf16"])
    assert cpu_bf16_native() == "amx_bf16"
    cpu(["avx2", "avx512f", "avx512_vnni"])  # AVX-512 without its BF16 extension: emulated, not native
    assert cpu_bf16_native() is None
    cpu(["avx512f", "avx512_bf16"], capability="AVX2")  # torch told to dispatch AVX2 kernels
    assert cpu_bf16_native() is None


def test_cpuinfo_flags_are_read_when_torch_cannot_say(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni\n")
    monkeypatch.setattr(device, "_CPUINFO", info)
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    flags = device._cpu_flags()
    assert flags["avx512_bf16"] and flags["avx512f"] and "amx_bf16" not in flags


def test_auto_stays_float32_on_a_cpu_without_native_bfloat16(cpu):
    cpu(["avx2", "avx512f"])
    for design in (*DESIGNS, None):
        dtype, reason = choose_dtype("auto", CPU, design)
        assert dtype is torch.float32
        assert reason == "float32: this CPU has no native bfloat16 (AVX512_BF16 or AMX)"


def test_auto_picks_bfloat16_only_for_designs_that_passed_the_agreement_check(cpu, monkeypatch):
    cpu(["avx512f", "avx512_bf16"])
    monkeypatch.setattr(device, "BF16_AGREEMENT", {
        "good": {"min_cosine": 0.99995, "speedup": 1.6, "date": "2026-12-06", "cpu": "AMD EPYC"},
        "loose": {"min_cosine": 0.9985, "speedup": 1.8, "date": "2026-12-06", "cpu": "AMD EPYC"},
        "slow": {"min_cosine": 0.99999, "speedup": 0.97, "date": "2026-12-06", "cpu": "AMD EPYC"}})
    dtype, reason = choose_dtype("auto", CPU, "good")
    assert dtype is torch.bfloat16 and resolve_dtype("auto", CPU, "good") is torch.bfloat16
    assert reason.startswith("bfloat16: native (avx512_bf16)") and "0.99995" in reason and "2026-12-06" in reason
    dtype, reason = choose_dtype("auto", CPU, "loose")
    assert dtype is torch.float32 and "0.99850 < 0.999" in reason
    dtype, reason = choose_dtype("auto", CPU, "slow")
    assert dtype is torch.float32 and "no faster" in reason
    dtype, reason = choose_dtype("auto", CPU, "unchecked")
    assert dtype is torch.float32 and "have not been checked" in reason
    dtype, reason = choose_dtype("auto", CPU)  # pretrain: no agreement check for training
    assert dtype is torch.float32 and "only to embed" in reason
    monkeypatch.setenv("BRAINFM_CPU_BF16", "0")
    dtype, reason = choose_dtype("auto", CPU, "good")
    assert dtype is torch.float32 and "BRAINFM_CPU_BF16=0" in reason


def test_pretraining_auto_stays_float32_on_native_cpus_and_the_card_says_why(cpu, tmp_path):
    import yaml

    from conftest import TINY, make_region_corpus, run_cli

    cpu(["avx512f", "avx512_bf16"])
    dtype, reason = choose_dtype("auto", CPU, "brainlm", task="pretrain")
    assert dtype is torch.float32 and "bfloat16 pretraining steps ran at" in reason and "--dtype bfloat16" in reason
    corpus = make_region_corpus(tmp_path / "c", n_subjects=2, n_vols=220)
    arch = [f"--arch={k}={v}" for k, v in TINY["brainlm"].items()]
    for spec, want in (("auto", "float32"), ("bfloat16", "bfloat16")):
        out = run_cli("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / spec, *arch, "--max-steps", "2",
                      "--batch-size", "2", "--val-fraction", "0", "--crops-per-run", "1", "--dtype", spec, "-q")
        assert out.returncode == 0, out.stderr
        precision = yaml.safe_load((tmp_path / spec / "model.yaml").read_text())["training"]["precision"]
        assert precision["dtype"] == want
        assert precision["reason"] == (reason if spec == "auto" else "bfloat16: asked for (--dtype bfloat16)")


def test_explicit_dtypes_are_kept_and_say_so(cpu):
    cpu(["avx2"])
    assert choose_dtype("bfloat16", CPU) == (torch.bfloat16, "bfloat16: asked for (--dtype bfloat16)")
    assert choose_dtype("float32", CPU, "brainlm") == (torch.float32, "float32: asked for (--dtype float32)")
    with pytest.raises(BrainfmError, match="float16 is not supported on the CPU"):
        choose_dtype("float16", CPU)
    with pytest.raises(BrainfmError, match="unknown dtype"):
        choose_dtype("fp8", CPU)


def test_the_agreement_table_covers_every_design_with_a_measured_row():
    from brainfm_cli.models import architecture_class

    assert set(BF16_AGREEMENT) == set(DESIGNS)
    for design, check in BF16_AGREEMENT.items():
        architecture_class(design)  # a real design name
        assert set(check) == {"min_cosine", "speedup", "date", "cpu"}
        assert 0 < check["min_cosine"] <= 1 and check["speedup"] > 0
        assert check["date"][:4].isdigit() and check["cpu"]
    assert BF16_MIN_COSINE == 0.999


def test_the_embed_sidecar_says_which_dtype_ran_and_why(tmp_path, cpu, tiny_brainlm):
    from conftest import make_region_corpus, run_cli

    corpus = make_region_corpus(tmp_path / "c", n_subjects=1, n_vols=110)
    cpu(["avx2"])
    out = run_cli("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "e.tsv")
    assert out.returncode == 0, out.stderr
    compute = json.loads((tmp_path / "e.json").read_text())["Compute"]
    assert compute["dtype"] == "float32"
    assert compute["dtype_reason"] == "float32: this CPU has no native bfloat16 (AVX512_BF16 or AMX)"
    out = run_cli("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "b.tsv",
                  "--dtype", "bfloat16")
    assert out.returncode == 0, out.stderr
    compute = json.loads((tmp_path / "b.json").read_text())["Compute"]
    assert compute["dtype"] == "bfloat16" and compute["dtype_reason"] == "bfloat16: asked for (--dtype bfloat16)"


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="this torch/CPU cannot run oneDNN bfloat16")
def test_bfloat16_inference_linear_uses_a_packed_bfloat16_weight_and_matches_autocast():
    import torch.nn.functional as F

    from brainfm_cli.layers import Linear, Mlp
    from brainfm_cli.layers import linear

    torch.manual_seed(0)
    lin = Linear(64, 96)
    x = torch.randn(3, 7, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = lin(x)
        want = F.linear(x, lin.weight, lin.bias)  # autocast's own path
        gelu = lin.forward_fused(x, "gelu")
    assert y.dtype is torch.bfloat16 and y.shape == (3, 7, 96)
    assert torch.bfloat16 in linear._PACKED[lin]  # the packed bfloat16 weight, not a per-call cast
    torch.testing.assert_close(y.float(), want.float(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(gelu.float(), F.gelu(want.float()), atol=2e-2, rtol=2e-2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        lin.weight.mul_(2.0)  # a changed weight is re-packed
        torch.testing.assert_close(lin(x).float(), F.linear(x, lin.weight, lin.bias).float(), atol=4e-2, rtol=2e-2)
    mlp = Mlp(64, 128).eval()
    with torch.no_grad():
        full = mlp(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = mlp(x)
    assert torch.nn.functional.cosine_similarity(full.flatten(), half.float().flatten(), dim=0) > 0.999
    y = lin(x)  # gradients on: the autograd path, float32
    assert y.requires_grad and y.dtype is torch.float32
