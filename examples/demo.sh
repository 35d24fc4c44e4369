#!/usr/bin/env bash
# brainfm end to end on data whose truth is known: simulate a small BIDS dataset, then run the pipeline on it.
# Run it with `make demo` (which puts the project's venv first on PATH). Everything goes to examples/output/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

OUT=examples/output
BIDS=$OUT/bids                   # simulated raw BIDS dataset (MNI-space images) + derivatives/simulation/
DERIV=$OUT/derivatives/brainfm   # everything brainfm computes from it
SEED=42

section() { printf '\n== %s ==\n' "$*"; }

section "1. Simulate 30 participants x 5 min of BOLD (MNI space, 6 mm grid) with known ground truth"
if [[ -f $BIDS/derivatives/simulation/simulation.json ]]; then  # written last: the simulation is complete
    echo "using the simulation already in $BIDS (delete that folder to simulate again)"
else
    rm -rf "$BIDS"  # an interrupted earlier attempt
    brainfm simulate -o "$BIDS" --space mni --voxel-size 6 --participants 30 --duration 300 --tr 2 --seed "$SEED"
fi

section "2. Parcellate the images into region time series (Seitzman-300)"
brainfm parcellate "$BIDS" -o "$DERIV" --atlas seitzman300 --overwrite

section "3. Embed every run with the small models shipped with brainfm (trained on simulated data)"
for model in brainlm-sim semantoks-sim; do
    brainfm embed "$DERIV" --model "$model" --aggregate mean -o "$OUT/embeddings-$model.tsv" --overwrite
done

section "4. Probe: do the embeddings predict age better than the functional-connectivity baseline?"
brainfm probe "$OUT"/embeddings-*.tsv --target age --participants "$BIDS/participants.tsv" --timeseries "$DERIV" \
    -o "$OUT/probe-age" --repeats 5 --permutations 50 --seed "$SEED" --n-jobs 2 --overwrite

section "Outputs"
echo "simulated BIDS dataset:   $BIDS (participants.tsv holds age, sex, diagnosis, control_score)"
echo "ground truth:             $BIDS/derivatives/simulation (coupling per participant, phenotype_effects.json,"
echo "                          stimulation_response.tsv: every region's response to stimulating each network)"
echo "region time series:       $DERIV/sub-*/func/*_timeseries.tsv"
echo "embeddings:               $OUT/embeddings-*.tsv (+ .json sidecars)"
echo "probe report:             $OUT/probe-age/report.html (metrics.tsv, predictions.tsv, comparisons.tsv)"
