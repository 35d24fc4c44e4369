"""BrainLM: the paper design (patching, positions, masking, loss) and the released ViT-MAE geometry/import."""

import numpy as np
import pytest
import torch

from brainfm_cli.masking.random import future_mask, random_mask
from brainfm_cli.models import load
from brainfm_cli.models.brainlm import masked_patch_loss
from brainfm_cli.models.brainlm_vitmae import PAD_VALUE, SCALE
from conftest import TINY


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return load("brainlm", pretrained=False, architecture=TINY["brainlm"])


def test_tokens_are_region_major_patches_of_20(lm):
    x = torch.arange(2 * 300 * 200, dtype=torch.float32).reshape(2, 300, 200)
    patches = lm.patchify(x)
    assert patches.shape == (2, 3000, 20)
    torch.testing.assert_close(patches[1, 7 * 10 + 3], x[1, 7, 60:80])
    out = lm.encode(torch.randn(2, 300, 200))
    assert out["cls"].shape == (2, 32) and out["tokens"].shape == (2, 3000, 32)


def test_spatial_embedding_uses_each_regions_coordinates(lm):
    from brainfm_cli.atlases import load_atlas

    np.testing.assert_allclose(lm.coords.numpy(), load_atlas("seitzman300").region_coords(), atol=1e-4)
    pos = lm.positions(300 * 10)[0].reshape(300, 10, 32)
    # same region, different time: differ only by the time code; same time, different region: by xyz
    torch.testing.assert_close(pos[5, 3] - pos[5, 0], pos[9, 3] - pos[9, 0])


def test_padded_patches_do_not_influence_cls_or_mean(lm):
    x = torch.randn(1, 300, 200)
    mask = lm.padding_mask([150], 200)  # patches starting at ≥ 150 (i.e. 8 and 9) are padding
    assert mask.shape == (1, 300, 10) and mask[0, 0].tolist() == [False] * 8 + [True] * 2
    y = x.clone()
    y[..., 160:] = 100.0
    with torch.inference_mode():
        a, b = lm.encode(x, mask=mask), lm.encode(y, mask=mask)
        torch.testing.assert_close(a["cls"], b["cls"])
        torch.testing.assert_close(lm.pool(a, "mean"), lm.pool(b, "mean"))
        assert not torch.allclose(lm.encode(x)["cls"], lm.encode(y)["cls"])


def test_masking_is_seeded_and_has_the_requested_ratio():
    a = random_mask(4, 3000, 0.75, torch.Generator().manual_seed(3))
    b = random_mask(4, 3000, 0.75, torch.Generator().manual_seed(3))
    c = random_mask(4, 3000, 0.75, torch.Generator().manual_seed(4))
    assert torch.equal(a.masked, b.masked) and not torch.equal(a.masked, c.masked)
    assert a.masked.shape == (4, 2250) and a.keep.shape == (4, 750)
    assert torch.equal(a.bool().sum(1), torch.full((4,), 2250))
    f = future_mask(2, 3, 10, 2)
    assert f.masked[0].tolist() == [8, 9, 18, 19, 28, 29]


def test_loss_counts_only_hidden_patches_that_hold_data():
    pred = torch.zeros(1, 4, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]]])
    hidden = torch.tensor([[1, 3]])
    assert masked_patch_loss(pred, target, hidden).item() == pytest.approx((4 + 16) / 2)
    data = torch.tensor([[True, True, True, False]])
    assert masked_patch_loss(pred, target, hidden, data).item() == pytest.approx(4.0)


def test_reconstruction_shapes(lm):
    tm = random_mask(2, 3000, 0.75, torch.Generator().manual_seed(0))
    pred = lm.reconstruct(torch.randn(2, 300, 200), tm.keep)
    assert pred.shape == (2, 3000, 20)


# --- released ViT-MAE -------------------------------------------------------------------------------------

def _coords(seed=0):
    rng = np.random.default_rng(seed)
    c = rng.integers(-70, 70, (424, 3)).astype(float)
    c[10:20, 1] = 5.0  # ties in Y exercise the stable sort
    return c


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return load("brainlm-vitmae-111m", pretrained=False, coords=_coords(), architecture=TINY["brainlm-vitmae-111m"])


def test_vitmae_image_layout(vit):
    coords = _coords()
    x = torch.randn(1, 424, 200)
    img = vit.to_image(x)
    assert img.shape == (1, 3, 432, 432)
    order = np.argsort(coords[:, 1], kind="stable")
    expected = x[0, torch.as_tensor(order)] / SCALE
    torch.testing.assert_close(img[0, 2, 4:428, 116:316], expected)
    assert torch.all(img[..., :4, :] == PAD_VALUE) and torch.all(img[..., :, 316:] == PAD_VALUE)
    assert int(vit.signal_pixels().any(-1).sum()) == 351
    out = vit.encode(x)
    assert out["cls"].shape == (1, 32) and out["tokens"].shape == (1, 729, 32)


