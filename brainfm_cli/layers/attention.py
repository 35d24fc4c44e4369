"""Multi-head self-attention on ``scaled_dot_product_attention``, with an explicit path for attention maps.

Heads are laid out as in timm and I-JEPA: the fused ``qkv`` projection's output features are ordered
``[3, heads, head_dim]``, so authors' checkpoints with fused or separate q/k/v weights map onto it directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brainfm_cli.layers.config import use_fused_attn
from brainfm_cli.layers.linear import Linear


# CPU flash attention (AVX-512) runs head sizes below 16 on part-filled vectors: ×1.4 slower at 8 than at 16 for
# the same tokens. Zero columns added to q, k and v change no score and no output column (bench/bench_pretrain.py).
_CPU_MIN_HEAD = 16


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask, drop: float) -> torch.Tensor:
    d = q.shape[-1]
    if d >= _CPU_MIN_HEAD or q.device.type != "cpu" or torch.backends.cpu.get_cpu_capability() != "AVX512":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=drop)
    pad = (0, _CPU_MIN_HEAD - d)
    out = F.scaled_dot_product_attention(F.pad(q, pad), F.pad(k, pad), F.pad(v, pad), attn_mask=attn_mask,
                                         dropout_p=drop, scale=d ** -0.5)
    return out[..., :d]


class Attention(nn.Module):
    """Self-attention over ``[B, N, D]`` tokens; ``attn_mask`` is a bool mask (True = may attend) or additive.

    ``keys [B, M]`` (token indices) restricts keys and values to those tokens, with ``attn_mask`` then
    ``[B, 1, N, M]``: the same result as masking every other key out, for a ``M / N`` share of the attention's
    work (a decoder whose queries read only the visible tokens)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, return_attention: bool = False,
                keys: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if keys is not None:
            index = keys[:, None, :, None].expand(-1, self.num_heads, -1, self.head_dim)
            k, v = torch.gather(k, 2, index), torch.gather(v, 2, index)
        drop = self.attn_drop if self.training else 0.0
        attn = None
        if return_attention or not use_fused_attn():
            scores = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
                    else scores + attn_mask
            attn = scores.softmax(dim=-1)
            out = F.dropout(attn, drop, self.training) @ v
            if keys is not None and return_attention:  # back to [B, heads, N, N]: zero for the keys not read
                attn = attn.new_zeros(B, self.num_heads, N, N).scatter_(
                    3, keys[:, None, None, :].expand(-1, self.num_heads, N, -1), attn)
        else:
            out = _sdpa(q, k, v, attn_mask, drop)
        out = self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))
        return (out, attn) if return_attention else out
