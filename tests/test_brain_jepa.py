"""Brain-JEPA: masking, gradient positions, head order, the authors' checkpoint and outputs, pretraining, embed."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from brainfm_cli.engine.ema import build_objective, momentum, update_teachers
from brainfm_cli.engine.train import param_groups
from brainfm_cli.errors import BrainfmError
from brainfm_cli.masking.jepa import SpatiotemporalCollator
from brainfm_cli.models import get_card, load
from brainfm_cli.models.brain_jepa import (ENCODER_RENAMES, PREDICTOR_RENAMES, BrainJEPA, JEPAObjective,
                                           JEPAPredictor, authors_to_ours, read_gradients,
                                           resolve_architecture)
from brainfm_cli.models.checkpoint import Checkpoint, check_keys, read_checkpoint, strip_prefix
from brainfm_cli.models.objective import StepInfo
from conftest import TINY, make_region_corpus, run_cli, seitzman_labels, write_timeseries_tsv

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = dict(atol=1e-4, rtol=0)
# the authors' collator scales (their ukb_vitb_ep300.yaml), which are the objective's defaults
PUBLISHED = {k: tuple(v) for k, v in JEPAObjective.defaults.items() if not k.startswith("ema")}


def load_authors_container(objective: JEPAObjective, ckpt: Checkpoint) -> None:
    """Start an objective from the authors' training container: encoder, predictor and target (strict)."""
    for part, module, renames in (("encoder", objective.model, ENCODER_RENAMES),
                                  ("target_encoder", objective.target, ENCODER_RENAMES),
                                  ("predictor", objective.predictor, PREDICTOR_RENAMES)):
        state = authors_to_ours(strip_prefix(ckpt.state[part], "module."), renames)
        if module is not objective.predictor:
            state.setdefault("gradients", module.gradients)
        check_keys(module.state_dict(), state, ckpt.path, f"Brain-JEPA {part}")
        module.load_state_dict(state, strict=True)


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "brain_jepa.pt", weights_only=True)


@pytest.fixture(scope="module")
def jepa():
    torch.manual_seed(0)
    return load("brain-jepa", pretrained=False, architecture=TINY["brain-jepa"])


def small_model(n_regions=40, seq_len=160, seed=0) -> BrainJEPA:
    """A tiny encoder on a made-up grid of ``n_regions`` (any region count works) with random gradients."""
    card = get_card("brain-jepa").with_input(n_regions=n_regions, seq_len=seq_len, atlas=None)
    card = card.with_architecture(**TINY["brain-jepa"])
    torch.manual_seed(seed)
    return BrainJEPA.from_card(card, gradients=np.random.default_rng(seed).standard_normal((n_regions, 30)))


# --- masking --------------------------------------------------------------------------------------------------

