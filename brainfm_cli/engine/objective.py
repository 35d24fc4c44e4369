"""The contract between the training engine and a model family's self-supervised objective.

The engine owns data, devices, precision, distribution, schedules and checkpoints; an ``Objective`` owns the
networks being trained (student, EMA target, heads), its masking and its losses, and says which network is
the model to keep.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class StepInfo:
    """Where training is: optimiser ``step`` of ``total``, and a generator seeded for this step (collators)."""

    step: int
    total: int
    generator: torch.Generator

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total)


class Objective(nn.Module):
    """A family's training step: ``forward(x, valid, info) -> (loss, {term: value})``.

    ``x [B, regions, sample_length]`` are model-ready crops, ``valid [B]`` how many leading samples are data
    (the rest is zero padding). ``recipe`` holds the family's published optimisation defaults.
    """

    recipe: dict = {"lr": 1e-3, "start_lr": 0.0, "min_lr": 1e-6, "warmup": 0.05, "weight_decay": 0.05,
                    "final_weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 1.0}

    defaults: dict = {}  # the objective's options and their published values

    def __init__(self, model: nn.Module, options: dict | None = None):
        super().__init__()
        self.model = model
        unknown = set(options or {}) - set(self.defaults)
        if unknown:
            from brainfm_cli.errors import BrainfmError

            raise BrainfmError(f"unknown {type(self).__name__} options {sorted(unknown)}",
                               fix=f"valid --objective keys: {', '.join(self.defaults) or 'none'}")
        self.options = {**self.defaults, **(options or {})}

    @property
    def sample_length(self) -> int:
        """Samples per crop the engine should draw (the model's window unless the objective crops further)."""
        return int(self.model.card.input.seq_len)

    def forward(self, x: torch.Tensor, valid: torch.Tensor, info: StepInfo) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, info: StepInfo) -> dict[str, float]:
        """Called after each optimiser step (EMA updates); returns values to log."""
        return {}

    def export_model(self) -> nn.Module:
        """The network ``embed`` should use once trained (the student, or an EMA target encoder)."""
        return self.model


def param_groups(module: nn.Module) -> list[dict]:
    """Two AdamW groups: weights with decay, and biases / 1-D parameters (norms, tokens' scales) without."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False, "weight_decay": 0.0}]
