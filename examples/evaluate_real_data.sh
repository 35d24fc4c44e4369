#!/usr/bin/env bash
# Leave-one-participant-out check of the masked-reconstruction families on real data (the numbers on the model
# cards): for each participant of DATA, pretrain on the others (--size small, --atlas ATLAS) and score
# 'brainfm reconstruct' on the held-out one beside mean, interpolation and ridge (fitted on the training ones).
# With FORECAST_STEPS=N, each fold's BrainLM is also fine-tuned to forecast (context 180, horizon 20) and scored by
# 'brainfm forecast evaluate' beside the baselines and the same recipe without pretraining.
# Usage: bash examples/evaluate_real_data.sh DATA_DIR OUT_DIR [family ...]   (families: brainlm, brainlm-vitmae-111m, sc-mbm)
# Environment: ATLAS (default aal), STEPS (pretraining steps per family, e.g. STEPS_brainlm=400), THREADS (1),
# FOLDS (the held-out participants to run; default all).
set -euo pipefail
DATA=${1:?data folder (one sub-* folder per participant)}
OUT=${2:?output folder}
shift 2
families=("${@:-brainlm brainlm-vitmae-111m sc-mbm}")
read -r -a families <<< "${families[*]}"
ATLAS=${ATLAS:-aal}
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$OUT"
subjects=$(cd "$DATA" && ls -d sub-* | sort)
for held in ${FOLDS:-$subjects}; do  # FOLDS: the held-out participants to run (several processes can share a machine)
    fold=$OUT/folds/$held
    if [[ ! -d $fold ]]; then  # copies: recursive discovery does not follow links
        mkdir -p "$fold/train" "$fold/test"
        for s in $subjects; do cp -r "$DATA/$s" "$fold/$([[ $s == "$held" ]] && echo test || echo train)/"; done
    fi
    for family in "${families[@]}"; do
        steps_var="STEPS_${family//-/_}"
        steps=${!steps_var:-${STEPS:-400}}
        run=$OUT/runs/$family/$held
        if [[ ! -f $run/model.yaml ]]; then
            resume=()  # a run killed part-way continues from its last checkpoint
            if [[ -f $run/checkpoints/last.pt ]]; then resume=(--resume); else rm -rf "$run"; fi
            start=$(date +%s)
            brainfm pretrain "$fold/train" --model "$family" --atlas "$ATLAS" --size small -o "$run" \
                --max-steps "$steps" --val "$fold/test" --seed 0 --quiet "${resume[@]}"
            echo "$family $held: trained in $(( $(date +%s) - start )) s"
        fi
        brainfm reconstruct "$fold/test" --model "$run/model.yaml" --train "$fold/train" \
            --mask-ratio 0.2 --mask-ratio 0.5 --mask-ratio 0.75 -o "$run/reconstruct" --overwrite --quiet > /dev/null
        if [[ $family == brainlm && -n ${FORECAST_STEPS:-} ]]; then  # forecasting: fine-tune, then the baselines
            fc=$OUT/runs/forecast/$held
            if [[ ! -f $fc/model.yaml ]]; then
                resume=()
                if [[ -f $fc/checkpoints/last.pt ]]; then resume=(--resume); else rm -rf "$fc"; fi
                brainfm forecast fit "$fold/train" --model "$run/model.yaml" --context 180 --horizon 20 -o "$fc" \
                    --max-steps "$FORECAST_STEPS" --val "$fold/test" --val-every 50 --seed 0 --quiet "${resume[@]}"
            fi
            brainfm forecast evaluate "$fc" "$fold/test" -o "$fc/evaluate" --untrained-baseline --overwrite \
                --quiet > /dev/null
        fi
    done
done
python - "$OUT" <<'PY'
import sys
from pathlib import Path
import pandas as pd
out = Path(sys.argv[1])
rows = []
for path in sorted(out.glob("runs/*/*/reconstruct/metrics.tsv")):
    m = pd.read_csv(path, sep="\t")
    m.insert(0, "held_out", path.parent.parent.name)
    m.insert(0, "family", path.parent.parent.parent.name)
    loss = pd.read_csv(path.parent.parent / "metrics.tsv", sep="\t")["loss"]
    m["final_loss"] = loss.tail(20).mean()
    rows.append(m)
table = pd.concat(rows, ignore_index=True)
table.to_csv(out / "reconstruction.tsv", sep="\t", index=False)
wide = table.pivot_table(index=["family", "held_out", "mask_ratio"], columns="method", values="r2").reset_index()
wide["share_of_ridge"] = wide["model"] / wide["ridge"]
print(wide.round(3).to_string(index=False))
print()
print(wide.groupby(["family", "mask_ratio"])[["model", "mean", "interpolation", "ridge", "share_of_ridge"]]
      .mean().round(3).to_string())
frames = []
for path in sorted(out.glob("runs/forecast/*/evaluate/metrics.tsv")):
    m = pd.read_csv(path, sep="\t", dtype={"step": str})
    m.insert(0, "held_out", path.parent.parent.name)
    frames.append(m)
if frames:
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(out / "forecast.tsv", sep="\t", index=False)
    pick = table[table.step.isin(["1", "mean"])]
    print()
    print(pick.pivot_table(index=["held_out", "step"], columns="method", values="r2").round(3).to_string())
    print()
    print(pick.groupby(["step", "method"])["r2"].mean().unstack("method").round(3).to_string())
PY