def test_masking_statistics_on_the_published_grid():
    collator = SpatiotemporalCollator(450, 10, **PUBLISHED)
    before = torch.get_rng_state()
    gen = torch.Generator().manual_seed(0)
    ctx, tgt, col_share = [], [], torch.zeros(10)
    for _ in range(30):
        m = collator(16, gen)
        ctx.append(m.context.shape[1] / 4500)
        tgt.append(m.targets.shape[1] / 4500)
        col_share += torch.bincount(m.context.flatten() % 10, minlength=10)
        for s in m.samples:
            grid = torch.zeros(450, 10, dtype=torch.bool)
            grid.view(-1)[s.context] = True
            assert not grid[s.alpha_regions].any()  # α regions: absent from the context at all times
            assert not grid[:, s.edge_columns].any()  # edge columns: absent for all regions
            assert not grid[:, 9].any()  # the last time patch is never context (the authors' window draw)
            assert not set(s.context.tolist()) & set(s.targets.tolist())
            assert set((s.alpha // 10).tolist()) <= set(s.alpha_regions.tolist())
            assert set((s.context // 10).tolist()) <= set(s.observed_regions.tolist())
        assert torch.equal(m.context, m.context.sort(dim=1).values)
    assert torch.equal(torch.get_rng_state(), before)  # no global RNG draws
    assert 0.165 < np.mean(ctx) < 0.20 and 0.17 < np.mean(tgt) < 0.22  # the authors: 18.3 % and 19.1 %
    share = col_share / col_share.sum()
    assert share[3:7].min() > share[[0, 1, 2, 7, 8]].max()  # edge blocks thin out the context at both ends


def test_masking_is_seeded():
    collator = SpatiotemporalCollator(300, 10, **PUBLISHED)
    a, b = collator(4, torch.Generator().manual_seed(3)), collator(4, torch.Generator().manual_seed(3))
    c = collator(4, torch.Generator().manual_seed(4))
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert a.context.tolist() != c.context.tolist()
    assert a.context.max() < 3000 and a.targets.max() < 3000


def test_collator_reproduces_the_authors_masks_draw_by_draw(golden):
    """Their sizes come from a per-call seeded generator and positions from the global RNG: given both seeds,
    our collator draws the same masks."""
    collator = SpatiotemporalCollator(450, 10, **PUBLISHED)
    inp = golden["inputs"]
    calls = [dict(torch_seed=inp["mask_torch_seed"], generator_seed=inp["mask_generator_seed"], batch_size=2,
                  masks_enc=inp["masks_enc"], masks_pred=inp["masks_pred"])] + list(inp["collator_extra"])
    for call in calls:
        m = collator(call["batch_size"], torch.Generator().manual_seed(call["torch_seed"]),
                     size_generator=torch.Generator().manual_seed(call["generator_seed"]))
        assert torch.equal(m.context, call["masks_enc"])
        assert torch.equal(m.targets, call["masks_pred"])


# --- positions, attention, sizes -----------------------------------------------------------------------------

def test_positional_embedding_equals_a_direct_computation(jepa):
    D, R, P = 32, 300, 10
    G = jepa.gradients.double().numpy()
    W = jepa.pos_embed.proj.weight.detach().double().numpy()
    b = jepa.pos_embed.proj.bias.detach().double().numpy()
    g = G @ W.T + b
    g = (g - g.min()) / (g.max() - g.min()) * 2 - 1
    omega = 10000.0 ** (-np.arange(D // 4) / (D / 4))
    angles = np.arange(P)[:, None] * omega[None]
    time = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # [P, D/2]
    want = np.zeros((R * P, D))
    for r in range(R):
        for t in range(P):
            want[r * P + t] = np.concatenate([time[t], g[r]])  # time first, gradient second
    got = jepa.pos_embed(jepa.gradients).detach().double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_tokens_are_region_major_one_by_sixteen_patches():
    model = small_model(n_regions=7, seq_len=64)
    x = torch.zeros(1, 7, 64)
    x[0, 3, 32:48] = 1.0  # region 3, time patch 2
    w = model.patch_embed.weight.reshape(32, 16)
    pos = model.pos_embed(model.gradients)
    with torch.no_grad():
        tokens = F.linear(x.reshape(1, 28, 16), w, model.patch_embed.bias) + pos
        conv = model.patch_embed(x[:, None]).flatten(2).transpose(1, 2) + pos
    torch.testing.assert_close(tokens, conv)
    changed = (tokens - (model.patch_embed.bias + pos)).abs().sum(-1)[0]
    assert changed.nonzero().flatten().tolist() == [3 * 4 + 2]
    assert model.encode(torch.randn(2, 7, 64))["tokens"].shape == (2, 28, 32)


def _per_head_attention(attn, x):
    """The authors' layout computed head by head: qkv rows [q | k | v], head h = rows h·hd … (h+1)·hd."""
    D = x.shape[-1]
    H, hd = attn.num_heads, attn.head_dim
    W, b = attn.qkv.weight, attn.qkv.bias
    heads = []
    for h in range(H):
        rows = slice(h * hd, (h + 1) * hd)
        q, k, v = (x @ W[i * D:(i + 1) * D][rows].T + b[i * D:(i + 1) * D][rows] for i in range(3))
        heads.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd), dim=-1) @ v)
    return attn.proj(torch.cat(heads, dim=-1))


def test_sdpa_attention_keeps_the_authors_head_order(jepa):
    from brainfm_cli.layers import Attention, set_fused_attn, use_fused_attn

    attn = jepa.blocks[0].attn
    torch.manual_seed(1)
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        want = _per_head_attention(attn, x)
        assert use_fused_attn()
        torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=0)
        set_fused_attn(False)
        try:
            torch.testing.assert_close(attn(x), want, atol=1e-5, rtol=0)
        finally:
            set_fused_attn(True)
        perm = torch.tensor([1, 0, 3, 2])
        hd = attn.head_dim
        rows = torch.cat([(perm[:, None] * hd + torch.arange(hd)).flatten() + i * 32 for i in range(3)])
        swapped = Attention(32, 4)
        swapped.load_state_dict(attn.state_dict())
        swapped.qkv.weight.copy_(attn.qkv.weight[rows])
        swapped.qkv.bias.copy_(attn.qkv.bias[rows])
        assert (swapped(x) - want).abs().max() > 1e-3  # heads permuted: different output
        cols = (perm[:, None] * hd + torch.arange(hd)).flatten()
        swapped.proj.weight.copy_(attn.proj.weight[:, cols])
        torch.testing.assert_close(swapped(x), want, atol=1e-5, rtol=0)  # ... unless proj is permuted alike


def test_size_presets_and_published_parameter_counts():
    card = get_card("brain-jepa-ukb")
    with torch.device("meta"):
        enc = BrainJEPA.from_card(card)
        pred = JEPAPredictor(768, 384, 6, 12, 450, 10, 30)
    assert sum(p.numel() for p in enc.parameters()) == 85_080_960  # the authors' trainable count
    assert enc.pos_embed.time.numel() == 1_728_000  # their frozen emb_h
    assert sum(p.numel() for p in pred.parameters()) + pred.pos_embed.time.numel() == 12_108_864
    sizes = get_card("brain-jepa")
    assert sizes.with_size("ViT-S").architecture["predictor_dim"] == 192
    assert sizes.with_architecture(size="ViT-L", depth=2).architecture["depth"] == 2
    assert resolve_architecture(sizes.with_size("ViT-B").architecture)["predictor_heads"] == 12
    assert set(card.sizes) == {"tiny", "ViT-S", "ViT-B", "ViT-L"} and set(sizes.sizes) == set(card.sizes) | {"small"}
    with pytest.raises(BrainfmError, match="no size 'huge'"):
        sizes.with_size("huge")


# --- gradients ------------------------------------------------------------------------------------------------

def test_shipped_gradients_are_seitzman_functional_gradients(jepa):
    table = pd.read_csv(Path(get_card("brain-jepa").path).parent / "brain-jepa-gradients.tsv", sep="\t")
    assert table["region"].tolist() == seitzman_labels()
    G = table.filter(like="gradient_").to_numpy()
    assert G.shape == (300, 30) and np.isfinite(G).all()
    norms = np.linalg.norm(G, axis=0)
    assert norms[0] > 5 * norms[-1] and (np.diff(norms[:10]) < 0).all()  # eigenvalue-scaled: falling norms
    assert (G[np.abs(G).argmax(axis=0), np.arange(30)] > 0).all()  # sign: largest-magnitude entry positive
    np.testing.assert_allclose(jepa.gradients.numpy(), G, rtol=0, atol=1e-6)
    assert json.loads((Path(get_card("brain-jepa").path).parent / "brain-jepa-gradients.json").read_text())[
        "Recipe"]["n_components"] == 30


def test_gradients_from_the_authors_csv_and_brainfms_tsv_agree(tmp_path):
    G = np.random.default_rng(0).standard_normal((40, 30)) * 0.1
    csv = tmp_path / "gradient_mapping_40.csv"
    np.savetxt(csv, G, delimiter=",", fmt="%.18e")
    tsv = tmp_path / "g.tsv"
    table = pd.DataFrame(G, columns=[f"gradient_{i + 1:02d}" for i in range(30)])
    table.insert(0, "region", [f"r{i}" for i in range(40)])
    table.to_csv(tsv, sep="\t", index=False, float_format="%.18e")
    np.testing.assert_array_equal(read_gradients(csv, 40), read_gradients(tsv, 40))
    np.testing.assert_array_equal(read_gradients(torch.tensor(G)[None], 40), G)  # their [1, R, 30] tensor
    with pytest.raises(BrainfmError, match="expects 41 regions"):
        read_gradients(csv, 41)
    with pytest.raises(BrainfmError, match="not found"):
        read_gradients(tmp_path / "nope.csv", 40)


def test_published_model_needs_its_gradients(tmp_path):
    model = load("brain-jepa-ukb", pretrained=False, architecture=TINY["brain-jepa-ukb"])
    with pytest.raises(BrainfmError, match="--gradients"):
        model.encode(torch.randn(1, 450, 160))
    with pytest.raises(BrainfmError, match="ships no weights"):
        load("brain-jepa-ukb", gradients=np.zeros((450, 30)))
    with pytest.raises(BrainfmError, match=r"\[450, components\]"):
        load("brain-jepa-ukb", pretrained=False, gradients=np.zeros((300, 30)))
    with pytest.raises(BrainfmError, match="components"):
        load("brain-jepa-ukb", pretrained=False, gradients=np.zeros((450, 3)), architecture=TINY["brain-jepa-ukb"])


def test_our_checkpoints_carry_their_gradients(tmp_path):
    G = np.random.default_rng(1).standard_normal((450, 30))
    torch.manual_seed(0)
    model = load("brain-jepa-ukb", pretrained=False, gradients=G, architecture=TINY["brain-jepa-ukb"])
    path = model.save(tmp_path / "m.safetensors")
    again = load("brain-jepa-ukb", weights=path)  # no gradients given: the checkpoint's are used
    x = torch.randn(1, 450, 160)
    with torch.inference_mode():
        torch.testing.assert_close(again.encode(x)["tokens"], model.encode(x)["tokens"], atol=0, rtol=0)
    assert again.pool(again.encode(x), "mean").shape == (1, 32) and again.encode(x)["cls"] is None
    with pytest.raises(BrainfmError, match="carry their own gradient matrix"):
        load("brain-jepa-ukb", weights=path, gradients=G + 1)


# --- the authors' checkpoint ----------------------------------------------------------------------------------

def test_published_key_sets_map_completely():
    """All 151 encoder / target-encoder and 82 predictor tensors of jepa-ep300.pth.tar have a home here."""
    keys = json.loads((GOLDEN / "brain_jepa_keys.json").read_text())
    assert {k: len(v) for k, v in keys.items()} == {"encoder": 151, "predictor": 82, "target_encoder": 151}
    with torch.device("meta"):
        enc = BrainJEPA.from_card(get_card("brain-jepa-ukb"))
        pred = JEPAPredictor(768, 384, 6, 12, 450, 10, 30)
    for part in ("target_encoder", "encoder"):
        state = {k: torch.empty(v, device="meta") for k, v in keys[part].items()}
        mapped = enc.convert_foreign(Checkpoint(state={part: state, "epoch": 299}, path=Path("ckpt"), sha256=""))
        check_keys(enc.state_dict(), mapped, None, part)
        assert len(mapped) == 151 + 1  # + our gradient buffer, which their checkpoint lacks
    state = {k: torch.empty(v, device="meta") for k, v in keys["predictor"].items()}
    check_keys(pred.state_dict(), authors_to_ours(strip_prefix(state, "module."), PREDICTOR_RENAMES), None, "pred")


def test_foreign_key_problems_are_listed(tmp_path, golden):
    ckpt = {k: dict(v) if isinstance(v, dict) else v for k, v in golden["checkpoint"].items()}
    del ckpt["target_encoder"]["module.norm.bias"]
    ckpt["target_encoder"]["module.head.weight"] = torch.zeros(2, 32)
    torch.save(ckpt, tmp_path / "jepa.pth.tar")
    with pytest.raises(BrainfmError, match=r"missing keys: norm.bias; unexpected keys: head.weight"):
        load("brain-jepa-ukb", weights=tmp_path / "jepa.pth.tar", gradients=golden["inputs"]["gradient"],
             architecture=TINY["brain-jepa-ukb"])
    torch.save(golden["checkpoint"], tmp_path / "ok.pth.tar")
    with pytest.raises(BrainfmError, match="needs the gradient matrix"):
        load("brain-jepa-ukb", weights=tmp_path / "ok.pth.tar", architecture=TINY["brain-jepa-ukb"])


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory, golden):
    folder = tmp_path_factory.mktemp("authors")
    torch.save(golden["checkpoint"], folder / "jepa-ep300.pth.tar")
    np.savetxt(folder / "gradient_mapping_450.csv", golden["inputs"]["gradient"].double().numpy(), delimiter=",",
               fmt="%.18e")
    return folder / "jepa-ep300.pth.tar", folder / "gradient_mapping_450.csv"


def test_target_encoder_matches_the_authors_code(golden, authors_files):
    ckpt, csv = authors_files
    c = golden["config"]
    arch = dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                predictor_dim=c["pred_emb_dim"], predictor_depth=c["pred_depth"])
    model = load("brain-jepa-ukb", weights=ckpt, gradients=csv, architecture=arch)
    assert model.weights_info["format"] == "authors' checkpoint"
    x = golden["inputs"]["x"][:, 0]
    with torch.inference_mode():
        out = model.encode(x)
    assert out["cls"] is None
    torch.testing.assert_close(out["tokens"], golden["outputs"]["target_tokens"], **TOL)
    torch.testing.assert_close(model.pool(out, "mean"), golden["outputs"]["target_tokens"].mean(1), **TOL)
    # the array form of the gradients gives the same model
    same = load("brain-jepa-ukb", weights=ckpt, gradients=golden["inputs"]["gradient"].numpy(), architecture=arch)
    with torch.inference_mode():
        torch.testing.assert_close(same.encode(x)["tokens"], out["tokens"], atol=0, rtol=0)


