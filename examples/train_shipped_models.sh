#!/usr/bin/env bash
# How the small models shipped in models/*-sim.* were made — run it to reproduce them bit for bit (CPU, float32).
# They are trained on data from `brainfm simulate` (no human data), at a size a laptop CPU runs in seconds:
# for demos, tests and tutorials, not for science. Usage: bash examples/train_shipped_models.sh [family ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WORK=${WORK:-examples/output/shipped}
CORPUS=$WORK/corpus
SEED=7
families=("${@:-brainlm semantoks brain-jepa sc-mbm}")
read -r -a families <<< "${families[*]}"

if [[ ! -f $CORPUS/derivatives/simulation/simulation.json ]]; then
    rm -rf "$CORPUS"
    brainfm simulate -o "$CORPUS" --space regions --atlas seitzman300 --participants 48 --duration 600 --tr 2 \
        --seed "$SEED" --quiet
fi

common=(--device cpu --dtype float32 --seed "$SEED" --checkpoint-every 1000 --quiet)

train() {  # name family epochs [pretrain options...]
    local name=$1 model=$2 epochs=$3
    shift 3
    rm -rf "$WORK/$name"
    brainfm pretrain "$CORPUS" --model "$model" -o "$WORK/$name" --epochs "$epochs" "${common[@]}" "$@"
    python - "$WORK/$name" "$name" <<'PY'
import hashlib, shutil, sys, yaml
from pathlib import Path
run, name = Path(sys.argv[1]), sys.argv[2]
card = yaml.safe_load((run / "model.yaml").read_text())
weights = Path("models") / f"{name}.safetensors"
shutil.copyfile(run / "model.safetensors", weights)
card["name"] = name
base = card["name"]
card["name"] = name
card["description"] = (f"A small model of the {base} design ({card['architecture'].get('size', 'reduced size')}) trained "
                       "by brainfm on simulated BOLD (brainfm simulate: 48 participants x 10 min, Seitzman-300): for "
                       f"demos, tests and tutorials, not for science. The design: 'brainfm models show {base}'.")
card["weights"] = {"file": weights.name, "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()}
card["training"]["data"] = "brainfm simulate --space regions --atlas seitzman300 --participants 48 --duration 600 --tr 2 --seed 7"
card["training"]["recipe"].pop("corpus", None)
card["training"]["script"] = "examples/train_shipped_models.sh"
(Path("models") / f"{name}.yaml").write_text(yaml.safe_dump(card, sort_keys=False, allow_unicode=True))
print(f"{name}: {weights} ({weights.stat().st_size / 1e6:.2f} MB), final loss {card['training'].get('final_loss')}")
PY
}

for family in "${families[@]}"; do
    case $family in
        brainlm) train brainlm-sim brainlm 20 --batch-size 8 --crops-per-run 2 --lr 2e-3 --objective mask_ratio=0.5 \
            --arch embed_dim=64 --arch depth=2 --arch num_heads=4 --arch decoder_dim=32 --arch decoder_depth=1 \
            --arch decoder_heads=4 --arch "size=sim (64 wide, 2 layers)" ;;
        semantoks) train semantoks-sim semantoks 60 --batch-size 8 --crops-per-run 2 --lr 5e-4 \
            --arch embed_dim=64 --arch depth=2 --arch num_heads=4 --arch projection_hidden_dim=128 \
            --arch projection_dim=32 --arch "size=sim (64 wide, 2 blocks)" ;;
        brain-jepa) train brain-jepa-sim brain-jepa 60 --batch-size 8 --crops-per-run 2 \
            --arch size=tiny --arch embed_dim=64 --arch depth=2 --arch num_heads=4 --arch predictor_dim=32 \
            --arch predictor_depth=2 ;;
        sc-mbm) train sc-mbm-sim sc-mbm 60 --batch-size 32 --crops-per-run 8 \
            --arch embed_dim=64 --arch depth=2 --arch num_heads=4 --arch decoder_dim=32 --arch decoder_depth=1 \
            --arch decoder_heads=4 --arch "size=sim (64 wide, 2 blocks)" ;;
        *) echo "unknown family $family" >&2; exit 2 ;;
    esac
done
