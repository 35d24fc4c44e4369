"""Pretraining throughput: samples/s and achieved FLOP rate of each family's ``tiny`` and ``small`` sizes.

Run ``python bench/bench_pretrain.py [--families brainlm,semantoks] [--sizes tiny,small] [--batch 4] [--steps 5]``
(or ``make bench``). For each family and size it builds the objective as ``pretrain`` does (EMA teachers
attached; the ViT-MAE design as ``pretrain --atlas`` trains it), draws one batch of the card's input shape (seeded Gaussian series; the data loader is not timed: it
is ≤ 0.5 % of a step), and runs the engine's step: forward, backward, gradient clipping, AdamW, EMA update.
The first step is a warm-up, run under ``torch.utils.flop_counter.FlopCounterMode`` to count the step's FLOPs
(matmuls, convolutions and attention at each head's own size, forward and backward; CPU flash-attention
formulas are registered here because torch's table has only the GPU kernels; elementwise work is not counted). Then ``--steps`` steps are
timed, each in a round with a 4096² float32 matmul and the contenders below, and each row gives samples/s,
GFLOP/s and the share of the matmul rate of the same rounds.

- ``×before``: the speed-up over the same step as it ran before 2026-12-06 (``foreach`` AdamW, a two-pass EMA
  update, BrainLM decoders attending over every token under a mask instead of over the visible keys, head sizes
  below 16 unpadded), each a separate model with the same initialisation, interleaved in the same rounds.
- ``×bf16``: the speed-up of the same step under CPU bfloat16 autocast (printed where the CPU has native
  bfloat16, or with ``--bf16``).
- ``--profile``: each row's top three operators by self CPU time (torch.profiler), as shares of the step.
- then the two parts behind the ×before column, each in interleaved rounds: AdamW's fused step against its
  ``foreach`` step on each family's ``small`` parameters (random gradients), and SDPA forward + backward at
  BrainLM ``tiny``'s decoder shape (``[4, 4, 3001, 8]``) against the same with heads zero-padded to 16.
- ``--teacher-ab``: for families with an EMA teacher, the step with the teacher's linears prepacked by oneDNN
  (re-packed after every EMA update, as before ``keep_unpacked``).
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


def _full_mask_reads(model):
    """``decoder_reads`` as before: attention over every token, the keys not read masked out."""
    listed = model.decoder_reads

    def reads(keep, n_tokens, device):
        keys, mask = listed(keep, n_tokens, device)
        if keys is None:
            return keys, mask
        B, M = keys.shape
        if mask is None:
            mask = torch.ones(B, 1, 1 + n_tokens, M, dtype=torch.bool, device=device)
        full = torch.zeros(B, 1, 1 + n_tokens, 1 + n_tokens, dtype=torch.bool, device=device)
        return None, full.scatter_(3, keys[:, None, None].expand(-1, 1, 1 + n_tokens, -1), mask)

    return reads


@torch.no_grad()
def _two_pass_ema(objective, step: int, total: int) -> None:
    from brainfm_cli.engine.ema import momentum

    schedule = objective.momentum_schedule()
    if not objective.teachers or schedule is None:
        return
    m = momentum(schedule, step, total)
    for teacher, student in objective.teachers.items():
        ks = list(getattr(objective, teacher).parameters())
        torch._foreach_mul_(ks, torch.tensor(m))
        torch._foreach_add_(ks, [p.detach() for p in getattr(objective, student).parameters()], alpha=1.0 - m)


def build_step(card_name: str, size: str, batch: int, seed: int = 0, packed_teacher: bool = False,
               before: bool = False, dtype: torch.dtype = torch.float32, data=None, draws: int | None = None,
               total: int | None = None):
    """The objective for ``card_name`` at ``size`` and a closure running one optimiser step as the engine runs it
    and returning its loss (``before``: as it ran before 2026-12-06; ``dtype``: under autocast to it), on a
    fixed batch or on ``data(step)`` when given; masks are drawn from ``draws`` (default ``seed``) and the step;
    with ``total``, learning rate and weight decay follow the recipe's schedules over ``total`` steps."""
    from brainfm_cli.device import autocast
    from brainfm_cli.engine.ema import build_objective, update_teachers
    from brainfm_cli.engine.train import adamw, param_groups, set_schedule
    from brainfm_cli.layers import attention, linear
    from brainfm_cli.models import build, get_card
    from brainfm_cli.models.objective import StepInfo

    torch.manual_seed(seed)
    card = get_card(card_name).with_size(size)
    space = {}
    if card_name == "brainlm-vitmae-111m":  # the design as `pretrain --atlas` trains it (what learns on small data)
        space = {"coords": torch.randn(card.input.n_regions, 3).numpy() * 50}
        card = card.with_architecture(**{"value_scale": 1.0, "decoder_attention": "same_time", "qk_init": "tied",
                                         **card.architecture})
    objective = build_objective(build(card, **space))
    if packed_teacher:
        for name in objective.teachers:
            for m in getattr(objective, name).modules():
                linear._UNPACKED.discard(m)
    recipe = objective.recipe
    cpu = torch.device("cpu")
    if before:
        opt = torch.optim.AdamW(param_groups(objective), lr=recipe["lr"], betas=tuple(recipe["betas"]),
                                weight_decay=recipe["weight_decay"], foreach=True)
        if hasattr(objective.model, "decoder_reads"):
            objective.model.decoder_reads = _full_mask_reads(objective.model)
    else:
        opt = adamw(param_groups(objective), cpu, recipe["lr"], recipe["betas"], recipe["weight_decay"])
    g = torch.Generator().manual_seed(seed)
    length = objective.sample_length
    x = torch.randn(batch, card.input.n_regions, length, generator=g)
    valid = torch.full((batch,), length)
    state = {"step": 0}
    draws = seed if draws is None else draws

    def step():
        objective.train()
        if total:
            set_schedule(opt, state["step"], total, int(round(recipe["warmup"] * total)), recipe["start_lr"],
                         recipe["lr"], recipe["min_lr"], recipe["weight_decay"], recipe["final_weight_decay"])
        info = StepInfo(state["step"], total or 1000, torch.Generator().manual_seed(draws * 1_000_003 + state["step"]))
        batch_x = x if data is None else data(state["step"])
        min_head = attention._CPU_MIN_HEAD
        attention._CPU_MIN_HEAD = 0 if before else min_head
        try:
            with autocast(cpu, dtype):
                loss, _ = objective(batch_x, valid, info, None)
            loss.backward()
        finally:
            attention._CPU_MIN_HEAD = min_head
        torch.nn.utils.clip_grad_norm_(objective.parameters(), recipe.get("grad_clip") or 1.0)
        opt.step()
        linear.weights_updated()
        opt.zero_grad(set_to_none=True)
        (_two_pass_ema if before else update_teachers)(objective, state["step"], total or 1000)
        state["step"] += 1
        return float(loss.detach())

    return objective, step


