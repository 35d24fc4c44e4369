"""EMA teachers: the update is exactly ``m·teacher + (1 − m)·student``, and teachers never prepack their weights; the
engine's learning-rate and weight-decay schedule."""

import copy

import pytest
import torch

from conftest import TINY


def _semantoks_objective():
    from brainfm_cli.engine.ema import build_objective
    from brainfm_cli.models import load

    torch.manual_seed(0)
    return build_objective(load("semantoks", pretrained=False, architecture=TINY["semantoks"]).train(), {})


def test_the_update_is_bitwise_the_per_tensor_formula():
    """``m·k + (1 − m)·q`` as ``k + (1 − m)·(q − k)``, one pass per tensor."""
    from brainfm_cli.engine.ema import momentum, update_teachers

    obj = _semantoks_objective()
    with torch.no_grad():
        for i, p in enumerate(obj.parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    m = momentum(obj.momentum_schedule(), 7, 100)
    assert 0.99 < m < 1.0
    want = {}
    for teacher, student in obj.teachers.items():
        pairs = zip(getattr(obj, teacher).parameters(), getattr(obj, student).parameters())
        want[teacher] = [torch.lerp(k.detach(), q.detach(), 1.0 - m) for k, q in pairs]
    assert update_teachers(obj, 7, 100)["ema_momentum"] == m
    for teacher, expected in want.items():
        got = list(getattr(obj, teacher).parameters())
        assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))


def test_teachers_run_f_linear_at_inference_and_students_keep_the_packed_path():
    import torch.nn.functional as F

    from brainfm_cli.layers import Linear, linear

    obj = _semantoks_objective()
    teacher_linears = [m for m in obj.teacher.modules() if isinstance(m, Linear)]
    assert teacher_linears and all(m in linear._UNPACKED for m in teacher_linears)
    assert not any(m in linear._UNPACKED for m in obj.model.modules())
    lin = obj.teacher.blocks[0].attn.qkv
    x = torch.randn(2, 5, lin.in_features)
    with torch.no_grad():
        assert torch.equal(lin(x), F.linear(x, lin.weight, lin.bias))  # exactly PyTorch's product: no oneDNN
        obj.teacher.eval().forward_features(torch.randn(2, 300, 100))
        student = obj.model.blocks[0].attn.qkv
        student(x)
    assert not any(m in linear._PACKED for m in teacher_linears)
    if torch.backends.mkldnn.is_available():
        assert student in linear._PACKED  # students (and models loaded for embedding) are packed at inference
    twin = copy.deepcopy(obj.teacher)  # a copy of a teacher is not updated after each step: it may pack again
    assert not any(m in linear._UNPACKED for m in twin.modules())


def test_the_schedule_sets_every_groups_rate_and_only_the_decayed_groups_weight_decay():
    import math

    from brainfm_cli.engine.train import adamw, param_groups, set_schedule

    obj = _semantoks_objective()
    opt = adamw(param_groups(obj), torch.device("cpu"), 1e-3, (0.9, 0.95), 0.04)
    assert set_schedule(opt, 0, 100, 10, 0.0, 1e-3, 1e-5, 0.04, 0.4) == pytest.approx((0.0, 0.04))
    lr, wd = set_schedule(opt, 55, 100, 10, 0.0, 1e-3, 1e-5, 0.04, 0.4)
    assert lr == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 45 / 90)))  # half-way down
    assert wd == pytest.approx(0.4 + (0.04 - 0.4) * 0.5 * (1 + math.cos(math.pi * 0.55)))
    decayed, plain = opt.param_groups
    assert decayed["lr"] == plain["lr"] == lr and decayed["weight_decay"] == wd and plain["weight_decay"] == 0.0
