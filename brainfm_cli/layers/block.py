"""Pre-norm transformer block (attention, then MLP, each on a residual branch with optional LayerScale)."""

from __future__ import annotations

import torch
from torch import nn

from brainfm_cli.layers.attention import Attention
from brainfm_cli.layers.mlp import Mlp


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``; ``layer_scale=None`` means no LayerScale."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_bias: bool = True, norm_eps: float = 1e-6, layer_scale: float | None = None,
                 drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale is not None else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                keys: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask, keys=keys))
        return x + self.ls2(self.mlp(self.norm2(x)))

    def forward_with_attention(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                               keys: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same computation, also returning the attention weights ``[B, heads, N, N]``."""
        y, attn = self.attn(self.norm1(x), attn_mask=attn_mask, return_attention=True, keys=keys)
        x = x + self.ls1(y)
        return x + self.ls2(self.mlp(self.norm2(x))), attn


def init_vit_weights(module: nn.Module) -> None:
    """ViT/MAE initialisation: Xavier-uniform linears with zero bias, unit LayerNorms (use with ``apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