def components(families: list[str], n_rounds: int = 5) -> None:
    """Fused against ``foreach`` AdamW per family (``small``), and SDPA at head size 8 against padded to 16."""
    import torch.nn.functional as F

    from brainfm_cli.engine.train import adamw, param_groups
    from brainfm_cli.layers.attention import _sdpa

    print("\nparts of the step, in interleaved rounds")
    for family in families:
        objective, _ = build_step(FAMILIES[family], "small", 1)
        for p in objective.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)
        groups = param_groups(objective)  # each optimiser gets its own groups: it writes its options into them
        fused = adamw(groups, torch.device("cpu"), 1e-4, (0.9, 0.95), 0.05)
        foreach = torch.optim.AdamW(param_groups(objective), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05,
                                    foreach=True)
        assert fused.param_groups[0]["fused"] and not foreach.param_groups[0]["fused"]
        t = rounds({"fused": lambda: [fused.step() for _ in range(10)],
                    "foreach": lambda: [foreach.step() for _ in range(10)]}, n_rounds)
        n = sum(len(g["params"]) for g in groups)
        print(f"  AdamW step, {family} small ({n} tensors): fused ×{ratio(t['foreach'], t['fused']):.2f} the speed "
              f"of foreach ({median(t['fused']) * 100:.2f} ms vs {median(t['foreach']) * 100:.2f} ms)")
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4, 4, 3001, 8, generator=g, requires_grad=True) for _ in range(3))

    def attend(padded: bool):
        def run():
            out = _sdpa(q, k, v, None, 0.0) if padded else F.scaled_dot_product_attention(q, k, v)
            out.sum().backward()
        return run

    t = rounds({"padded": attend(True), "plain": attend(False)}, n_rounds)
    print(f"  SDPA forward + backward at [4, 4, 3001, 8]: heads zero-padded to 16 ×{ratio(t['plain'], t['padded']):.2f} "
          f"the speed of head size 8 (ATen {torch.backends.cpu.get_cpu_capability()}; padded only on AVX512)")


