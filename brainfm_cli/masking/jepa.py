"""Brain-JEPA's spatiotemporal masking: an observation window, a Cross-ROI block and two temporal edge blocks.

Tokens form a grid of ``R`` regions × ``P`` time patches, index ``r·P + t``. Per batch, block sizes are drawn
once; per sample (the authors' ``MaskCollator_fmri``, same draws in the same order):

1. observation: ``h_o = int(R·U(obs))`` random regions O (not contiguous) × a window of ``w_o = int(P·U(obs))``
   patches starting at ``randint(0, P − w_o)``;
2. Cross-ROI α block: ``h_α = int(R·U(alpha_regions))`` random regions A × ``w_α = int(P·U(alpha_time))`` patches
   inside the observation window (``w_o > w_α``); the α regions leave the context **at every time step**;
3. right, then left edge block: a fraction ``s ~ U(edge_regions)`` of the regions in O∩A and, separately, of
   all other regions, × ``w = int(P·U(edge_time))`` columns drawn from the last (first) ``E`` time patches
   (E = 3 on the published 10-patch grid: {7, 8, 9} and {0, 1, 2}); those columns leave the context **for all
   regions**.

Context = observation − α regions − edge columns (sorted); targets = α, right, left blocks concatenated (each
sorted; the list may hold duplicates where α meets an edge block, as the authors' does). Both lists are cut
to the batch minimum (context keeps its lowest indices, targets lose the left block first). On the
published grid about 18 % of tokens are context and 19 % targets, and the last time patch is never context.

The authors draw the sizes from a per-call seeded generator and the positions from the global torch RNG.
Here every draw comes from the generator passed in; ``size_generator`` may separate the two streams (which
reproduces the authors' masks exactly given their two seeds). No global RNG is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

@dataclass
class SampleMasks:
    """One sample's blocks (flat token indices) before the batch-minimum cut."""

    context: torch.Tensor
    alpha: torch.Tensor
    right: torch.Tensor
    left: torch.Tensor
    observed_regions: torch.Tensor
    alpha_regions: torch.Tensor
    edge_columns: torch.Tensor  # time patches removed from the context for all regions

    @property
    def targets(self) -> torch.Tensor:
        return torch.cat([self.alpha, self.right, self.left])


@dataclass
class JEPAMasks:
    """``context [B, K]`` and ``targets [B, M]`` token indices of a batch (cut to the batch minimum)."""

    context: torch.Tensor
    targets: torch.Tensor
    samples: list[SampleMasks]


def _uniform(lo_hi: tuple[float, float], g: torch.Generator) -> float:
    lo, hi = lo_hi
    return lo + float(torch.rand(1, generator=g).item()) * (hi - lo)


