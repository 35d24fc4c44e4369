"""What every model family shares: one forward API, pooling, building from a card, loading weights.

The forward API is timm's: ``forward_features(x, mask=None)`` returns every token after the final norm (CLS
first where the family has one); ``encode`` splits it into ``cls`` and ``tokens`` and ``pool`` reduces it;
families trained by masked modelling add ``forward_visible(x, keep)`` (only the kept tokens, for training) and
``forward_head`` (their decoder). A family subclasses :class:`BrainModel`, builds itself from a card
(``from_card``) and, where the authors published weights, implements ``convert_foreign`` (their key names →
ours, timm's ``checkpoint_filter_fn``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from brainfm_cli.errors import BrainfmError
from brainfm_cli.models.card import ModelCard
from brainfm_cli.models.checkpoint import Checkpoint, check_keys, strip_prefix

Encoded = dict[str, torch.Tensor | None]


class BrainModel(nn.Module):
    """A brain-dynamics encoder: ``encode(x[B, regions, time], mask=None) -> {"cls", "tokens"}``.

    ``x`` is model-ready (resampled, normalised and cropped as the card says). ``mask`` (True = a token that is
    padding or has no data, in the shape ``padding_mask`` returns) hides tokens from the model: out of attention,
    or replaced by the family's mask embedding. ``tokens`` come after the final norm and exclude the CLS token;
    ``cls`` is None for models without one (``has_cls`` False).
    """

    poolings: tuple[str, ...] = ("cls", "mean", "tokens")
    default_pooling: str = "cls"
    has_cls: bool = True

    def __init__(self, card: ModelCard):
        super().__init__()
        self.card = card
        self.weights_info: dict[str, Any] = {"path": None, "sha256": None, "format": "random initialisation"}

    @classmethod
    def from_card(cls, card: ModelCard, **space_args) -> "BrainModel":
        if space_args:
            raise BrainfmError(f"{card.name} takes no input-space arguments, got {sorted(space_args)}",
                               fix="drop them")
        return cls(card)

    @classmethod
    def card_for_checkpoint(cls, card: ModelCard, ckpt: Checkpoint) -> ModelCard:
        """The card to build for the authors' checkpoint ``ckpt`` (families whose sizes are read from the file)."""
        return card

    @classmethod
    def adapt_to_atlas(cls, card: ModelCard, atlas, corpus: list[str]) -> tuple[ModelCard, dict]:
        """The card (input already re-targeted to the corpus's regions of ``atlas``) with what this family derives
        from the atlas or the corpus, and the input-space arguments to build it with."""
        return card, {}

    @classmethod
    def pretraining_objective(cls, model: "BrainModel", options: dict):
        """The family's self-supervised objective around ``model`` (a ``models.objective.Objective``)."""
        raise BrainfmError(f"{model.card.name} cannot be pretrained by brainfm", fix="choose another --model")

    @property
    def embed_dim(self) -> int:
        return int(self.card.architecture["embed_dim"])

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Every token after the final norm, ``[B, (1 +) N, D]``, CLS first where the family has one."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        """``{"cls": [B, D] or None, "tokens": [B, N, D]}`` from ``forward_features``."""
        out = self.forward_features(x, mask)
        if self.has_cls:
            return {"cls": out[:, 0], "tokens": out[:, 1:]}
        return {"cls": None, "tokens": out}

    def refuse_mask(self, mask: torch.Tensor | None) -> None:
        """For families whose published design has no padding mask."""
        if mask is not None:
            raise BrainfmError(f"{self.card.name} has no padding mask", fix="give full-length windows")

    def pool(self, out: Encoded, pooling: str) -> torch.Tensor:
        """``[B, D]`` for cls/mean (and family poolings such as cls_avg), ``[B, N, D]`` for tokens."""
        if pooling == "cls":
            if out["cls"] is None:
                raise BrainfmError(f"{self.card.name} has no CLS token", fix="use --pooling mean")
            return out["cls"]
        if pooling == "mean":
            return out["tokens"].mean(dim=1)
        if pooling == "tokens":
            return out["tokens"]
        raise BrainfmError(f"unknown pooling '{pooling}' for {self.card.name}",
                           fix=f"use one of {', '.join(self.poolings)}")

    def padding_mask(self, valid: list[int], length: int) -> torch.Tensor | None:
        """The model's mask for windows whose first ``valid`` samples are data and the rest zero padding."""
        if all(v == length for v in valid):
            return None
        raise BrainfmError(f"{self.card.name} cannot mask padded input", fix="give runs at least one window long")

    def check_input(self, x: torch.Tensor) -> None:
        space = self.card.input
        if x.ndim != 3 or x.shape[1] != space.n_regions:
            raise BrainfmError(f"{self.card.name} takes [batch, {space.n_regions} regions, time], got "
                               f"{list(x.shape)}", fix="prepare the input with brainfm's preprocessing")

    def convert_foreign(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """A checkpoint without brainfm's card in our key names; families with published weights map theirs.

        The default takes a bare state dict in brainfm's names (DDP's ``module.`` prefix removed); anything
        else then fails the key check, which lists what does not fit.
        """
        return strip_prefix(ckpt.state, "module.")

    def save(self, path, extra: dict[str, str] | None = None):
        """Write brainfm's checkpoint: the weights with this model's card (architecture, input space) inside."""
        from brainfm_cli.models.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(), self.card.to_dict(), path, extra)

    def load_checkpoint(self, ckpt: Checkpoint) -> None:
        """Load ours as is, or the authors' through ``convert_foreign``; any key mismatch is an error."""
        state = dict(ckpt.state) if ckpt.card is not None else self.convert_foreign(ckpt)
        expected = self.state_dict()
        check_keys(expected, state, ckpt.path, f"{self.card.name} ({self.card.architecture.get('name')})")
        self.load_state_dict(state, strict=True)
        self.weights_info = {"path": str(ckpt.path), "sha256": ckpt.sha256,
                             "format": "brainfm" if ckpt.card is not None else "authors' checkpoint"}
