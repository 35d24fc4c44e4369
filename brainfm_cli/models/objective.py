"""The contract between a model family's self-supervised objective and the training engine.

An ``Objective`` owns the networks being trained (the student model and its heads), its masking and its losses;
it declares which of its networks have an EMA teacher (``teachers``) and the momentum schedule, and which network
is the model to keep. The engine (``engine.ema``) makes the teacher copies and updates them, once for every family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from brainfm_cli.errors import BrainfmError


@dataclass
class StepInfo:
    """Where training is: optimiser ``step`` of ``total``, and a generator seeded for this step (collators)."""

    step: int
    total: int
    generator: torch.Generator

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total)


@dataclass(frozen=True)
class MomentumSchedule:
    """EMA momentum over training: ``linear`` from ``start`` reaching ``end`` at the last step (I-JEPA), or
    ``cosine`` from ``start`` to ``end`` over the run (DINO, Brain-Semantoks)."""

    kind: str
    start: float
    end: float

    def __post_init__(self):
        if self.kind not in ("linear", "cosine"):
            raise ValueError(f"unknown momentum schedule {self.kind!r}; linear or cosine")


class Objective(nn.Module):
    """A family's training step: ``forward(x, valid, info, absent=None) -> (loss, {term: value})``.

    ``x [B, regions, sample_length]`` are model-ready crops, ``valid [B]`` how many leading samples are data
    (the rest is zero padding), ``absent [B, regions]`` (or None) the regions without data (zero-filled): they never
    count in a loss, and families with region tokens keep them out of attention. ``recipe`` holds the family's published optimisation defaults, ``defaults`` the
    objective's options (checked here, once). ``teachers`` maps a teacher attribute to the student attribute it
    follows (e.g. ``{"target": "model"}``); the engine creates those attributes before training.
    """

    family: str = "brainfm"  # how messages name the objective's family
    recipe: dict = {"lr": 1e-3, "start_lr": 0.0, "min_lr": 1e-6, "warmup": 0.05, "weight_decay": 0.05,
                    "final_weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 1.0}
    defaults: dict = {}
    teachers: dict[str, str] = {}

    def __init__(self, model: nn.Module, options: dict | None = None):
        super().__init__()
        self.model = model
        unknown = set(options or {}) - set(self.defaults)
        if unknown:
            raise BrainfmError(f"unknown {self.family} objective options {sorted(unknown)}",
                               fix=f"valid --objective keys: {', '.join(self.defaults) or 'none'}")
        self.options = {**self.defaults, **(options or {})}

    @property
    def sample_length(self) -> int:
        """Samples per crop the engine should draw (the model's window unless the objective crops further)."""
        return int(self.model.card.input.seq_len)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, info: StepInfo,
                absent: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def momentum_schedule(self) -> MomentumSchedule | None:
        """The EMA momentum of the teachers (None for objectives without one)."""
        return None

    def export_model(self) -> nn.Module:
        """The network ``embed`` should use once trained (the student, or an EMA target encoder)."""
        return self.model
