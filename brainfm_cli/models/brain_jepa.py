"""Brain-JEPA (Dong, Li et al., NeurIPS 2024): gradient positioning and spatiotemporal masking.

Each region's series is cut into patches of 16 TRs (a ``(1, 16)`` convolution: one token per region and time
patch, index ``r·P + t``, no CLS token). Positions are ``[time sin-cos (D/2) | Linear(G)[r] min-max scaled to
[−1, 1] (D/2)]`` where G is the atlas's functional-gradient matrix (regions × 30, ``brainfm gradients``). A
pre-norm ViT encodes; a narrower predictor with its own positions and one mask token predicts the
layer-normalised tokens of an EMA target encoder at target positions (smooth-L1). ``embed`` uses the target
encoder, mean over tokens. The gradient matrix is a buffer of the model, so brainfm checkpoints carry it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainfm_cli.errors import BrainfmError
from brainfm_cli.data.corpus import read_corpus
from brainfm_cli.data.gradients import GradientRecipe, compute_gradients, load_gradients
from brainfm_cli.layers import Block, sincos_1d
from brainfm_cli.masking import gather_tokens
from brainfm_cli.masking.jepa import SpatiotemporalCollator
from brainfm_cli.models.base import BrainModel
from brainfm_cli.models.card import ModelCard, require_keys
from brainfm_cli.models.checkpoint import Checkpoint, strip_prefix
from brainfm_cli.models.objective import MomentumSchedule, Objective

REQUIRED = ("embed_dim", "depth", "num_heads", "predictor_dim", "predictor_depth", "mlp_ratio", "norm_eps",
            "gradient_dim")
LOSS_NORM_EPS = 1e-5  # the authors' F.layer_norm default on the targets (the model's norms use 1e-6)


def resolve_architecture(arch: dict) -> dict:
    """The card's architecture, checked, with the predictor's heads defaulting to the encoder's (the authors')."""
    require_keys(arch, REQUIRED, "Brain-JEPA")
    return {"predictor_heads": arch["num_heads"], **arch}


def time_table(half: int, n_regions: int, n_patches: int) -> torch.Tensor:
    """``[R·P, half]``: token ``r·P + t`` gets ``[sin(t·ω), cos(t·ω)]``, ``ω_k = 10000^(−k/(half/2))``."""
    return sincos_1d(half, n_patches).repeat(n_regions, 1)


class GradientPositions(nn.Module):
    """``P [R·P, D]``: the fixed time sin-cos (first D/2 channels), then ``Linear(G)`` per region, min-max
    scaled to [−1, 1] with the scalar min and max of the whole matrix (recomputed every forward)."""

    def __init__(self, dim: int, n_regions: int, n_patches: int, n_components: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"Brain-JEPA positions need a width divisible by 4, got {dim}")
        self.half, self.n_regions, self.n_patches = dim // 2, n_regions, n_patches
        self.proj = nn.Linear(n_components, self.half)
        self.register_buffer("time", time_table(self.half, n_regions, n_patches))

    def forward(self, gradients: torch.Tensor, n_patches: int | None = None) -> torch.Tensor:
        g = self.proj(gradients)  # [R, D/2]
        g = (g - g.min()) / (g.max() - g.min()).clamp_min(1e-12) * 2 - 1
        P = n_patches or self.n_patches
        time = self.time if P == self.n_patches else \
            time_table(self.half, self.n_regions, P).to(device=g.device, dtype=g.dtype)
        return torch.cat([time.to(g.dtype), g.repeat_interleave(P, dim=0)], dim=1)


def init_jepa_weights(module: nn.Module) -> None:
    """The authors' effective initialisation: every Linear/Conv weight N(0, 0.02) truncated, biases 0, LN 1/0."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2, b=2)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def read_gradients(source, n_regions: int) -> np.ndarray:
    """``[n_regions, C]`` from an array, brainfm's gradients TSV (``region`` column) or the authors' CSV."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise BrainfmError("gradient file not found", path=path, fix="check the --gradients path")
        return load_gradients(path, n_regions)
    arr = np.asarray(source.detach().cpu() if isinstance(source, torch.Tensor) else source, dtype=float)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]  # the authors' [1, R, 30] tensor
    if arr.ndim != 2 or arr.shape[0] != n_regions:
        raise BrainfmError(f"expected a gradient matrix [{n_regions}, components], got {list(arr.shape)}",
                           fix="one row per region of the model's atlas, in its order")
    if not np.isfinite(arr).all():
        raise BrainfmError("the gradient matrix has NaN or infinite values", fix="recompute it with 'brainfm gradients'")
    return arr


def _card_gradients(card: ModelCard) -> Path | None:
    """The gradient file the card names: an absolute path, beside the card, or among brainfm's shipped cards."""
    from brainfm_cli._resources import model_cards_dir

    name = card.architecture.get("gradients")
    if not name:
        return None
    path = Path(name)
    candidates = [path] if path.is_absolute() else \
        ([Path(card.path).parent / path] if card.path else []) + [Path.cwd() / path, model_cards_dir() / path]
    return next((p for p in candidates if p.is_file()), None)


class BrainJEPA(BrainModel):
    """The Brain-JEPA encoder (context and target encoders are both this class)."""

    poolings = ("mean", "tokens")
    default_pooling = "mean"
    has_cls = False
    region_tokens = True  # token r·P + t is region r's time patch t

    def __init__(self, card: ModelCard, gradients: np.ndarray | None = None):
        super().__init__(card)
        a, space = card.architecture, card.input
        D = int(a["embed_dim"])
        self.patch = int(space.patch or 16)
        if space.seq_len % self.patch:
            raise ValueError(f"sequence length {space.seq_len} is not a multiple of the patch {self.patch}")
        self.n_regions, self.n_patches = space.n_regions, space.seq_len // self.patch
        C = int(a["gradient_dim"])
        eps = float(a["norm_eps"])
        if gradients is not None and gradients.shape[1] != C:
            raise BrainfmError(f"the gradient matrix has {gradients.shape[1]} components; {card.name} uses {C}",
                               fix=f"compute {C} gradients (brainfm gradients --n-components {C}) or set gradient_dim")
        self.has_gradients = gradients is not None
        self.gradients_given = False  # passed by the user (not read from the card's file)
        self.register_buffer("gradients", torch.zeros(self.n_regions, C) if gradients is None
                             else torch.as_tensor(gradients, dtype=torch.float32))
        self.patch_embed = nn.Conv2d(1, D, kernel_size=(1, self.patch), stride=(1, self.patch))
        self.pos_embed = GradientPositions(D, self.n_regions, self.n_patches, C)
        self.blocks = nn.ModuleList(Block(D, int(a["num_heads"]), float(a["mlp_ratio"]), qkv_bias=True, norm_eps=eps)
                                    for _ in range(int(a["depth"])))
        self.norm = nn.LayerNorm(D, eps=eps)
        self.apply(init_jepa_weights)
        # patch_init_std: the authors' N(0, 0.02) makes a 16-sample patch's token ~0.08 against positions of ~1, so
        # an untrained encoder's tokens (and its EMA targets) are mostly position; a larger scale lets data count
        if a.get("patch_init_std") is not None:
            nn.init.trunc_normal_(self.patch_embed.weight, std=float(a["patch_init_std"]))

    @classmethod
    def from_card(cls, card: ModelCard, gradients=None) -> "BrainJEPA":
        """``gradients``: an array ``[regions, 30]`` or a CSV/TSV path; else the file the card names."""
        card = card.with_architecture(**resolve_architecture(card.architecture))
        if gradients is not None:
            model = cls(card, read_gradients(gradients, card.input.n_regions))
            model.gradients_given = True
            return model
        path = _card_gradients(card)
        return cls(card, read_gradients(path, card.input.n_regions) if path else None)

    @classmethod
    def adapt_to_atlas(cls, card: ModelCard, atlas, corpus: list[str]) -> tuple[ModelCard, dict]:
        """Functional gradients of the corpus itself (the card's shipped ones belong to another atlas): brainfm's
        gradients recipe on the training runs; the model carries them in its checkpoint."""
        runs, subs, regions, _files = read_corpus(corpus)
        order = [regions.index(r) for r in card.input.regions]
        C = int(resolve_architecture(card.architecture)["gradient_dim"])
        maps, _lam, _fc = compute_gradients([r[:, order] for r in runs], subs, GradientRecipe(n_components=C))
        card = card.with_architecture(gradients=None, gradients_source=(
            f"computed from the training corpus ({len(runs)} runs, {len(set(subs))} participants) with brainfm's "
            "gradients recipe"))
        return card, {"gradients": maps}

    @classmethod
    def pretraining_objective(cls, model: "BrainJEPA", options: dict) -> "JEPAObjective":
        return JEPAObjective(model, options)

    def _require_gradients(self) -> None:
        if not self.has_gradients:
            named = self.card.architecture.get("gradients")
            raise BrainfmError(f"{self.card.name} needs the gradient matrix of its atlas"
                               + (f" ('{named}' was not found)" if named else ""),
                               fix="pass --gradients FILE (the authors' gradient_mapping_450.csv for the published "
                               "model, or 'brainfm gradients' output), or gradients= in Python")

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, R·P, D]``: every token after the final norm (no CLS). Brain-JEPA pads nothing (full windows
        only); ``mask [B, R, P]`` marks the tokens of regions without data, which no token reads."""
        hidden = None if mask is None else mask.reshape(x.shape[0], -1).to(x.device)
        return self.forward_visible(x, absent=hidden)

    def padding_mask(self, valid: list[int], length: int, absent: torch.Tensor | None = None) -> torch.Tensor | None:
        """No padding (refused as in the base class); ``[B, R, P]`` for the tokens of absent regions."""
        super().padding_mask(valid, length)
        tokens = self.token_absent(absent, length // self.patch)
        return None if tokens is None else tokens.reshape(len(valid), self.n_regions, -1)

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor | None = None,
                        absent: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, K, D]`` after the final norm for the tokens in ``keep [B, K]`` (all ``R·P`` when None): the
        context encoder's view. Positions are added before the gather, so kept tokens keep their own positions.
        Tokens in ``absent [B, R·P]`` (regions without data) are read by no token.
        """
        self._require_gradients()
        self.check_input(x)
        B, R, T = x.shape
        if T % self.patch:
            raise BrainfmError(f"{self.card.name} needs a length that is a multiple of {self.patch} TRs, got {T}",
                               fix=f"crop the input to {self.card.input.seq_len} samples")
        w = self.patch_embed.weight
        tokens = F.linear(x.reshape(B, R * (T // self.patch), self.patch), w.reshape(w.shape[0], -1),
                          self.patch_embed.bias)
        tokens = tokens + self.pos_embed(self.gradients, T // self.patch)
        if keep is not None:
            tokens = gather_tokens(tokens, keep)
        attn_mask = None
        if absent is not None:
            attn_mask = ~(absent if keep is None else torch.gather(absent, 1, keep))[:, None, None, :]
        for blk in self.blocks:
            tokens = blk(tokens, attn_mask)
        return self.norm(tokens)

    def convert_foreign(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """The authors' ``jepa-*.pth.tar`` (``target_encoder`` for embedding) or a bare encoder state dict.

        Their gradient matrix is not in the checkpoint: this model's (from ``gradients=``) is added.
        """
        out = authors_to_ours(_encoder_state(ckpt.state), ENCODER_RENAMES)
        out.setdefault("gradients", self.gradients)
        return out

    def load_checkpoint(self, ckpt: Checkpoint) -> None:
        """Ours (which carries its gradient matrix) or the authors' (which needs ``gradients=``)."""
        if ckpt.card is None and "gradients" not in _encoder_state(ckpt.state):
            self._require_gradients()
        given = self.gradients.clone() if self.gradients_given else None
        super().load_checkpoint(ckpt)
        if given is not None and given.shape == self.gradients.shape and not torch.allclose(given, self.gradients):
            raise BrainfmError("these weights carry their own gradient matrix, which differs from the one given",
                               path=ckpt.path, fix="drop --gradients / gradients= (the checkpoint's is used)")
        self.has_gradients = True


def _encoder_state(state: dict) -> dict:
    """The encoder part of a container (``target_encoder``, else ``encoder``, else the dict), ``module.`` removed."""
    for part in ("target_encoder", "encoder"):
        if isinstance(state.get(part), dict):
            state = state[part]
            break
    return strip_prefix(state, "module.")


ENCODER_RENAMES = (("pos_embed_proj.emb_h", "pos_embed.time"),
                   ("pos_embed_proj.predictor_pos_embed_proj.", "pos_embed.proj."),
                   ("patch_embed.proj.", "patch_embed."))
PREDICTOR_RENAMES = (("predictor_2dpe_proj.emb_h", "pos_embed.time"),
                     ("predictor_2dpe_proj.predictor_pos_embed_proj.", "pos_embed.proj."),
                     ("predictor_embed.", "embed."), ("predictor_blocks.", "blocks."),
                     ("predictor_norm.", "norm."), ("predictor_proj.", "proj."))


def authors_to_ours(state: dict, renames) -> dict:
    """Rename the authors' key prefixes (``module.`` already stripped); other keys are kept as they are."""
    out = {}
    for key, value in state.items():
        for theirs, ours in renames:
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
                break
        out[key] = value
    return out


class JEPAPredictor(nn.Module):
    """Context tokens (→ width Dp, plus positions) followed by one mask token per target position; all attend
    jointly; the outputs at the targets are projected back to the encoder width D."""

    def __init__(self, embed_dim: int, dim: int, depth: int, num_heads: int, n_regions: int, n_patches: int,
                 n_components: int, mlp_ratio: float = 4.0, norm_eps: float = 1e-6):
        super().__init__()
        self.embed = nn.Linear(embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = GradientPositions(dim, n_regions, n_patches, n_components)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, qkv_bias=True, norm_eps=norm_eps)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.proj = nn.Linear(dim, embed_dim)
        self.apply(init_jepa_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                gradients: torch.Tensor, n_patches: int | None = None, absent: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``context [B, K, D]`` at ``context_idx [B, K]`` → predictions ``[B, M, D]`` at ``target_idx [B, M]``;
        tokens in ``absent [B, N]`` (regions without data) are read by no token."""
        pos = self.pos_embed(gradients, n_patches)  # [N, Dp]
        x = self.embed(context) + pos[context_idx]
        queries = self.mask_token + pos[target_idx]
        x = torch.cat([x, queries.to(x.dtype)], dim=1)
        attn_mask = None
        if absent is not None:
            attn_mask = ~torch.gather(absent, 1, torch.cat([context_idx, target_idx], dim=1))[:, None, None, :]
        for blk in self.blocks:
            x = blk(x, attn_mask)
        return self.proj(self.norm(x)[:, context.shape[1]:])


class JEPAObjective(Objective):
    """Context encoder + predictor against an EMA target encoder on spatiotemporal masks (smooth-L1).

    EMA momentum rises linearly from ``ema_start`` to ``ema_end`` over the optimiser steps and reaches
    ``ema_end`` at the last step (the spec's intent; the authors' scheduler counts micro-batches and so only
    reaches ≈ 0.9965). The mask options are the authors' collator scales (see ``masking.jepa``). Crops are
    full windows (short runs are refused), so every token is data, as in the authors' code. The target encoder
    (``target``, a copy of ``model`` made by the engine) is what ``embed`` uses.
    """

    family = "Brain-JEPA"
    recipe = {"lr": 1e-3, "start_lr": 5e-5, "min_lr": 1e-6, "warmup": 40 / 300, "weight_decay": 0.04,
              "final_weight_decay": 0.4, "betas": (0.9, 0.999), "grad_clip": 0.0}
    defaults = {"observation": [0.84, 1.0], "alpha_regions": [0.45, 0.6], "alpha_time": [0.2, 0.6],
                "edge_regions": [0.15, 0.3], "edge_time": [0.0, 0.4], "ema_start": 0.996, "ema_end": 1.0}
    teachers = {"target": "model"}

    def __init__(self, model: BrainJEPA, options: dict):
        super().__init__(model, options)
        if model.card.input.short_runs == "pad":
            raise BrainfmError(f"{model.card.name}: Brain-JEPA pretraining needs full-length crops",
                               fix="set short_runs: refuse in the model card")
        a = model.card.architecture
        self.predictor = JEPAPredictor(model.embed_dim, int(a["predictor_dim"]), int(a["predictor_depth"]),
                                       int(a["predictor_heads"]), model.n_regions, model.n_patches,
                                       int(a["gradient_dim"]), float(a["mlp_ratio"]), float(a["norm_eps"]))
        o = self.options
        self.collator = SpatiotemporalCollator(model.n_regions, model.n_patches, **{
            k: tuple(o[k]) for k in ("observation", "alpha_regions", "alpha_time", "edge_regions", "edge_time")})

    def predict(self, x: torch.Tensor, context_idx: torch.Tensor, target_idx: torch.Tensor,
                absent: torch.Tensor | None = None) -> torch.Tensor:
        """The predictor's output ``[B, M, D]`` from the context encoder's view of ``context_idx``."""
        model: BrainJEPA = self.model
        z = model.forward_visible(x, keep=context_idx, absent=absent)
        return self.predictor(z, context_idx, target_idx, model.gradients, x.shape[-1] // model.patch, absent)

    def targets(self, x: torch.Tensor, target_idx: torch.Tensor, absent: torch.Tensor | None = None) -> torch.Tensor:
        """Layer-normalised (no affine) target-encoder tokens at ``target_idx``."""
        with torch.no_grad():
            h = self.target.forward_visible(x, absent=absent)
            h = F.layer_norm(h, (h.shape[-1],), eps=LOSS_NORM_EPS)
            return gather_tokens(h, target_idx)

    def forward(self, x, valid, info, absent=None):
        masks = self.collator(x.shape[0], info.generator)
        ctx, tgt = masks.context.to(x.device), masks.targets.to(x.device)
        gone = self.model.token_absent(absent, x.shape[-1] // self.model.patch)
        gone = None if gone is None else gone.to(x.device)
        pred, target = self.predict(x, ctx, tgt, gone).float(), self.targets(x, tgt, gone).float()
        if gone is None:
            loss = F.smooth_l1_loss(pred, target)
        else:  # targets of regions without data do not count
            w = (~torch.gather(gone, 1, tgt)).to(pred.dtype)
            err = F.smooth_l1_loss(pred, target, reduction="none").mean(-1)  # [B, M]
            loss = (err * w).sum() / w.sum().clamp_min(1)
        return loss, {"loss": float(loss.detach()), "context_tokens": float(ctx.shape[1]),
                      "target_tokens": float(tgt.shape[1])}

    def momentum_schedule(self) -> MomentumSchedule:
        return MomentumSchedule("linear", float(self.options["ema_start"]), float(self.options["ema_end"]))

    def export_model(self) -> BrainJEPA:
        return self.target
