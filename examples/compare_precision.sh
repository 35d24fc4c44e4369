#!/usr/bin/env bash
# Does bfloat16 embedding change what a probe finds? Embeds the demo's region series (run `make demo` first) with
# each shipped model in float32 and in bfloat16, probes age from each exactly as the demo does, and prints each
# model's R² and Pearson r in both precisions, whether the bfloat16 figure lies in the float32 interval, and the
# lowest cosine between a participant's two embeddings.
# Usage: bash examples/compare_precision.sh [OUT_DIR]   (default examples/output/precision)
set -euo pipefail
DEMO=examples/output
OUT=${1:-$DEMO/precision}
DERIV=$DEMO/derivatives/brainfm
[ -d "$DERIV" ] || { echo "no demo output in $DEMO: run 'make demo' first" >&2; exit 1; }
MODELS=(brainlm-sim semantoks-sim brain-jepa-sim sc-mbm-sim)
for dtype in float32 bfloat16; do
    mkdir -p "$OUT/$dtype"
    for model in "${MODELS[@]}"; do
        brainfm embed "$DERIV" --model "$model" --aggregate mean --dtype "$dtype" -q \
            -o "$OUT/$dtype/embeddings-$model.tsv" --overwrite
    done
    brainfm probe "$OUT/$dtype"/embeddings-*.tsv --target age --participants "$DEMO/bids/participants.tsv" \
        --timeseries "$DERIV" -o "$OUT/$dtype/probe-age" --repeats 5 --permutations 50 --seed 42 --n-jobs 2 \
        --overwrite -q
done
python - "$OUT" "${MODELS[@]}" <<'PY'
import sys
from pathlib import Path

import numpy as np
import pandas as pd

out, models = Path(sys.argv[1]), sys.argv[2:]
read = lambda d: pd.read_csv(out / d / "probe-age" / "metrics.tsv", sep="\t").set_index(["model", "metric"])
f32, bf16 = read("float32"), read("bfloat16")
print(f"{'model':16s} {'metric':9s} {'float32 (95% CI)':>28s} {'bfloat16':>9s}  inside")
inside = []
for (model, metric), row in f32.iterrows():
    if metric not in ("r2", "pearson_r"):
        continue
    b = bf16.loc[(model, metric), "mean"]
    ok = row.ci_low <= b <= row.ci_high
    inside.append(ok)
    print(f"{model:16s} {metric:9s} {row['mean']:9.3f} ({row.ci_low:7.3f}, {row.ci_high:6.3f}) {b:9.3f}  "
          f"{'yes' if ok else 'NO'}")
for model in models:
    a, b = (pd.read_csv(out / d / f"embeddings-{model}.tsv", sep="\t") for d in ("float32", "bfloat16"))
    cols = [c for c in a.columns if a[c].dtype.kind == "f"]
    x, y = a[cols].to_numpy(), b[cols].to_numpy()
    cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
    print(f"{model}: lowest cosine between a participant's float32 and bfloat16 embeddings {cos.min():.6f}")
print(f"{sum(inside)} of {len(inside)} bfloat16 figures lie inside the float32 intervals")
PY
