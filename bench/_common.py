"""What every benchmark shares: the machine line, timing in interleaved rounds, and the same-run matmul peak.

Every figure a benchmark prints is a ratio to a reference timed in the same rounds: each round runs every
contender once (a large ``torch.matmul`` among them, for the FLOP rates), in alternating order, after one untimed
warm-up call each; ratios are the median of the per-round ratios, so a neighbour's load that comes and goes
moves both sides of a ratio together.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PEAK_N = 4096


def cpu_name() -> str:
    """The processor's model name as /proc/cpuinfo gives it (else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_line() -> str:
    """CPU, cores, torch, threads, ATen's vector ISA, native bfloat16 and the load average, on one line."""
    from brainfm_cli.device import cpu_bf16_native

    native = cpu_bf16_native()
    return (f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, ATen {torch.backends.cpu.get_cpu_capability()}, native bfloat16: "
            f"{native or 'no'}; load average {load_average()} (1, 5, 15 min)")


def matmul(dtype: torch.dtype = torch.float32, n: int = PEAK_N) -> tuple[Callable[[], torch.Tensor], float]:
    """A large square product in ``dtype`` and its FLOP count: the machine's practical peak for this torch."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    return (lambda: a @ b), 2.0 * n ** 3


def rounds(contenders: dict[str, Callable[[], object]], n: int, warmup: bool = True,
           keep_order: bool = False) -> dict[str, list[float]]:
    """Seconds of each contender in ``n`` rounds (one untimed call each first, unless ``warmup`` is False); the
    order alternates by round unless ``keep_order`` (for contenders that depend on the one before)."""
    names = list(contenders)
    if warmup:
        for name in names:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n):
        for name in (names if r % 2 == 0 or keep_order else names[::-1]):
            t0 = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def median(values) -> float:
    return statistics.median(values)


def ratio(num: list[float], den: list[float]) -> float:
    """The median of the per-round ratios ``num / den``."""
    return statistics.median(a / b for a, b in zip(num, den))


def share_of_peak(flops: float, seconds: list[float], peak_seconds: list[float], peak_flops: float) -> float:
    """The achieved FLOP rate as a fraction of the same rounds' matmul rate (median over rounds)."""
    return statistics.median((flops / s) / (peak_flops / p) for s, p in zip(seconds, peak_seconds))
