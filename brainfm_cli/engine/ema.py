"""EMA teachers, for every family that declares them: the frozen copy before training, the update after each step."""

from __future__ import annotations

import copy

import torch
from torch import nn

from brainfm_cli.engine.schedules import cosine, linear
from brainfm_cli.layers.linear import keep_unpacked
from brainfm_cli.models.objective import MomentumSchedule, Objective


def build_objective(model: nn.Module, options: dict | None = None) -> Objective:
    """The family's pretraining objective around ``model``, with its EMA teachers attached."""
    objective = type(model).pretraining_objective(model, dict(options or {}))
    attach_teachers(objective)
    return objective


def attach_teachers(objective: Objective) -> None:
    """Set each declared teacher to a frozen copy of its student (same weights, no gradients, never prepacked:
    its weights change after every step)."""
    for teacher, student in objective.teachers.items():
        twin = copy.deepcopy(getattr(objective, student))
        twin.requires_grad_(False)
        keep_unpacked(twin)
        setattr(objective, teacher, twin)


def momentum(schedule: MomentumSchedule, step: int, total: int) -> float:
    """The momentum at optimiser ``step`` of ``total``."""
    if schedule.kind == "linear":
        return linear(step, max(1, total - 1), schedule.start, schedule.end)
    return cosine(step, total, schedule.start, schedule.end)


@torch.no_grad()
def update_teachers(objective: Objective, step: int, total: int) -> dict[str, float]:
    """``teacher ← m·teacher + (1 − m)·student`` for every declared pair, as one ``lerp`` pass over the tensors
    (``teacher + (1 − m)·(student − teacher)``); returns the momentum to log."""
    schedule = objective.momentum_schedule()
    if not objective.teachers or schedule is None:
        return {}
    m = momentum(schedule, step, total)
    for teacher, student in objective.teachers.items():
        ks = [p for p in getattr(objective, teacher).parameters()]
        qs = [p.detach() for p in getattr(objective, student).parameters()]
        if ks:
            torch._foreach_lerp_(ks, qs, 1.0 - m)
    return {"ema_momentum": m}
