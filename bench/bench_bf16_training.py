"""bfloat16 mixed-precision pretraining against float32: do the loss curves agree, and is it faster?

Run ``python bench/bench_bf16_training.py [--families brainlm,semantoks] [--size tiny] [--steps 120]`` (or ``make
bench``). For each family it trains three copies of the same initialisation with the engine's step (AdamW,
clipping, EMA teachers, the recipe's schedules over ``--steps``) on the same stream of batches (the bench corpus:
a smooth global signal in every region and two smooth sources mixed with region-specific weights, plus noise,
drawn per step from a fixed seed; every family learns it within the steps, so the curves have a course to
follow):

- ``float32``, the reference;
- ``bfloat16``: the same, under CPU bfloat16 autocast (what ``pretrain --dtype bfloat16`` runs);
- ``float32, other masks``: float32 again with the objective's random draws (masks, crops of views) from another
  seed: the run-to-run noise a change of precision must stay within.

It prints the loss curves in windows of 10 steps, the mean absolute gap of each curve to the reference over the
second half of training, and the verdict: bfloat16 agrees when its gap is no larger than the noise gap. The time
of each run's steps gives the bfloat16 speed-up (interleaved, step by step).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import machine_line  # noqa: E402
from bench_pretrain import FAMILIES, build_step  # noqa: E402


def corpus(n_regions: int, length: int, batch: int, seed: int = 0):
    """Batch ``step`` of the bench corpus: 3 smooth sources (Gaussian kernel, 2 samples), the first in every region
    with weight 1, the others with fixed region-specific weights (SD 0.5), plus noise of 0.3; fresh sources per
    step."""
    mixing = np.random.default_rng(seed).standard_normal((3, n_regions)) * 0.5
    mixing[0] = 1.0
    kernel = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)

    def batch_at(step: int) -> torch.Tensor:
        rng = np.random.default_rng([seed, step])
        out, n = [], max(length, 64)  # z-scored over at least 64 samples (SC-MBM reads single time points)
        for _ in range(batch):
            sources = np.stack([np.convolve(rng.standard_normal(n + 12), kernel, "valid") for _ in range(3)])
            x = mixing.T @ sources + 0.3 * rng.standard_normal((n_regions, n))
            out.append(((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))[:, :length])
        return torch.tensor(np.stack(out), dtype=torch.float32)

    return batch_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"comma-separated: {', '.join(FAMILIES)}")
    parser.add_argument("--size", default="tiny")
    parser.add_argument("--steps", type=int, default=150, help="steps per run (Brain-JEPA: --jepa-steps)")
    parser.add_argument("--jepa-steps", type=int, default=100, help="steps per Brain-JEPA run (its steps are slow)")
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    from brainfm_cli.models import get_card

    print(machine_line())
    print(f"{args.size} models, batch {args.batch}, {args.steps} steps of the engine's step with the recipe's "
          "schedules; the same initialisation and batches for every run; gaps are mean |loss − float32 loss| over "
          "the second half, in windows of 10 steps")
    verdicts = []
    for family in args.families.split(","):
        card = get_card(FAMILIES[family]).with_size(args.size)
        steps = args.jepa_steps if family == "brain-jepa" else args.steps
        length = build_step(FAMILIES[family], args.size, args.batch)[0].sample_length
        data = corpus(card.input.n_regions, length, args.batch)
        runs = {}
        for name, kw in (("float32", {}), ("bfloat16", {"dtype": torch.bfloat16}), ("float32, other masks",
                                                                                   {"draws": 1})):
            runs[name] = build_step(FAMILIES[family], args.size, args.batch, total=steps, data=data, **kw)[1]
        losses = {name: [] for name in runs}
        seconds = {name: 0.0 for name in runs}
        for step in range(steps):
            for name, run in runs.items():
                t0 = time.perf_counter()
                losses[name].append(run())
                seconds[name] += time.perf_counter() - t0
        w = 10
        curves = {k: np.asarray(v[: len(v) // w * w]).reshape(-1, w).mean(1) for k, v in losses.items()}
        half = len(curves["float32"]) // 2
        gap = {k: float(np.abs(curves[k][half:] - curves["float32"][half:]).mean()) for k in curves}
        agree = gap["bfloat16"] <= gap["float32, other masks"]
        learned = curves["float32"][-1] < 0.8 * curves["float32"][0] if curves["float32"][0] > 0 else \
            curves["float32"][-1] < curves["float32"][0] - 0.1
        verdicts.append(agree and learned)
        print(f"\n{family} {args.size}: loss by window of {w} steps, {steps} steps"
              + ("" if learned else " (float32 did not learn: the comparison says little)"))
        for k, c in curves.items():
            print(f"  {k:21s} " + " ".join(f"{v:.3f}" for v in c) + (f"   gap {gap[k]:.4f}" if k != "float32" else ""))
        print(f"  bfloat16 {'agrees with' if agree else 'DIFFERS from'} float32 (gap {gap['bfloat16']:.4f} vs noise "
              f"{gap['float32, other masks']:.4f}); bfloat16 speed-up ×{seconds['float32'] / seconds['bfloat16']:.2f} "
              "(step time of float32 / bfloat16)")
    print(f"\n{sum(verdicts)} of {len(verdicts)} families learned and kept bfloat16's loss curve within float32's "
          "run-to-run noise")
    return 0


if __name__ == "__main__":
    sys.exit(main())