def test_vitmae_stable_sort_keeps_the_file_order_of_ties(vit):
    order = vit.order.tolist()
    tied = [i for i in order if 10 <= i < 20]
    assert tied == list(range(10, 20))


def _to_hf(state: dict) -> dict:
    """Our state dict in Hugging Face ViTMAEForPreTraining key names (q, k, v split)."""
    out = {}
    names = {"cls_token": "vit.embeddings.cls_token", "pos_embed": "vit.embeddings.position_embeddings",
             "patch_embed.weight": "vit.embeddings.patch_embeddings.projection.weight",
             "patch_embed.bias": "vit.embeddings.patch_embeddings.projection.bias",
             "norm.weight": "vit.layernorm.weight", "norm.bias": "vit.layernorm.bias",
             "mask_token": "decoder.mask_token", "decoder_pos_embed": "decoder.decoder_pos_embed"}
    parts = {"attn.proj": "attention.output.dense", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense",
             "norm1": "layernorm_before", "norm2": "layernorm_after"}
    for k, v in state.items():
        if k in names:
            out[names[k]] = v
        elif k.startswith(("blocks.", "decoder_blocks.")):
            head, i, rest = k.split(".", 2)
            base = ("vit.encoder.layer." if head == "blocks" else "decoder.decoder_layers.") + i + "."
            if rest.startswith("attn.qkv."):
                kind = rest.rsplit(".", 1)[1]
                for name, chunk in zip(("query", "key", "value"), v.chunk(3, dim=0)):
                    out[f"{base}attention.attention.{name}.{kind}"] = chunk
            else:
                part, kind = rest.rsplit(".", 1)
                out[base + parts[part] + "." + kind] = v
        else:
            out["decoder." + k] = v
    return out


