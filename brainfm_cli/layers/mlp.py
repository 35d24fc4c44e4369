"""The transformer feed-forward block: Linear → GELU → Linear (GELU fused into the first matmul at inference)."""

from __future__ import annotations

from torch import nn

from brainfm_cli.layers.linear import Linear


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = Linear(dim, hidden)
        self.act = act_layer()
        self.fc2 = Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        self._fusable = act_layer is nn.GELU

    def forward(self, x):
        if self._fusable and not self.training:
            return self.fc2(self.fc1.forward_fused(x, "gelu"))
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
