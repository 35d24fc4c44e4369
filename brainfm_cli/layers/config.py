"""The one switch between fused attention (``scaled_dot_product_attention``) and explicit softmax attention.

Fused is the default. ``BRAINFM_FUSED_ATTN=0`` in the environment, or ``set_fused_attn(False)``, selects the
explicit path everywhere (for debugging and for comparing against research code that computes it that way).
"""

from __future__ import annotations

import os

_FUSED = os.environ.get("BRAINFM_FUSED_ATTN", "1").lower() not in ("0", "false", "no")


def use_fused_attn() -> bool:
    return _FUSED


def set_fused_attn(enable: bool) -> None:
    global _FUSED
    _FUSED = bool(enable)
