"""SC-MBM's masking (MinD-Vis ``random_masking``): per sample, keep the ``int(L·(1 − ratio))`` patches with the
smallest uniform noise and hide the rest."""

from __future__ import annotations

import torch

from brainfm_cli.masking.random import TokenMask


def mae_mask(batch: int, n_tokens: int, ratio: float, generator: torch.Generator | None = None,
             noise: torch.Tensor | None = None) -> TokenMask:
    """Index lists (sorted, patch order) of kept and hidden patches; ``noise [B, L]`` replaces the draw (tests
    replay the authors' noise). The authors round the kept count down, so 291 patches at 0.75 keep 72."""
    n_keep = int(n_tokens * (1 - ratio))
    if not 0 < n_keep <= n_tokens:
        raise ValueError(f"mask ratio {ratio} keeps {n_keep} of {n_tokens} patches")
    if noise is None:
        noise = torch.rand(batch, n_tokens, generator=generator)
    order = noise.argsort(dim=1)
    return TokenMask(keep=order[:, :n_keep].sort(dim=1).values, masked=order[:, n_keep:].sort(dim=1).values,
                     n_tokens=n_tokens)
