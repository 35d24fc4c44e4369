"""Pretraining throughput: samples/s and achieved FLOP rate of each family's ``tiny`` and ``small`` sizes.

Run ``python bench/bench_pretrain.py [--families brainlm,semantoks] [--sizes tiny,small] [--batch 4] [--steps 3]``
(or ``make bench``). For each family and size it builds the objective as ``pretrain`` does (EMA teachers
attached), draws one batch of the card's input shape (seeded Gaussian series; the data loader is not timed: it
is ≤ 0.5 % of a step), and runs the engine's step: forward, backward, gradient clipping, AdamW, EMA update.
The first step is a warm-up, run under ``torch.utils.flop_counter.FlopCounterMode`` to count the step's FLOPs
(matmuls, convolutions and attention, forward and backward; CPU flash-attention formulas are registered here
because torch's table has only the GPU kernels; elementwise work is not counted). Then ``--steps`` steps are
timed, each in a round with a 4096² float32 matmul, and each row gives samples/s, GFLOP/s and the share of the
matmul rate of the same rounds.

``--teacher-ab`` also times, for families with an EMA teacher, the same step with the teacher's linears prepacked
by oneDNN (the behaviour before ``keep_unpacked``: re-packed after every EMA update), interleaved, and prints
the speed-up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_line, matmul, median, ratio, rounds, share_of_peak  # noqa: E402

FAMILIES = {"brainlm": "brainlm", "brainlm-vitmae": "brainlm-vitmae-111m", "brain-jepa": "brain-jepa",
            "semantoks": "semantoks", "sc-mbm": "sc-mbm"}


def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


CPU_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
                 torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward}


def build_step(card_name: str, size: str, batch: int, seed: int = 0, packed_teacher: bool = False):
    """The objective for ``card_name`` at ``size`` and a closure running one optimiser step on a fixed batch."""
    from brainfm_cli.engine.ema import build_objective, update_teachers
    from brainfm_cli.engine.train import param_groups
    from brainfm_cli.layers import linear
    from brainfm_cli.models import build, get_card
    from brainfm_cli.models.objective import StepInfo

    torch.manual_seed(seed)
    card = get_card(card_name).with_size(size)
    space = {"coords": torch.randn(card.input.n_regions, 3).numpy() * 50} if card_name == "brainlm-vitmae-111m" \
        else {}
    objective = build_objective(build(card, **space))
    if packed_teacher:
        for name in objective.teachers:
            for m in getattr(objective, name).modules():
                linear._UNPACKED.discard(m)
    recipe = objective.recipe
    opt = torch.optim.AdamW(param_groups(objective), lr=recipe["lr"], betas=tuple(recipe["betas"]),
                            weight_decay=recipe["weight_decay"])
    g = torch.Generator().manual_seed(seed)
    length = objective.sample_length
    x = torch.randn(batch, card.input.n_regions, length, generator=g)
    valid = torch.full((batch,), length)
    state = {"step": 0}

    def step():
        objective.train()
        info = StepInfo(state["step"], 1000, torch.Generator().manual_seed(state["step"]))
        loss, _ = objective(x, valid, info, None)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), recipe.get("grad_clip") or 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        update_teachers(objective, state["step"], 1000)
        state["step"] += 1

    return objective, step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step (median)")
    parser.add_argument("--teacher-ab", action="store_true", help="also time the step with the teacher prepacked")
    args = parser.parse_args()
    print(machine_line())
    print(f"one optimiser step per row, batch {args.batch}, float32; FLOPs counted with FlopCounterMode "
          f"(matmul, convolution, attention; forward + backward); median of {args.steps} steps, each timed in a "
          "round with a 4096² float32 matmul")
    mm, mm_flops = matmul()
    mm()
    print(f"{'family':15s} {'size':6s} {'params':>7s} {'samples/s':>10s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} "
          f"{'% of matmul':>11s}")
    for family in args.families.split(","):
        for size in args.sizes.split(","):
            objective, step = build_step(FAMILIES[family], size, args.batch)
            with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
                step()
            flops = counter.get_total_flops()
            contenders = {"step": step, "matmul": mm}
            if args.teacher_ab and objective.teachers:
                _, packed = build_step(FAMILIES[family], size, args.batch, packed_teacher=True)
                packed()
                contenders["teacher packed"] = packed
            t = rounds(contenders, args.steps, warmup=False)
            params = sum(p.numel() for p in objective.model.parameters()) / 1e6
            s = median(t["step"])
            print(f"{family:15s} {size:6s} {params:6.2f}M {args.batch / s:10.2f} {flops / 1e9:11.2f} "
                  f"{flops / s / 1e9:8.1f} {share_of_peak(flops, t['step'], t['matmul'], mm_flops):11.1%}", flush=True)
            if "teacher packed" in t:
                print(f"{'':22s} teacher prepacked (before): ×{ratio(t['teacher packed'], t['step']):.3f} "
                      f"the step time of the unpacked teacher (now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