class SpatiotemporalCollator:
    """Draws Brain-JEPA's context/target index lists for a grid of ``n_regions`` × ``n_patches`` tokens."""

    def __init__(self, n_regions: int, n_patches: int, observation=(0.84, 1.0), alpha_regions=(0.45, 0.6),
                 alpha_time=(0.2, 0.6), edge_regions=(0.15, 0.3), edge_time=(0.0, 0.4)):
        self.n_regions, self.n_patches = int(n_regions), int(n_patches)
        self.observation = tuple(map(float, observation))
        self.alpha_regions = tuple(map(float, alpha_regions))
        self.alpha_time = tuple(map(float, alpha_time))
        self.edge_regions = tuple(map(float, edge_regions))
        self.edge_time = tuple(map(float, edge_time))
        # the largest edge width int(P·u) can reach for u < edge_time[1]: 3 columns on the published 10-patch grid
        self.edge_columns = max(0, math.ceil(round(self.n_patches * self.edge_time[1], 9)) - 1)
        if self.edge_columns >= self.n_patches:
            raise ValueError(f"edge blocks of up to {self.edge_columns} columns do not fit {self.n_patches} patches")

    def block_sizes(self, g: torch.Generator) -> tuple[tuple[int, int], tuple[int, int]]:
        """(α regions, α patches), (observed regions, observed patches) for one batch."""
        R, P = self.n_regions, self.n_patches
        alpha = int(R * _uniform(self.alpha_regions, g)), int(P * _uniform(self.alpha_time, g))
        obs = int(R * _uniform(self.observation, g)), int(P * _uniform(self.observation, g))
        if alpha[0] >= R or obs[0] >= R or alpha[1] >= P or obs[1] >= P:
            raise ValueError(f"block sizes {alpha}, {obs} do not fit a {R}×{P} grid")
        if obs[1] <= alpha[1]:
            raise ValueError(f"the observation window ({obs[1]} patches) must be wider than the α block ({alpha[1]})")
        return alpha, obs

    def sample(self, alpha_size: tuple[int, int], obs_size: tuple[int, int], g: torch.Generator,
               sizes: torch.Generator) -> SampleMasks:
        """One sample's blocks; positions from ``g``, edge-block sizes from ``sizes``."""
        R, P = self.n_regions, self.n_patches
        (h_a, w_a), (h_o, w_o) = alpha_size, obs_size
        observed = torch.randperm(R, generator=g)[:h_o]
        left = int(torch.randint(0, P - w_o, (1,), generator=g))
        context = torch.zeros(R, P, dtype=torch.bool)
        context[observed, left:left + w_o] = True

        alpha_rows = torch.randperm(R, generator=g)[:h_a]
        in_obs, in_alpha = torch.zeros(R, dtype=torch.bool), torch.zeros(R, dtype=torch.bool)
        in_obs[observed], in_alpha[alpha_rows] = True, True
        both = torch.nonzero(in_obs & in_alpha).flatten()  # O ∩ A, sorted
        rest = torch.nonzero(~(in_obs & in_alpha)).flatten()  # every other region, sorted
        shift = int(torch.randint(0, w_o - w_a, (1,), generator=g))
        alpha = torch.zeros(R, P, dtype=torch.bool)
        alpha[alpha_rows, left + shift:left + shift + w_a] = True
        context[alpha_rows, :] = False

        edges, removed = [], []
        for side in ("right", "left"):
            ratio = _uniform(self.edge_regions, sizes)
            h1, h2 = int(len(both) * ratio), int(len(rest) * ratio)
            width = int(P * _uniform(self.edge_time, sizes))
            rows1 = both[torch.randperm(len(both), generator=g)][:h1]
            rows2 = rest[torch.randperm(len(rest), generator=g)][:h2]
            cols = torch.randperm(self.edge_columns, generator=g)[:width]
            if side == "right":
                cols = cols + (P - self.edge_columns)
            block = torch.zeros(R, P, dtype=torch.bool)
            if width > 0:
                block[torch.cat([rows2, rows1])[:, None], cols[None, :]] = True
                context[:, cols] = False
                removed.append(cols)
            edges.append(torch.nonzero(block.flatten()).flatten())
        return SampleMasks(
            context=torch.nonzero(context.flatten()).flatten(), alpha=torch.nonzero(alpha.flatten()).flatten(),
            right=edges[0], left=edges[1], observed_regions=observed.sort().values,
            alpha_regions=alpha_rows.sort().values,
            edge_columns=torch.cat(removed).unique() if removed else torch.empty(0, dtype=torch.long))

    def __call__(self, batch_size: int, generator: torch.Generator,
                 size_generator: torch.Generator | None = None) -> JEPAMasks:
        """Masks for a batch: block sizes once (from ``size_generator``, default ``generator``), then per sample."""
        sizes = size_generator if size_generator is not None else generator
        alpha_size, obs_size = self.block_sizes(sizes)
        samples = [self.sample(alpha_size, obs_size, generator, sizes) for _ in range(batch_size)]
        k = min(len(s.context) for s in samples)
        m = min(len(s.targets) for s in samples)
        if k == 0 or m == 0:
            raise ValueError("a sample has an empty context or no targets; check the mask scales")
        return JEPAMasks(context=torch.stack([s.context[:k] for s in samples]),
                         targets=torch.stack([s.targets[:m] for s in samples]), samples=samples)
