"""The masked-autoencoder skeleton shared by BrainLM's ViT-MAE and SC-MBM: patch tokens with fixed positions,
a CLS token placed after masking, a ViT encoder, and a decoder that fills hidden patches with a mask token."""

from __future__ import annotations

import torch

from brainfm_cli.masking import gather_tokens


class MaskedAutoencoder:
    """Mixin for a ``BrainModel`` with ``cls_token``, ``pos_embed [1, 1+N, D]`` (CLS row first), ``blocks``,
    ``norm`` and the decoder's ``decoder_embed``, ``mask_token``, ``decoder_pos_embed``, ``decoder_blocks``,
    ``decoder_norm``, ``decoder_pred``."""

    def encode_patches(self, tokens: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embeddings ``[B, N, D]`` → encoder output ``[B, 1 + K, D]`` (CLS first) for the patches in
        ``keep`` (all when None): positions, gather, CLS with its position, blocks, final norm."""
        tokens = tokens + self.pos_embed[:, 1:]
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.norm(tokens)

    def decode(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Predictions ``[B, N, patch values]`` for every patch, from the encoder output of ``keep``."""
        y = self.decoder_embed(latent)
        n = self.decoder_pos_embed.shape[1] - 1
        full = self.mask_token.to(y.dtype).expand(y.shape[0], n, -1).clone()
        full.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y[:, 1:])
        full = torch.cat([y[:, :1], full], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            full = blk(full)
        return self.decoder_pred(self.decoder_norm(full))[:, 1:]
