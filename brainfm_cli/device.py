"""Device and precision: ``--device auto|cpu|cuda|cuda:N|mps`` and ``--dtype auto|float32|bfloat16|float16``.

``auto`` picks CUDA, then MPS, then the CPU. Reduced precision runs through autocast, so parameters stay in
float32; on the CPU ``auto`` means float32 (CPU autocast is slower than float32 on most processors).
"""

from __future__ import annotations

import contextlib

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


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` is bfloat16 on GPUs that support it, float16 on other GPUs, else float32."""
    spec = str(spec).lower()
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if spec not in DTYPES:
        raise BrainfmError(f"unknown dtype '{spec}'", fix=f"use auto or one of {', '.join(DTYPES)}")
    dtype = DTYPES[spec]
    if dtype is torch.float16 and device.type == "cpu":
        raise BrainfmError("float16 is not supported on the CPU", fix="use --dtype float32 or bfloat16 on the CPU")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast to ``dtype`` on ``device``; a no-op for float32."""
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device, dtype: torch.dtype) -> dict:
    """Device and precision as recorded in sidecars."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return {"device": str(device), "device_name": name, "dtype": str(dtype).replace("torch.", ""),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
