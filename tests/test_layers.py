"""Shared transformer blocks: fused and explicit attention agree, heads are laid out as timm/I-JEPA do."""

import math

import torch

from brainfm_cli.layers import Attention, Block, set_fused_attn, sincos_1d, sincos_2d, use_fused_attn


def test_fused_equals_explicit_with_and_without_mask():
    torch.manual_seed(0)
    attn = Attention(32, 4).eval()
    x = torch.randn(2, 7, 32)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 5:] = False
    assert use_fused_attn()
    fused = [attn(x), attn(x, attn_mask=mask)]
    set_fused_attn(False)
    try:
        slow = [attn(x), attn(x, attn_mask=mask)]
    finally:
        set_fused_attn(True)
    for a, b in zip(fused, slow):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fused[0][1], fused[1][1], atol=1e-4)  # the mask changes sample 1


def test_head_order_matches_a_per_head_computation():
    """qkv features are [3, heads, head_dim]: head h uses rows h·hd … (h+1)·hd of each of q, k, v."""
    torch.manual_seed(1)
    D, H = 24, 3
    hd = D // H
    attn = Attention(D, H).eval()
    x = torch.randn(1, 5, D)
    W, b = attn.qkv.weight, attn.qkv.bias
    heads = []
    for h in range(H):
        sl = lambda part: slice(part * D + h * hd, part * D + (h + 1) * hd)  # noqa: E731
        q, k, v = (x @ W[sl(p)].T + b[sl(p)] for p in range(3))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1)
        heads.append(a @ v)
    expected = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), expected, atol=1e-5, rtol=1e-5)


def test_attention_maps_are_distributions_and_the_block_output_is_unchanged():
    torch.manual_seed(2)
    blk = Block(16, 2, layer_scale=0.1).eval()
    x = torch.randn(2, 6, 16)
    y, maps = blk.forward_with_attention(x)
    assert maps.shape == (2, 2, 6, 6)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 6))
    torch.testing.assert_close(y, blk(x), atol=1e-6, rtol=1e-6)


def test_sincos_embeddings_match_the_mae_formulas():
    D = 8
    pos = torch.arange(5, dtype=torch.float64)
    omega = 1.0 / 10000 ** (torch.arange(D // 2, dtype=torch.float64) / (D / 2))
    expected = torch.cat([torch.sin(pos[:, None] * omega), torch.cos(pos[:, None] * omega)], 1).float()
    torch.testing.assert_close(sincos_1d(D, 5), expected)
    grid = sincos_2d(16, 3, 4, cls_token=True)
    assert grid.shape == (13, 16) and torch.all(grid[0] == 0)
    # raster order: token 1 + r·4 + c; first half encodes the column, second half the row
    r, c = 2, 3
    torch.testing.assert_close(grid[1 + r * 4 + c, :8], sincos_1d(8, torch.tensor([float(c)]))[0])
    torch.testing.assert_close(grid[1 + r * 4 + c, 8:], sincos_1d(8, torch.tensor([float(r)]))[0])


def test_onednn_inference_path_equals_f_linear_and_training_uses_f_linear():
    import torch.nn.functional as F

    from brainfm_cli.layers import Linear, Mlp, set_onednn

    torch.manual_seed(3)
    lin = Linear(48, 64)
    x = torch.randn(2, 5, 48)
    with torch.no_grad():
        want = F.linear(x, lin.weight, lin.bias)
        torch.testing.assert_close(lin(x), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lin.forward_fused(x, "gelu"), F.gelu(want), atol=1e-5, rtol=1e-5)
        lin.weight.add_(1.0)  # a changed weight is re-packed
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
    y = lin(x)
    assert y.requires_grad  # with gradients on, the autograd path is used
    mlp = Mlp(48, 96).eval()
    with torch.no_grad():
        fast = mlp(x)
        set_onednn(False)
        try:
            slow = mlp(x)
        finally:
            set_onednn(True)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    import copy

    twin = copy.deepcopy(mlp)  # after inference: the packed weights are not part of the module
    with torch.no_grad():
        twin.fc1.weight.mul_(2.0)
        assert not torch.allclose(twin(x), mlp(x))
        torch.testing.assert_close(mlp(x), fast)


def test_attention_over_listed_keys_equals_masking_every_other_key_out():
    """``keys`` runs attention over those tokens only: outputs, maps and gradients equal the full masked form."""
    torch.manual_seed(5)
    attn = Attention(32, 4)
    x = torch.randn(2, 9, 32, requires_grad=True)
    keys = torch.tensor([[0, 2, 3, 7], [0, 1, 5, 8]])
    mask = torch.rand(2, 1, 9, 4) > 0.4
    mask[..., 0] = True
    full = torch.zeros(2, 1, 9, 9, dtype=torch.bool).scatter_(3, keys[:, None, None].expand(-1, 1, 9, -1), mask)
    results = []
    for fused in (True, False):
        set_fused_attn(fused)
        try:
            for kwargs in ({"attn_mask": mask, "keys": keys}, {"attn_mask": full}):
                x.grad = None
                attn.zero_grad()
                out = attn(x, **kwargs)
                out.pow(2).sum().backward()
                results.append((out.detach(), x.grad.clone(), attn.qkv.weight.grad.clone()))
        finally:
            set_fused_attn(True)
    for listed, masked in (results[:2], results[2:]):
        for a, b in zip(listed, masked):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    maps = attn(x, attn_mask=mask, keys=keys, return_attention=True)[1]
    torch.testing.assert_close(maps, attn(x, attn_mask=full, return_attention=True)[1], atol=1e-6, rtol=1e-6)
    assert maps.shape == (2, 4, 9, 9) and not maps[0, :, :, 1].any()


def test_small_heads_give_the_same_attention_at_any_head_size():
    """Heads narrower than 16 run padded with zero columns on AVX-512 CPUs: the same values and gradients as the
    explicit computation."""
    torch.manual_seed(6)
    for dim, heads in ((16, 4), (24, 3), (64, 4)):
        attn = Attention(dim, heads)
        x = torch.randn(2, 11, dim, requires_grad=True)
        grads = []
        for fused in (True, False):
            set_fused_attn(fused)
            try:
                x.grad = None
                out = attn(x)
                out.sum().backward()
                grads.append((out.detach(), x.grad.clone()))
            finally:
                set_fused_attn(True)
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_packed_inference_weights_follow_a_fused_optimiser_step():
    """Fused AdamW updates weights without bumping their version counters; after ``weights_updated`` (which the
    engine calls after every step) inference uses the new weights, not the packed copy of the old ones."""
    import torch.nn.functional as F

    from brainfm_cli.engine.train import adamw
    from brainfm_cli.layers import Linear
    from brainfm_cli.layers.linear import weights_updated

    torch.manual_seed(7)
    lin = Linear(16, 8)
    x = torch.randn(3, 16)
    with torch.no_grad():
        lin(x)  # packs the weight (where oneDNN is available)
    opt = adamw([{"params": list(lin.parameters())}], torch.device("cpu"), lr=0.1, betas=(0.9, 0.99),
                weight_decay=0.0)
    lin(x).sum().backward()
    version = lin.weight._version
    opt.step()
    weights_updated()
    with torch.no_grad():
        torch.testing.assert_close(lin(x), F.linear(x, lin.weight, lin.bias), atol=1e-5, rtol=1e-5)
    assert lin.weight._version == version or opt.defaults.get("fused") is not True
