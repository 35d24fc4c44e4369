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