def test_context_encoder_and_predictor_match_the_authors_code(golden, authors_files):
    ckpt, csv = authors_files
    c = golden["config"]
    arch = dict(embed_dim=c["embed_dim"], depth=c["depth"], num_heads=c["num_heads"],
                predictor_dim=c["pred_emb_dim"], predictor_depth=c["pred_depth"])
    model = load("brain-jepa-ukb", pretrained=False, gradients=csv, architecture=arch)
    objective = build_objective(model, {})
    load_authors_container(objective, read_checkpoint(ckpt))
    x = golden["inputs"]["x"][:, 0]
    ctx, tgt = golden["inputs"]["masks_enc"], golden["inputs"]["masks_pred"]
    with torch.inference_mode():
        z = objective.model.forward_visible(x, keep=ctx)
        pred = objective.predict(x, ctx, tgt)
        loss = F.smooth_l1_loss(pred, objective.targets(x, tgt))
        pos = objective.model.pos_embed(model.gradients)
        ppos = objective.predictor.pos_embed(model.gradients)
    torch.testing.assert_close(z, golden["outputs"]["context_tokens"], **TOL)
    torch.testing.assert_close(pred, golden["outputs"]["predictions"], **TOL)
    torch.testing.assert_close(loss, golden["outputs"]["loss"], **TOL)
    torch.testing.assert_close(pos[::10, 16:], golden["outputs"]["encoder_grad_pe"], **TOL)
    torch.testing.assert_close(ppos[::10, 8:], golden["outputs"]["predictor_grad_pe"], **TOL)


