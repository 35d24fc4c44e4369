"""BrainLM (Caro et al., ICLR 2024), the paper's design on any atlas with region coordinates.

Each region's series is cut into patches of ``patch`` TRs; a patch is a token (a linear projection of its
values) plus a spatial embedding of the region's MNI xyz (``Linear(3 → D)``) and a fixed sin-cos embedding of
its time index. Tokens are region-major (``r·P + t``), a CLS token leads, a pre-norm ViT encodes and a light
decoder reconstructs hidden patches (masked at random or in the future; MSE on hidden patches only).
"""

from __future__ import annotations

import torch
from torch import nn

from brainfm_cli.errors import BrainfmError
from brainfm_cli.layers import Block, init_vit_weights, sincos_1d
from brainfm_cli.masking import gather_tokens
from brainfm_cli.masking.random import TokenMask, future_mask, random_mask
from brainfm_cli.models._mae import MaskedAutoencoder
from brainfm_cli.models._space import atlas_coordinates
from brainfm_cli.models.base import BrainModel, Encoded
from brainfm_cli.models.card import ModelCard
from brainfm_cli.models.objective import Objective


class BrainLM(MaskedAutoencoder, BrainModel):
    poolings = ("cls", "mean", "tokens")
    default_pooling = "cls"
    region_tokens = True  # token r·P + t is region r's time patch t
    forecast_method = "future_masking"

    def __init__(self, card: ModelCard, coords):
        super().__init__(card)
        a, space = card.architecture, card.input
        D, Dd = int(a["embed_dim"]), int(a["decoder_dim"])
        self.patch = int(space.patch)
        if space.seq_len % self.patch:
            raise ValueError(f"sequence length {space.seq_len} is not a multiple of the patch {self.patch}")
        self.n_regions = space.n_regions
        eps = float(a.get("norm_eps", 1e-6))
        self.register_buffer("coords", torch.as_tensor(coords, dtype=torch.float32).reshape(-1, 3))
        # MNI mm enter the spatial map divided by a fixed length (a reparametrisation of the same linear map):
        # raw mm (|xyz| ~ 50) make the spatial code ~15x the patch code and drown the signal
        self.coord_scale = float(a.get("coord_scale", 1.0))
        # xyz: Linear(3 -> D) of the coordinates (the authors'); fourier: Linear of multi-frequency sin-cos of the
        # scaled coordinates; +learned: a free vector per region on top (region identity beyond 3 dimensions)
        self.spatial = str(a.get("spatial_embedding", "xyz"))
        kinds = {"xyz", "learned", "xyz+learned", "fourier", "fourier+learned"}
        if self.spatial not in kinds:
            raise ValueError(f"spatial_embedding must be one of {sorted(kinds)}, got {self.spatial!r}")
        self.n_freq = int(a.get("fourier_frequencies", 6))
        n_in = 3 if self.spatial.startswith("xyz") else 6 * self.n_freq
        # the sin-cos time code is multiplied by time_scale (1 = the paper's unit code)
        self.time_scale = float(a.get("time_scale", 1.0))
        # the sin-cos base: 10000 leaves most frequencies constant over ~10 patches (adjacent codes ~0.94 alike)
        self.time_base = float(a.get("time_base", 10000.0))
        # decoder_attention visible: hidden tokens read only CLS and the visible tokens (their mask tokens are alike
        # and otherwise soak up the attention); "all" is MAE's decoder
        self.decoder_attention = str(a.get("decoder_attention", "all"))
        self.patch_embed = nn.Linear(self.patch, D)
        self.xyz_embed = nn.Linear(n_in, D) if self.spatial != "learned" else None
        learned = self.spatial.endswith("learned")
        self.region_embed = nn.Parameter(torch.zeros(self.n_regions, D)) if learned else None
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.blocks = nn.ModuleList(Block(D, int(a["num_heads"]), float(a.get("mlp_ratio", 4.0)), norm_eps=eps)
                                    for _ in range(int(a["depth"])))
        self.norm = nn.LayerNorm(D, eps=eps)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.decoder_xyz = nn.Linear(n_in, Dd) if self.spatial != "learned" else None
        self.decoder_region_embed = nn.Parameter(torch.zeros(self.n_regions, Dd)) if learned else None
        self.decoder_blocks = nn.ModuleList(Block(Dd, int(a["decoder_heads"]), float(a.get("mlp_ratio", 4.0)),
                                                  norm_eps=eps) for _ in range(int(a["decoder_depth"])))
        self.decoder_norm = nn.LayerNorm(Dd, eps=eps)
        self.decoder_pred = nn.Sequential(nn.Linear(Dd, Dd // 2), nn.LeakyReLU(0.1), nn.Linear(Dd // 2, self.patch))
        self.apply(init_vit_weights)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.init_query_keys()
        if learned:
            nn.init.trunc_normal_(self.region_embed, std=0.02)
            nn.init.trunc_normal_(self.decoder_region_embed, std=0.02)
        # start from the mean prediction: a random head predicts noise of SD ~0.7, and the fastest way to remove
        # it is to make the network input-independent (collapse to the mean, from which it does not recover)
        nn.init.zeros_(self.decoder_pred[-1].weight)

    @classmethod
    def from_card(cls, card: ModelCard, coords=None) -> "BrainLM":
        return cls(card, atlas_coordinates(card, coords))

    @classmethod
    def pretraining_objective(cls, model: "BrainLM", options: dict) -> "MaskedReconstruction":
        return MaskedReconstruction(model, options)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, R, T]`` → ``[B, R·P, patch]`` (region-major)."""
        B, R, T = x.shape
        if T % self.patch:
            raise BrainfmError(f"{self.card.name} needs a length that is a multiple of {self.patch} TRs, got {T}",
                               fix=f"crop or pad the input to a multiple of {self.patch}")
        return x.reshape(B, R * (T // self.patch), self.patch)

    def _coordinate_features(self) -> torch.Tensor:
        c = self.coords / self.coord_scale
        if self.spatial.startswith("xyz"):
            return c
        # periods 4, 2, 1, 1/2, ... scaled units (200, 100, 50, 25, ... mm at coord_scale 50)
        freqs = 2.0 ** torch.arange(self.n_freq, device=c.device, dtype=c.dtype) * (torch.pi / 2)
        ang = c[:, :, None] * freqs  # [R, 3, F]
        return torch.cat([ang.sin(), ang.cos()], dim=-1).reshape(c.shape[0], -1)

    def _positions(self, proj: nn.Linear | None, region: torch.Tensor | None, dim: int, n_patches: int) -> torch.Tensor:
        space = 0
        if proj is not None:
            space = proj(self._coordinate_features())
        if region is not None:
            space = space + region
        space = space[:, None, :]  # [R, 1, D]
        time = sincos_1d(dim, n_patches, self.time_base).to(device=space.device, dtype=space.dtype)[None]  # [1, P, D]
        return (space + self.time_scale * time).reshape(-1, dim)  # [R·P, D]

    def positions(self, n: int) -> tuple[torch.Tensor, None]:
        """Spatial embedding of each token's region plus sin-cos of its time patch; the CLS token has none."""
        return self._positions(self.xyz_embed, self.region_embed, self.cls_token.shape[-1], n // self.n_regions), None

    def decoder_positions(self, n: int) -> tuple[torch.Tensor, None]:
        return self._positions(self.decoder_xyz, self.decoder_region_embed, self.mask_token.shape[-1],
                               n // self.n_regions), None

    def token_times(self, n_tokens: int) -> torch.Tensor:
        """The time patch of each token (region-major ``r·P + t``)."""
        return torch.arange(n_tokens) % (n_tokens // self.n_regions)

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, R, T]`` → patch tokens ``[B, R·P, D]`` (no positions yet)."""
        self.check_input(x)
        return self.patch_embed(self.patchify(x))

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + R·P, D]`` (CLS first); ``mask [B, R, P]`` or ``[B, R·P]`` (True = padded or missing) keeps
        those tokens out of attention (and, through ``encode``, out of mean pooling)."""
        hidden = None if mask is None else mask.reshape(x.shape[0], -1).to(x.device)
        return self.encode_patches(self.embed_patches(x), absent=hidden)

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + K, D]``: the encoder on the tokens ``keep [B, K]`` only (masked reconstruction); kept tokens
        in ``absent [B, R·P]`` are read by no other token."""
        return self.encode_patches(self.embed_patches(x), keep, absent=absent)

    def padding_mask(self, valid: list[int], length: int, absent: torch.Tensor | None = None) -> torch.Tensor | None:
        """``[B, R, P]`` True for patches that lie entirely in the padding or belong to an absent region."""
        padded_runs = not all(v == length for v in valid)
        has_absent = absent is not None and bool(absent.any())
        if not (padded_runs or has_absent):
            return None
        starts = torch.arange(0, length, self.patch)
        out = (starts[None, :] >= torch.as_tensor(valid)[:, None])[:, None, :].expand(-1, self.n_regions, -1)
        return out | absent.to(torch.bool)[:, :, None] if has_absent else out

    def is_forecast_parameter(self, name: str) -> bool:
        return name.startswith(("decoder", "mask_token"))

    def forecast(self, context: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """The paper's forecasting: the context followed by ``horizon`` hidden samples (whole time patches), the
        decoder's values for them ``[B, R, horizon]``."""
        spec = self.card.forecast
        if not spec:
            raise BrainfmError(f"{self.card.name} has no forecast horizon", fix="make a forecaster with 'brainfm "
                               "forecast fit' (or call enable_forecasting)")
        B, R, C = context.shape
        H = int(spec["horizon"])
        x = torch.cat([context, context.new_zeros(B, R, H)], dim=-1)
        P = x.shape[-1] // self.patch
        tm = future_mask(B, R, P, H // self.patch)
        gone = self.token_absent(absent, P)
        pred = self.reconstruct(x, tm.keep.to(x.device), None if gone is None else gone.to(x.device))
        return pred.reshape(B, R, C + H)[..., C:]

    def reconstruct(self, x: torch.Tensor, keep: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the visible tokens ``keep`` and predict all patches ``[B, R·P, patch]``; tokens in
        ``absent [B, R·P]`` (no data) are read by no other token, in the encoder or the decoder."""
        n_tokens = self.n_regions * (x.shape[-1] // self.patch)
        return self.forward_head(self.forward_visible(x, keep, absent), keep, n_tokens, absent)

    def value_mask(self, batch: int, length: int, ratio: float, generator: torch.Generator
                   ) -> tuple[TokenMask, torch.Tensor]:
        """Patches hidden at random as in training (``ratio`` of the tokens): the token mask, and ``[B, R, T]``
        True for every value it hides."""
        tm = random_mask(batch, self.n_regions * (length // self.patch), ratio, generator)
        return tm, tm.bool().repeat_interleave(self.patch, dim=1).reshape(batch, self.n_regions, length)

    def reconstruct_values(self, x: torch.Tensor, tm: TokenMask, absent: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction of every value ``[B, R, T]`` from the tokens ``tm`` leaves visible (regions ``absent
        [B, R]`` unread)."""
        tokens = self.token_absent(absent, x.shape[-1] // self.patch)
        return self.reconstruct(x, tm.keep.to(x.device), None if tokens is None else tokens.to(x.device)).reshape(x.shape)


class MaskedReconstruction(Objective):
    """BrainLM's objective: hide patches at random (``mask_ratio``) or in the future (``future_patches``),
    reconstruct them with the decoder, MSE on hidden patches that hold data (padding excluded)."""

    family = "BrainLM"
    # brainfm's recipe (the paper gives none): a peak of 3e-3 decaying to a tenth. On small corpora the model sits on
    # the mean-prediction plateau until enough learning rate has accumulated; 1e-3 decaying to 1e-6 never left it
    recipe = {"lr": 3e-3, "start_lr": 0.0, "min_lr": 3e-4, "warmup": 0.05, "weight_decay": 0.05,
              "final_weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 1.0}
    defaults = {"mask_ratio": 0.75, "future_patches": 0, "future_probability": 0.0}

    def forward(self, x, valid, info, absent=None):
        model: BrainLM = self.model
        B, R, T = x.shape
        P = T // model.patch
        o = self.options
        gone = model.token_absent(absent, P)  # [B, R·P] tokens of regions without data, or None
        use_future = o["future_patches"] and float(torch.rand((), generator=info.generator)) < o["future_probability"]
        if use_future:
            tm = future_mask(B, R, P, int(o["future_patches"]))
        else:  # tokens without data sort last: hidden (never scored), so the visible budget goes to data
            noise = torch.rand(B, R * P, generator=info.generator)
            tm = random_mask(B, R * P, float(o["mask_ratio"]), noise=noise if gone is None else noise + gone.cpu())
        keep, masked = tm.keep.to(x.device), tm.masked.to(x.device)
        pred = model.reconstruct(x, keep, gone)
        target = model.patchify(x)
        data = (torch.arange(P, device=x.device) * model.patch < valid[:, None]).repeat(1, R)  # [B, R·P]
        if gone is not None:
            data = data & ~gone
        loss = masked_patch_loss(pred, target, masked, data)
        return loss, {"loss": float(loss.detach())}


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                      data: torch.Tensor | None = None) -> torch.Tensor:
    """MSE over the hidden patches ``masked [B, M]`` only, ignoring patches that are padding (``data`` False)."""
    err = (gather_tokens(pred, masked) - gather_tokens(target, masked)).pow(2).mean(-1)
    if data is None:
        return err.mean()
    w = torch.gather(data, 1, masked).to(err.dtype)
    return (err * w).sum() / w.sum().clamp_min(1)

