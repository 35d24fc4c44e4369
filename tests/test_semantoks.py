"""Brain-Semantoks: tokeniser, networks, the authors' checkpoint (golden outputs, full key set), losses, masking,
the training step, and ``embed --model semantoks`` end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.errors import BrainfmError
from brainfm_cli.layers.sgconv import SGConv
from brainfm_cli.masking.semantoks import slice_masks, temporal_slice_length
from brainfm_cli.models import get_card, load
from brainfm_cli.models.checkpoint import Checkpoint, check_keys
from brainfm_cli.models.semantoks import (SemanticTokenizer, Semantoks, augment, coding_rate, compression,
                                          group_networks, masked_token_loss, self_distillation_loss, ttr_weight,
                                          two_crops)
from conftest import TINY, invoke, make_region_corpus, run_cli, seitzman_labels, write_bold, write_timeseries_tsv

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = dict(atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load("semantoks", pretrained=False, architecture=TINY["semantoks"])


# --- tokeniser ----------------------------------------------------------------------------------------------

def test_tokeniser_shapes_and_branch_widths():
    tok = SemanticTokenizer(7, 32)
    assert tok.heads == math.ceil(16 / 7) == 3
    assert tok.sgconv(torch.randn(5, 7, 20)).shape == (5, 21, 20)
    assert tok.proj.in_features == 21 and tok.conv.out_channels == 16
    out = tok(torch.randn(5, 7, 20))
    assert out.shape == (5, 32)
    torch.testing.assert_close(out.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)  # LayerNorm at init


def test_sgconv_is_a_flipped_convolution_of_the_multiscale_kernel_with_a_skip():
    torch.manual_seed(1)
    conv = SGConv(2, 3, kernel_size=4, scales=3, decay=(2.0, 2.0))
    k0, k1, k2 = (k.detach() for k in conv.kernel_list)
    raw = torch.cat([4 * k0, 2 * k1, k2.repeat_interleave(2, -1)], dim=-1)  # [heads, channels, 16]
    torch.testing.assert_close(conv.raw_kernel(), raw)
    k = raw / raw.norm(dim=-1, keepdim=True)
    x = torch.zeros(1, 2, 40)
    x[0, 1, 20] = 1.0  # a delta in channel 1
    y = conv(x).detach()[0].reshape(2, 3, 40)  # output channel c·heads + h
    assert torch.all(y[0] == 0)
    for h in range(3):
        want = torch.zeros(40)
        want[12:28] = k[h, 1]  # tap j lands at 20 + j − 8
        want[20] += conv.D[h, 1].detach()
        torch.testing.assert_close(y[1, h], want)


def test_kernel_norm_is_fixed_at_creation_and_not_recomputed():
    torch.manual_seed(2)
    conv = SGConv(3, 2)
    first = conv.raw_kernel().detach().norm(dim=-1, keepdim=True)
    assert bool(conv.kernel_norm_initialized) and torch.equal(conv.kernel_norm, first)
    with torch.no_grad():
        conv.kernel_list[0].mul_(3.0)  # training moves the kernel ...
    torch.testing.assert_close(conv.kernel(), conv.raw_kernel() / first)  # ... the normaliser stays
    assert not torch.allclose(conv.kernel().norm(dim=-1), torch.ones(2, 3))
    again = SGConv(3, 2)
    again.load_state_dict(conv.state_dict())
    torch.testing.assert_close(again.kernel_norm, first)  # the stored buffer wins over the loaded kernel's norm
    state = conv.state_dict()
    state["kernel_norm_initialized"] = torch.tensor(False)  # saved by the authors' code before any forward
    again.load_state_dict(state)
    again(torch.randn(1, 3, 20))
    torch.testing.assert_close(again.kernel_norm, conv.raw_kernel().detach().norm(dim=-1, keepdim=True))
    assert bool(again.kernel_norm_initialized)


def test_each_network_patch_is_tokenised_from_its_own_regions(tiny):
    ids = tiny.network_ids
    x = torch.randn(2, 300, 100)
    y = x.clone()
    region = int(torch.nonzero(ids == 4)[3])
    y[1, region, 40:60] += 5.0  # network 4, patch 2, sample 1
    with torch.inference_mode():
        a, b = tiny.tokenize(x), tiny.tokenize(y)
    changed = (a - b).abs().amax(-1) > 1e-6  # [B, N, P]
    assert changed.shape == (2, 15, 5)
    assert changed.sum() == 1 and bool(changed[1, 4, 2])


# --- networks and outputs -----------------------------------------------------------------------------------

def test_seitzman_networks_keep_every_region_grouping_unassigned_by_anatomy(tiny):
    from brainfm_cli.atlases import load_atlas

    atlas = load_atlas("seitzman300")
    names = tiny.network_names
    assert len(names) == 15 and names[-2:] == ["unassigned-cortex", "unassigned-cerebellum"]
    ids = tiny.network_ids.tolist()
    for i, (net, anat) in enumerate(zip(atlas.networks, atlas.anatomy)):
        want = f"unassigned-{'cerebellum' if anat == 'cerebellum' else 'cortex'}" if net == "unassigned" else net
        assert names[ids[i]] == want
    assert [ids.count(n) for n in (13, 14)] == [12, 3]
    assert tiny.card.architecture["networks"][0] == [0, 12]  # stored in the card as runs


def test_group_networks_numbers_ints_by_value_and_text_by_first_appearance():
    assert group_networks([19.0, 3, 3, 33.0]) == ([1, 0, 0, 2], ["3", "19", "33"])
    ids, names = group_networks(["B", "A", "n/a", "B", "", "unassigned"],
                                ["x", "x", "thalamus", "x", "cortexL", "Cerebellum_3"])
    assert names == ["B", "A", "unassigned-subcortex", "unassigned-cortex", "unassigned-cerebellum"]
    assert ids == [0, 1, 2, 0, 3, 4]


def test_networks_from_a_labels_tsv_and_wrong_counts(tmp_path):
    card = get_card("semantoks").with_input(n_regions=4, atlas=None).with_architecture(**TINY["semantoks"])
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("index\tname\tnetwork\n2\tb\tVis\n1\ta\tDMN\n3\tc\tVis\n4\td\tDMN\n")
    model = Semantoks.from_card(card, networks=tsv)
    assert model.network_ids.tolist() == [0, 1, 1, 0] and model.network_names == ["DMN", "Vis"]
    with pytest.raises(BrainfmError, match="3 network labels for 4 regions"):
        Semantoks.from_card(card, networks=["a", "b", "a"])
    with pytest.raises(BrainfmError, match="needs the network of each region"):
        Semantoks.from_card(card)


def test_encode_shapes_poolings_and_checkpoint_round_trip(tiny, tmp_path):
    x = torch.randn(2, 300, 100)
    with torch.inference_mode():
        out = tiny.encode(x)
        assert out["cls"].shape == (2, 32) and out["tokens"].shape == (2, 75, 32)
        cls_avg = tiny.pool(out, "cls_avg")
        torch.testing.assert_close(cls_avg, torch.cat([out["tokens"].mean(1), out["cls"]], -1))
        assert tiny.default_pooling == "cls_avg" and tiny.pool(out, "mean").shape == (2, 32)
    path = tiny.save(tmp_path / "s.safetensors")
    again = load("semantoks", weights=path)
    assert again.card.architecture["networks"] == tiny.card.architecture["networks"]
    with torch.inference_mode():
        torch.testing.assert_close(again.encode(x)["tokens"], out["tokens"], atol=0, rtol=0)


def test_padding_mask_marks_fully_padded_patches_and_they_ignore_the_padding(tiny):
    assert tiny.padding_mask([100, 100], 100) is None
    mask = tiny.padding_mask([60, 81, 100], 100)
    assert mask.shape == (3, 15, 5)
    assert mask[0, 0].tolist() == [False, False, False, True, True]
    assert mask[1, 7].tolist() == [False] * 5 and not mask[2].any()  # patch 4 holds one data sample
    x = torch.randn(1, 300, 100)
    x[..., 60:] = 0.0
    y = x.clone()
    y[..., 60:] = 3.0
    m = tiny.padding_mask([60], 100)
    with torch.inference_mode():
        a, b = tiny.encode(x, mask=m), tiny.encode(y, mask=m)
        torch.testing.assert_close(a["tokens"], b["tokens"])
        assert not torch.allclose(tiny.encode(x)["cls"], tiny.encode(y)["cls"])


# --- the authors' checkpoint --------------------------------------------------------------------------------

def golden():
    return torch.load(GOLDEN / "semantoks.pt", weights_only=True)


def test_golden_outputs_of_the_authors_code(tmp_path):
    g = golden()
    c = g["config"]
    path = tmp_path / "checkpoint_epoch_100.pth"
    torch.save(g["checkpoint"], path)
    arch = dict(embed_dim=c["embedding_dim"], depth=c["depth"], num_heads=c["heads"],
                mlp_ratio=c["mlp_dim"] / c["embedding_dim"], layer_scale=c["layer_scale_init_value"],
                projection_hidden_dim=c["projection_hidden_dim"], projection_dim=c["projection_bottleneck_dim"])
    model = load("semantoks-ukb", weights=path, architecture=arch)
    assert model.weights_info["format"] == "authors' checkpoint"
    assert torch.equal(model.network_ids, g["inputs"]["network_ids"])
    assert [t.heads for t in model.tokenizers] == c["sgconv_heads_per_network"]
    x, out = g["inputs"]["x"], g["outputs"]
    with torch.inference_mode():
        torch.testing.assert_close(model.tokenize(x), out["tokenizer_out"], **TOL)
        plain, masked = model.encode(x), model.encode(x, mask=g["inputs"]["pad_mask"])
    torch.testing.assert_close(plain["cls"], out["global_cls"], **TOL)
    torch.testing.assert_close(plain["tokens"], out["tokens"], **TOL)
    torch.testing.assert_close(model.pool(plain, "cls_avg"), out["cls_avg"], **TOL)
    torch.testing.assert_close(masked["cls"], out["masked_global_cls"], **TOL)
    torch.testing.assert_close(masked["tokens"], out["masked_tokens"], **TOL)
    torch.testing.assert_close(model.pool(masked, "cls_avg"), out["masked_cls_avg"], **TOL)
    assert not torch.allclose(plain["cls"], out["student_global_cls"], **TOL)  # the teacher was taken


def test_published_key_set_maps_completely_and_strays_are_refused():
    """All 463 teacher-encoder keys of the published model (unused tokeniser copies included) have a home."""
    shapes = json.loads((GOLDEN / "semantoks_keys.json").read_text())["model_state_dict"]
    assert sum(k.startswith("teacher_encoder.") for k in shapes) == 463
    with torch.device("meta"):
        model = Semantoks(get_card("semantoks-ukb"))

    def mapped(extra=None, drop=None, prefix=""):
        state = {prefix + k: torch.empty(v, device="meta") for k, v in shapes.items() if k != drop}
        state.update(extra or {})
        return model.convert_foreign(Checkpoint(state={"model_state_dict": state, "epoch": 99}, path=Path("x"),
                                                sha256=""))

    check_keys(model.state_dict(), mapped(), None, "semantoks-ukb")
    check_keys(model.state_dict(), mapped(prefix="module."), None, "semantoks-ukb")
    with pytest.raises(BrainfmError, match="unexpected keys: network_tokenizers.schaefer200"):
        check_keys(model.state_dict(), mapped({"teacher_encoder.network_tokenizers.schaefer200.0.norm.bias":
                                               torch.empty(768, device="meta")}), None, "semantoks-ukb")
    with pytest.raises(BrainfmError, match="missing keys: tokenizers.8.sgconv.kernel_norm"):
        check_keys(model.state_dict(), mapped(drop="teacher_encoder.network_tokenizers.schaefer400.8.branches.1."
                                                   "slconv.kernel_norm"), None, "semantoks-ukb")


def test_ukb_inputs_are_checked_and_nifti_needs_the_atlas_files(tmp_path):
    path = load("semantoks-ukb", pretrained=False, architecture=TINY["semantoks-ukb"]).save(tmp_path / "u.safetensors")
    tsv = write_timeseries_tsv(tmp_path / "sub-01_task-rest_timeseries.tsv", np.random.randn(120, 300),
                               [f"r{i}" for i in range(300)])
    out = invoke("embed", tsv, "--model", "semantoks-ukb", "--weights", path)
    assert out.exit_code == 1 and "300 regions, but semantoks-ukb needs 457" in out.stderr
    bold = write_bold(tmp_path / "sub-02_task-rest_bold.nii.gz", n_vols=20, tr=2.0)
    out = run_cli("embed", bold, "--model", "semantoks-ukb", "--weights", path)
    assert out.returncode == 1 and "--atlas" in out.stderr and "Schaefer-400" in out.stderr


# --- losses -------------------------------------------------------------------------------------------------

def test_coding_rate_of_an_orthonormal_batch():
    m, p, eps = 8, 4, 0.05
    q, _ = torch.linalg.qr(torch.randn(m, p, generator=torch.Generator().manual_seed(0)))
    want = 0.5 * p * math.log(1 + p / (m * eps)) * (p + m) / (p * m)
    assert coding_rate(q, eps).item() == pytest.approx(want, rel=1e-5)
    assert coding_rate(torch.zeros(m, p), eps).item() == pytest.approx(0.0, abs=1e-6)


def test_compression_counts_only_cross_view_pairs():
    a = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    assert compression(torch.stack([a, a]), torch.stack([a, a])).item() == pytest.approx(1.0, rel=1e-6)
    # teacher view 0 = a, student view 1 = −a; teacher view 1 = a, student view 0 = a: (−1 + 1) / 2
    assert compression(torch.stack([a, -a]), torch.stack([a, a])).item() == pytest.approx(0.0, abs=1e-6)
    loss, comp, expansion = self_distillation_loss(torch.stack([a, a]), torch.stack([a, a]))
    assert loss.item() == pytest.approx(-1.0 - coding_rate(a).item(), rel=1e-6)
    assert expansion.item() == pytest.approx(coding_rate(a).item(), rel=1e-6)


def test_masked_token_loss_averages_per_sample_over_masked_tokens():
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    t = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [-2.0, 0.0]], [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])
    mask = torch.tensor([[True, True, True], [False, False, False]])
    # sample 0: cos 1, 0, −1 → mean 0; sample 1: nothing masked → 0
    assert masked_token_loss(s, t, mask).item() == pytest.approx(0.0, abs=1e-7)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    assert masked_token_loss(s, t, mask).item() == pytest.approx(-(1.0 + 1.0) / 2)


def test_temporal_regulariser_weight_and_teacher_momentum(tiny):
    assert ttr_weight(0.0) == pytest.approx(0.5)
    assert ttr_weight(0.025) == pytest.approx(0.25)
    assert ttr_weight(0.05) == 0.0 and ttr_weight(0.7) == 0.0
    from brainfm_cli.engine.ema import momentum

    schedule = Semantoks.pretraining_objective(tiny, {}).momentum_schedule()
    assert momentum(schedule, 0, 100) == pytest.approx(0.99) and momentum(schedule, 50, 100) == pytest.approx(0.995)
    assert momentum(schedule, 100, 100) == pytest.approx(1.0)


# --- masking, crops, augmentation ---------------------------------------------------------------------------

def test_slice_masks_are_seeded_and_have_the_published_structure():
    a = slice_masks(400, 9, 5, torch.Generator().manual_seed(0))
    b = slice_masks(400, 9, 5, torch.Generator().manual_seed(0))
    c = slice_masks(400, 9, 5, torch.Generator().manual_seed(1))
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    nets, temporal = a.mask[a.network], a.mask[~a.network]
    assert 150 < len(nets) < 250
    # network slices: whole networks, 5 or 6 of 9
    assert torch.all(nets.all(-1) == nets.any(-1))
    assert set(nets.all(-1).sum(-1).tolist()) == {5, 6}
    # temporal slices: the same contiguous 3 or 4 patches for every network
    assert torch.all(temporal.all(1) == temporal.any(1))
    cols = temporal[:, 0]
    assert set(cols.sum(-1).tolist()) == {3, 4}
    for row in cols:
        on = torch.nonzero(row).flatten()
        assert on.max() - on.min() + 1 == len(on)
    lengths = cols.sum(-1).float()
    assert 0.65 < (lengths == 3).float().mean() < 0.85  # P(r ≤ 0.8) = 0.75
    assert temporal_slice_length(5, 0.8) == 3 and temporal_slice_length(5, 0.81) == 4


def test_two_crops_and_augmentations_follow_the_generator():
    x = torch.arange(180.0).expand(3, 4, 180).clone()
    valid = torch.tensor([180, 150, 60])
    views, kept = two_crops(x, valid, 100, torch.Generator().manual_seed(0))
    again, _ = two_crops(x, valid, 100, torch.Generator().manual_seed(0))
    assert views.shape == (6, 4, 100) and torch.equal(views, again)
    starts = views[:, 0, 0]
    assert all(0 <= s <= 80 for s in starts[[0, 3]]) and all(0 <= s <= 50 for s in starts[[1, 4]])
    assert starts[2] == 0 and starts[5] == 0 and kept.tolist()[2] == 60 and kept.tolist()[5] == 60
    ones = torch.ones(50, 20, 100)
    aug = augment(ones, torch.Generator().manual_seed(1), noise=0.0)
    zero_regions = (aug == 0).all(-1).sum(-1)
    zero_times = (aug == 0).all(1).sum(-1)
    assert zero_regions.min() >= 1 and zero_regions.max() <= 2  # at most int(20 · 0.1)
    assert zero_times.min() >= 1 and zero_times.max() <= 30
    scales = aug.amax(dim=(1, 2))
    assert 0.8 <= scales.min() and scales.max() <= 1.2 and scales.std() > 0.05
    noisy = augment(torch.zeros(2, 20, 1000), torch.Generator().manual_seed(2))
    assert noisy.std().item() == pytest.approx(0.1, rel=0.05)


# --- training step ------------------------------------------------------------------------------------------

def test_a_training_step_logs_every_term_and_moves_the_teacher():
    from brainfm_cli.engine.ema import build_objective, update_teachers
    from brainfm_cli.models.objective import StepInfo

    torch.manual_seed(0)
    model = load("semantoks", pretrained=False, architecture=TINY["semantoks"]).train()
    obj = build_objective(model, {"masking_frequency": 1.0})
    assert obj.sample_length == 180 and obj.export_model() is obj.teacher
    x, valid = torch.randn(2, 300, 180), torch.tensor([180, 90])
    loss, terms = obj(x, valid, StepInfo(0, 100, torch.Generator().manual_seed(3)))
    again, _ = obj(x, valid, StepInfo(0, 100, torch.Generator().manual_seed(3)))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(again.item(), rel=1e-6)
    assert set(terms) == {"loss", "cls_loss", "compression", "expansion", "ttr_loss", "ttr_weight", "masked_loss",
                          "masking"}
    assert terms["masking"] == 1.0 and terms["ttr_weight"] == pytest.approx(0.5) and terms["masked_loss"] < 0
    want = terms["cls_loss"] + 0.5 * terms["ttr_loss"] + 0.5 * terms["masked_loss"]
    assert terms["loss"] == pytest.approx(want, rel=1e-5)
    loss.backward()
    assert model.mask_embedding.grad is not None and obj.head.fc1.weight.grad is not None
    assert all(p.grad is None for p in obj.teacher.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    before = obj.teacher.norm.weight.clone()
    assert update_teachers(obj, 0, 100)["ema_momentum"] == pytest.approx(0.99)
    torch.testing.assert_close(obj.teacher.norm.weight, 0.99 * before + 0.01 * model.norm.weight)
    late, terms = obj(x, valid, StepInfo(90, 100, torch.Generator().manual_seed(4)))
    assert terms["ttr_weight"] == 0.0 and terms["ttr_loss"] == 0.0
    with pytest.raises(BrainfmError, match="unknown Brain-Semantoks objective options"):
        Semantoks.pretraining_objective(model, {"mask_ratio_typo": 1})


@pytest.mark.slow
def test_pretrain_cli_runs_and_exports_the_teacher(tmp_path):
    corpus = make_region_corpus(tmp_path / "corpus", n_subjects=2, n_vols=190)
    arch = [f"--arch={k}={v}" for k, v in TINY["semantoks"].items()]
    out = run_cli("pretrain", "--val-fraction", "0", "--crops-per-run", "1", corpus, "--model", "semantoks", "-o", tmp_path / "run", *arch, "--batch-size", "2",
                  "--epochs", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    m = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")
    assert {"cls_loss", "ttr_loss", "masked_loss", "ema_momentum", "grad_norm"} <= set(m.columns) and len(m) == 2
    emb = run_cli("embed", corpus, "--model", tmp_path / "run" / "model.yaml", "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 3


# --- embed end to end ---------------------------------------------------------------------------------------

def test_embed_semantoks_on_the_default_space(tmp_path, tiny):
    weights = tiny.save(tmp_path / "tiny.safetensors")
    labels = seitzman_labels()
    rng = np.random.default_rng(0)
    write_timeseries_tsv(tmp_path / "in" / "sub-01_task-rest_timeseries.tsv", rng.standard_normal((130, 300)), labels)
    write_timeseries_tsv(tmp_path / "in" / "sub-02_task-rest_timeseries.tsv", rng.standard_normal((70, 300)), labels)
    out = run_cli("embed", tmp_path / "in", "--model", "semantoks", "--weights", weights, "-o", tmp_path / "e.tsv")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert df["participant_id"].tolist() == ["sub-01", "sub-02"]  # the 70-TR run is padded, not refused
    assert df.filter(like="emb_").shape[1] == 64 and np.isfinite(df.filter(like="emb_").to_numpy()).all()
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["Pooling"] == "cls_avg" and side["Preprocessing"]["BandPass"] == [0.01, 0.1]
    from brainfm_cli.data.preprocess import Preprocessor

    ts = pd.read_csv(tmp_path / "in" / "sub-02_task-rest_timeseries.tsv", sep="\t").to_numpy()
    prep = Preprocessor.from_space(tiny.card.input)
    x, _ = prep.prepare(ts, 2.0)
    w = next(prep.windows(x))
    with torch.inference_mode():
        want = tiny.pool(tiny.encode(torch.from_numpy(w.x[None]), mask=tiny.padding_mask([w.valid], 100)), "cls_avg")
    np.testing.assert_allclose(df.filter(like="emb_").to_numpy()[1], want[0].numpy(), rtol=1e-4, atol=1e-5)
    tok = invoke("embed", tmp_path / "in", "--model", "semantoks", "--weights", weights, "--pooling", "tokens",
                 "--participant-label", "01")
    assert tok.exit_code == 0, tok.stderr
    assert len(tok.stdout.splitlines()) == 1 + 75
