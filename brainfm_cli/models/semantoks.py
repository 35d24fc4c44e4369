"""Brain-Semantoks (Gijsen, Schulz, Ritter, ICLR 2026): semantic network tokens and self-distillation.

The run ``[B, R, T]`` is cut into patches of ``patch`` TRs. For every network ``n`` (the regions whose network id
is ``n``, in ascending region order) and every patch, a semantic tokeniser turns the ``[C_n, patch]`` block into
one token: a ``Conv1d(C_n, D/2, 3)`` branch and a structured global convolution branch (``layers.SGConv`` with
``ceil((D/2)/C_n)`` kernels per region, then ``Linear → D/2``) are concatenated, passed through GELU, averaged
over the patch and layer-normalised. Tokens (network-major, ``n·P + p``) get a learnable network embedding and a
fixed sin-cos time embedding; a CLS token leads; pre-norm LayerScale blocks and a final LayerNorm follow.
Outputs: CLS, the ``N·P`` tokens, and ``cls_avg = [mean(tokens), CLS]`` (the authors' probe feature).

The network of each region is part of the model: a persistent buffer ``network_ids`` (and the card's
``architecture.networks``, run-length encoded), so brainfm checkpoints are self-contained. Any atlas whose regions
carry a network label works; regions without one are grouped by coarse anatomy (``unassigned-cortex``,
``unassigned-subcortex``, ``unassigned-cerebellum``) so that no region is dropped.

Masked tokens (``mask [B, N, P]``, True = hidden) become the learned ``mask_embedding`` before the positional
embeddings are added: the student's slice masks in training, and patches made only of zero padding when
``embed`` pads a short run. The authors pad short runs without a mask (the padding mask is brainfm's choice;
their forward supports it exactly). ``mean`` and ``cls_avg`` average all tokens, masked ones included, as the
authors' ``cls_avg`` does.
"""

from __future__ import annotations

import itertools
import math
import numbers
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainfm_cli.atlases import load_atlas
from brainfm_cli.errors import BrainfmError
from brainfm_cli.io.files import read_tsv
from brainfm_cli.layers import Block, Linear, sincos_1d
from brainfm_cli.layers.sgconv import SGConv
from brainfm_cli.masking.semantoks import slice_masks
from brainfm_cli.models.base import BrainModel, Encoded
from brainfm_cli.models.card import ModelCard, require_keys
from brainfm_cli.models.checkpoint import Checkpoint, strip_prefix
from brainfm_cli.models.objective import MomentumSchedule, Objective

REQUIRED = ("embed_dim", "depth", "num_heads", "mlp_ratio", "layer_scale", "norm_eps", "conv_kernel", "sgconv_kernel",
            "sgconv_scales", "sgconv_decay", "projection_hidden_dim", "projection_dim")
AUTHORS_ATLASES = ("schaefer400", "tian3", "buckner7")  # their tokeniser copies; only the first is ever used
UNASSIGNED = {"", "unassigned", "none", "n/a", "na", "nan", "unknown", "other", "undefined"}


def resolve_architecture(arch: dict) -> dict:
    """The card's architecture, checked (every key is card data)."""
    require_keys(arch, REQUIRED, "Brain-Semantoks")
    if int(arch["embed_dim"]) % 2:
        raise BrainfmError(f"Brain-Semantoks needs an even width (two tokeniser branches), got {arch['embed_dim']}",
                           fix="choose an even embed_dim")
    return dict(arch)


# --- networks ---------------------------------------------------------------------------------------------

def coarse_anatomy(label: str | None) -> str:
    """``cortex``, ``cerebellum`` or ``subcortex`` from an atlas's anatomical label (Seitzman: cortexL, thalamus…)."""
    text = (label or "").lower()
    if "cerebell" in text:
        return "cerebellum"
    if "cort" in text and "subcort" not in text:
        return "cortex"
    return "subcortex" if text else ""


