"""Structured global convolution (SGConv; Li et al., ICLR 2023), depthwise with several kernels per channel.

Each of ``channels`` input channels is convolved with ``heads`` kernels of length ``kernel_size·2^(scales−1)``.
A kernel is built from ``scales`` sub-kernels of ``kernel_size`` taps: sub-kernel ``i`` is upsampled (each tap
repeated) by ``2^max(0, i−1)`` and weighted by ``decay^(scales−1−i)``, so early taps carry more weight and later
ones cover longer spans; the concatenation is divided by ``kernel_norm``, the kernel's L2 norm over taps when the
layer was created — a buffer kept fixed afterwards (trained kernels are not re-normalised). The convolution
is a true one (kernel flipped), zero-padded to keep the length, plus a skip ``x·D``. Output channel
``c·heads + h`` holds kernel ``h`` of input channel ``c``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SGConv(nn.Module):
    """``[B, channels, L]`` → ``[B, channels·heads, L]``."""

    def __init__(self, channels: int, heads: int, kernel_size: int = 4, scales: int = 3,
                 decay: tuple[float, float] = (2.0, 2.0)):
        super().__init__()
        if decay[0] > decay[1]:
            raise ValueError(f"decay range {decay} must be increasing")
        self.channels, self.heads, self.scales = int(channels), int(heads), int(scales)
        self.kernel_length = kernel_size * 2 ** (scales - 1)
        left = (self.kernel_length - 1) // 2
        self.pad = (left, self.kernel_length - 1 - left)
        self.D = nn.Parameter(torch.randn(heads, channels))
        self.kernel_list = nn.ParameterList(nn.Parameter(torch.randn(heads, channels, kernel_size))
                                            for _ in range(scales))
        self.register_buffer("multiplier", torch.linspace(decay[0], decay[1], channels).view(1, channels, 1))
        self.register_buffer("kernel_norm", torch.ones(heads, channels, 1))
        self.register_buffer("kernel_norm_initialized", torch.tensor(False))
        self.fix_kernel_norm()

    def raw_kernel(self) -> torch.Tensor:
        """``[heads, channels, kernel_length]`` before normalisation."""
        parts = []
        for i, k in enumerate(self.kernel_list):
            up = 2 ** max(0, i - 1)
            parts.append((k.repeat_interleave(up, dim=-1) if up > 1 else k) * self.multiplier ** (self.scales - 1 - i))
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def fix_kernel_norm(self) -> None:
        """Store the current kernel's norm as the fixed normaliser (done once, at creation)."""
        self.kernel_norm.copy_(self.raw_kernel().norm(dim=-1, keepdim=True))
        self.kernel_norm_initialized.fill_(True)

    def kernel(self) -> torch.Tensor:
        """The normalised kernel ``[heads, channels, kernel_length]``."""
        if not bool(self.kernel_norm_initialized):  # weights saved before any forward pass by the authors' code
            self.fix_kernel_norm()
        return self.raw_kernel() / self.kernel_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, L = x.shape
        k = self.kernel()
        weight = k.flip(-1).transpose(0, 1).reshape(C * self.heads, 1, self.kernel_length)
        y = F.conv1d(F.pad(x, self.pad), weight.to(x.dtype), groups=C)
        skip = x[:, :, None, :] * self.D.t().to(x.dtype)[None, :, :, None]  # [B, C, heads, L]
        return y + skip.reshape(B, C * self.heads, L)
