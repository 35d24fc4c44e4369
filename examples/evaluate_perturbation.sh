#!/usr/bin/env bash
# Does a model pretrained on simulated BOLD know how stimulation spreads? For linear and Hopf dynamics: simulate
# 20 participants (Dosenbach-160: six networks, few enough regions for a CPU), pretrain BrainLM on them, fine-tune
# it to forecast, perturb every network in turn and compare the responses with the simulator's stimulation truth
# (beside a ridge VAR fitted on the same runs), and score the forecaster on 4 held-out participants.
# Usage: bash examples/evaluate_perturbation.sh OUT_DIR   (environment: STEPS=400, FORECAST_STEPS=200, THREADS=1,
# DYNAMICS="linear hopf")
set -euo pipefail
OUT=${1:?output folder}
export OMP_NUM_THREADS=${THREADS:-1}
for dynamics in ${DYNAMICS:-linear hopf}; do
    dir=$OUT/$dynamics
    sim=$dir/simulated
    if [[ ! -f $sim/derivatives/simulation/simulation.json ]]; then
        rm -rf "$sim"
        brainfm simulate -o "$sim" --space regions --atlas dosenbach160 --participants 24 --duration 600 --tr 2 \
            --model "$dynamics" --seed 11 --quiet
    fi
    train=("$sim"/sub-0[1-9] "$sim"/sub-1[0-9] "$sim"/sub-20)
    test=("$sim"/sub-2[1-4])
    if [[ ! -f $dir/pretrain/model.yaml ]]; then  # a run killed part-way continues from its last checkpoint
        resume=()
        if [[ -f $dir/pretrain/checkpoints/last.pt ]]; then resume=(--resume); else rm -rf "$dir/pretrain"; fi
        brainfm pretrain "${train[@]}" --model brainlm --atlas dosenbach160 --size small -o "$dir/pretrain" \
            --max-steps "${STEPS:-400}" --seed 0 --quiet "${resume[@]}"
    fi
    if [[ ! -f $dir/forecast/model.yaml ]]; then
        resume=()
        if [[ -f $dir/forecast/checkpoints/last.pt ]]; then resume=(--resume); else rm -rf "$dir/forecast"; fi
        brainfm forecast fit "${train[@]}" --model "$dir/pretrain/model.yaml" --context 180 --horizon 20 \
            -o "$dir/forecast" --max-steps "${FORECAST_STEPS:-200}" --seed 0 --quiet "${resume[@]}"
    fi
    brainfm forecast evaluate "$dir/forecast" "${test[@]}" -o "$dir/forecast-evaluate" --overwrite --quiet
    brainfm perturb "${train[@]}" --model "$dir/forecast/model.yaml" --all-networks \
        --truth "$sim/derivatives/simulation/stimulation_response.tsv" -o "$dir/perturb" --overwrite --quiet
done
python - "$OUT" ${DYNAMICS:-linear hopf} <<'PY'
import json, sys
from pathlib import Path

import pandas as pd

out = Path(sys.argv[1])
for dynamics in sys.argv[2:]:
    side = json.loads((out / dynamics / "perturb" / "network_response.json").read_text())
    agreement = pd.DataFrame(side["TruthAgreement"]).pivot(index="network", columns="method", values="r")
    print(f"== {dynamics}: correlation with the stimulation truth outside the perturbed network")
    print(agreement.round(3).to_string())
    m = pd.read_csv(out / dynamics / "forecast-evaluate" / "metrics.tsv", sep="\t", dtype={"step": str})
    print(m[m.step.isin(["1", "mean"])].pivot(index="method", columns="step", values="r2").round(3).to_string())
PY
