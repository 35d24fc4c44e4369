"""Brain-Semantoks' slice masking: hide whole networks, or a contiguous run of time patches across all networks.

Tokens form a grid of ``N`` networks × ``P`` time patches. Per sample, a fair coin picks the kind, then with a
ratio ``r ~ U(ratio)`` (the authors' dataset, same formulas):

- network slice: ``k`` networks at every patch, ``k`` uniform in ``[max(1, int(N·lo)), min(N, int(N·hi)))``
  (5 or 6 of 9 networks on the published grid);
- temporal slice: ``min(max(1, ceil(r·P)), P) − 1`` consecutive patches of every network, starting uniformly
  (3 patches for r ≤ 0.8 and 4 above on the published 5-patch grid, as the spec states).

The masks are boolean grids (True = hidden): the model swaps those tokens for its mask embedding, it does not
drop them. Every draw comes from the generator passed in; no global RNG is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SliceMasks:
    """``mask [B, N, P]`` (True = hidden) and ``network [B]`` (True = a network slice, False = a temporal one)."""

    mask: torch.Tensor
    network: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        """Fraction of hidden tokens per sample."""
        return self.mask.flatten(1).float().mean(1)


def network_slice_count(n_networks: int, ratio: float | tuple[float, float], g: torch.Generator) -> int:
    """How many networks a network slice hides: uniform in ``[max(1, int(N·lo)), min(N, int(N·hi)))``."""
    lo, hi = ratio
    low, high = max(1, int(n_networks * lo)), min(n_networks, int(n_networks * hi))
    return low if high <= low else int(torch.randint(low, high, (1,), generator=g))


def temporal_slice_length(n_patches: int, r: float) -> int:
    """Patches a temporal slice hides for a drawn ratio ``r`` (the authors' ``min(max(1, ceil(r·P)), P) − 1``)."""
    return min(max(1, math.ceil(r * n_patches)), n_patches) - 1


def slice_masks(batch: int, n_networks: int, n_patches: int, generator: torch.Generator,
                ratio: tuple[float, float] = (0.65, 0.85)) -> SliceMasks:
    """One slice mask per sample (kind by a fair coin; sizes as in the module docstring)."""
    lo, hi = float(ratio[0]), float(ratio[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"mask ratio range {ratio} must lie in [0, 1] and be increasing")
    mask = torch.zeros(batch, n_networks, n_patches, dtype=torch.bool)
    network = torch.zeros(batch, dtype=torch.bool)
    for b in range(batch):
        if float(torch.rand((), generator=generator)) < 0.5:
            network[b] = True
            k = network_slice_count(n_networks, (lo, hi), generator)
            mask[b, torch.randperm(n_networks, generator=generator)[:k]] = True
        else:
            r = lo + (hi - lo) * float(torch.rand((), generator=generator))
            length = temporal_slice_length(n_patches, r)
            start = int(torch.randint(0, n_patches - length + 1, (1,), generator=generator))
            mask[b, :, start:start + length] = True
    return SliceMasks(mask=mask, network=network)
