"""What every model family shares: one forward API, pooling, building from a card, loading weights.

The forward API is timm's: ``forward_features(x, mask=None)`` returns every token after the final norm (CLS
first where the family has one); ``encode`` splits it into ``cls`` and ``tokens`` and ``pool`` reduces it;
families trained by masked modelling add ``forward_visible(x, keep)`` (only the kept tokens, for training) and
``forward_head`` (their decoder). A family subclasses :class:`BrainModel`, builds itself from a card
(``from_card``) and, where the authors published weights, implements ``convert_foreign`` (their key names →
ours, timm's ``checkpoint_filter_fn``). ``forward_attention`` / ``encode_attention`` read the encoder's attention
weights and ``token_regions`` maps tokens to regions where tokens are region time patches (``brainfm networks``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

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

    Regions without data (``absent [B, R]``, zero-filled by the preprocessing) are kept out of attention and loss
    where the family's tokens allow it (``region_tokens``: one token per region and patch); other families see
    them as zeros (the data's mean after normalisation) and leave them out of their losses.
    """

    poolings: tuple[str, ...] = ("cls", "mean", "tokens")
    default_pooling: str = "cls"
    has_cls: bool = True
    # tokens are (region, time patch) pairs, region-major (r·P + t): ``token_regions`` maps them to regions, and
    # regions without data can be kept out of attention
    region_tokens: bool = False
    # how the family forecasts (``models.forecast``): "future_masking" (its decoder), "head" (a read-out of the
    # pooled embedding) or None (it cannot)
    forecast_method: str | None = "head"

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
        """``{"cls": [B, D] or None, "tokens": [B, N, D]}`` from ``forward_features``; for families whose mask hides
        tokens from attention (``region_tokens``), ``visible [B, N]`` too, so mean pooling skips hidden tokens."""
        out = self.forward_features(x, mask)
        result = {"cls": out[:, 0], "tokens": out[:, 1:]} if self.has_cls else {"cls": None, "tokens": out}
        if mask is not None and self.region_tokens:
            result["visible"] = ~mask.reshape(x.shape[0], -1).to(x.device)
        return result

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
            if out.get("visible") is not None:
                w = out["visible"].to(out["tokens"].dtype).unsqueeze(-1)
                return (out["tokens"] * w).sum(1) / w.sum(1).clamp_min(1)
            return out["tokens"].mean(dim=1)
        if pooling == "tokens":
            return out["tokens"]
        raise BrainfmError(f"unknown pooling '{pooling}' for {self.card.name}",
                           fix=f"use one of {', '.join(self.poolings)}")

    def padding_mask(self, valid: list[int], length: int, absent: torch.Tensor | None = None) -> torch.Tensor | None:
        """The model's mask for windows whose first ``valid`` samples are data and the rest zero padding, and whose
        regions ``absent [B, R]`` have no data (None: nothing to hide, or a family that sees absent regions as
        zeros)."""
        if all(v == length for v in valid):
            return None
        raise BrainfmError(f"{self.card.name} cannot mask padded input", fix="give runs at least one window long")

    def token_absent(self, absent: torch.Tensor | None, n_patches: int) -> torch.Tensor | None:
        """``[B, R·P]`` True for the tokens of absent regions (region-major ``r·P + t``), or None when none is absent
        (families with region tokens)."""
        if absent is None or not bool(absent.any()):
            return None
        return absent.to(torch.bool).repeat_interleave(n_patches, dim=1)

    def check_input(self, x: torch.Tensor) -> None:
        space = self.card.input
        if x.ndim != 3 or x.shape[1] != space.n_regions:
            raise BrainfmError(f"{self.card.name} takes [batch, {space.n_regions} regions, time], got "
                               f"{list(x.shape)}", fix="prepare the input with brainfm's preprocessing")

    def token_regions(self, n_tokens: int) -> torch.Tensor | None:
        """The region index of each of ``n_tokens`` tokens (CLS excluded), or None where tokens are not region
        tokens (network tokens, 2-D image patches, voxel patches)."""
        if not self.region_tokens:
            return None
        return torch.arange(n_tokens) // (n_tokens // self.card.input.n_regions)

    @contextmanager
    def recording_attention(self, reduce=None) -> Iterator[list[torch.Tensor]]:
        """Within the block, every forward of the encoder's ``blocks`` appends each layer's attention weights
        ``[B, heads, N, N]`` (rows sum to 1; CLS first where the family has one), or ``reduce`` of them, to the
        list it yields. The weights are recomputed from each layer's input on the explicit attention path."""
        from brainfm_cli.layers import Block

        blocks = [m for m in getattr(self, "blocks", ()) if isinstance(m, Block)]
        if not blocks:
            raise BrainfmError(f"{self.card.name} has no attention layers brainfm can read",
                               fix="use a transformer family (brainlm, brain-jepa)")
        maps: list[torch.Tensor] = []

        def record(block, args, kwargs):
            attn_mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
            keys = args[2] if len(args) > 2 else kwargs.get("keys")
            attn = block.forward_with_attention(args[0], attn_mask, keys)[1]
            maps.append(attn if reduce is None else reduce(attn))

        handles = [b.register_forward_pre_hook(record, with_kwargs=True) for b in blocks]
        try:
            yield maps
        finally:
            for h in handles:
                h.remove()

    def forward_attention(self, x: torch.Tensor, mask: torch.Tensor | None = None, reduce=None
                          ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``forward_features(x, mask)`` and the attention weights of every encoder layer (``recording_attention``)."""
        with self.recording_attention(reduce) as maps:
            out = self.forward_features(x, mask)
        return out, maps

    def attention_received(self, attn: torch.Tensor) -> torch.Tensor:
        """``[B, N]`` from one layer's weights ``[B, heads, (1 +) N, (1 +) N]``: the head-averaged attention each
        token receives from CLS where the family has one (the BrainLM paper's feature), else the mean over all
        query tokens; attention to CLS itself is left out."""
        a = attn.mean(1)
        return a[:, 0, 1:] if self.has_cls else a.mean(1)

    def encode_attention(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        """``encode(x, mask)`` plus ``"attention" [B, N]``: ``attention_received`` averaged over the layers."""
        with self.recording_attention(self.attention_received) as maps:
            out = self.encode(x, mask)
        return {**out, "attention": torch.stack(maps).mean(0)}

    def enable_forecasting(self, context: int, horizon: int) -> None:
        """Make the model forecast ``horizon`` samples from ``context`` (checked against what it can take); the
        card records it (``forecast``), so a saved forecaster rebuilds itself."""
        from dataclasses import replace

        from brainfm_cli.models.forecast import ForecastHead, check_lengths

        check_lengths(self, context, horizon)
        if self.forecast_method == "head" and not hasattr(self, "forecast_head"):
            space = self.card.input
            param = next(self.parameters())
            with torch.no_grad():
                probe = torch.zeros(1, space.n_regions, space.seq_len, device=param.device)
                width = int(self.pool(self.encode(probe), self.default_pooling).shape[-1])
            self.forecast_head = ForecastHead(width, space.n_regions, horizon).to(param.device)
        self.card = replace(self.card, forecast={"context": int(context), "horizon": int(horizon),
                                                 "method": self.forecast_method})

    def is_forecast_parameter(self, name: str) -> bool:
        """Whether parameter ``name`` maps the encoder's output to the future (trained by ``--freeze-encoder``)."""
        return name.startswith("forecast_head.")

    def forecast(self, context: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, R, horizon]`` future samples from ``context [B, R, C]`` (regions ``absent [B, R]`` without data)."""
        head = getattr(self, "forecast_head", None)
        if head is None:
            raise BrainfmError(f"{self.card.name} is not a forecaster", fix="make one with 'brainfm forecast fit'")
        mask = self.padding_mask([context.shape[-1]] * context.shape[0], context.shape[-1], absent)
        return head(self.pool(self.encode(context, mask), self.default_pooling))

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
