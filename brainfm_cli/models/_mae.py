"""The masked-autoencoder skeleton shared by BrainLM (the paper's design and the released ViT-MAE) and SC-MBM:
patch tokens plus positions, a CLS token placed after masking, a pre-norm ViT encoder, and a decoder that fills
hidden patches with a mask token and predicts every patch's values."""

from __future__ import annotations

import torch

from brainfm_cli.masking import gather_tokens


class MaskedAutoencoder:
    """Mixin for a ``BrainModel`` with ``cls_token``, ``blocks``, ``norm`` and the decoder's ``decoder_embed``,
    ``mask_token``, ``decoder_blocks``, ``decoder_norm``, ``decoder_pred``. Positions come from two hooks:
    ``positions(n)`` and ``decoder_positions(n)`` give ``([n, D] for the patch tokens, [D] for CLS or None)``;
    the default reads fixed ``pos_embed`` / ``decoder_pos_embed`` buffers ``[1, 1 + n, D]`` (CLS row first)."""

    def positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.pos_embed[0, 1:], self.pos_embed[0, :1]

    def decoder_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.decoder_pos_embed[0, 1:], self.decoder_pos_embed[0, :1]

    def token_rows(self, n_tokens: int) -> torch.Tensor:
        """Each token's place along the axis that is not time (its region; an image patch's row)."""
        return self.token_regions(n_tokens)

    def init_query_keys(self) -> None:
        """``qk_init: tied``: keys start equal to queries, so attention starts as similarity of positions (tokens of
        the same time attend to each other) instead of a random bilinear form that must be learnt from a tiny
        signal; ``independent`` (the default) leaves the usual initialisation."""
        if str(self.card.architecture.get("qk_init", "independent")) != "tied":
            return
        with torch.no_grad():
            for blk in [*self.blocks, *self.decoder_blocks]:
                w = blk.attn.qkv.weight
                w[w.shape[0] // 3: 2 * w.shape[0] // 3] = w[: w.shape[0] // 3]

    def decoder_reads(self, keep: torch.Tensor, n_tokens: int, device
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """What each decoder token may read: ``keys [B, 1 + K]`` (CLS and the visible tokens ``keep``, the only
        tokens any query reads, so attention runs over them alone) and ``mask [B, 1, 1 + N, 1 + K]`` over those
        keys; ``(None, None)``: every token reads all (MAE's decoder)."""
        mode = getattr(self, "decoder_attention", "all")
        if mode == "all":
            return None, None
        keys = torch.cat([torch.zeros_like(keep[:, :1]), keep + 1], dim=1).to(device)
        if mode == "visible":
            return keys, None
        seen = torch.zeros(keep.shape[0], 1 + n_tokens, dtype=torch.bool, device=device).scatter_(1, keys, True)
        time = torch.cat([torch.full((1,), -1, device=device), self.token_times(n_tokens).to(device)])
        # visible queries read every visible key; hidden ones the visible keys of their own time patch
        allowed = (time[None, :, None] == time[keys][:, None, :]) | seen[:, :, None]  # [B, 1 + N, 1 + K]
        # a hidden token whose time patch shows nothing (the future, when forecasting) reads its own region's
        # visible tokens instead: its history
        lonely = ~allowed[:, :, 1:].any(-1)  # [B, 1 + N]
        if bool(lonely[:, 1:].any()):
            region = torch.cat([torch.full((1,), -1, device=device), self.token_rows(n_tokens).to(device)])
            allowed |= lonely[:, :, None] & (region[None, :, None] == region[keys][:, None, :])
        allowed[:, :, 0] = True
        return keys, allowed[:, None]

    def encode_patches(self, tokens: torch.Tensor, keep: torch.Tensor | None = None,
                       attn_mask: torch.Tensor | None = None, absent: torch.Tensor | None = None) -> torch.Tensor:
        """Patch embeddings ``[B, N, D]`` → encoder output ``[B, 1 + K, D]`` (CLS first) for the patches in
        ``keep`` (all when None): positions, gather, CLS with its position, blocks, final norm. Tokens marked in
        ``absent [B, N]`` (no data) are read by no other token."""
        pos, cls_pos = self.positions(tokens.shape[1])
        tokens = tokens + pos
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        if absent is not None:
            hidden = absent if keep is None else torch.gather(absent, 1, keep)
            attn_mask = _and(attn_mask, readable(hidden))
        cls = self.cls_token if cls_pos is None else self.cls_token + cls_pos
        tokens = torch.cat([cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        for blk in self.blocks:
            tokens = blk(tokens, attn_mask)
        return self.norm(tokens)

    def forward_head(self, latent: torch.Tensor, keep: torch.Tensor, n_tokens: int,
                     absent: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder: predictions ``[B, n_tokens, patch values]`` for every patch, from the encoder output
        ``[B, 1 + K, D]`` of the patches in ``keep``; tokens in ``absent [B, N]`` are read by no other token."""
        y = self.decoder_embed(latent)
        full = self.mask_token.to(y.dtype).expand(y.shape[0], n_tokens, -1).clone()
        full.scatter_(1, keep.unsqueeze(-1).expand(-1, -1, y.shape[-1]), y[:, 1:])
        pos, cls_pos = self.decoder_positions(n_tokens)
        cls = y[:, :1] if cls_pos is None else y[:, :1] + cls_pos
        full = torch.cat([cls, full + pos], dim=1)
        keys, attn_mask = self.decoder_reads(keep, n_tokens, full.device)
        if absent is not None:
            ok = readable(absent)
            attn_mask = _and(attn_mask, ok if keys is None else torch.gather(ok[:, 0, 0], 1, keys)[:, None, None])
        for blk in self.decoder_blocks:
            full = blk(full, attn_mask, keys)
        return self.decoder_pred(self.decoder_norm(full))[:, 1:]


def readable(hidden: torch.Tensor) -> torch.Tensor:
    """``[B, 1, 1, 1 + N]`` attention mask over keys (CLS first, always readable) from ``hidden [B, N]``."""
    ok = torch.ones(hidden.shape[0], 1, dtype=torch.bool, device=hidden.device)
    return torch.cat([ok, ~hidden.to(torch.bool)], dim=1)[:, None, None, :]


def _and(mask: torch.Tensor | None, other: torch.Tensor) -> torch.Tensor:
    return other if mask is None else mask & other
