"""Device and precision: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--dtype auto|float32|bfloat16|float16``.

``auto`` picks CUDA, then MPS, then the CPU. Reduced precision runs through autocast, so parameters stay in
float32. On the CPU ``auto`` means float32, except for embedding on a CPU with native bfloat16 (AVX512_BF16 or
AMX) with a model design whose bfloat16 embeddings were measured to agree with float32 (``BF16_AGREEMENT``):
elsewhere CPU autocast is slower than float32 or untested. ``BRAINFM_CPU_BF16=0`` keeps ``auto`` at float32 on
every CPU (the test suite sets it, so its figures do not depend on the processor). :func:`choose_dtype` decides,
and says why.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch

from brainfm_cli.errors import BrainfmError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device for ``spec``; asking for a GPU that is not there is a clear error."""
    if isinstance(spec, torch.device):
        return spec
    spec = str(spec).lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BrainfmError(f"--device {spec}: no CUDA GPU is available on this machine (or this torch build has "
                               "no CUDA support)", fix="use --device cpu (or auto), or install a CUDA build of torch")
        index = spec.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise BrainfmError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                               fix="use cuda:0 … cuda:N-1")
        return torch.device(spec)
    if spec == "mps":
        if not _mps_available():
            raise BrainfmError("--device mps: Apple's MPS backend is not available here", fix="use --device cpu")
        return torch.device("mps")
    raise BrainfmError(f"unknown device '{spec}'", fix="use auto, cpu, cuda, cuda:N or mps")


# bfloat16 against float32, per model design (``architecture.name``), from bench/bench_bf16.py: the minimum over
# embedding rows (default pooling, one row per sample) of the cosine between the bfloat16-autocast and float32
# embeddings of the bench inputs (random weights at the published size), the bfloat16 speed-up of that forward,
# and the date and CPU of the run. ``auto`` picks bfloat16 only where the cosine is ≥ BF16_MIN_COSINE and the
# speed-up > 1.
BF16_MIN_COSINE = 0.999
BF16_AGREEMENT: dict[str, dict] = {  # `make bench` (bench_bf16.py), 2026-12-06, 2 threads, load average ~1.7
    "brainlm_vitmae": {"min_cosine": 0.99998, "speedup": 1.55, "date": "2026-12-06", "cpu": "AMD EPYC"},
    "brain_jepa": {"min_cosine": 0.99998, "speedup": 1.26, "date": "2026-12-06", "cpu": "AMD EPYC"},
    "brainlm": {"min_cosine": 0.99998, "speedup": 1.21, "date": "2026-12-06", "cpu": "AMD EPYC"},
    "semantoks": {"min_cosine": 0.99999, "speedup": 1.72, "date": "2026-12-06", "cpu": "AMD EPYC"},
    "sc_mbm": {"min_cosine": 0.99998, "speedup": 1.82, "date": "2026-12-06", "cpu": "AMD EPYC"},
}

# bfloat16 pretraining against float32, from bench/bench_pretrain.py (×bf16: step-time ratio, the lowest and
# highest over the five families' tiny and small sizes, and in how many of the rows bfloat16 was slower) and
# bench/bench_bf16_training.py (loss curves). auto must not make a run slower, so pretraining stays float32.
BF16_PRETRAINING = {"speedup": (0.81, 1.36), "slower": 6, "rows": 10, "date": "2026-12-06", "cpu": "AMD EPYC"}

_NATIVE_BF16 = ("amx_bf16", "avx512_bf16")  # instruction sets with bfloat16 arithmetic (oneDNN uses them)
_CPUINFO = Path("/proc/cpuinfo")


def _cpu_flags() -> dict:
    """The CPU's feature flags: torch's cpuinfo reading when this torch has it, else /proc/cpuinfo's flags."""
    caps = getattr(torch.cpu, "get_capabilities", None)
    if caps is not None:
        try:
            return dict(caps())
        except (RuntimeError, AttributeError):
            pass
    try:
        for line in _CPUINFO.read_text().splitlines():
            if line.startswith("flags"):
                return {flag: True for flag in line.split(":", 1)[1].split()}
    except OSError:
        pass
    return {}


@functools.cache
def cpu_bf16_native() -> str | None:
    """The native bfloat16 instruction set of this CPU that torch can use (``amx_bf16`` or ``avx512_bf16``), or
    None: the flag must be present, oneDNN available and ATen dispatching AVX-512 kernels."""
    flags = _cpu_flags()
    if not torch.backends.mkldnn.is_available() or "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return None
    return next((isa for isa in _NATIVE_BF16 if flags.get(isa)), None)


