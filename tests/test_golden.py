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


def test_brainlm_vitmae_future_reconstruction_matches_the_authors_loss(tmp_path):
    """Their ``predict_last`` mode at ratio 0.2 hides token columns 17–19 (TRs 156–199); same loss and logits."""
    from safetensors.torch import save_file

    from brainfm_cli.masking.random import TokenMask
    from brainfm_cli.models import load

    g = golden("brainlm_vitmae")
    save_file({k: v.contiguous() for k, v in g["checkpoint"].items()}, str(tmp_path / "model.safetensors"))
    arch = dict(embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, decoder_dim=16, decoder_depth=1, decoder_heads=2,
                decoder_mlp_ratio=2.0)
    model = load("brainlm-vitmae-111m", weights=tmp_path / "model.safetensors", coords=g["inputs"]["coords"].numpy(),
                 architecture=arch)
    assert model.future_columns(int(0.2 * 200)) == [17, 18, 19]
    objective = type(model).pretraining_objective(model, {"future_trs": 40, "future_probability": 1.0})
    tm = objective.hidden_tokens(2, torch.Generator())
    assert isinstance(tm, TokenMask) and tm.masked.shape == (2, 27 * 3)
    with torch.inference_mode():
        loss, pred = objective.loss(g["inputs"]["x"], tm)
    assert loss.item() == pytest.approx(g["outputs"]["recon_loss_predict_last_mr0.2"], abs=1e-5)
    # channel-mean predictions of the data area, TRs 156–199, in the Y-sorted row order
    img = pred.reshape(2, 27, 27, 16, 16).permute(0, 1, 3, 2, 4).reshape(2, 432, 432)
    torch.testing.assert_close(img[:, 4:428, 116 + 156:116 + 200], g["outputs"]["recon_logits_predict_last_mr0.2_tr156_199"],
                               **TOL)