# --- pretraining objective ------------------------------------------------------------------------------------

def _structured_batch(model, batch, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(model.card.input.seq_len) * 2.0
    sources = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 6, (batch, 1))) for f in (0.01, 0.03, 0.07)], 1)
    mixing = np.random.default_rng(99).standard_normal((model.n_regions, 3))
    x = np.einsum("rk,bkt->brt", mixing, sources) + 0.3 * rng.standard_normal((batch, model.n_regions, len(t)))
    return torch.tensor(x, dtype=torch.float32)


def test_a_few_pretraining_steps_lower_the_loss():
    model = small_model(n_regions=24)
    objective = build_objective(model, {})
    opt = torch.optim.AdamW(param_groups(objective), lr=1e-3, betas=(0.9, 0.999), weight_decay=0.04)
    losses = []
    for step in range(15):
        x = _structured_batch(model, 4, step % 5)
        info = StepInfo(step, 15, torch.Generator().manual_seed(step))
        loss, terms = objective(x, torch.full((4,), 160), info)
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_teachers(objective, step, 15)
        losses.append(terms["loss"])
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])


def test_objective_recipe_ema_and_parameter_groups():
    model = small_model()
    objective = build_objective(model, {})
    r = objective.recipe
    assert (r["start_lr"], r["lr"], r["min_lr"], r["weight_decay"], r["final_weight_decay"]) == \
        (5e-5, 1e-3, 1e-6, 0.04, 0.4) and r["betas"] == (0.9, 0.999) and r["warmup"] == pytest.approx(40 / 300)
    assert all(not p.requires_grad for p in objective.target.parameters())
    groups = param_groups(objective)
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert id(objective.predictor.mask_token) in decay and id(model.blocks[0].attn.qkv.weight) in decay
    assert id(model.norm.weight) in no_decay and id(objective.predictor.proj.bias) in no_decay
    assert not ({id(p) for p in objective.target.parameters()} & (decay | no_decay))
    schedule = objective.momentum_schedule()
    assert momentum(schedule, 0, 100) == pytest.approx(0.996) and momentum(schedule, 99, 100) == 1.0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    q, k0 = model.norm.weight.detach().clone(), objective.target.norm.weight.detach().clone()
    assert update_teachers(objective, 0, 100)["ema_momentum"] == pytest.approx(0.996)
    torch.testing.assert_close(objective.target.norm.weight, 0.996 * k0 + 0.004 * q)
    before = objective.target.norm.weight.detach().clone()
    update_teachers(objective, 99, 100)
    torch.testing.assert_close(objective.target.norm.weight, before, atol=0, rtol=0)  # momentum 1 at the end
    assert objective.export_model() is objective.target and objective.export_model().card.name == "brain-jepa"
    with pytest.raises(BrainfmError, match="unknown Brain-JEPA objective options"):
        JEPAObjective(model, {"mask_ratio": 0.5})