def group_networks(networks: list, anatomy: list | None = None) -> tuple[list[int], list[str]]:
    """Per-region network labels → consecutive ids and their names.

    Integer labels keep their sorted order (the authors' maps); text labels are numbered in order of first
    appearance. Regions without a network form groups by coarse anatomy, numbered after the networks.
    """
    labels = [None if n is None or (isinstance(n, float) and math.isnan(n)) else n for n in networks]
    if labels and all(isinstance(n, numbers.Integral) or (isinstance(n, float) and float(n).is_integer())
                      for n in labels):
        order = sorted({int(n) for n in labels})
        index = {v: i for i, v in enumerate(order)}
        return [index[int(n)] for n in labels], [str(v) for v in order]
    text = ["" if n is None else str(n).strip() for n in labels]
    keys = []
    for i, t in enumerate(text):
        if t.lower() in UNASSIGNED:
            where = coarse_anatomy(anatomy[i]) if anatomy is not None else ""
            keys.append((1, "unassigned" + (f"-{where}" if where else "")))
        else:
            keys.append((0, t))
    names = [k for k in dict.fromkeys(keys) if k[0] == 0] + [k for k in dict.fromkeys(keys) if k[0] == 1]
    index = {k: i for i, k in enumerate(names)}
    return [index[k] for k in keys], [k[1] for k in names]


def network_runs(ids: list[int]) -> list[list[int]]:
    """Run-length encoding ``[[id, count], …]`` in region order (how cards store the grouping)."""
    return [[int(k), len(list(v))] for k, v in itertools.groupby(ids)]


def expand_runs(runs) -> list[int]:
    try:
        return [int(k) for k, n in runs for _ in range(int(n))]
    except (TypeError, ValueError):
        raise BrainfmError("architecture.networks must be [[network id, count], …] runs, a labels TSV with a "
                           "'network' column, or 'atlas'",
                           fix="see models/semantoks-ukb.yaml for the run form") from None


def _networks_from_tsv(path: Path) -> tuple[list, list | None]:
    table = read_tsv(path)
    if "network" not in table.columns:
        raise BrainfmError(f"the labels TSV has no 'network' column (has {list(table.columns)})", path=path,
                           fix="add a network label per region (blank for regions without one)")
    if "index" in table.columns:
        table = table.sort_values("index", kind="stable")
    nets = [None if v != v else v for v in table["network"].tolist()]
    anatomy = [str(a) for a in table["anatomy"]] if "anatomy" in table.columns else None
    return nets, anatomy


def resolve_networks(card: ModelCard, networks=None) -> tuple[list[int], list[str]]:
    """Network id per region (and names) from ``networks`` (labels or a labels TSV), else the card."""
    n_regions = card.input.n_regions
    names = None
    spec = networks if networks is not None else (card.architecture.get("networks") or "atlas")
    if isinstance(spec, (str, Path)) and str(spec) != "atlas":
        ids, names = group_networks(*_networks_from_tsv(Path(spec)))
    elif isinstance(spec, (str, Path)):
        if not card.input.atlas:
            where = card.input.atlas_description or "its atlas"
            raise BrainfmError(f"{card.name} needs the network of each region ({where})",
                               fix="set architecture.networks in the card, or pass networks= (labels per region or a "
                               "labels TSV with a 'network' column)")
        atlas = load_atlas(card.input.atlas)
        if atlas.networks is None:
            raise BrainfmError(f"atlas {atlas.name} has no network labels; Brain-Semantoks tokenises per network",
                               fix="use an atlas with networks (e.g. seitzman300), or give networks= explicitly")
        ids, names = group_networks(atlas.networks, atlas.anatomy)
    elif networks is not None:
        ids, names = group_networks(list(networks))
    else:
        ids = expand_runs(spec)
        names = card.architecture.get("network_names")
    if len(ids) != n_regions:
        raise BrainfmError(f"{len(ids)} network labels for {n_regions} regions", fix="give one network per region")
    n = max(ids) + 1
    if sorted(set(ids)) != list(range(n)):
        raise BrainfmError(f"network ids must be 0…{n - 1} with every network present", fix="renumber the networks")
    names = list(names) if names and len(names) == n else [str(i) for i in range(n)]
    return ids, names


# --- modules ----------------------------------------------------------------------------------------------

