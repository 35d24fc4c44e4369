"""Per-step schedules as pure functions of training progress (so a resumed run lands on the same values).

``step`` counts optimiser steps from 0; ``total`` is the number of optimiser steps of the whole run.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, start: float, peak: float, final: float) -> float:
    """Linear warm-up ``start → peak`` over ``warmup`` steps, then cosine ``peak → final`` (I-JEPA's LR)."""
    if step < warmup:
        return start + (peak - start) * step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cosine(step: int, total: int, start: float, final: float) -> float:
    """Cosine from ``start`` to ``final`` over ``total`` steps (weight decay, Semantoks' momentum)."""
    progress = min(1.0, step / max(1, total))
    return final + (start - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def linear(step: int, total: int, start: float, final: float) -> float:
    """Linear from ``start`` to ``final`` (I-JEPA's EMA momentum)."""
    return start + (final - start) * min(1.0, step / max(1, total))
