"""``Linear`` with a oneDNN fast path for CPU inference: prepacked weights and GELU fused into the matmul.

PyTorch's float32 CPU matmul goes through BLAS (MKL), which on some processors (AMD EPYC among them) reaches half
the throughput of oneDNN on the same shapes. When gradients are off, the input is a float32 CPU tensor and
oneDNN is available, ``Linear`` uses a weight prepacked by oneDNN (re-packed if the weight changes) — the same
float32 arithmetic, a different summation order. Under CPU bfloat16 autocast (``--dtype bfloat16``) it does the
same with a bfloat16 packed weight and returns bfloat16, as autocast's ``F.linear`` would, without re-casting the
weight at every forward. ``BRAINFM_ONEDNN=0`` turns it off. Training always uses ``F.linear``, and so do modules
marked with :func:`keep_unpacked` (EMA teachers, whose weights change after every step: re-packing them at every
step cost more than the packed product saved).
"""

from __future__ import annotations

import logging
import os
import weakref

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("brainfm.layers")

_ENABLED = os.environ.get("BRAINFM_ONEDNN", "1").lower() not in ("0", "false", "no")
_BF16_ENABLED = True  # turned off for good if this torch build cannot pack bfloat16 weights
# Packed weights live outside the modules (opaque oneDNN tensors cannot be deep-copied or pickled, and a copy of
# a module must not share them): module → {dtype: ((weight version, data pointer), packed weight)}.
_PACKED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()
# Modules whose weights are updated between forwards: never packed (a set outside them, so copies are not marked).
_UNPACKED: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()
# Part of every packed weight's key. Fused optimisers (AdamW(fused=True)) update parameters in place without
# bumping their version counters, so the engine calls weights_updated() after each step.
_GENERATION = 0


def weights_updated() -> None:
    """Mark every packed weight stale: call after updates that tensors' version counters do not record."""
    global _GENERATION
    _GENERATION += 1


def set_onednn(enable: bool) -> None:
    global _ENABLED
    _ENABLED = bool(enable)


def keep_unpacked(module: nn.Module) -> None:
    """Run every :class:`Linear` in ``module`` through ``F.linear`` at inference too: for networks whose weights
    change between forwards (an EMA teacher), where each forward would otherwise re-pack every weight."""
    for m in module.modules():
        if isinstance(m, Linear):
            _UNPACKED.add(m)
            _PACKED.pop(m, None)


def _autocast_bf16() -> bool:
    get = getattr(torch, "get_autocast_dtype", None)
    dtype = get("cpu") if get is not None else torch.get_autocast_cpu_dtype()
    return dtype is torch.bfloat16


def _packed_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype | None:
    """The dtype the oneDNN path runs in for this call (float32 inference, or bfloat16 under CPU bfloat16
    autocast), or None for ``F.linear``."""
    if not (_ENABLED and x.device.type == "cpu" and weight.dtype == torch.float32 and not torch.is_grad_enabled()
            and torch.backends.mkldnn.is_available()):
        return None
    if torch.is_autocast_enabled("cpu"):
        if _BF16_ENABLED and _autocast_bf16() and x.dtype in (torch.float32, torch.bfloat16) and \
                torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
        return None
    return torch.float32 if x.dtype == torch.float32 else None


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose inference can run on oneDNN with a fused activation."""

    def _pack(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        key = (self.weight._version, self.weight.data_ptr(), _GENERATION)
        packs = _PACKED.setdefault(self, {})
        cached = packs.get(dtype)
        if cached is None or cached[0] != key:
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach().to(dtype), None))
            packs[dtype] = cached
        return cached[1]

    def forward_fused(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        """``act(x Wᵀ + b)`` with ``activation`` in {"none", "gelu"}; oneDNN when usable, else PyTorch."""
        global _ENABLED, _BF16_ENABLED
        dtype = _packed_dtype(x, self.weight)
        if dtype is not None and self not in _UNPACKED:
            try:
                flat = x.reshape(-1, x.shape[-1]).to(dtype)
                bias = None if self.bias is None else self.bias.to(dtype)
                y = torch.ops.mkldnn._linear_pointwise(flat, self._pack(dtype), bias, activation, [],
                                                       "none" if activation == "gelu" else "")
                return y.reshape(*x.shape[:-1], y.shape[-1])
            except (RuntimeError, AttributeError) as exc:  # an op missing from this torch build: fall back for good
                log.debug("oneDNN %s linear unavailable (%s); using F.linear", dtype, exc)
                if dtype is torch.bfloat16:
                    _BF16_ENABLED = False
                else:
                    _ENABLED = False
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if activation == "gelu" else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fused(x)
