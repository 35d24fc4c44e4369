#!/usr/bin/env bash
# brainfm end to end on data whose truth is known: simulate a small BIDS dataset, then run the pipeline on it.
# Run it with `make demo` (which puts the project's venv first on PATH). Everything goes to examples/output/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=examples/output
BIDS=$OUT/bids                   # simulated raw BIDS dataset (MNI-space images) + derivatives/simulation/
DERIV=$OUT/derivatives/brainfm   # everything brainfm computes from it
SEED=42
MODELS=(brainlm-sim semantoks-sim brain-jepa-sim sc-mbm-sim)

section() { printf '\n== %s ==\n' "$*"; }

# 6-minute runs: brain-jepa-sim reads 160-TR windows (5 min 20 s at TR 2 s)
section "1. Simulate 30 participants x 6 min of BOLD (MNI space, 6 mm grid) with known ground truth"
if grep -qs '"NumberOfVolumes": 180' "$BIDS/derivatives/simulation/simulation.json"; then  # written last: complete
    echo "using the simulation already in $BIDS (delete that folder to simulate again)"
else
    rm -rf "$BIDS"  # an interrupted earlier attempt
    brainfm simulate -o "$BIDS" --space mni --voxel-size 6 --participants 30 --duration 360 --tr 2 --seed "$SEED"
fi

section "2. Parcellate the images into region time series (Seitzman-300)"
brainfm parcellate "$BIDS" -o "$DERIV" --atlas seitzman300 --overwrite

section "3. Embed every run with the small models shipped with brainfm (trained on other simulated data)"
for model in "${MODELS[@]}"; do
    brainfm embed "$DERIV" --model "$model" --aggregate mean -o "$OUT/embeddings-$model.tsv" --overwrite
done

section "4. Probe: do the embeddings predict age better than the functional-connectivity baseline?"
brainfm probe "$OUT"/embeddings-*.tsv --target age --participants "$BIDS/participants.tsv" --timeseries "$DERIV" \
    -o "$OUT/probe-age" --repeats 5 --permutations 50 --seed "$SEED" --n-jobs 2 --overwrite

section "5. Forecast: fine-tune brainlm-sim on participants 1-24, evaluate on 25-30 beside the baselines"
train=("$DERIV"/sub-0[1-9] "$DERIV"/sub-1[0-9] "$DERIV"/sub-2[0-4])
test=("$DERIV"/sub-2[5-9] "$DERIV"/sub-30)
rm -rf "$OUT/forecast-run"
brainfm forecast fit "${train[@]}" --model brainlm-sim --context 180 --horizon 20 -o "$OUT/forecast-run" \
    --max-steps 40 --batch-size 8 --val-every 20 --seed "$SEED" --quiet
brainfm forecast evaluate "$OUT/forecast-run" "${test[@]}" -o "$OUT/forecast" --seed "$SEED" --overwrite --quiet

section "6. Perturb each network in turn: does the forecaster know how stimulation spreads (simulator's truth)?"
brainfm perturb "${test[@]}" --model "$OUT/forecast-run/model.yaml" --all-networks \
    --truth "$BIDS/derivatives/simulation/stimulation_response.tsv" -o "$OUT/perturb" --overwrite --quiet

python - "$OUT" <<'PY'
import sys
from pathlib import Path

out = Path(sys.argv[1])
reports = [("probe-age", "Probe: age from each model's embeddings beside the FC baseline"),
           ("forecast", "Forecast: the fine-tuned model beside mean, persistence, ridge AR, VAR and LSTM"),
           ("perturb", "Perturb: every network in turn, model and VAR against the simulator's truth")]
items = "".join(f'<li><a href="{d}/report.html">{t}</a></li>' for d, t in reports if (out / d / "report.html").exists())
(out / "index.html").write_text(f"<!doctype html><meta charset='utf-8'><title>brainfm demo</title>"
                                f"<h1>brainfm demo</h1><ul>{items}</ul>", encoding="utf-8")
PY

section "Outputs"
echo "simulated BIDS dataset:   $BIDS (participants.tsv holds age, sex, diagnosis, control_score)"
echo "ground truth:             $BIDS/derivatives/simulation (coupling per participant, phenotype_effects.json,"
echo "                          stimulation_response.tsv: every region's response to stimulating each network)"
echo "region time series:       $DERIV/sub-*/func/*_timeseries.tsv"
echo "embeddings:               $OUT/embeddings-*.tsv (+ .json sidecars)"
echo "reports:                  $OUT/index.html links the probe, forecast and perturbation reports"
