"""BrainLM's released ViT-MAE models (``vitmae_111M``, ``vitmae_650M``): the authors' geometry exactly.

The ``[424 regions, 200 TRs]`` input (A424 order) is re-ordered by the regions' Y coordinate (stable sort),
divided by 5.6430855, repeated to 3 channels and padded with −1 to a square image (432² for patch 16,
434² for patch 14). A ``Conv2d`` patch embedding, fixed 2-D sin-cos positions, a CLS token, pre-LN ViT layers
and a final layer norm follow (Hugging Face's ViT-MAE). Only 351 of the 729 patches (111M) carry signal; the
rest are padding, as in the authors' design.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from brainfm_cli.errors import BrainfmError
from brainfm_cli.layers import Block, init_vit_weights, sincos_2d
from brainfm_cli.masking.random import TokenMask, random_mask
from brainfm_cli.models._mae import MaskedAutoencoder
from brainfm_cli.models._space import read_coordinates
from brainfm_cli.models.base import BrainModel
from brainfm_cli.models.card import ModelCard
from brainfm_cli.models.checkpoint import Checkpoint, strip_prefix
from brainfm_cli.models.objective import Objective

SCALE = 5.6430855  # the authors' tutorial divides the scaled recordings by this before the model
PAD_VALUE = -1.0


class BrainLMViTMAE(MaskedAutoencoder, BrainModel):
    poolings = ("cls", "mean", "tokens")
    default_pooling = "cls"

    def __init__(self, card: ModelCard, coords):
        super().__init__(card)
        a, space = card.architecture, card.input
        D, p, size = int(a["embed_dim"]), int(a["patch_size"]), int(a["image_size"])
        self.patch, self.size, self.channels = p, size, int(a.get("num_channels", 3))
        self.grid = size // p
        if size % p or size < max(space.n_regions, space.seq_len):
            raise ValueError(f"image {size} does not fit {space.n_regions}×{space.seq_len} in patches of {p}")
        self.pad_rows = (size - space.n_regions) // 2
        self.pad_cols = (size - space.seq_len) // 2
        # the authors divide their recordings by 5.6430855; a model trained by brainfm on its own normalised data
        # may take them as they are (value_scale 1)
        self.value_scale = float(a.get("value_scale", SCALE))
        eps = float(a.get("norm_eps", 1e-12))
        coords = torch.as_tensor(coords, dtype=torch.float64).reshape(-1, 3)
        self.register_buffer("order", torch.sort(coords[:, 1], stable=True).indices, persistent=False)
        self.patch_embed = nn.Conv2d(self.channels, D, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("pos_embed", sincos_2d(D, self.grid, self.grid, cls_token=True)[None])
        self.blocks = nn.ModuleList(Block(D, int(a["num_heads"]), float(a["mlp_ratio"]), norm_eps=eps)
                                    for _ in range(int(a["depth"])))
        self.norm = nn.LayerNorm(D, eps=eps)
        Dd = int(a["decoder_dim"])
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.register_buffer("decoder_pos_embed", sincos_2d(Dd, self.grid, self.grid, cls_token=True)[None])
        self.decoder_blocks = nn.ModuleList(Block(Dd, int(a["decoder_heads"]), float(a["decoder_mlp_ratio"]),
                                                  norm_eps=eps) for _ in range(int(a["decoder_depth"])))
        self.decoder_norm = nn.LayerNorm(Dd, eps=eps)
        self.decoder_pred = nn.Linear(Dd, p * p * self.channels)
        self.apply(init_vit_weights)
        w = self.patch_embed.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        # trained from scratch, the head starts at the mean prediction (a random head's noise is removed fastest
        # by ignoring the input: the collapse seen on small corpora); the authors' weights replace it
        nn.init.zeros_(self.decoder_pred.weight)
        self.init_query_keys()
        # decoder_attention same_time: a hidden patch reads the visible patches of its own time columns (else of its
        # own rows); "all" is the authors' MAE decoder
        self.decoder_attention = str(a.get("decoder_attention", "all"))

    @classmethod
    def from_card(cls, card: ModelCard, coords=None) -> "BrainLMViTMAE":
        """``coords``: the regions' MNI coordinates that order the rows (the card's own for a model trained on
        another atlas; the authors' A424 file for their weights)."""
        if coords is None and card.input.coordinates:
            coords = card.input.coordinates
        if coords is None:
            raise BrainfmError(f"{card.name} needs the A424 region coordinates to order its rows",
                               fix="pass coords= (an array [424, 3] or the authors' A424_Coordinates.dat), "
                               "or --coords FILE on the command line")
        return cls(card, read_coordinates(coords, card.input.n_regions))

    def token_times(self, n_tokens: int) -> torch.Tensor:
        """An image patch's column: the block of TRs it covers (raster order)."""
        return torch.arange(n_tokens) % self.grid

    def token_rows(self, n_tokens: int) -> torch.Tensor:
        """An image patch's row: the block of Y-sorted regions it covers."""
        return torch.arange(n_tokens) // self.grid

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """The authors' preprocessing: Y-sort, scale, 3 channels, −1 padding → ``[B, C, size, size]``."""
        self.check_input(x)
        if x.shape[2] != self.card.input.seq_len:
            raise BrainfmError(f"{self.card.name} takes {self.card.input.seq_len} time points, got {x.shape[2]}",
                               fix="window the run to the model's length")
        img = (x[:, self.order, :] / self.value_scale).unsqueeze(1).expand(-1, self.channels, -1, -1)
        r, c = self.pad_rows, self.pad_cols
        extra_r = self.size - x.shape[1] - 2 * r
        extra_c = self.size - x.shape[2] - 2 * c
        return F.pad(img, (c, c + extra_c, r, r + extra_r), value=PAD_VALUE)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + N, D]`` after the final norm, CLS first (the released models have no padding mask)."""
        self.refuse_mask(mask)
        return self.encode_image(self.to_image(x))

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``[B, 1 + K, D]`` for the image patches in ``keep [B, K]`` only (masked reconstruction)."""
        return self.encode_image(self.to_image(x), keep)

    def encode_image(self, img: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The encoder on an already prepared ``[B, C, size, size]`` image (see ``to_image``)."""
        return self.encode_patches(self.patch_embed(img).flatten(2).transpose(1, 2), keep)

    @classmethod
    def adapt_to_atlas(cls, card: ModelCard, atlas, corpus: list[str]) -> tuple[ModelCard, dict]:
        """The released design on another atlas: its regions sorted by Y as rows, the square image the smallest
        multiple of the patch that holds regions × TRs (padded with −1 as the authors pad A424). A new model:
        the authors' weights stay tied to A424."""
        space = card.input
        if not space.coordinates:
            raise BrainfmError(f"{card.name} orders its image rows by the regions' Y coordinate, and atlas "
                               f"{atlas.name} gives none", fix="use an atlas with coordinates (or an --atlas-labels "
                               "TSV with x, y, z columns)")
        p = int(card.architecture["patch_size"])
        size = -(-max(space.n_regions, space.seq_len) // p) * p
        # what made the design learn on small corpora (as for BrainLM): the data as brainfm normalises it, not
        # divided by the authors' constant; a decoder whose hidden patches read the visible ones of their own time;
        # keys starting equal to queries. Values given with --arch win.
        learns = {"value_scale": 1.0, "decoder_attention": "same_time", "qk_init": "tied"}
        return card.with_architecture(**{**learns, **card.architecture, "image_size": size}), {}

    @classmethod
    def pretraining_objective(cls, model: "BrainLMViTMAE", options: dict) -> "PixelReconstruction":
        return PixelReconstruction(model, options)

    def future_columns(self, n_trs: int) -> list[int]:
        """Token columns the authors' ``predict_last`` mode hides to forecast the last ``n_trs`` TRs (a column is
        added when the first hidden TR is not patch-aligned)."""
        p, end = self.patch, self.pad_cols + self.card.input.seq_len
        patch_end = -(-end // p) * p
        start = end - n_trs
        n = (patch_end - start) // p + (1 if start % p else 0)
        return list(range(patch_end // p - n, patch_end // p))

    def patchify(self, img: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, N, p·p·C]`` in Hugging Face's (row, col, channel) pixel order."""
        B, C, _, _ = img.shape
        g, p = self.grid, self.patch
        return img.reshape(B, C, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(B, g * g, p * p * C)

    def value_pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The image row of each input region ``[R]`` (after the Y sort and padding) and column of each TR ``[T]``."""
        rows = torch.empty_like(self.order)
        rows[self.order] = torch.arange(len(self.order), device=self.order.device)
        return rows + self.pad_rows, torch.arange(self.card.input.seq_len, device=rows.device) + self.pad_cols

    def value_patches(self) -> torch.Tensor:
        """``[R, T]``: the image patch holding each value of the (unsorted) input."""
        rows, cols = self.value_pixels()
        return (rows[:, None] // self.patch) * self.grid + cols[None, :] // self.patch

    def value_mask(self, batch: int, length: int, ratio: float, generator: torch.Generator
                   ) -> tuple[TokenMask, torch.Tensor]:
        """Image patches hidden at random as in training (padding patches included, as the authors mask): the
        token mask, and ``[B, R, T]`` True for every input value in a hidden patch."""
        tm = random_mask(batch, self.grid ** 2, ratio, generator)
        patches = self.value_patches().cpu()
        return tm, torch.gather(tm.bool(), 1, patches.reshape(1, -1).expand(batch, -1)).reshape(batch, *patches.shape)

    def reconstruct_values(self, x: torch.Tensor, tm: TokenMask, absent: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction of every input value ``[B, R, T]`` (in the input's units) from the patches ``tm`` leaves
        visible: the channel mean of the decoder's pixels, un-sorted and rescaled."""
        keep = tm.keep.to(x.device)
        pred = self.forward_head(self.encode_image(self.to_image(x), keep), keep, self.grid ** 2)
        B, g, p = x.shape[0], self.grid, self.patch
        img = pred.view(B, g, g, p, p, self.channels).mean(-1).permute(0, 1, 3, 2, 4).reshape(B, g * p, g * p)
        rows, cols = self.value_pixels()
        return img[:, rows[:, None], cols[None, :]] * self.value_scale

    def signal_pixels(self) -> torch.Tensor:
        """``[N, p·p·C]`` True for pixels inside the 424×200 signal (the loss excludes padding)."""
        img = torch.zeros(1, self.channels, self.size, self.size, dtype=torch.bool)
        img[..., self.pad_rows:self.pad_rows + self.card.input.n_regions,
            self.pad_cols:self.pad_cols + self.card.input.seq_len] = True
        return self.patchify(img)[0]

    def convert_foreign(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """Hugging Face ``ViTMAEForPreTraining`` keys (``vit.*``, ``decoder.*``) → ours; q, k, v fused."""
        state = strip_prefix(ckpt.state, "module.")
        if ckpt.config:
            self._check_config(ckpt.config, ckpt)
        out: dict[str, torch.Tensor] = {}
        renames = {
            "vit.embeddings.cls_token": "cls_token",
            "vit.embeddings.position_embeddings": "pos_embed",
            "vit.embeddings.patch_embeddings.projection.weight": "patch_embed.weight",
            "vit.embeddings.patch_embeddings.projection.bias": "patch_embed.bias",
            "vit.layernorm.weight": "norm.weight", "vit.layernorm.bias": "norm.bias",
            "decoder.mask_token": "mask_token", "decoder.decoder_pos_embed": "decoder_pos_embed",
            "decoder.decoder_embed.weight": "decoder_embed.weight", "decoder.decoder_embed.bias": "decoder_embed.bias",
            "decoder.decoder_norm.weight": "decoder_norm.weight", "decoder.decoder_norm.bias": "decoder_norm.bias",
            "decoder.decoder_pred.weight": "decoder_pred.weight", "decoder.decoder_pred.bias": "decoder_pred.bias",
        }
        layer_parts = {
            "attention.output.dense": "attn.proj", "intermediate.dense": "mlp.fc1", "output.dense": "mlp.fc2",
            "layernorm_before": "norm1", "layernorm_after": "norm2",
        }
        qkv: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in state.items():
            if key in renames:
                out[renames[key]] = value
                continue
            for prefix, ours in (("vit.encoder.layer.", "blocks."), ("decoder.decoder_layers.", "decoder_blocks.")):
                if key.startswith(prefix):
                    index, _, rest = key[len(prefix):].partition(".")
                    base = f"{ours}{index}."
                    if rest.startswith("attention.attention."):
                        which, _, kind = rest[len("attention.attention."):].partition(".")
                        qkv.setdefault(f"{base}attn.qkv.{kind}", {})[which] = value
                    else:
                        part, _, kind = rest.rpartition(".")
                        out[base + layer_parts.get(part, part) + "." + kind] = value
                    break
            else:
                out[key] = value  # left as is: reported as unexpected by the key check
        for key, parts in qkv.items():
            if set(parts) == {"query", "key", "value"}:
                out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
            else:
                out[key + f" (only {sorted(parts)})"] = next(iter(parts.values()))
        return out

    def _check_config(self, config: dict, ckpt: Checkpoint) -> None:
        a = self.card.architecture
        pairs = {"hidden_size": a["embed_dim"], "num_hidden_layers": a["depth"], "num_attention_heads": a["num_heads"],
                 "patch_size": a["patch_size"], "image_size": a["image_size"]}
        def first(v):  # Hugging Face stores image_size as an int or a [height, width] list
            return int(v[0] if isinstance(v, (list, tuple)) else v)

        wrong = {k: (config[k], v) for k, v in pairs.items() if k in config and first(config[k]) != int(v)}
        if wrong:
            detail = ", ".join(f"{k} {got} ≠ {want}" for k, (got, want) in wrong.items())
            raise BrainfmError(f"config.json describes another architecture than {self.card.name} ({detail})",
                               path=ckpt.path.parent / "config.json",
                               fix="use --model brainlm-vitmae-111m or brainlm-vitmae-650m to match the weights")


class PixelReconstruction(Objective):
    """The released models' objective: hide patches (at random over all 729/961, padding included, or the
    columns covering the last TRs), reconstruct pixels; MSE over hidden pixels inside the 424×200 data area,
    on the channel mean (the authors' loss)."""

    family = "BrainLM ViT-MAE"
    # brainfm's recipe (the authors publish none): on four real participants 1e-4 never left the mean plateau in
    # 300 steps and 1e-3 did (held-out R² 0.22 at mask ratio 0.75, against 0.18 at 3e-3)
    recipe = {"lr": 1e-3, "start_lr": 0.0, "min_lr": 1e-6, "warmup": 0.05, "weight_decay": 0.05,
              "final_weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 1.0}
    defaults = {"mask_ratio": 0.75, "future_trs": 0, "future_probability": 0.0}

    def hidden_tokens(self, batch: int, generator: torch.Generator) -> TokenMask:
        model: BrainLMViTMAE = self.model
        n = model.grid ** 2
        o = self.options
        if o["future_trs"] and float(torch.rand((), generator=generator)) < o["future_probability"]:
            cols = torch.tensor(model.future_columns(int(o["future_trs"])))
            hidden = (torch.arange(n) % model.grid)[:, None].eq(cols[None]).any(1)
            idx = torch.arange(n)
            return TokenMask(idx[~hidden].expand(batch, -1).clone(), idx[hidden].expand(batch, -1).clone(), n)
        return random_mask(batch, n, float(o["mask_ratio"]), generator)

    def loss(self, x: torch.Tensor, tm: TokenMask, absent: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, channel-mean predictions ``[B, N, p²]``) for the hidden tokens of ``tm``; pixels of regions
        ``absent [B, R]`` (no data: zeros in the image, which mixes 16 regions per patch) do not count."""
        model: BrainLMViTMAE = self.model
        keep = tm.keep.to(x.device)
        img = model.to_image(x)
        pred = model.forward_head(model.encode_image(img, keep), keep, model.grid ** 2)
        B, N, _ = pred.shape
        p2 = model.patch ** 2
        pred = pred.view(B, N, p2, model.channels).mean(-1)
        target = model.patchify(img).view(B, N, p2, model.channels).mean(-1)
        weight = tm.bool().to(x.device)[:, :, None] & model.signal_pixels().to(x.device).view(N, p2, -1)[None, ..., 0]
        if absent is not None and bool(absent.any()):
            data = model.to_image((~absent.to(torch.bool))[:, :, None].expand(x.shape).to(x.dtype)) > 0
            weight = weight & model.patchify(data[:, :1]).view(B, N, p2)
        w = weight.to(pred.dtype)
        return ((pred - target) ** 2 * w).sum() / w.sum().clamp_min(1), pred

    def forward(self, x, valid, info, absent=None):
        loss, _ = self.loss(x, self.hidden_tokens(x.shape[0], info.generator), absent)
        return loss, {"loss": float(loss.detach())}
