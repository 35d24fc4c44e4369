"""Run every benchmark in bench/ (one command: ``make bench``); each prints ratios against a reference measured in
the same run, interleaved with it. Pass benchmark names to run only those (e.g. ``python bench/run.py parcellate``).

The first line names the machine (the CPU from /proc/cpuinfo, torch, threads, native bfloat16) and the load
average, which is printed again at the end: figures from a busy machine are ratios all the same, but noisier.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import load_average, machine_line  # noqa: E402


def main() -> int:
    wanted = sys.argv[1:]
    status = 0
    print(f"brainfm benchmarks, {datetime.date.today().isoformat()}; {machine_line()}", flush=True)
    started = time.monotonic()
    for script in sorted(HERE.glob("bench_*.py")):
        name = script.stem.removeprefix("bench_")
        if wanted and name not in wanted:
            continue
        print(f"\n== {name} ==", flush=True)
        t0 = time.monotonic()
        code = subprocess.call([sys.executable, str(script)])
        print(f"({name}: {time.monotonic() - t0:.0f} s{'' if code == 0 else f', exit status {code}'}; "
              f"load average {load_average()})", flush=True)
        status |= code
    print(f"\nall benchmarks: {time.monotonic() - started:.0f} s; load average at the end {load_average()}")
    return status


if __name__ == "__main__":
    sys.exit(main())
