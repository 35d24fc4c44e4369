"""Fixed sine-cosine position embeddings (MAE / I-JEPA conventions), computed in float64 then cast.

``sincos_1d(D, pos)`` is ``[sin(pos·ω), cos(pos·ω)]`` with ``ω_k = 10000^(-k/(D/2))``, k < D/2.
``sincos_2d(D, rows, cols)`` puts the column (width) code in the first D/2 channels and the row code in the
last D/2, in raster order — MAE's ``get_2d_sincos_pos_embed`` layout.
"""

from __future__ import annotations

import torch


def sincos_1d(dim: int, positions: torch.Tensor | int, base: float = 10000.0) -> torch.Tensor:
    if dim % 2:
        raise ValueError(f"sin-cos embedding width must be even, got {dim}")
    pos = torch.arange(positions, dtype=torch.float64) if isinstance(positions, int) else positions.double()
    omega = 1.0 / base ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = pos.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, rows: int, cols: int, cls_token: bool = False) -> torch.Tensor:
    if dim % 4:
        raise ValueError(f"2-D sin-cos embedding width must be a multiple of 4, got {dim}")
    r, c = torch.meshgrid(torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64),
                          indexing="ij")
    emb = torch.cat([sincos_1d(dim // 2, c.reshape(-1)), sincos_1d(dim // 2, r.reshape(-1))], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb
