"""SC-MBM, MinD-Vis stage A (Chen et al., CVPR 2023): sparse-coded masked brain modelling of voxel vectors.

One sample is one time-averaged vector of V voxels (``x [B, V, 1]``: a single time point). It is wrap-padded to
``L·16`` values by repeating its first voxels (the authors' rule adds 1–16, a whole patch when V is already a
multiple of 16), cut into L patches of 16 that a ``Conv1d(1, D, 16, stride 16)`` lifts to tokens, given fixed
1-D sin-cos positions and a CLS token, and encoded by pre-norm ViT blocks (LayerNorm eps 1e-5). A light decoder
reconstructs the voxels of hidden patches (random masking at 0.75, MSE on hidden patches only). Embedding: the
pretraining encoder with nothing hidden, tokens in patch order (the authors' code shuffles them even then).
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import torch
from torch import nn

from brainfm_cli.data.voxels import VoxelSet, check_voxel_set, read_voxel_set
from brainfm_cli.errors import BrainfmError
from brainfm_cli.layers import Block, init_vit_weights, sincos_1d
from brainfm_cli.masking import gather_tokens
from brainfm_cli.masking.random import TokenMask, random_mask
from brainfm_cli.models._mae import MaskedAutoencoder
from brainfm_cli.models.base import BrainModel
from brainfm_cli.models.card import ModelCard, require_keys
from brainfm_cli.models.checkpoint import Checkpoint, strip_prefix
from brainfm_cli.models.objective import Objective

log = logging.getLogger("brainfm.models")

# mlp_ratio 1.0 is the authors' code (config.py); the paper's "303M" would be ViT-L's 4.0
REQUIRED = ("embed_dim", "depth", "num_heads", "decoder_dim", "decoder_depth", "decoder_heads", "mlp_ratio",
            "patch_size", "norm_eps")


def resolve_architecture(arch: dict) -> dict:
    """The card's architecture, checked; the decoder's MLP ratio defaults to the encoder's."""
    require_keys(arch, REQUIRED, "SC-MBM")
    return {"decoder_mlp_ratio": arch["mlp_ratio"], **arch}


def default_patches(n_voxels: int, patch: int) -> int:
    """The authors' wrap padding always appends ``patch − V mod patch`` voxels (1 to ``patch``)."""
    return n_voxels // patch + 1


def cls_sincos(dim: int, n: int) -> torch.Tensor:
    """``[1, 1 + n, dim]``: a zero row for the CLS token, then MAE's 1-D sin-cos of positions 0 … n−1."""
    return torch.cat([torch.zeros(1, dim), sincos_1d(dim, n)], dim=0)[None]


class SCMBM(MaskedAutoencoder, BrainModel):
    """The MinD-Vis MAE for fMRI: encoder (embedding) and decoder (pretraining)."""

    poolings = ("cls", "mean", "tokens")
    default_pooling = "mean"
    forecast_method = None  # one sample is one time-averaged vector: there is no time axis to extend

    def __init__(self, card: ModelCard):
        super().__init__(card)
        a, space = card.architecture, card.input
        D, Dd, p = int(a["embed_dim"]), int(a["decoder_dim"]), int(a["patch_size"])
        self.patch, self.n_voxels, self.n_patches = p, int(space.n_regions), int(a["n_patches"])
        if not 0 < self.n_voxels <= self.n_patches * p:
            raise ValueError(f"{self.n_voxels} voxels do not fit {self.n_patches} patches of {p}")
        eps = float(a["norm_eps"])
        self.register_buffer("wrap", torch.arange(self.n_patches * p) % self.n_voxels, persistent=False)
        self.patch_embed = nn.Conv1d(1, D, kernel_size=p, stride=p)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_buffer("pos_embed", cls_sincos(D, self.n_patches))
        self.blocks = nn.ModuleList(Block(D, int(a["num_heads"]), float(a["mlp_ratio"]), qkv_bias=True, norm_eps=eps)
                                    for _ in range(int(a["depth"])))
        self.norm = nn.LayerNorm(D, eps=eps)
        self.decoder_embed = nn.Linear(D, Dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, Dd))
        self.register_buffer("decoder_pos_embed", cls_sincos(Dd, self.n_patches))
        self.decoder_blocks = nn.ModuleList(Block(Dd, int(a["decoder_heads"]), float(a["decoder_mlp_ratio"]),
                                                  qkv_bias=True, norm_eps=eps) for _ in range(int(a["decoder_depth"])))
        self.decoder_norm = nn.LayerNorm(Dd, eps=eps)
        self.decoder_pred = nn.Linear(Dd, p)
        self.apply(init_vit_weights)
        nn.init.normal_(self.patch_embed.weight, std=0.02)  # the authors' _init_weights overrides their xavier here
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        # trained from scratch, the head starts at the mean prediction: a random head's noise (R² −1.6 on held-out
        # data) is removed fastest by ignoring the input, the collapse BrainLM showed; the authors' weights replace it
        nn.init.zeros_(self.decoder_pred.weight)

    @classmethod
    def from_card(cls, card: ModelCard, voxels=None) -> "SCMBM":
        """``voxels``: the voxel set of the input (a ``VoxelSet`` or a voxel list file, e.g. from ``--roi-mask``),
        else the file the card's ``architecture.voxels`` names. A card that records its voxel set (a trained
        model) refuses any other; a card that does not (a new model, the authors' weights) takes it on."""
        arch = resolve_architecture(card.architecture)
        space = card.input
        if voxels is None and space.voxels is None and arch.get("voxels"):
            voxels = arch["voxels"]
        if voxels is not None:
            vs = voxels if isinstance(voxels, VoxelSet) else read_voxel_set(voxels)
            if space.atlas:
                raise BrainfmError(f"{card.name} takes {space.atlas} region vectors, not voxels",
                                   fix="drop --roi-mask/--roi-atlas, or use a voxel model (e.g. sc-mbm-voxels)")
            if space.voxels and space.voxels.get("sha256"):
                check_voxel_set(space.voxels, vs.names, card.name)
            else:
                note = {"note": space.voxels["note"]} if space.voxels and "note" in space.voxels else {}
                card = card.with_input(n_regions=vs.count, voxels={**vs.identity(), **note})
        V, p = card.input.n_regions, int(arch["patch_size"])
        if V <= 0:
            raise BrainfmError(f"{card.name} needs its voxel set", fix="embed: give --roi-mask FILE (or --roi-atlas "
                               "with --roi-labels); pretrain: --arch voxels=FOLDER/voxels.tsv from 'brainfm voxels'")
        arch["n_patches"] = L = int(arch.get("n_patches") or default_patches(V, p))
        if V > L * p:
            raise BrainfmError(f"{V} voxels do not fit {card.name}'s {L} patches of {p} ({L * p} values)",
                               fix="use a smaller ROI (the authors' weights take at most their checkpoint's voxel "
                               "count)")
        if V < (L - 1) * p:
            log.warning("%s: %d voxels are wrap-padded to %d values (%d copies)", card.name, V, L * p, L * p - V)
        card = replace(card.with_architecture(**arch), embedding={**card.embedding, "width": int(arch["embed_dim"])})
        return cls(card)

    @classmethod
    def card_for_checkpoint(cls, card: ModelCard, ckpt: Checkpoint) -> ModelCard:
        """Sizes read from the authors' tensors (width, depth, MLP width, patches, decoder); heads from their
        pickled config when present (advisory), else the card's."""
        state = _authors_state(ckpt)
        config = ckpt.state.get("config") if isinstance(ckpt.state.get("config"), dict) else {}
        a = resolve_architecture(card.architecture)
        found = {}
        if "pos_embed" in state and "patch_embed.proj.weight" in state:
            D = int(state["cls_token"].shape[-1]) if "cls_token" in state else int(state["pos_embed"].shape[-1])
            found.update(size="read from the checkpoint", embed_dim=D, depth=_count(state, "blocks"),
                         n_patches=int(state["pos_embed"].shape[1]) - 1,
                         patch_size=int(state["patch_embed.proj.weight"].shape[-1]))
            if "blocks.0.mlp.fc1.weight" in state:
                found["mlp_ratio"] = state["blocks.0.mlp.fc1.weight"].shape[0] / D
            if "decoder_embed.weight" in state:
                Dd = int(state["decoder_embed.weight"].shape[0])
                found.update(decoder_dim=Dd, decoder_depth=_count(state, "decoder_blocks"))
                if "decoder_blocks.0.mlp.fc1.weight" in state:
                    found["decoder_mlp_ratio"] = state["decoder_blocks.0.mlp.fc1.weight"].shape[0] / Dd
            for ours, theirs in (("num_heads", "num_heads"), ("decoder_heads", "decoder_num_heads")):
                if config.get(theirs):
                    found[ours] = int(config[theirs])
        for key in ("mlp_ratio", "decoder_mlp_ratio"):
            if key in found and float(found[key]) != float(a.get(key, found[key])):
                log.info("%s: the checkpoint's MLP ratio is %s (the card says %s); using the checkpoint's",
                         card.name, found[key], a.get(key))
        card = card.with_architecture(**{**a, **found})
        n_values = found.get("n_patches", 0) * found.get("patch_size", 16)
        space = card.input
        if space.n_regions and found.get("n_patches") and found["n_patches"] != default_patches(
                space.n_regions, found["patch_size"]):
            raise BrainfmError(f"these weights take {found['n_patches']} patches ({n_values} voxel values); "
                               f"{card.name} has {space.n_regions} inputs, which pad to "
                               f"{default_patches(space.n_regions, found['patch_size'])} patches", path=ckpt.path,
                               fix="use --model sc-mbm-mindvis (the authors' voxel models) with --roi-mask")
        if not space.n_regions and n_values:
            note = ("the authors' checkpoint does not record its voxels (their GOD/BOLD5000 voxel columns, "
                    f"padded to {n_values}): any voxel set of at most {n_values} voxels is wrap-padded to it")
            card = card.with_input(n_regions=n_values, voxels={"note": note})
        return card

    @classmethod
    def pretraining_objective(cls, model: "SCMBM", options: dict) -> "MaskedVoxelModelling":
        return MaskedVoxelModelling(model, options)

    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.n_voxels or x.shape[2] != 1:
            raise BrainfmError(f"{self.card.name} takes [batch, {self.n_voxels} voxels, 1] (one time-averaged "
                               f"vector per sample), got {list(x.shape)}",
                               fix="prepare the input with brainfm's preprocessing (one sample per window)")

    def padded(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` → ``[B, L·p]``: the first voxels repeated after the last (``np.pad(mode='wrap')``)."""
        return v[:, self.wrap]

    def patchify(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, V]`` → ``[B, L, p]`` (patch i = padded voxels ``p·i … p·i + p − 1``)."""
        return self.padded(v).reshape(v.shape[0], self.n_patches, self.patch)

    def voxel_weights(self) -> torch.Tensor:
        """``[L, p]``: 1 for real voxels, 0 for wrap-padding copies."""
        return (torch.arange(self.n_patches * self.patch, device=self.wrap.device) < self.n_voxels
                ).reshape(self.n_patches, self.patch).float()

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + L, D]`` after the final norm, CLS first, for ``x [B, V, 1]`` (SC-MBM has no padding mask)."""
        self.refuse_mask(mask)
        return self.forward_visible(x)

    def forward_visible(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + K, D]`` for the patches ``keep [B, K]`` only (all when None)."""
        self.check_input(x)
        return self.encode_patches(self.patch_embed(self.padded(x[..., 0])[:, None, :]).transpose(1, 2), keep)

    def reconstruct(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode the visible patches ``keep`` of ``x [B, V, 1]`` and predict every patch ``[B, L, p]``."""
        return self.forward_head(self.forward_visible(x, keep), keep, self.n_patches)

    def value_mask(self, batch: int, length: int, ratio: float, generator: torch.Generator
                   ) -> tuple[TokenMask, torch.Tensor]:
        """Patches hidden as in training: the token mask, and ``[B, V, 1]`` True for each voxel whose first copy
        lies in a hidden patch (wrap-padding copies are not scored)."""
        tm = random_mask(batch, self.n_patches, ratio, generator, keep_floor=True)
        return tm, tm.bool().repeat_interleave(self.patch, dim=1)[:, :self.n_voxels, None]

    def reconstruct_values(self, x: torch.Tensor, tm: TokenMask, absent: torch.Tensor | None = None) -> torch.Tensor:
        """The prediction of every voxel ``[B, V, 1]`` from the patches ``tm`` leaves visible (absent voxels are
        zeros in the input: a patch mixes 16 of them, so they cannot be hidden from attention)."""
        return self.reconstruct(x, tm.keep.to(x.device)).reshape(x.shape[0], -1)[:, :self.n_voxels, None]

    def convert_foreign(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """The authors' ``fmri_encoder.pth`` (``model``: MAEforFMRI keys) or a bare state dict → ours.

        Only ``patch_embed.proj`` is renamed; every LayerNorm is loaded (their stage-B loader with
        ``global_pool=True`` drops every key containing "norm": not reproduced). A file without the decoder
        (an encoder alone) keeps this model's decoder, with a warning.
        """
        state = {re.sub(r"^patch_embed\.proj\.", "patch_embed.", k): v for k, v in _authors_state(ckpt).items()}
        decoder = ("decoder_", "mask_token")
        if "pos_embed" in state and not any(k.startswith(decoder) for k in state):
            log.warning("%s holds no decoder: embedding works; pretraining would start from a new decoder",
                        ckpt.path.name)
            state.update({k: v for k, v in self.state_dict().items() if k.startswith(decoder)})
        return state


def _authors_state(ckpt: Checkpoint) -> dict:
    state = ckpt.state
    if isinstance(state.get("model"), dict):
        state = state["model"]
    return strip_prefix(state, "module.")


def _count(state: dict, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}\.(\d+)\.")
    return len({m.group(1) for k in state if (m := pattern.match(k))})


class MaskedVoxelModelling(Objective):
    """SC-MBM's objective: hide patches at random per sample (``mask_ratio``, the authors' rule: keep
    ``int(L·(1 − ratio))``), reconstruct their voxels, MSE over hidden patches only. Wrap-padding copies are
    left out of the loss (``padding_in_loss: true`` counts them, as the authors' code does)."""

    family = "SC-MBM"
    recipe = {"lr": 2.5e-4, "start_lr": 0.0, "min_lr": 0.0, "warmup": 40 / 500, "weight_decay": 0.05,
              "final_weight_decay": 0.05, "betas": (0.9, 0.95), "grad_clip": 0.8}
    defaults = {"mask_ratio": 0.75, "padding_in_loss": False}

    def __init__(self, model: SCMBM, options: dict):
        super().__init__(model, options)
        ratio = float(self.options["mask_ratio"])
        keep = int(model.n_patches * (1 - ratio))
        if not 0 < keep < model.n_patches:
            raise BrainfmError(f"mask ratio {ratio} leaves {keep} of {model.n_patches} patches visible",
                               fix="choose a ratio that hides some patches and keeps at least one (e.g. 0.75)")

    def forward(self, x, valid, info, absent=None):
        model: SCMBM = self.model
        model.check_input(x)
        v = x[..., 0]
        tm = random_mask(v.shape[0], model.n_patches, float(self.options["mask_ratio"]), info.generator,
                         keep_floor=True)
        keep, masked = tm.keep.to(x.device), tm.masked.to(x.device)
        pred = model.reconstruct(x, keep)
        weights = None if self.options["padding_in_loss"] else model.voxel_weights()
        if absent is not None and bool(absent.any()):  # voxels without data never count
            present = model.patchify((~absent.to(torch.bool)).to(v.dtype))
            weights = present if weights is None else present * weights
        loss = masked_voxel_loss(pred, model.patchify(v), masked, weights)
        return loss, {"loss": float(loss.detach())}


def masked_voxel_loss(pred: torch.Tensor, target: torch.Tensor, masked: torch.Tensor,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the voxels of hidden patches ``masked [B, M]``; ``weights [L, p]`` or ``[B, L, p]``
    (0 for padding copies and voxels without data) leaves voxels out. Without weights: the authors' mean over
    hidden patches of per-patch MSE."""
    err = (gather_tokens(pred, masked).float() - gather_tokens(target, masked).float()).pow(2)  # [B, M, p]
    if weights is None:
        return err.mean()
    w = weights[masked] if weights.ndim == 2 else gather_tokens(weights, masked)  # [B, M, p]
    return (err * w).sum() / w.sum().clamp_min(1)