class SemanticTokenizer(nn.Module):
    """One network's ``[M, C, patch]`` blocks → ``[M, D]`` tokens (conv branch ∥ SGConv branch, GELU, mean, LN)."""

    def __init__(self, channels: int, dim: int, conv_kernel: int = 3, sgconv_kernel: int = 4, sgconv_scales: int = 3,
                 sgconv_decay=(2.0, 2.0), eps: float = 1e-5):
        super().__init__()
        half = dim // 2
        self.conv = nn.Conv1d(channels, half, conv_kernel, padding="same")
        self.heads = math.ceil(half / channels)
        self.sgconv = SGConv(channels, self.heads, sgconv_kernel, sgconv_scales, tuple(sgconv_decay))
        self.proj = Linear(self.heads * channels, half)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.conv(x).transpose(1, 2)  # [M, patch, D/2]
        glob = self.proj(self.sgconv(x).transpose(1, 2))  # [M, patch, D/2]
        return self.norm(F.gelu(torch.cat([local, glob], dim=-1)).mean(dim=1))


class ProjectionHead(nn.Module):
    """The self-distillation head: ``Linear(D, hidden) → GELU → Linear(hidden, out)``, L2-normalised."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, out)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(F.gelu(self.fc1(x))), dim=-1, eps=1e-12)


class Semantoks(BrainModel):
    """The Brain-Semantoks encoder (student and EMA teacher are both this class)."""

    poolings = ("cls", "mean", "tokens", "cls_avg")
    default_pooling = "cls_avg"

    def __init__(self, card: ModelCard, networks=None):
        arch = resolve_architecture(card.architecture)
        ids, names = resolve_networks(card.with_architecture(**arch), networks)
        card = card.with_architecture(**{**arch, "networks": network_runs(ids), "network_names": names})
        super().__init__(card)
        space = card.input
        D = int(arch["embed_dim"])
        self.patch = int(space.patch or 20)
        if space.seq_len % self.patch:
            raise ValueError(f"sequence length {space.seq_len} is not a multiple of the patch {self.patch}")
        self.n_regions, self.n_patches = space.n_regions, space.seq_len // self.patch
        self.network_names = names
        self.n_networks = len(names)
        counts = [ids.count(n) for n in range(self.n_networks)]
        eps = float(arch["norm_eps"])
        self.register_buffer("network_ids", torch.tensor(ids, dtype=torch.long))
        self.tokenizers = nn.ModuleList(
            SemanticTokenizer(c, D, int(arch["conv_kernel"]), int(arch["sgconv_kernel"]), int(arch["sgconv_scales"]),
                              arch["sgconv_decay"], eps) for c in counts)
        self.mask_embedding = nn.Parameter(torch.empty(1, D).normal_(std=0.02))
        self.cls_token = nn.Parameter(torch.empty(1, 1, D).normal_(std=0.02))
        self.network_embed = nn.Embedding(self.n_networks, D)
        nn.init.normal_(self.network_embed.weight, std=0.02)
        self.register_buffer("temporal_embed", sincos_1d(D, self.n_patches))
        self.blocks = nn.ModuleList(
            Block(D, int(arch["num_heads"]), float(arch["mlp_ratio"]), qkv_bias=False, proj_bias=True, norm_eps=eps,
                  layer_scale=float(arch["layer_scale"])) for _ in range(int(arch["depth"])))
        self.norm = nn.LayerNorm(D, eps=eps)
        self._groups_cache: tuple | None = None

    @classmethod
    def from_card(cls, card: ModelCard, networks=None) -> "Semantoks":
        """``networks``: a network label per region (or a labels TSV with a ``network`` column); else the card's."""
        return cls(card, networks)

    @classmethod
    def adapt_to_atlas(cls, card: ModelCard, atlas, corpus: list[str]) -> tuple[ModelCard, dict]:
        """The network of each of the card's regions, from the atlas (or transferred from Seitzman-300)."""
        if atlas.networks is None:
            raise BrainfmError(f"atlas {atlas.name} has no network labels; Brain-Semantoks tokenises per network",
                               fix="add --transfer-networks (nearest Seitzman-300 network per region), or use an "
                               "atlas with networks")
        index = {label: i for i, label in enumerate(atlas.labels)}
        rows = [index[r] for r in card.input.regions]
        anatomy = [atlas.anatomy[i] for i in rows] if atlas.anatomy is not None else None
        ids, names = group_networks([atlas.networks[i] for i in rows], anatomy)
        return card.with_architecture(networks=network_runs(ids), network_names=names), {}

    @classmethod
    def pretraining_objective(cls, model: "Semantoks", options: dict) -> "SelfDistillation":
        return SelfDistillation(model, options)

    def groups(self) -> list[torch.Tensor]:
        """Region indices of each network (ascending), from the ``network_ids`` buffer (cached)."""
        ids = self.network_ids
        key = (ids._version, ids.data_ptr(), ids.device)
        if self._groups_cache is None or self._groups_cache[0] != key:
            groups = [torch.nonzero(ids == n).flatten() for n in range(self.n_networks)]
            if [len(g) for g in groups] != [t.sgconv.channels for t in self.tokenizers]:
                raise BrainfmError("the network ids do not match the tokenisers' region counts",
                                   fix="load weights made for this network grouping")
            self._groups_cache = (key, groups)
        return self._groups_cache[1]

    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, R, T]`` → ``[B, N, P, D]``: each (network, patch) block tokenised on its own."""
        B, R, T = x.shape
        P = T // self.patch
        patches = x.reshape(B, R, P, self.patch)
        out = []
        for idx, tok in zip(self.groups(), self.tokenizers):
            block = patches.index_select(1, idx).transpose(1, 2).reshape(B * P, len(idx), self.patch)
            out.append(tok(block).reshape(B, P, -1))
        return torch.stack(out, dim=1)

    def positions(self, n_patches: int) -> torch.Tensor:
        """``[N, P, D]``: network embedding + time sin-cos."""
        time = self.temporal_embed if n_patches == self.n_patches else \
            sincos_1d(self.temporal_embed.shape[1], n_patches).to(self.temporal_embed)
        return self.network_embed.weight[:, None, :] + time[None, :, :]

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, 1 + N·P, D]`` after the final norm (CLS first); ``mask [B, N, P]`` True → ``mask_embedding``."""
        self.check_input(x)
        B, _, T = x.shape
        if T % self.patch or T < self.patch:
            raise BrainfmError(f"{self.card.name} needs a length that is a multiple of {self.patch} TRs, got {T}",
                               fix=f"crop or pad the input to {self.card.input.seq_len} samples")
        P = T // self.patch
        tokens = self.tokenize(x)
        if mask is not None:
            mask = mask.reshape(B, self.n_networks, P).to(device=tokens.device, dtype=torch.bool)
            tokens = torch.where(mask[..., None], self.mask_embedding.to(tokens.dtype), tokens)
        tokens = (tokens + self.positions(P)).reshape(B, self.n_networks * P, -1)
        h = torch.cat([self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)

    def pool(self, out: Encoded, pooling: str) -> torch.Tensor:
        if pooling == "cls_avg":
            return torch.cat([out["tokens"].mean(dim=1), out["cls"]], dim=-1)
        return super().pool(out, pooling)

    def padding_mask(self, valid: list[int], length: int, absent: torch.Tensor | None = None) -> torch.Tensor | None:
        """``[B, N, P]`` True for patches that lie entirely in the zero padding of a short run, and for every patch
        of a network none of whose regions has data. Absent regions of a network with data stay zeros (the
        tokeniser mixes a network's regions, as the authors' region-drop augmentation zeroes them)."""
        starts = torch.arange(0, length - self.patch + 1, self.patch)
        gone = self.absent_networks(absent)
        if all(v >= length for v in valid) and gone is None:
            return None
        padded = (starts[None, :] >= torch.as_tensor(valid)[:, None])[:, None, :].expand(-1, self.n_networks, -1)
        return padded if gone is None else padded | gone[:, :, None]

    def absent_networks(self, absent: torch.Tensor | None) -> torch.Tensor | None:
        """``[B, N]`` True for networks none of whose regions has data (None when every network has some)."""
        if absent is None or not bool(absent.any()):
            return None
        absent = absent.to(torch.bool).cpu()
        gone = torch.stack([absent[:, idx.cpu()].all(dim=1) for idx in self.groups()], dim=1)
        return gone if bool(gone.any()) else None

    def convert_foreign(self, ckpt: Checkpoint) -> dict[str, torch.Tensor]:
        """The authors' ``checkpoint_epoch_*.pth`` (``model_state_dict`` → ``teacher_encoder.``) or a bare encoder.

        Their unused tokeniser copies (``network_tokenizers.tian3/buckner7``) and ``inter_network_transformer.norm``
        are dropped; any other key that does not map is reported by the key check. The network ids are this
        model's (the authors keep them in ``network_mapping.npz``, not in the checkpoint).
        """
        state = ckpt.state
        if isinstance(state.get("model_state_dict"), dict):
            state = state["model_state_dict"]
        state = strip_prefix(state, "module.")
        if any(k.startswith("teacher_encoder.") for k in state):
            teacher = {k: v for k, v in state.items() if k.startswith("teacher_encoder.")}
            state = strip_prefix(teacher, "teacher_encoder.")
        atlases = tuple(self.card.architecture.get("authors_atlases") or AUTHORS_ATLASES)
        out = authors_to_ours(strip_prefix(state, "module."), atlases[0], atlases[1:])
        out.setdefault("network_ids", self.network_ids)
        return out


def authors_to_ours(state: dict, used: str = AUTHORS_ATLASES[0], unused: tuple[str, ...] = AUTHORS_ATLASES[1:]) -> dict:
    """Rename the authors' encoder keys; drop their unused tokeniser copies and unused norm; keep the rest."""
    tokenizer = (("branches.0.", "conv."), ("branches.1.slconv.", "sgconv."), ("branches.1.projection.", "proj."))
    inter = (("mask_embedding", "mask_embedding"), ("cls_token", "cls_token"),
             ("temporal_pos_embedding", "temporal_embed"), ("network_learnable_pos_embedding.", "network_embed."),
             ("transformer_blocks.", "blocks."))
    out = {}
    for key, value in state.items():
        new = key
        if key.startswith("network_tokenizers."):
            _, atlas, rest = key.split(".", 2)
            if atlas in unused:
                continue
            if atlas == used:
                n, sub = rest.split(".", 1)
                for theirs, ours in tokenizer:
                    if sub.startswith(theirs):
                        sub = ours + sub[len(theirs):]
                        break
                new = f"tokenizers.{n}.{sub}"
        elif key.startswith("inter_network_transformer.norm."):
            continue
        elif key.startswith("inter_network_transformer."):
            rest = key[len("inter_network_transformer."):]
            for theirs, ours in inter:
                if rest.startswith(theirs):
                    rest = ours + rest[len(theirs):]
                    new = rest
                    break
            if new.startswith("blocks."):
                new = new.replace(".mlp.0.", ".mlp.fc1.").replace(".mlp.3.", ".mlp.fc2.")
        out[new] = value
    return out


# --- pretraining objective --------------------------------------------------------------------------------

def compression(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean cosine between teacher view i and student view j ≠ i (features L2-normalised, ``[V, m, p]``)."""
    sim = torch.einsum("imp,jmp->ij", teacher.float(), student.float()) / student.shape[1]
    V = sim.shape[0]
    off = ~torch.eye(V, dtype=torch.bool, device=sim.device)
    return sim[off].sum() / (V * V - V)


def coding_rate(z: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """``½·logdet(I + p/(m·ε)·ZᵀZ)·(p + m)/(p·m)`` for ``z [m, p]`` (the expansion term, via Cholesky)."""
    z = z.float()
    m, p = z.shape
    with torch.autocast(device_type=z.device.type, enabled=False):
        cov = z.t() @ z
        eye = torch.eye(p, device=z.device, dtype=z.dtype)
        half_logdet = torch.linalg.cholesky_ex(eye + p / (m * eps) * cov)[0].diagonal().log().sum()
    return half_logdet * (p + m) / (p * m)


def self_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, eps: float = 0.05, coeff: float = 1.0
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``−coeff·compression − mean_v R((s_v + t_v)/2)`` for ``[V, m, p]`` features; returns (loss, comp, R).

    The expansion is taken per view on the student–teacher average, as the authors' ``MCRLoss(expa_type=1)``
    does (the spec's "view-averaged features" is loose wording for this).
    """
    comp = compression(student, teacher)
    expansion = torch.stack([coding_rate((s + t) / 2, eps) for s, t in zip(student, teacher)]).mean()
    return -coeff * comp - expansion, comp, expansion


def masked_token_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``−mean_b (1/n_b) Σ_{masked t} cos(s_bt, t_bt)`` for ``[B, M, p]`` features and ``mask [B, M]``.

    Samples with nothing masked count in the mean with 0, as in the authors' loss.
    """
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    w = mask.to(cos.dtype)
    return -((cos * w).sum(1) / w.sum(1).clamp_min(1.0)).mean()


def ttr_weight(progress: float, weight: float = 0.5, fraction: float = 0.05) -> float:
    """The temporal regulariser's weight: cosine from ``weight`` to 0 over the first ``fraction`` of training."""
    if fraction <= 0 or progress >= fraction:
        return 0.0
    return weight * 0.5 * (1.0 + math.cos(math.pi * progress / fraction))


def two_crops(x: torch.Tensor, valid: torch.Tensor, length: int, g: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two crops of ``length`` per sample, starts uniform in ``[0, valid − length]`` (0 for short runs).

    Returns ``[2B, R, length]`` (view-major: rows ``v·B + b``) and each crop's number of data samples.
    """
    B, R, L = x.shape
    if L < length:
        raise ValueError(f"samples of {L} cannot give crops of {length}")
    crops, kept = [], []
    for _ in range(2):
        for b in range(B):
            n = int(valid[b])
            start = int(torch.randint(0, max(0, n - length) + 1, (1,), generator=g))
            crops.append(x[b, :, start:start + length])
            kept.append(min(length, max(0, n - start)))
    return torch.stack(crops), torch.tensor(kept, dtype=torch.long)


def augment(x: torch.Tensor, g: torch.Generator, region_drop: float = 0.1, time_drop: float = 0.3,
            scale: tuple[float, float] = (0.8, 1.2), noise: float = 0.1) -> torch.Tensor:
    """The authors' four augmentations per sample: zero a U(0, region_drop) fraction of regions (at least one),
    zero one block of U(0, time_drop)·T samples (at least one), scale by U(scale), add N(0, noise²)."""
    B, R, T = x.shape
    out = x.clone()
    for b in range(B):
        rs, rt, s = torch.rand(3, generator=g).tolist()
        n_regions = max(1, int(R * rs * region_drop))
        n_time = max(1, int(T * rt * time_drop))
        regions = torch.randperm(R, generator=g)[:n_regions].to(x.device)
        start = int(torch.randint(0, T - n_time + 1, (1,), generator=g))
        out[b, regions] = 0.0
        out[b, :, start:start + n_time] = 0.0
        out[b] *= scale[0] + (scale[1] - scale[0]) * s
    if noise:
        out += noise * torch.randn(out.shape, generator=g).to(out)
    return out


class SelfDistillation(Objective):
    """SimDINO-style self-distillation with coding-rate losses (the authors' ``SimDINOModel``).

    Per step: two crops of the card's length from each sample (``sample_length`` TRs drawn by the engine), each
    augmented; the EMA teacher (``teacher``, ``teacher_head``: copies the engine makes) encodes them unmasked,
    the student under slice masks on a Bernoulli (``masking_frequency``) subset of batches (the authors' per-batch coin), else unmasked. Losses: the CLS
    self-distillation loss on the L2-normalised head outputs; the temporal regulariser (tokens averaged over
    patches, the same loss on ``[B·N]`` network features) weighted by ``ttr_weight`` decaying to 0 over the first
    ``ttr_fraction`` of training; on masked batches ``mask_loss_weight`` × the masked-token loss. The teacher
    (encoder and head) follows the student with momentum ``1 − (1 − momentum)·(cos(π·step/total) + 1)/2``.

    brainfm choices: padded patches of short crops are masked for teacher and student (the authors pad
    without a mask) and excluded from the masked-token loss; weight decay spares biases and 1-D parameters
    (the engine's rule; the authors' ``AdamW(model.parameters())`` decays everything); the learning rate is the
    published 1.4e-3 at batch 512 (the authors scale ``7e-4·batch/256``; pass ``--lr`` for other batches).
    """

    family = "Brain-Semantoks"
    recipe = {"lr": 1.4e-3, "start_lr": 0.0, "min_lr": 0.0, "warmup": 0.03, "weight_decay": 0.05,
              "final_weight_decay": 0.3, "betas": (0.9, 0.999), "grad_clip": 1.0}
    defaults = {"sample_length": 180, "masking_frequency": 0.5, "mask_ratio": [0.65, 0.85], "mask_loss_weight": 0.5,
                "ttr_weight": 0.5, "ttr_fraction": 0.05, "momentum": 0.99, "coding_eps": 0.05, "coeff": 1.0,
                "region_drop": 0.1, "time_drop": 0.3, "scale": [0.8, 1.2], "noise": 0.1}

    teachers = {"teacher": "model", "teacher_head": "head"}

    def __init__(self, model: Semantoks, options: dict):
        super().__init__(model, options)
        if int(self.options["sample_length"]) < model.card.input.seq_len:
            raise BrainfmError(f"sample_length {self.options['sample_length']} is shorter than one crop "
                               f"({model.card.input.seq_len})", fix="give sample_length ≥ the model's length")
        a = model.card.architecture
        self.head = ProjectionHead(model.embed_dim, int(a["projection_hidden_dim"]), int(a["projection_dim"]))

    @property
    def sample_length(self) -> int:
        return int(self.options["sample_length"])

    def forward(self, x, valid, info, absent=None):
        model: Semantoks = self.model
        o, g = self.options, info.generator
        B, L = x.shape[0], model.card.input.seq_len
        N, P = model.n_networks, L // model.patch
        views, kept = two_crops(x, valid, L, g)
        views = augment(views, g, float(o["region_drop"]), float(o["time_drop"]), tuple(o["scale"]), float(o["noise"]))
        pad = model.padding_mask(kept.tolist(), L, None if absent is None else absent.repeat(2, 1))
        pad = torch.zeros(2 * B, N, P, dtype=torch.bool) if pad is None else pad.clone()
        masking = float(torch.rand((), generator=g)) < float(o["masking_frequency"])
        hidden = slice_masks(2 * B, N, P, g, tuple(o["mask_ratio"])).mask if masking else torch.zeros_like(pad)
        pad, hidden = pad.to(x.device), hidden.to(x.device)

        with torch.no_grad():
            t = self.teacher.forward_features(views, pad if pad.any() else None)
            t_cls = self.teacher_head(t[:, 0]).reshape(2, B, -1)
        s = model.forward_features(views, (hidden | pad) if (masking or pad.any()) else None)
        s_cls = self.head(s[:, 0]).reshape(2, B, -1)
        eps, coeff = float(o["coding_eps"]), float(o["coeff"])
        cls_loss, comp, expansion = self_distillation_loss(s_cls, t_cls, eps, coeff)

        w = ttr_weight(info.progress, float(o["ttr_weight"]), float(o["ttr_fraction"]))
        ttr = torch.zeros((), device=x.device)
        if w > 0:
            with torch.no_grad():
                t_net = self.teacher_head(t[:, 1:].reshape(2 * B, N, P, -1).mean(2)).reshape(2, B * N, -1)
            s_net = self.head(s[:, 1:].reshape(2 * B, N, P, -1).mean(2)).reshape(2, B * N, -1)
            ttr = self_distillation_loss(s_net, t_net, eps, coeff)[0]

        masked = torch.zeros((), device=x.device)
        if masking and float(o["mask_loss_weight"]) > 0:
            with torch.no_grad():
                t_tok = self.teacher_head(t[:, 1:])
            masked = masked_token_loss(self.head(s[:, 1:]), t_tok, (hidden & ~pad).reshape(2 * B, -1))
        loss = cls_loss + w * ttr + float(o["mask_loss_weight"]) * masked
        loss = loss + 0.0 * model.mask_embedding.sum()  # keeps the parameter in the graph on unmasked steps (DDP)
        return loss, {"loss": float(loss.detach()), "cls_loss": float(cls_loss.detach()),
                      "compression": float(comp.detach()), "expansion": float(expansion.detach()),
                      "ttr_loss": float(ttr.detach()), "ttr_weight": w, "masked_loss": float(masked.detach()),
                      "masking": float(masking)}

    def momentum_schedule(self) -> MomentumSchedule:
        return MomentumSchedule("cosine", float(self.options["momentum"]), 1.0)

    def export_model(self) -> Semantoks:
        return self.teacher
