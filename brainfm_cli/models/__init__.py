"""Model registry and the Python API: ``load(name, weights=None, device="cpu", **space_args)``.

>>> from brainfm_cli.models import load
>>> model = load("semantoks-ukb", weights="brainsemantoks_ckpt_epoch_100.pth")
>>> out = model.encode(x)          # x: model-ready tensor [batch, regions, time]
>>> out["cls"].shape, out["tokens"].shape
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainfm_cli.errors import BrainfmError
from brainfm_cli.models.card import ModelCard, card_from_dict, check_architecture, get_card, registered_cards

if TYPE_CHECKING:
    from brainfm_cli.models.base import BrainModel

# architecture name (a card's ``architecture.name``) → "module:class", imported only when used
ARCHITECTURES = {
    "brainlm": "brainfm_cli.models.brainlm:BrainLM",
    "brainlm_vitmae": "brainfm_cli.models.brainlm_vitmae:BrainLMViTMAE",
    "brain_jepa": "brainfm_cli.models.brain_jepa:BrainJEPA",
    "sc_mbm": "brainfm_cli.models.sc_mbm:SCMBM",
    "semantoks": "brainfm_cli.models.semantoks:Semantoks",
}

__all__ = ["ARCHITECTURES", "ModelCard", "build", "get_card", "list_models", "load", "registered_cards"]


def architecture_class(name: str) -> type["BrainModel"]:
    try:
        module, cls = ARCHITECTURES[name].split(":")
    except KeyError:
        raise BrainfmError(f"unknown architecture '{name}'", fix=f"one of {', '.join(ARCHITECTURES)}") from None
    return getattr(importlib.import_module(module), cls)


def build(card: ModelCard, **space_args) -> "BrainModel":
    """A randomly initialised model for ``card`` (what ``pretrain`` starts from)."""
    check_architecture(card)
    model = architecture_class(card.architecture["name"]).from_card(card, **space_args)
    if card.forecast:  # a forecaster: its head (or horizon) is part of the model
        model.enable_forecasting(int(card.forecast["context"]), int(card.forecast["horizon"]))
    return model


def load(name: str | Path, weights: str | Path | None = None, device: str = "cpu", *, pretrained: bool = True,
         architecture: dict[str, Any] | None = None, **space_args) -> "BrainModel":
    """The model ``name`` (a registered name or a card YAML) with weights, in eval mode on ``device``.

    ``weights`` is a brainfm checkpoint, the authors' published file or folder, or ``hf://ORG/REPO[/SUB]``;
    without it the card's shipped or published weights are used. ``pretrained=False`` gives a random
    initialisation. ``architecture`` overrides hyperparameters (e.g. a reduced size for tests);
    ``space_args`` are the family's input-space arguments (``coords=``, ``gradients=``, …).
    """
    from brainfm_cli.device import resolve_device  # torch only when a model is loaded
    from brainfm_cli.models.checkpoint import read_checkpoint

    card = get_card(name)
    ckpt = None
    if weights is not None:
        ckpt = read_checkpoint(weights)
    elif pretrained:
        source = card.weights_file or card.weights.get("source")
        if not source:
            raise BrainfmError(f"{card.name} ships no weights", fix="pass --weights with a checkpoint (yours from "
                               "'brainfm pretrain', or the authors' file for a published model)")
        ckpt = read_checkpoint(source)
    if ckpt is not None and ckpt.card is not None:
        theirs = card_from_dict(ckpt.card, str(ckpt.path))
        if theirs.architecture.get("name") != card.architecture.get("name"):
            raise BrainfmError(f"these weights are a {theirs.architecture.get('name')} model ('{theirs.name}'), "
                               f"not {card.architecture.get('name')} ('{card.name}')", path=ckpt.path,
                               fix=f"use --model {theirs.name}, or weights made for {card.name}")
        if weights is not None:  # a checkpoint describes itself; a card's shipped weights keep that card
            card = theirs
    if architecture:
        card = card.with_architecture(**architecture)
    if ckpt is not None and ckpt.card is None:
        card = architecture_class(card.architecture["name"]).card_for_checkpoint(card, ckpt)
    model = build(card, **space_args)
    if ckpt is not None:
        model.load_checkpoint(ckpt)
    return model.eval().to(resolve_device(device))


def size_parameters(card: ModelCard) -> dict[str, int | None]:
    """Trainable parameters of the model (without pretraining heads) at each of the card's sizes, counted on the
    meta device (nothing is allocated); None where the size cannot be built without the user's data."""
    import torch

    counts: dict[str, int | None] = {}
    for size in card.sizes:
        try:
            with torch.device("meta"):
                model = build(card.with_size(size))
            counts[size] = sum(p.numel() for p in model.parameters())
        except (BrainfmError, ValueError):
            counts[size] = None
    return counts


def list_models() -> list[dict]:
    """One row per registered model for ``brainfm models``."""
    rows = []
    for card in registered_cards().values():
        space = card.input
        shipped = card.weights_file is not None
        rows.append(dict(
            name=card.name, family=card.family, architecture=card.architecture.get("name"),
            atlas=space.atlas or space.atlas_description, regions=space.n_regions or "from the data",
            tr=space.tr, window=space.seq_len,
            size=card.architecture.get("size", ""), embedding=card.embedding.get("width", card.architecture.get("embed_dim")),
            weights="shipped" if shipped else (card.weights.get("source") or (
                f"published: {', '.join(card.weights['files'])}" if card.weights.get("files") else
                "none (pretrain or --weights)")),
        ))
    return rows
