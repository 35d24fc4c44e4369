"""``Linear`` with a oneDNN fast path for CPU inference: prepacked weights and GELU fused into the matmul.

PyTorch's float32 CPU matmul goes through BLAS (MKL), which on some processors (AMD EPYC among them) reaches half
the throughput of oneDNN on the same shapes. When gradients are off, the input is a float32 CPU tensor and
oneDNN is available, ``Linear`` uses a weight prepacked by oneDNN (re-packed if the weight changes) — the same
float32 arithmetic, a different summation order. ``BRAINFM_ONEDNN=0`` turns it off; training always uses
``F.linear``.
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
# Packed weights live outside the modules (opaque oneDNN tensors cannot be deep-copied or pickled, and a copy of
# a module must not share them): module → ((weight version, data pointer), packed weight).
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def set_onednn(enable: bool) -> None:
    global _ENABLED
    _ENABLED = bool(enable)


def _usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (_ENABLED and x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32
            and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
            and torch.backends.mkldnn.is_available())


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) whose inference can run on oneDNN with a fused activation."""

    def _pack(self) -> torch.Tensor:
        key = (self.weight._version, self.weight.data_ptr())
        cached = _PACKED.get(self)
        if cached is None or cached[0] != key:
            cached = (key, torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), None))
            _PACKED[self] = cached
        return cached[1]

    def forward_fused(self, x: torch.Tensor, activation: str = "none") -> torch.Tensor:
        """``act(x Wᵀ + b)`` with ``activation`` in {"none", "gelu"}; oneDNN when usable, else PyTorch."""
        global _ENABLED
        if _usable(x, self.weight):
            try:
                flat = x.reshape(-1, x.shape[-1])
                y = torch.ops.mkldnn._linear_pointwise(flat, self._pack(), self.bias, activation, [],
                                                       "none" if activation == "gelu" else "")
                return y.reshape(*x.shape[:-1], y.shape[-1])
            except (RuntimeError, AttributeError) as exc:  # an op missing from this torch build: fall back for good
                log.debug("oneDNN linear unavailable (%s); using F.linear", exc)
                _ENABLED = False
        y = F.linear(x, self.weight, self.bias)
        return F.gelu(y) if activation == "gelu" else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_fused(x)
