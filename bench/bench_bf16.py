"""bfloat16 embedding against float32: speed and agreement, per model design, in the same run.

Run ``python bench/bench_bf16.py [--designs brainlm_vitmae,brain_jepa] [--rounds N]`` (or ``make bench``). For each
design it builds the published-size encoder with random weights, embeds the bench inputs (seeded Gaussian series of
the card's shape) in float32 and under bfloat16 autocast (what ``--dtype bfloat16`` runs), and prints:

- the minimum over embedding rows (the default pooling, one row per sample, as ``embed`` writes them) of the
  cosine between the two, and the same over every token;
- the time of each, timed in interleaved rounds with a 4096² matmul in float32 and in bfloat16, and the
  bfloat16 speed-up (median of per-round ratios), with each side's share of its own dtype's matmul rate;
- the ceiling of that speed-up: the share ``m`` of the float32 forward spent in matrix products (linears,
  convolutions, ``mm``/``bmm``; torch.profiler) is all that bfloat16 speeds up, by at most the matmul's speed-up
  ``s``, so the forward gains at most ``1 / (1 − m + m / s)`` (attention and elementwise work gain nothing here).

The last lines are the ``BF16_AGREEMENT`` entries for ``brainfm_cli/device.py`` (what ``--dtype auto`` reads).
On a CPU without native bfloat16 (AVX512_BF16 or AMX) the figures are printed all the same, marked as emulated.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import cpu_name, machine_line, matmul, median, ratio, rounds, share_of_peak  # noqa: E402
from bench_embed import vit_flops  # noqa: E402


@dataclass
class Design:
    label: str
    build: Callable[[], tuple[torch.nn.Module, torch.Tensor]]
    flops: Callable[[torch.nn.Module, torch.Tensor], float] | None = None  # matmul FLOPs of one forward of the batch
    rounds: int | None = None  # timed rounds (default: --rounds); 1 where the row only has to say faster or not


def vitmae_flops(model, x) -> float:
    a, n = model.card.architecture, model.grid ** 2 + 1
    conv = 2 * x.shape[0] * model.grid ** 2 * a["embed_dim"] * 3 * model.patch ** 2
    return vit_flops(x.shape[0], n, a["embed_dim"], a["depth"], a["mlp_ratio"]) + conv


def jepa_flops(model, x) -> float:
    a, n, patch = model.card.architecture, x.shape[1] * x.shape[2] // 16, 16
    embed = 2 * x.shape[0] * n * a["embed_dim"] * patch
    return vit_flops(x.shape[0], n, a["embed_dim"], a["depth"], a["mlp_ratio"]) + embed


def brainlm_vitmae(batch: int = 4):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    model = load("brainlm-vitmae-111m", pretrained=False, coords=torch.randn(424, 3).numpy())
    return model, torch.randn(batch, 424, 200, generator=torch.Generator().manual_seed(1))


def brain_jepa(batch: int = 1):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    gradients = torch.randn(450, 30, generator=torch.Generator().manual_seed(2)).numpy() * 0.1
    model = load("brain-jepa-ukb", pretrained=False, gradients=gradients)
    return model, torch.randn(batch, 450, 160, generator=torch.Generator().manual_seed(1))


def brainlm(batch: int = 2):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    return load("brainlm", pretrained=False), torch.randn(batch, 300, 200, generator=torch.Generator().manual_seed(1))


def semantoks(batch: int = 8):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    model = load("semantoks-ukb", pretrained=False)
    return model, torch.randn(batch, 457, 100, generator=torch.Generator().manual_seed(1))


def sc_mbm(batch: int = 64):
    from brainfm_cli.models import load

    torch.manual_seed(0)
    model = load("sc-mbm", pretrained=False, architecture={"size": "published"})
    return model, torch.randn(batch, 300, 1, generator=torch.Generator().manual_seed(1))


DESIGNS: dict[str, Design] = {
    "brainlm_vitmae": Design("BrainLM ViT-MAE 111M, batch 4", brainlm_vitmae, vitmae_flops),
    "brain_jepa": Design("Brain-JEPA ViT-B (4,500 tokens, 12 blocks), batch 1", brain_jepa, jepa_flops, rounds=1),
    "brainlm": Design("BrainLM (paper size, 3,000 tokens), batch 2", brainlm, rounds=1),
    "semantoks": Design("Brain-Semantoks (published, 457 regions), batch 8", semantoks, rounds=1),
    "sc_mbm": Design("SC-MBM (published size, Seitzman-300), batch 64", sc_mbm, rounds=1),
}


def row_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double().flatten(0, -2), b.double().flatten(0, -2), dim=-1)


MATMUL_OPS = ("mm", "linear", "convolution", "matmul")


def matmul_share(run) -> float:
    """The share of ``run``'s self CPU time in matrix-product operators (linears, convolutions, mm/bmm/addmm)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = [e for e in prof.key_averages() if e.key.startswith(("aten::", "mkldnn::"))]
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events
                   if any(op in e.key.split("::")[-1] for op in MATMUL_OPS) and "scaled_dot" not in e.key)
    return products / total if total else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated: {', '.join(DESIGNS)}")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up (median)")
    args = parser.parse_args()
    from brainfm_cli.device import BF16_MIN_COSINE, cpu_bf16_native

    print(machine_line())
    native = cpu_bf16_native()
    print(f"bfloat16 autocast vs float32, random weights; agreement: min cosine per embedding row ≥ {BF16_MIN_COSINE}"
          + ("" if native else "  (this CPU has no native bfloat16: bfloat16 is emulated here)"))
    mm32, mm_flops = matmul(torch.float32)
    mm16, _ = matmul(torch.bfloat16)
    entries = []
    for key in args.designs.split(","):
        design = DESIGNS[key]
        model, x = design.build()
        flops = design.flops(model, x) if design.flops else None
        outputs = {}

        def forward(dtype):
            def run():
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                            enabled=dtype is torch.bfloat16):
                    out = model.encode(x)
                    outputs[dtype] = (model.pool(out, model.default_pooling).float(), out["tokens"].float())
            return run

        t = rounds({"float32": forward(torch.float32), "bfloat16": forward(torch.bfloat16), "matmul float32": mm32,
                    "matmul bfloat16": mm16}, design.rounds or args.rounds)
        rows = row_cosines(outputs[torch.float32][0], outputs[torch.bfloat16][0])
        tokens = row_cosines(outputs[torch.float32][1], outputs[torch.bfloat16][1])
        speedup = ratio(t["float32"], t["bfloat16"])
        print(f"\n{design.label} ({key}, {len(rows)} embedding rows of {outputs[torch.float32][0].shape[-1]})")
        print(f"  float32   {median(t['float32']):7.2f} s"
              + (f"   {share_of_peak(flops, t['float32'], t['matmul float32'], mm_flops):4.0%} of the "
                 "float32 matmul" if flops else ""))
        print(f"  bfloat16  {median(t['bfloat16']):7.2f} s"
              + (f"   {share_of_peak(flops, t['bfloat16'], t['matmul bfloat16'], mm_flops):4.0%} of the "
                 "bfloat16 matmul" if flops else ""))
        mm_speedup = ratio(t["matmul float32"], t["matmul bfloat16"])
        share = matmul_share(forward(torch.float32))
        print(f"  bfloat16 speed-up ×{speedup:.2f} (matmul: ×{mm_speedup:.2f}); "
              f"min cosine per row {rows.min().item():.5f}, per token {tokens.min().item():.5f}   "
              f"{'passes' if rows.min().item() >= BF16_MIN_COSINE else 'FAILS'} the agreement check")
        print(f"  matrix products are {share:.0%} of the float32 forward: ceiling ×{1 / (1 - share + share / mm_speedup):.2f}")
        entries.append((key, rows.min().item(), speedup))
        del model, outputs
    today = datetime.date.today().isoformat()
    print(f"\nBF16_AGREEMENT entries for brainfm_cli/device.py ({'native ' + native if native else 'EMULATED'}):")
    for key, cos, speedup in entries:
        floor = math.floor(cos * 1e5) / 1e5  # rounded down: never shown as passing when it does not
        print(f'    "{key}": {{"min_cosine": {floor:.5f}, "speedup": {speedup:.2f}, "date": "{today}", '
              f'"cpu": "{cpu_name()}"}},')
    return 0


if __name__ == "__main__":
    sys.exit(main())
