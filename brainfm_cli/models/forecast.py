"""Forecasting future brain states with a model: the fine-tuning objective and the light head of families that do
not forecast by design.

BrainLM forecasts as its paper does: the last ``horizon`` TRs of a window are hidden as whole time patches and
its decoder fills them (future masking). Families without such a decoder (Brain-JEPA, Brain-Semantoks, the
ViT-MAE models) get a :class:`ForecastHead`: a linear read-out of the encoder's pooled embedding of the context
window into every region's next ``horizon`` samples, starting at zero (the mean). ``model.forecast(context)`` is
the one call either way; a card's ``forecast`` block (``context``, ``horizon``, ``method``) rebuilds it.
"""

from __future__ import annotations

import torch
from torch import nn

from brainfm_cli.errors import BrainfmError
from brainfm_cli.models.objective import Objective


class ForecastHead(nn.Module):
    """Pooled embedding ``[B, W]`` → ``[B, R, H]`` future values, zero-initialised (predicts the mean at first)."""

    def __init__(self, width: int, n_regions: int, horizon: int):
        super().__init__()
        self.n_regions, self.horizon = n_regions, horizon
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, n_regions * horizon)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(z)).reshape(z.shape[0], self.n_regions, self.horizon)


class Forecasting(Objective):
    """Fine-tuning for forecasting: each sample is ``context + horizon`` samples; the model sees the context and
    predicts the rest; MSE over the future values of regions with data. ``freeze_encoder`` trains only what maps
    the encoder's output to the future (BrainLM's decoder, or the head)."""

    family = "forecasting"
    recipe = {"lr": 5e-4, "start_lr": 0.0, "min_lr": 1e-5, "warmup": 0.05, "weight_decay": 0.05,
              "final_weight_decay": 0.05, "betas": (0.9, 0.999), "grad_clip": 1.0}
    defaults = {}

    def __init__(self, model, context: int, horizon: int, freeze_encoder: bool = False):
        super().__init__(model, {})
        model.enable_forecasting(context, horizon)
        self.context, self.horizon = int(context), int(horizon)
        if freeze_encoder:
            for name, p in model.named_parameters():
                p.requires_grad_(model.is_forecast_parameter(name))

    @property
    def sample_length(self) -> int:
        return self.context + self.horizon

    def forward(self, x, valid, info, absent=None):
        C, H = self.context, self.horizon
        pred = self.model.forecast(x[..., :C], absent)
        err = (pred.float() - x[..., C:C + H].float()).pow(2).mean(-1)  # [B, R]
        w = (torch.arange(H, device=x.device)[None, :] < (valid[:, None] - C)).float().mean(-1)[:, None]  # [B, 1]
        if absent is not None:
            w = w * (~absent.to(torch.bool)).float()
        w = w.expand_as(err)
        loss = (err * w).sum() / w.sum().clamp_min(1e-12)
        return loss, {"loss": float(loss.detach())}


def check_lengths(model, context: int, horizon: int) -> None:
    """Context and horizon that the model can take: a bad pair is an error naming what fits."""
    space = model.card.input
    if context < 1 or horizon < 1:
        raise BrainfmError(f"context {context} and horizon {horizon} must both be positive",
                           fix=f"e.g. --context {max(1, space.seq_len - (space.patch or 20))} --horizon {space.patch or 20}")
    method = type(model).forecast_method
    if method is None:
        raise BrainfmError(f"{model.card.name} ({model.card.family}) cannot forecast: its samples are single time "
                           "points", fix="forecast with brainlm (future masking), brain-jepa, semantoks or "
                           "brainlm-vitmae (a head on the encoder)")
    if method == "future_masking":
        p = int(space.patch)
        if context % p or horizon % p:
            raise BrainfmError(f"{model.card.name} forecasts whole time patches of {p} samples: context {context} and "
                               f"horizon {horizon} must be multiples of {p}",
                               fix=f"e.g. --context {space.seq_len - p} --horizon {p}")
        if context + horizon > space.seq_len:
            raise BrainfmError(f"context {context} + horizon {horizon} is longer than {model.card.name}'s window "
                               f"({space.seq_len} samples at TR {space.tr} s)",
                               fix=f"e.g. --context {space.seq_len - horizon if horizon < space.seq_len else space.seq_len - p}")
    elif context != space.seq_len:
        raise BrainfmError(f"{model.card.name} encodes windows of {space.seq_len} samples; the context must be one "
                           f"window (got {context})", fix=f"--context {space.seq_len}")
