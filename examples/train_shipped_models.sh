#!/usr/bin/env bash
# How the small models shipped in models/*-sim.* were made — run it to reproduce them (CPU, float32, one seed).
# They are trained on data from `brainfm simulate` (no human data), at a size a laptop CPU trains in minutes:
# for demos, tests and tutorials, not for science. Each is trained on 38 simulated participants and checked on
# 10 held out: `brainfm reconstruct` beside the baselines for the masked-reconstruction families, the validation
# figures (held-out objective, effective rank, FC read-out) for the others; the figures go on the model's card.
# Usage: bash examples/train_shipped_models.sh [family ...]   (brainlm semantoks brain-jepa sc-mbm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK=${WORK:-examples/output/shipped}
SIM=$WORK/simulated
SEED=7
families=("${@:-brainlm semantoks brain-jepa sc-mbm}")
read -r -a families <<< "${families[*]}"
DATA="brainfm simulate --space regions --atlas seitzman300 --participants 48 --duration 600 --tr 2 --seed $SEED"

if [[ ! -f $SIM/derivatives/simulation/simulation.json ]]; then
    rm -rf "$SIM" "$WORK/train" "$WORK/held_out"
    $DATA -o "$SIM" --quiet
fi
if [[ ! -d $WORK/held_out ]]; then  # participants 39-48 are held out: never seen in training or validation
    mkdir -p "$WORK/train" "$WORK/held_out"
    for sub in "$SIM"/sub-*; do
        n=$((10#${sub##*sub-}))
        cp -r "$sub" "$WORK/$([[ $n -le 38 ]] && echo train || echo held_out)/"
    done
fi

common=(--device cpu --dtype float32 --seed "$SEED" --checkpoint-every 1000 --quiet --val "$WORK/held_out")

train() {  # name model steps [pretrain options...]
    local name=$1 model=$2 steps=$3
    shift 3
    local run=$WORK/$name
    rm -rf "$run"
    brainfm pretrain "$WORK/train" --model "$model" -o "$run" --max-steps "$steps" "${common[@]}" "$@"
    if [[ $model == brainlm || $model == sc-mbm ]]; then
        brainfm reconstruct "$WORK/held_out" --model "$run/model.yaml" --train "$WORK/train" --mask-ratio 0.2 \
            --mask-ratio 0.5 --mask-ratio 0.75 --seed "$SEED" -o "$run/reconstruct" --quiet
    fi
    python - "$run" "$name" "$DATA" <<'PY'
import hashlib, shutil, sys
from pathlib import Path

import pandas as pd
import yaml

run, name, data = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
card = yaml.safe_load((run / "model.yaml").read_text())
weights = Path("models") / f"{name}.safetensors"
shutil.copyfile(run / "model.safetensors", weights)
design = card["name"]
card["name"] = name
card["description"] = (f"A small model of the {design} design ({card['architecture'].get('size', 'reduced size')}) "
                       "trained by brainfm on simulated BOLD (brainfm simulate: 38 participants x 10 min, "
                       "Seitzman-300; 10 more held out): for demos, tests and tutorials, not for science. The design: "
                       f"'brainfm models show {design}'.")
card["weights"] = {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
training = card["training"]
training["data"] = f"{data} (participants 1-38; 39-48 held out)"
for key in ("corpus", "val", "output"):
    training["recipe"].pop(key, None)
training["script"] = "examples/train_shipped_models.sh"
val = pd.read_csv(run / "validation.tsv", sep="\t")
first, last = val.iloc[0], val.iloc[-1]
evaluation = {"held_out_validation": {
    "protocol": "the 10 held-out participants, at step 0 (untrained) and at the end of training",
    **{k: {"untrained": round(float(first[k]), 4), "trained": round(float(last[k]), 4)}
       for k in val.columns if k.startswith("val_")}}}
rec = run / "reconstruct" / "metrics.tsv"
if rec.exists():
    m = pd.read_csv(rec, sep="\t").pivot(index="mask_ratio", columns="method", values="r2")
    evaluation["held_out_reconstruction"] = {
        "protocol": "brainfm reconstruct on the 10 held-out participants: R² on hidden values; ridge from the "
                    "visible regions fitted on the 38 training participants",
        **{f"mask_ratio_{r:g}": {k: round(float(v), 4) for k, v in m.loc[r].items()} for r in m.index}}
card["evaluation"] = evaluation
(Path("models") / f"{name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
print(f"{name}: {weights} ({weights.stat().st_size / 1e6:.2f} MB); {yaml.safe_dump(evaluation, sort_keys=False)}")
PY
}

for family in "${families[@]}"; do
    case $family in
        brainlm) train brainlm-sim brainlm "${STEPS_BRAINLM:-600}" --size tiny --batch-size 8 ;;
        semantoks) train semantoks-sim semantoks "${STEPS_SEMANTOKS:-600}" --size tiny --batch-size 16 ;;
        brain-jepa) train brain-jepa-sim brain-jepa "${STEPS_JEPA:-400}" --size tiny --batch-size 8 \
            --arch patch_init_std=0.25 ;;
        sc-mbm) train sc-mbm-sim sc-mbm "${STEPS_SCMBM:-1500}" --size tiny --batch-size 32 --lr 1.5e-3 ;;
        *) echo "unknown family $family" >&2; exit 2 ;;
    esac
done
