"""Fidelity to the authors' code: brainfm loads their checkpoint containers and reproduces their outputs.

The fixtures in tests/data/golden/ were produced once by running each authors' own code on a tiny configuration
with seeded random weights (see tests/data/golden/README.md); CI never runs their code.
"""

import json
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = dict(atol=1e-4, rtol=0)


def golden(name: str) -> dict:
    return torch.load(GOLDEN / f"{name}.pt", weights_only=True)


def test_brainlm_vitmae_matches_the_authors_code(tmp_path):
    from safetensors.torch import save_file

    from brainfm_cli.models import load

    g = golden("brainlm_vitmae")
    c = g["config"]
    folder = tmp_path / "vitmae_111M"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in g["checkpoint"].items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(c["saved_config_json"]))
    arch = dict(embed_dim=c["hidden_size"], depth=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
                mlp_ratio=c["intermediate_size"] / c["hidden_size"], decoder_dim=c["decoder_hidden_size"],
                decoder_depth=c["decoder_num_hidden_layers"], decoder_heads=c["decoder_num_attention_heads"],
                decoder_mlp_ratio=c["decoder_intermediate_size"] / c["decoder_hidden_size"])
    model = load("brainlm-vitmae-111m", weights=folder, coords=g["inputs"]["coords"].numpy(), architecture=arch)
    x = g["inputs"]["x"]
    assert torch.equal(model.order, g["inputs"]["reorder_idx"])
    torch.testing.assert_close(model.to_image(x), g["inputs"]["pixel_values"].contiguous(), atol=0, rtol=0)
    with torch.inference_mode():
        out = model.encode(x)
    torch.testing.assert_close(out["cls"], g["outputs"]["cls"], **TOL)
    torch.testing.assert_close(out["tokens"], g["outputs"]["patch_tokens"], **TOL)


def test_published_vitmae_key_sets_map_completely():
    """Every key of the published 111M/650M checkpoints has a home in our modules, and nothing is left over."""
    from brainfm_cli.models import get_card
    from brainfm_cli.models.brainlm_vitmae import BrainLMViTMAE
    from brainfm_cli.models.checkpoint import Checkpoint, check_keys

    keys = json.loads((GOLDEN / "brainlm_vitmae_keys.json").read_text())
    coords = torch.randn(424, 3).numpy()
    for name, part in (("brainlm-vitmae-111m", "vitmae_111M"), ("brainlm-vitmae-650m", "vitmae_650M")):
        shapes = keys[part]
        with torch.device("meta"):
            model = BrainLMViTMAE(get_card(name), coords)
        state = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
        mapped = model.convert_foreign(Checkpoint(state=state, path=Path(name), sha256=""))
        check_keys(model.state_dict(), mapped, None, name)