def top_costs(step, n: int = 3, steps: int = 2) -> str:
    """The ``n`` operators with the most self CPU time over ``steps`` steps, as shares of the profiled time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    return " " * 22 + "top costs: " + "; ".join(
        f"{e.key} {e.self_cpu_time_total / total:.0%} ({e.count // steps}/step)" for e in events[:n])


def main() -> int:
    from brainfm_cli.device import cpu_bf16_native
    from brainfm_cli.layers import attention

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}")
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up step (median)")
    parser.add_argument("--bf16", action="store_true", help="time the bfloat16 step even without native support")
    parser.add_argument("--no-before", action="store_true", help="skip the before-2026-12-06 step")
    parser.add_argument("--teacher-ab", action="store_true", help="also time the step with the teacher prepacked")
    parser.add_argument("--profile", action="store_true", help="also print each row's top costs from torch.profiler")
    args = parser.parse_args()
    bf16 = args.bf16 or cpu_bf16_native() is not None
    print(machine_line())
    print(f"one optimiser step per row, batch {args.batch}, float32; FLOPs counted with FlopCounterMode "
          f"(matmul, convolution, attention; forward + backward); median of {args.steps} steps, each timed in a "
          "round with a 4096² float32 matmul" + ("" if args.no_before else ", the step as before 2026-12-06")
          + (", the step under bfloat16 autocast" if bf16 else ""))
    mm, mm_flops = matmul()
    mm()
    print(f"{'family':15s} {'size':6s} {'params':>7s} {'samples/s':>10s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} "
          f"{'% of matmul':>11s}" + ("" if args.no_before else f" {'×before':>8s}") + (f" {'×bf16':>6s}" if bf16
                                                                                       else ""))
    for family in args.families.split(","):
        for size in args.sizes.split(","):
            objective, step = build_step(FAMILIES[family], size, args.batch)
            min_head, attention._CPU_MIN_HEAD = attention._CPU_MIN_HEAD, 0  # count heads at their own size
            try:
                with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
                    step()
            finally:
                attention._CPU_MIN_HEAD = min_head
            flops = counter.get_total_flops()
            contenders = {"step": step, "matmul": mm}
            if not args.no_before:
                contenders["before"] = build_step(FAMILIES[family], size, args.batch, before=True)[1]
            if bf16:
                contenders["bf16"] = build_step(FAMILIES[family], size, args.batch, dtype=torch.bfloat16)[1]
            if args.teacher_ab and objective.teachers:
                contenders["teacher packed"] = build_step(FAMILIES[family], size, args.batch, packed_teacher=True)[1]
            for name in contenders:
                if name not in ("step", "matmul"):
                    contenders[name]()
            t = rounds(contenders, args.steps, warmup=False)
            params = sum(p.numel() for p in objective.model.parameters()) / 1e6
            s = median(t["step"])
            print(f"{family:15s} {size:6s} {params:6.2f}M {args.batch / s:10.2f} {flops / 1e9:11.2f} "
                  f"{flops / s / 1e9:8.1f} {share_of_peak(flops, t['step'], t['matmul'], mm_flops):11.1%}"
                  + (f" {ratio(t['before'], t['step']):7.2f}×" if "before" in t else "")
                  + (f" {ratio(t['step'], t['bf16']):5.2f}×" if "bf16" in t else ""), flush=True)
            if args.profile:
                print(top_costs(step), flush=True)
            if "teacher packed" in t:
                print(f"{'':22s} teacher prepacked: ×{ratio(t['teacher packed'], t['step']):.3f} "
                      f"the step time of the unpacked teacher (now)")
    components(args.families.split(","))
    return 0


if __name__ == "__main__":
    sys.exit(main())
