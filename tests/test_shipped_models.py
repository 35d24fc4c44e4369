"""Every model card that ships weights: the file is there, its SHA-256 matches the card, it loads and embeds."""

import pytest
import torch

from brainfm_cli.models import load, registered_cards
from brainfm_cli.io.provenance import sha256sum

SHIPPED = [c for c in registered_cards().values() if c.weights.get("file")]


def test_some_models_are_shipped():
    assert {"brainlm-sim", "semantoks-sim"} <= {c.name for c in SHIPPED}


@pytest.mark.parametrize("card", SHIPPED, ids=lambda c: c.name)
def test_shipped_weights_match_their_card(card):
    assert card.weights_file is not None, f"{card.name}: {card.weights['file']} is missing"
    assert sha256sum(card.weights_file) == card.weights["sha256"]
    model = load(card.name)
    assert model.card.name == card.name and model.weights_info["sha256"] == card.weights["sha256"]
    space = card.input
    with torch.inference_mode():
        out = model.pool(model.encode(torch.randn(2, space.n_regions, space.seq_len)), model.default_pooling)
    assert out.shape == (2, card.embedding["width"]) and torch.isfinite(out).all()