@pytest.mark.slow
def test_pretrain_then_embed_from_the_command_line(tmp_path):
    corpus = make_region_corpus(tmp_path / "corpus", n_subjects=4, n_vols=170)
    arch = [f"--arch={k}={v}" for k, v in TINY["brain-jepa"].items()]
    out = run_cli("pretrain", "--val-fraction", "0", "--crops-per-run", "1", corpus, "--model", "brain-jepa", "-o", tmp_path / "run", *arch, "--batch-size", "2",
                  "--epochs", "3", "--quiet")
    assert out.returncode == 0, out.stderr
    m = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")
    assert len(m) == 6 and {"loss", "ema_momentum", "lr", "weight_decay"} <= set(m.columns)
    assert m["ema_momentum"].iloc[0] == pytest.approx(0.996) and m["ema_momentum"].iloc[-1] == pytest.approx(1.0)
    emb = run_cli("embed", corpus, "--model", tmp_path / "run" / "model.yaml", "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 5


# --- embed end to end -----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_embed_with_brain_jepa(tmp_path, jepa):
    corpus = make_region_corpus(tmp_path / "corpus", n_subjects=2, n_vols=170)
    weights = jepa.save(tmp_path / "jepa-tiny.safetensors")
    out = run_cli("embed", corpus, "--model", "brain-jepa", "--weights", weights, "-o", tmp_path / "e.tsv")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert df["participant_id"].tolist() == ["sub-01", "sub-02"] and df.filter(like="emb_").shape[1] == 32
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["Pooling"] == "mean" and side["Architecture"] == "brain_jepa"
    tok = run_cli("embed", corpus, "--model", "brain-jepa", "--weights", weights, "--pooling", "tokens",
                  "--participant-label", "01")
    assert tok.returncode == 0, tok.stderr
    tokens = pd.read_csv(__import__("io").StringIO(tok.stdout), sep="\t")
    assert len(tokens) == 3000 and tokens["token"].tolist()[:3] == [0, 1, 2]
    np.testing.assert_allclose(tokens.filter(like="emb_").to_numpy().mean(0), df.filter(like="emb_").to_numpy()[0],
                               atol=1e-5)
    bad = run_cli("embed", corpus, "--model", "brain-jepa", "--weights", weights, "--pooling", "cls")
    assert bad.returncode == 1 and "no pooling 'cls'" in bad.stderr


@pytest.mark.slow
def test_embed_with_the_authors_checkpoint(tmp_path, golden, authors_files):
    from brainfm_cli.data.preprocess import Preprocessor

    ckpt, csv = authors_files
    rng = np.random.default_rng(0)
    data = rng.standard_normal((170, 450)) + rng.normal(0, 3, 450)
    path = write_timeseries_tsv(tmp_path / "sub-01" / "func" / "sub-01_task-rest_timeseries.tsv", data,
                                [f"roi{i:03d}" for i in range(450)], tr=2.2)
    card = get_card("brain-jepa-ukb").to_dict()
    card["architecture"].update(TINY["brain-jepa-ukb"])
    import yaml

    (tmp_path / "ukb-tiny.yaml").write_text(yaml.safe_dump(card))  # a tiny card: embed takes no --arch
    out = run_cli("embed", path, "--model", tmp_path / "ukb-tiny.yaml", "--weights", ckpt, "--gradients", csv)
    assert out.returncode == 0, out.stderr
    got = pd.read_csv(__import__("io").StringIO(out.stdout), sep="\t").filter(like="emb_").to_numpy()
    model = load(tmp_path / "ukb-tiny.yaml", weights=ckpt, gradients=csv)
    x, _ = Preprocessor.from_space(model.card.input).prepare(data, 2.2)
    assert abs(x.mean()) < 1e-5 and abs(x.std() - 1) < 1e-3  # global z-score
    with torch.inference_mode():
        want = model.pool(model.encode(torch.from_numpy(x[None, :, :160])), "mean")[0].numpy()
    np.testing.assert_allclose(got[0], want, atol=1e-5)
    missing = run_cli("embed", path, "--model", tmp_path / "ukb-tiny.yaml", "--weights", ckpt)
    assert missing.returncode == 1 and "--gradients" in missing.stderr