def test_vitmae_imports_hugging_face_keys_exactly(vit, tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(5)
    with torch.no_grad():
        for p in vit.parameters():
            p.add_(0.01 * torch.randn_like(p))
    hf = _to_hf(vit.state_dict())
    assert "vit.encoder.layer.1.attention.attention.value.bias" in hf
    folder = tmp_path / "vitmae_111M"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in hf.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"hidden_size": 32, "num_hidden_layers": 2, "patch_size": 16}')
    again = load("brainlm-vitmae-111m", weights=folder, coords=_coords(), architecture=TINY["brainlm-vitmae-111m"])
    x = torch.randn(2, 424, 200)
    with torch.inference_mode():
        torch.testing.assert_close(again.encode(x)["tokens"], vit.encode(x)["tokens"], atol=0, rtol=0)
    (folder / "config.json").write_text('{"hidden_size": 768}')
    from brainfm_cli.errors import BrainfmError

    with pytest.raises(BrainfmError, match="another architecture"):
        load("brainlm-vitmae-111m", weights=folder, coords=_coords(), architecture=TINY["brainlm-vitmae-111m"])
    del hf["decoder.decoder_norm.bias"]
    save_file({k: v.contiguous() for k, v in hf.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").unlink()
    with pytest.raises(BrainfmError, match="missing keys: decoder_norm.bias"):
        load("brainlm-vitmae-111m", weights=folder, coords=_coords(), architecture=TINY["brainlm-vitmae-111m"])


def test_vitmae_pretraining_step_counts_only_hidden_data_pixels(vit):
    from brainfm_cli.models.objective import StepInfo

    objective = type(vit).pretraining_objective(vit, {"mask_ratio": 0.75})
    objective.train()
    x = torch.randn(2, 424, 200)
    loss, logs = objective(x, torch.tensor([200, 200]), StepInfo(0, 10, torch.Generator().manual_seed(0)))
    loss.backward()
    assert torch.isfinite(loss) and logs["loss"] > 0 and vit.patch_embed.weight.grad is not None
    objective.eval()
    tm = objective.hidden_tokens(1, torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss, pred = objective.loss(x[:1], tm)
        target = vit.patchify(vit.to_image(x[:1])).view(1, 729, 256, 3).mean(-1)
    data = vit.signal_pixels().view(729, 256, 3)[..., 0]
    assert int(data.sum()) == 424 * 200
    hidden = tm.bool()[0]
    err = (pred[0] - target[0]) ** 2
    want = err[hidden][data[hidden]].mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert err[~hidden][data[~hidden]].mean().item() != pytest.approx(want.item(), rel=1e-3)


def test_vitmae_values_map_to_their_image_patches_and_back(vit):
    """A decoder that returned the input's own pixels would give back every input value exactly."""
    from brainfm_cli.masking.random import random_mask

    x = torch.randn(2, 424, 200)
    img = vit.to_image(x)
    tm, hidden = vit.value_mask(2, 200, 0.75, torch.Generator().manual_seed(0))
    assert hidden.shape == (2, 424, 200)
    patches = vit.value_patches()
    assert torch.equal(hidden, torch.gather(tm.bool(), 1, patches.reshape(1, -1).expand(2, -1)).reshape(2, 424, 200))
    original = vit.forward_head
    vit.forward_head = lambda *a, **k: vit.patchify(img)
    try:
        torch.testing.assert_close(vit.reconstruct_values(x, random_mask(2, 729, 0.5)), x, atol=1e-5, rtol=1e-5)
    finally:
        vit.forward_head = original


@pytest.mark.slow
def test_vitmae_design_trains_on_another_atlas_and_is_scored(tmp_path):
    from conftest import run_cli
    from test_pretrain import learnable_corpus

    corpus = learnable_corpus(tmp_path / "c", n_subjects=3, n_vols=300)
    out = run_cli("pretrain", corpus, "--model", "brainlm-vitmae-111m", "--atlas", "seitzman300", "--size", "tiny",
                  "-o", tmp_path / "run", "--max-steps", "3", "--batch-size", "2", "--val-fraction", "0.34", "-q")
    assert out.returncode == 0, out.stderr
    import yaml

    card = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())
    assert card["input"]["n_regions"] == 30 and card["architecture"]["image_size"] == 208  # 200 TRs, patches of 16
    arch = card["architecture"]
    assert (arch["value_scale"], arch["decoder_attention"], arch["qk_init"]) == (1.0, "same_time", "tied")
    rec = run_cli("reconstruct", corpus, "--model", tmp_path / "run" / "model.yaml", "-o", tmp_path / "rec",
                  "--mask-ratio", "0.5", "-q")
    assert rec.returncode == 0, rec.stderr


@pytest.mark.parametrize("design,mode", [("brainlm", "same_time"), ("brainlm-vitmae-111m", "same_time"),
                                         ("brainlm", "visible")])
def test_decoder_reads_only_visible_keys_and_matches_the_full_masked_decoder(design, mode):
    """The same_time decoder attends over CLS and the visible tokens only; its predictions equal a decoder with
    the full ``[1 + N, 1 + N]`` mask (visible keys; a hidden query reads its own time patch, or its own region's
    history when its time shows nothing), for random and future masks."""
    from brainfm_cli.models import build, get_card

    torch.manual_seed(0)
    card = get_card(design).with_architecture(**TINY["brainlm"], decoder_attention=mode)
    space = {"coords": np.random.default_rng(0).normal(0, 50, (card.input.n_regions, 3))} \
        if design != "brainlm" else {}
    model = build(card, **space).eval()
    with torch.no_grad():  # the head starts at zero (predicting the mean): make every prediction depend on attention
        for p in model.decoder_pred.parameters():
            p.normal_(0, 0.5)
    n = model.decoder_pos_embed.shape[1] - 1 if hasattr(model, "decoder_pos_embed") else 3000
    times, rows = model.token_times(n), model.token_rows(n)
    P = int(times.max()) + 1
    for tm in (random_mask(2, n, 0.75, torch.Generator().manual_seed(1)), future_mask(2, n // P, P, 2)):
        keep = tm.keep
        latent = torch.randn(2, 1 + keep.shape[1], model.decoder_embed.in_features)
        seen = torch.zeros(2, 1 + n, dtype=torch.bool)
        seen[:, 0] = True
        seen.scatter_(1, keep + 1, True)
        t = torch.cat([torch.tensor([-1]), times])
        r = torch.cat([torch.tensor([-1]), rows])
        full = seen[:, None, :] & ((t[:, None] == t[None])[None] | seen[:, :, None])
        lonely = ~full[:, :, 1:].any(-1)
        full |= lonely[:, :, None] & (r[:, None] == r[None])[None] & seen[:, None, :]
        full[:, :, 0] = True
        if mode == "visible":  # every query reads CLS and the visible tokens
            full = seen[:, None, :].expand(-1, 1 + n, -1)
        keys, mask = model.decoder_reads(keep, n, "cpu")
        assert (mask is None) == (mode == "visible")
        assert keys.shape == (2, 1 + keep.shape[1])
        with torch.no_grad():
            listed = model.forward_head(latent, keep, n)
            model.decoder_reads = lambda *a: (None, full[:, None])
            try:
                reference = model.forward_head(latent, keep, n)
            finally:
                del model.decoder_reads
        assert listed.abs().mean() > 0.1
        torch.testing.assert_close(listed, reference, atol=1e-5, rtol=1e-5)
