"""MAE-style masking: random tokens, or the last patches in time (forecasting), as keep/mask index lists."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenMask:
    """``keep [B, K]`` visible token indices (sorted) and ``masked [B, M]`` hidden ones, over ``n_tokens``."""

    keep: torch.Tensor
    masked: torch.Tensor
    n_tokens: int

    @classmethod
    def cat(cls, masks: list["TokenMask"]) -> "TokenMask":
        """One batch from masks drawn sample by sample (each sample's mask independent of how samples are batched)."""
        return cls(torch.cat([m.keep for m in masks]), torch.cat([m.masked for m in masks]), masks[0].n_tokens)

    def bool(self) -> torch.Tensor:
        """``[B, N]`` True where hidden."""
        out = torch.zeros(self.keep.shape[0], self.n_tokens, dtype=torch.bool, device=self.keep.device)
        return out.scatter_(1, self.masked, True)


def random_mask(batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None, *,
                noise: torch.Tensor | None = None, keep_floor: bool = False) -> TokenMask:
    """MAE's per-sample shuffle: keep the tokens with the smallest uniform noise, hide ``round(ratio·N)``.

    ``keep_floor`` keeps ``int(N·(1 − ratio))`` instead (MinD-Vis rounds the kept count down: 291 patches at
    0.75 keep 72); ``noise [B, N]`` replaces the draw (to replay an authors' run).
    """
    n_keep = int(n_tokens * (1 - ratio)) if keep_floor else n_tokens - int(round(ratio * n_tokens))
    if not 0 < n_keep < n_tokens:
        raise ValueError(f"mask ratio {ratio} leaves no visible or no hidden tokens out of {n_tokens}")
    if noise is None:
        noise = torch.rand(batch, n_tokens, generator=generator)
    order = noise.argsort(dim=1)
    return TokenMask(keep=order[:, :n_keep].sort(dim=1).values, masked=order[:, n_keep:].sort(dim=1).values,
                     n_tokens=n_tokens)


def future_mask(batch: int, n_regions: int, n_patches: int, n_future: int) -> TokenMask:
    """Hide the last ``n_future`` time patches of every region (tokens ordered region-major, ``r·P + t``)."""
    if not 0 < n_future < n_patches:
        raise ValueError(f"cannot hide {n_future} of {n_patches} time patches")
    t = torch.arange(n_regions * n_patches) % n_patches
    hidden = t >= n_patches - n_future
    idx = torch.arange(n_regions * n_patches)
    return TokenMask(keep=idx[~hidden].expand(batch, -1).clone(), masked=idx[hidden].expand(batch, -1).clone(),
                     n_tokens=n_regions * n_patches)
