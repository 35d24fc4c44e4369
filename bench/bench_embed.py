"""Embedding speed: brainfm's encoders vs an eager implementation of the same network, in the same run.

Run ``python bench/bench_embed.py [--models brainlm] [--rounds N]`` (or ``make bench``). For each model it builds
the published-size encoder with random weights, runs a batch in float32 on the CPU threads torch uses, and times
brainfm's forward (SDPA attention, oneDNN linears), a reference written here the way the authors' code computes it
(separate q/k/v projections, explicit softmax attention, ``F.linear``), a 4096² ``torch.matmul`` (BLAS) and the
same product through oneDNN with a prepacked weight, in interleaved rounds (bench/_common.py). It prints the
speed-up (median of per-round ratios), the max abs difference of the outputs, and the achieved FLOP rate as a
share of each matmul's rate in the same rounds. The speed-up over the eager reference depends on the machine's
BLAS (MKL here): where BLAS is slower than oneDNN (AMD EPYC) it is larger.

Each model is a *section*: a function returning ``Section(name, ours, reference, flops, batch, tokens)``; register
new sections in ``SECTIONS``.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PEAK_N, machine_line, matmul, median, ratio, rounds, share_of_peak  # noqa: E402


@dataclass
class Section:
    name: str
    ours: Callable[[], torch.Tensor]
    reference: Callable[[], torch.Tensor]
    flops: float  # multiply-adds × 2 of one forward of the batch
    batch: int
    tokens: int  # tokens per sample
    reference_note: str = ""


def onednn_matmul(n: int = PEAK_N):
    """The 4096² product through oneDNN with a prepacked weight (brainfm's inference path), or None."""
    if not torch.backends.mkldnn.is_available():
        return None
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    packed = torch.ops.mkldnn._reorder_linear_weight(b, None)
    return lambda: torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")


def vit_flops(batch: int, tokens: int, dim: int, depth: int, mlp_ratio: float) -> float:
    """Matmul FLOPs of a ViT encoder: projections (q, k, v, out, MLP) plus attention scores and mixing."""
    per_layer = 2 * tokens * dim * (4 * dim + 2 * mlp_ratio * dim) + 2 * 2 * tokens * tokens * dim
    return batch * depth * per_layer


def eager_block(blk, x: torch.Tensor) -> torch.Tensor:
    """One pre-norm ViT layer computed as Hugging Face's eager ViT-MAE does: separate q/k/v, explicit softmax,
    every projection through ``F.linear`` (PyTorch's BLAS path)."""
    attn = blk.attn
    B, N, C = x.shape
    H, hd = attn.num_heads, attn.head_dim
    h = blk.norm1(x)
    wq, wk, wv = attn.qkv.weight.chunk(3, 0)
    bq, bk, bv = attn.qkv.bias.chunk(3, 0)

    def heads(t):
        return t.view(B, N, H, hd).permute(0, 2, 1, 3)

    q, k, v = heads(F.linear(h, wq, bq)), heads(F.linear(h, wk, bk)), heads(F.linear(h, wv, bv))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hd)
    probs = torch.softmax(scores, dim=-1)
    ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).reshape(B, N, C)
    x = x + F.linear(ctx, attn.proj.weight, attn.proj.bias)
    h = F.gelu(F.linear(blk.norm2(x), blk.mlp.fc1.weight, blk.mlp.fc1.bias))
    return x + F.linear(h, blk.mlp.fc2.weight, blk.mlp.fc2.bias)


def brainlm_vitmae(batch: int) -> Section:
    from brainfm_cli.models import load

    torch.manual_seed(0)
    coords = torch.randn(424, 3).numpy()
    model = load("brainlm-vitmae-111m", pretrained=False, coords=coords)
    x = torch.randn(batch, 424, 200)

    @torch.inference_mode()
    def ours():
        return model.encode(x)["tokens"]

    @torch.inference_mode()
    def reference():
        tokens = model.patch_embed(model.to_image(x)).flatten(2).transpose(1, 2) + model.pos_embed[:, 1:]
        cls = (model.cls_token + model.pos_embed[:, :1]).expand(batch, -1, -1)
        h = torch.cat([cls, tokens], 1)
        for blk in model.blocks:
            h = eager_block(blk, h)
        return model.norm(h)[:, 1:]

    a = model.card.architecture
    n = model.grid ** 2 + 1
    conv = 2 * batch * model.grid ** 2 * a["embed_dim"] * 3 * model.patch ** 2
    return Section("BrainLM ViT-MAE 111M", ours, reference,
                   vit_flops(batch, n, a["embed_dim"], a["depth"], a["mlp_ratio"]) + conv, batch, n,
                   "authors' reference point: a median 14.2 s per batch of 8 on a 2-core machine (spec)")