def choose_dtype(spec: str, device: torch.device, design: str | None = None,
                 task: str = "embed") -> tuple[torch.dtype, str]:
    """The compute dtype for ``--dtype spec`` on ``device``, and why. ``auto`` is bfloat16 on GPUs that support
    it, float16 on other GPUs; on the CPU, bfloat16 only with native support, to embed (``task``) with a
    ``design`` (the model's ``architecture.name``) whose agreement with float32 was measured, else float32."""
    spec = str(spec).lower()
    if spec == "auto":
        if device.type == "cuda":
            if torch.cuda.is_bf16_supported():
                return torch.bfloat16, "bfloat16: auto on a CUDA GPU that supports it"
            return torch.float16, "float16: auto on a CUDA GPU without bfloat16"
        if device.type == "mps":
            return torch.float16, "float16: auto on Apple MPS"
        return _cpu_auto(design, task)
    if spec not in DTYPES:
        raise BrainfmError(f"unknown dtype '{spec}'", fix=f"use auto or one of {', '.join(DTYPES)}")
    dtype = DTYPES[spec]
    if dtype is torch.float16 and device.type == "cpu":
        raise BrainfmError("float16 is not supported on the CPU", fix="use --dtype float32 or bfloat16 on the CPU")
    return dtype, f"{spec}: asked for (--dtype {spec})"


def _cpu_auto(design: str | None, task: str = "embed") -> tuple[torch.dtype, str]:
    isa = cpu_bf16_native()
    if isa is None:
        return torch.float32, "float32: this CPU has no native bfloat16 (AVX512_BF16 or AMX)"
    if os.environ.get("BRAINFM_CPU_BF16", "1").lower() in ("0", "false", "no"):
        return torch.float32, f"float32: the CPU has native bfloat16 ({isa}), but BRAINFM_CPU_BF16=0 turns it off"
    if task == "pretrain":
        t = BF16_PRETRAINING
        return torch.float32, (f"float32: the CPU has native bfloat16 ({isa}), but bfloat16 pretraining steps ran at "
                               f"×{t['speedup'][0]:.2f}–{t['speedup'][1]:.2f} of float32's speed at the tiny and "
                               f"small sizes, slower in {t['slower']} of {t['rows']} (measured {t['date']} on "
                               f"{t['cpu']}); --dtype bfloat16 opts in (its loss curves stay within float32's "
                               "run-to-run noise)")
    if design is None:
        return torch.float32, (f"float32: the CPU has native bfloat16 ({isa}), but auto uses it only to embed "
                               "with a model whose bfloat16 embeddings were checked against float32")
    check = BF16_AGREEMENT.get(design)
    if check is None:
        return torch.float32, (f"float32: native bfloat16 ({isa}), but {design}'s bfloat16 embeddings have not "
                               "been checked against float32")
    measured = f"measured {check['date']} on {check['cpu']}"
    if check["min_cosine"] < BF16_MIN_COSINE:
        return torch.float32, (f"float32: native bfloat16 ({isa}), but {design}'s bfloat16 embeddings agree with "
                               f"float32 only to cosine {check['min_cosine']:.5f} < {BF16_MIN_COSINE} ({measured})")
    if check["speedup"] <= 1.0:
        return torch.float32, (f"float32: native bfloat16 ({isa}), but {design} ran no faster in bfloat16 "
                               f"(×{check['speedup']:.2f}, {measured})")
    return torch.bfloat16, (f"bfloat16: native ({isa}); {design}'s embeddings agree with float32 to cosine "
                            f"≥ {check['min_cosine']:.5f} per row, ×{check['speedup']:.2f} faster ({measured})")


def resolve_dtype(spec: str, device: torch.device, design: str | None = None) -> torch.dtype:
    """The compute dtype (see :func:`choose_dtype`, which also says why)."""
    return choose_dtype(spec, device, design)[0]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; a no-op for float32."""
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device, dtype: torch.dtype, reason: str | None = None) -> dict:
    """Device and precision as recorded in sidecars (with why that dtype, when given)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": str(device), "device_name": name, "dtype": str(dtype).replace("torch.", ""),
            **({"dtype_reason": reason} if reason else {}),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