def semantoks(batch: int) -> Section:
    """The published Brain-Semantoks encoder (457 regions, 9 networks, 45 tokens + CLS) against the authors' way:
    boolean region selection per network, SGConv kernel rebuilt with ``F.interpolate``, fused-qkv explicit
    attention, every projection through ``F.linear``."""
    from brainfm_cli.models import load

    torch.manual_seed(0)
    model = load("semantoks-ukb", pretrained=False)
    x = torch.randn(batch, 457, 100)
    ids = model.network_ids

    def sgconv_eager(conv, h):
        parts = [F.interpolate(k, scale_factor=2 ** max(0, i - 1), mode="nearest") * conv.multiplier ** (
            conv.scales - 1 - i) for i, k in enumerate(conv.kernel_list)]
        k = torch.cat(parts, dim=-1) / conv.kernel_norm  # [heads, C, L]
        heads, C, L = k.shape
        w = k.flip(-1).permute(1, 0, 2).reshape(C * heads, 1, L)
        y = F.conv1d(F.pad(h, list(conv.pad)), w, groups=C)
        skip = torch.einsum("bcl,hc->bchl", h, conv.D).reshape(h.shape[0], C * heads, -1)
        return y + skip

    def layer_eager(blk, h):
        B, N, C = h.shape
        a = blk.attn
        qkv = F.linear(blk.norm1(h), a.qkv.weight).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        probs = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(B, N, C)
        h = h + blk.ls1.gamma * F.linear(ctx, a.proj.weight, a.proj.bias)
        m = F.linear(F.gelu(F.linear(blk.norm2(h), blk.mlp.fc1.weight, blk.mlp.fc1.bias)), blk.mlp.fc2.weight,
                     blk.mlp.fc2.bias)
        return h + blk.ls2.gamma * m

    @torch.inference_mode()
    def ours():
        return model.forward_features(x)

    @torch.inference_mode()
    def reference():
        B = x.shape[0]
        patches = x.unfold(2, 20, 20).permute(0, 2, 1, 3)  # [B, P, R, 20]
        P = patches.shape[1]
        tokens = torch.zeros(B, model.n_networks, P, model.embed_dim)
        for n, tok in enumerate(model.tokenizers):
            block = patches[:, :, ids == n, :].reshape(B * P, -1, 20)
            local = tok.conv(block)
            glob = F.linear(sgconv_eager(tok.sgconv, block).permute(0, 2, 1), tok.proj.weight, tok.proj.bias)
            h = F.gelu(torch.cat([local, glob.permute(0, 2, 1)], dim=1)).mean(-1)
            tokens[:, n] = tok.norm(h).reshape(B, P, -1)
        pos = model.network_embed.weight[:, None] + model.temporal_embed[None]
        h = (tokens + pos).reshape(B, -1, model.embed_dim)
        h = torch.cat([model.cls_token.expand(B, -1, -1), h], dim=1)
        for blk in model.blocks:
            h = layer_eager(blk, h)
        return model.norm(h)

    a = model.card.architecture
    P, n = 5, 1 + model.n_networks * 5
    tok_flops = 0
    for tok in model.tokenizers:
        C, H, half = tok.sgconv.channels, tok.heads, tok.conv.out_channels
        tok_flops += 2 * batch * P * 20 * (half * C * tok.conv.kernel_size[0] + C * H * tok.sgconv.kernel_length
                                           + H * C * half)
    return Section("Brain-Semantoks (published, 457 regions)", ours, reference,
                   vit_flops(batch, n, a["embed_dim"], a["depth"], a["mlp_ratio"]) + tok_flops, batch, n,
                   "authors' reference point: about 3 s per batch of 8, float32, 2 CPU threads (issue)")


SECTIONS: dict[str, Callable[[int], Section]] = {"brainlm": brainlm_vitmae, "semantoks": semantoks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds after one warm-up (median)")
    args = parser.parse_args()
    print(machine_line())
    print(f"float32, batch {args.batch}; each round times eager, brainfm, a {PEAK_N}² torch.matmul (BLAS) and the "
          "same product through oneDNN with a prepacked weight")
    blas, mm_flops = matmul()
    dnn = onednn_matmul()
    for key in args.models.split(","):
        sec = SECTIONS[key](args.batch)
        outs = {}

        def keep(name, fn):
            return lambda: outs.__setitem__(name, fn())

        contenders = {"eager": keep("eager", sec.reference), "brainfm": keep("brainfm", sec.ours), "blas": blas}
        if dnn is not None:
            contenders["onednn"] = dnn
        t = rounds(contenders, args.rounds)
        diff = (outs["brainfm"].float() - outs["eager"].float()).abs().max().item()
        print(f"\n{sec.name}: {sec.tokens} tokens/sample, {sec.flops / 1e9:.0f} GFLOP per batch")
        for name, label in (("eager", "eager reference"), ("brainfm", "brainfm")):
            of_dnn = (f", {share_of_peak(sec.flops, t[name], t['onednn'], mm_flops):.0%} of oneDNN"
                      if "onednn" in t else "")
            print(f"  {label:16s} {median(t[name]):8.2f} s/batch  "
                  f"{share_of_peak(sec.flops, t[name], t['blas'], mm_flops):5.0%} of torch.matmul{of_dnn}")
        dnn_vs_blas = f"; oneDNN/BLAS matmul ×{ratio(t['blas'], t['onednn']):.2f}" if "onednn" in t else ""
        print(f"  speed-up ×{ratio(t['eager'], t['brainfm']):.2f} over eager (median of {args.rounds} rounds); "
              f"max |Δ| vs eager {diff:.2e}{dnn_vs_blas}")
        if sec.reference_note:
            print(f"  ({sec.reference_note})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
