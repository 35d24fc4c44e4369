"""SC-MBM (MinD-Vis stage A): padding and patches, masking, loss, the authors' checkpoints, voxel inputs end to end."""

import json
import sys
import types
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.errors import BrainfmError
from conftest import (AFFINE_6MM, SHAPE_6MM, TINY, brain_mask, invoke, make_region_corpus, run_cli, write_bold,
                      write_timeseries_tsv)

GOLDEN = Path(__file__).parent / "data" / "golden"
TOL = dict(atol=1e-4, rtol=0)


def golden() -> dict:
    return torch.load(GOLDEN / "sc_mbm.pt", weights_only=True)


def occipital_mask(shift: int = 0, lower: float = -10.0) -> np.ndarray:
    """A box in the occipital lobe on the 6 mm test grid (``shift`` moves it by whole voxels along z)."""
    ijk = np.indices(SHAPE_6MM).reshape(3, -1).T
    xyz = ijk @ AFFINE_6MM[:3, :3].T + AFFINE_6MM[:3, 3]
    box = (xyz[:, 1] < -70) & (np.abs(xyz[:, 0]) < 40) & (xyz[:, 2] > lower) & (xyz[:, 2] < 30)
    mask = box.reshape(SHAPE_6MM) & brain_mask()
    return np.roll(mask, shift, axis=2).astype(np.uint8)


def write_mask(path: Path, mask: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(mask, AFFINE_6MM), path)
    return path


@pytest.fixture(scope="module")
def voxel_setup(tmp_path_factory):
    """A BOLD run, its occipital mask and a tiny SC-MBM checkpoint built for that voxel set."""
    from brainfm_cli.data.voxels import RoiSpec
    from brainfm_cli.models import load

    root = tmp_path_factory.mktemp("voxels")
    bold = write_bold(root / "sub-01_task-rest_bold.nii.gz", n_vols=40, tr=2.0)
    mask = write_mask(root / "vc_mask.nii.gz", occipital_mask())
    voxels = RoiSpec(mask=str(mask)).select(SHAPE_6MM, AFFINE_6MM)
    torch.manual_seed(0)
    weights = load("sc-mbm-voxels", pretrained=False, architecture=TINY["sc-mbm-voxels"],
                   voxels=voxels).save(root / "sc_mbm_tiny.safetensors")
    return dict(root=root, bold=bold, mask=mask, voxels=voxels, weights=weights)


def tiny_model(n_voxels: int, **arch):
    from brainfm_cli.data.voxels import VoxelSet
    from brainfm_cli.models import load

    coords = np.stack([np.arange(n_voxels), np.zeros(n_voxels), np.zeros(n_voxels)], 1).astype(float)
    return load("sc-mbm-voxels", pretrained=False, architecture={**TINY["sc-mbm-voxels"], **arch},
                voxels=VoxelSet(coords))


# ---------------------------------------------------------------- patching, padding, masking, loss

def test_wrap_padding_always_adds_one_to_sixteen_voxels_and_patches_are_contiguous():
    m37, m48 = tiny_model(37), tiny_model(48)
    assert (m37.n_patches, m48.n_patches) == (3, 4)  # 37 → 48, and 48 → 64 (a whole extra patch, as the authors)
    v = torch.arange(2 * 37, dtype=torch.float32).reshape(2, 37)
    padded = m37.padded(v)
    assert torch.equal(padded[:, :37], v) and torch.equal(padded[:, 37:], v[:, :11])
    assert torch.equal(m37.patchify(v)[:, 1], padded[:, 16:32])
    v48 = torch.randn(1, 48)
    assert torch.equal(m48.padded(v48)[:, 48:], v48[:, :16])
    assert m37.voxel_weights().sum() == 37 and m37.voxel_weights()[2, :5].tolist() == [1.0] * 5
    with torch.inference_mode():
        out = m37.encode(v[..., None])
    assert out["tokens"].shape == (2, 3, 32) and out["cls"].shape == (2, 32)
    with pytest.raises(BrainfmError, match="one time-averaged vector"):
        m37.encode(torch.randn(2, 37, 4))


def test_averaging_and_padding_reproduce_the_authors_voxel_pipeline():
    """process_voxel_ts: 10-frame windows (array_split), wrap padding, z-score over the padded matrix."""
    from brainfm_cli.data.preprocess import average_windows

    g = golden()
    for n in (37, 48):
        raw = g["inputs"][f"pipeline_raw_{n}"].numpy()
        avg = torch.from_numpy(average_windows(raw, 0.75, 8.0))  # ⌊8 / 0.75⌋ = 10 frames, 65 // 10 = 6 windows
        padded = tiny_model(n).padded(avg).numpy()
        ours = (padded - padded.mean()) / padded.std()
        np.testing.assert_allclose(ours, g["outputs"][f"pipeline_processed_{n}"].numpy(), atol=1e-10)
    with pytest.raises(BrainfmError, match="shorter than one averaging window"):
        average_windows(np.zeros((3, 5)), 2.0, 8.0)


def test_masking_ratio_under_a_seed():
    from brainfm_cli.masking.random import random_mask

    def draw(seed):
        return random_mask(3, 291, 0.75, torch.Generator().manual_seed(seed), keep_floor=True)

    a, b, c = draw(5), draw(5), draw(6)
    assert a.keep.shape == (3, 72) and a.masked.shape == (3, 219)  # the authors keep int(291 · 0.25) = 72
    assert torch.equal(a.keep, b.keep) and not torch.equal(a.keep, c.keep)
    assert torch.equal(torch.cat([a.keep, a.masked], 1).sort(1).values, torch.arange(291).expand(3, -1))
    assert not torch.equal(a.keep[0], a.keep[1])  # per sample


def test_objective_is_seeded_by_the_step_generator_and_follows_the_recipe():
    from brainfm_cli.models.objective import StepInfo

    model = tiny_model(100)
    obj = type(model).pretraining_objective(model, {})
    assert obj.recipe["lr"] == 2.5e-4 and obj.recipe["grad_clip"] == 0.8 and obj.recipe["betas"] == (0.9, 0.95)
    assert obj.recipe["warmup"] == pytest.approx(40 / 500) and obj.sample_length == 1
    x, valid = torch.randn(4, 100, 1), torch.ones(4, dtype=torch.long)
    losses = [obj(x, valid, StepInfo(0, 10, torch.Generator().manual_seed(s)))[0].item() for s in (1, 1, 2)]
    assert losses[0] == losses[1] != losses[2]
    with pytest.raises(BrainfmError, match="unknown SC-MBM objective options"):
        type(model).pretraining_objective(model, {"ratio": 0.5})
    with pytest.raises(BrainfmError, match="patches visible"):
        type(model).pretraining_objective(model, {"mask_ratio": 0.95})


def test_reconstruction_loss_counts_only_masked_patches_and_real_voxels():
    from brainfm_cli.masking.random import random_mask
    from brainfm_cli.models.sc_mbm import masked_voxel_loss

    model = tiny_model(40)  # 3 patches: the last holds voxels 32-39 and 8 padding copies
    target = model.patchify(torch.randn(2, 40))
    pred = torch.randn_like(target)
    tm = random_mask(2, 3, 0.5, noise=torch.tensor([[0.1, 0.9, 0.8], [0.9, 0.1, 0.8]]), keep_floor=True)  # keep 1 patch
    assert tm.keep.tolist() == [[0], [1]]
    w = model.voxel_weights()
    base, base_all = masked_voxel_loss(pred, target, tm.masked, w), masked_voxel_loss(pred, target, tm.masked)
    visible = pred.clone()
    visible[0, 0] += 5.0
    visible[1, 1] += 5.0
    assert masked_voxel_loss(visible, target, tm.masked, w) == base
    padding = pred.clone()
    padding[:, 2, 8:] += 5.0
    assert masked_voxel_loss(padding, target, tm.masked, w) == base
    assert masked_voxel_loss(padding, target, tm.masked) != base_all  # padding_in_loss: the authors' loss
    hidden = pred.clone()
    hidden[0, 1, 0] += 5.0
    assert masked_voxel_loss(hidden, target, tm.masked, w) != base
    err = (pred - target).pow(2)
    manual = torch.cat([err[0, 1:].reshape(-1)[:24], err[1, [0, 2]].reshape(-1)[:24]]).mean()
    torch.testing.assert_close(base, manual)


# ---------------------------------------------------------------- the authors' checkpoints

def _authors_file(tmp_path) -> Path:
    path = tmp_path / "fmri_encoder.pth"
    torch.save(golden()["checkpoint"], path)
    return path


@pytest.mark.parametrize("kind", ["plain_config", "pickled_config"])
def test_authors_encoder_matches_their_code(tmp_path, kind):
    from brainfm_cli.models import load

    g = golden()
    path = _authors_file(tmp_path) if kind == "plain_config" else GOLDEN / "sc_mbm_fmri_encoder_pickled.pth"
    model = load("sc-mbm-mindvis", weights=path)
    a = model.card.architecture
    assert (a["embed_dim"], a["depth"], a["num_heads"], a["n_patches"], a["decoder_dim"]) == (64, 2, 4, 291, 32)
    assert model.n_voxels == 4656 and model.weights_info["format"] == "authors' checkpoint"
    torch.testing.assert_close(model.blocks[0].norm1.weight, g["checkpoint"]["model"]["blocks.0.norm1.weight"])
    x = g["inputs"]["x"].transpose(1, 2)  # [2, 1, 4656] → [2, 4656 voxels, 1 sample]
    with torch.inference_mode():
        out = model.encode(x)
    want = g["outputs"]["mae_tokens"]  # their ratio-0 encoder, un-shuffled to patch order
    torch.testing.assert_close(out["cls"], want[:, 0], **TOL)
    torch.testing.assert_close(out["tokens"], want[:, 1:], **TOL)


def test_authors_reconstruction_with_their_noise(tmp_path):
    from brainfm_cli.masking.random import random_mask
    from brainfm_cli.models import load
    from brainfm_cli.models.sc_mbm import masked_voxel_loss

    g = golden()
    model = load("sc-mbm-mindvis", weights=_authors_file(tmp_path))
    v = g["inputs"]["x"][:, 0]
    tm = random_mask(2, 291, 0.75, noise=g["inputs"]["noise_ratio75"], keep_floor=True)
    assert torch.equal(tm.bool().float(), g["outputs"]["mae_mask_ratio75"])
    with torch.inference_mode():
        pred = model.reconstruct(v[..., None], tm.keep)
        loss = masked_voxel_loss(pred, model.patchify(v), tm.masked, model.voxel_weights())
    torch.testing.assert_close(pred, g["outputs"]["mae_pred_ratio75"], **TOL)
    torch.testing.assert_close(loss, g["outputs"]["mae_loss_ratio75"], **TOL)


def test_published_key_set_maps_completely():
    """Every key of the published-size fmri_encoder.pth (1024 × 24, decoder 512 × 8) has a home, nothing dropped."""
    from brainfm_cli.models import get_card
    from brainfm_cli.models.checkpoint import Checkpoint, check_keys
    from brainfm_cli.models.sc_mbm import SCMBM

    keys = json.loads((GOLDEN / "sc_mbm_keys.json").read_text())["model"]
    state = {k: torch.empty(v, device="meta") for k, v in keys.items()}
    ckpt = Checkpoint(state={"model": state, "config": {"num_heads": 16, "decoder_num_heads": 16}},
                      path=Path("fmri_encoder.pth"), sha256="")
    card = SCMBM.card_for_checkpoint(get_card("sc-mbm-mindvis"), ckpt)
    with torch.device("meta"):
        model = SCMBM.from_card(card)
    a = model.card.architecture
    assert (a["embed_dim"], a["depth"], a["mlp_ratio"], a["decoder_dim"], a["decoder_depth"]) == (1024, 24, 1.0, 512, 8)
    mapped = model.convert_foreign(ckpt)
    check_keys(model.state_dict(), mapped, None, "sc-mbm-mindvis")
    assert sum(1 for k in mapped if "norm" in k) == sum(1 for k in keys if "norm" in k) == 2 * (24 * 2 + 1 + 8 * 2 + 1)
    encoder = sum(int(np.prod(v)) for k, v in keys.items() if not k.startswith(("decoder", "mask_token")))
    assert sum(p.numel() for k, p in model.state_dict().items() if not k.startswith(("decoder", "mask_token"))) \
        == encoder == 151_560_192


def test_mlp_width_and_sizes_come_from_the_file(tmp_path):
    from brainfm_cli.models import load

    src = tiny_model(100, mlp_ratio=2.0)  # 100 voxels wrap-padded to 7 patches (112 values)
    theirs = {k.replace("patch_embed.", "patch_embed.proj."): v for k, v in src.state_dict().items()}
    config = {"num_heads": 4, "decoder_num_heads": 2}
    torch.save({"model": theirs, "epoch": 3, "config": config}, tmp_path / "fmri_encoder.pth")
    model = load("sc-mbm-mindvis", weights=tmp_path / "fmri_encoder.pth")
    assert model.card.architecture["mlp_ratio"] == 2.0 and model.blocks[0].mlp.fc1.out_features == 64
    assert (model.n_voxels, model.n_patches, model.card.embedding["width"]) == (112, 7, 32)
    v = torch.randn(2, 100)
    with torch.inference_mode():
        torch.testing.assert_close(model.encode(src.padded(v)[..., None])["tokens"], src.encode(v[..., None])["tokens"],
                                   atol=1e-5, rtol=0)


def test_authors_weights_take_a_voxel_set_up_to_their_count_and_refuse_a_parcel_model(tmp_path):
    from brainfm_cli.data.voxels import VoxelSet
    from brainfm_cli.models import load

    path = _authors_file(tmp_path)
    coords = np.stack([np.arange(4650.0), np.zeros(4650), np.zeros(4650)], 1)
    model = load("sc-mbm-mindvis", weights=path, voxels=VoxelSet(coords))
    assert (model.n_voxels, model.n_patches) == (4650, 291) and model.card.input.voxels["count"] == 4650
    assert "does not record its voxels" in model.card.input.voxels["note"]
    too_many = np.stack([np.arange(4700.0), np.zeros(4700), np.zeros(4700)], 1)
    with pytest.raises(BrainfmError, match="do not fit"):
        load("sc-mbm-mindvis", weights=path, voxels=VoxelSet(too_many))
    with pytest.raises(BrainfmError, match="sc-mbm-mindvis"):
        load("sc-mbm", weights=path)


def test_pickled_config_is_read_as_data_and_anything_else_unsafe_stays_refused(tmp_path):
    from brainfm_cli.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(GOLDEN / "sc_mbm_fmri_encoder_pickled.pth")
    assert ckpt.state["config"]["num_voxels"] == 4656 and ckpt.state["config"]["mlp_ratio"] == 1.0

    class Exploit:
        def __reduce__(self):
            return (__import__("os").system, ("echo pwned > /dev/null",))

    module = types.ModuleType("config")
    exec("class Config_MBM_fMRI:\n    pass\nclass Helper:\n    pass", module.__dict__)
    sys.modules["config"] = module
    try:
        cfg = module.Config_MBM_fMRI()
        cfg.lr = 1.0
        torch.save({"model": {}, "config": cfg, "x": Exploit()}, tmp_path / "evil.pth")
        torch.save({"model": {}, "config": module.Helper()}, tmp_path / "other.pth")
    finally:
        del sys.modules["config"]
    for name in ("evil.pth", "other.pth"):
        with pytest.raises(BrainfmError, match="refused to load"):
            read_checkpoint(tmp_path / name)


# ---------------------------------------------------------------- voxel inputs end to end

def test_roi_from_atlas_labels_is_region_major(tmp_path):
    from brainfm_cli.data.voxels import RoiSpec

    vs = RoiSpec(atlas="aal", labels=("Calcarine_R", "Calcarine_L")).select(SHAPE_6MM, AFFINE_6MM)
    assert vs.regions[0] == "Calcarine_R" and set(vs.regions) == {"Calcarine_R", "Calcarine_L"}
    first_left = vs.regions.index("Calcarine_L")
    assert set(vs.regions[first_left:]) == {"Calcarine_L"} and (vs.coords[:first_left, 0] > 0).all()
    assert (np.diff(vs.flat[:first_left]) > 0).all()  # inside a region: image order
    with pytest.raises(BrainfmError, match="no region 'Calcarine'"):
        RoiSpec(atlas="aal", labels=("Calcarine",)).select(SHAPE_6MM, AFFINE_6MM)


def test_embed_a_nifti_run_inside_a_mask(tmp_path, voxel_setup):
    from brainfm_cli.io.bids import discover_bold
    from brainfm_cli.data.clean import CleanParams
    from brainfm_cli.data.preprocess import Preprocessor
    from brainfm_cli.data.voxels import RoiSpec, extract_voxel_run
    from brainfm_cli.models import load

    s = voxel_setup
    out = run_cli("embed", s["bold"], "--model", "sc-mbm-voxels", "--weights", s["weights"], "--roi-mask", s["mask"],
                  "-o", tmp_path / "e.tsv")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert len(df) == 10 and df["window"].tolist() == list(range(10))  # 40 frames at TR 2 s → ten 8 s samples
    assert df.filter(like="emb_").shape[1] == TINY["sc-mbm-voxels"]["embed_dim"]
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["Pooling"] == "mean" and side["InputSpace"]["voxels"]["count"] == s["voxels"].count
    assert side["Preprocessing"]["RepetitionTime"] == 8.0 and side["Preprocessing"]["Normalisation"] == "zscore_global"
    # the same numbers through the Python API
    model = load("sc-mbm-voxels", weights=s["weights"])
    ts = extract_voxel_run(discover_bold([s["bold"]])[0], RoiSpec(mask=str(s["mask"])), CleanParams())
    x, _ = Preprocessor.from_space(model.card.input).prepare(ts.data.to_numpy(), ts.tr)
    with torch.inference_mode():
        want = model.pool(model.encode(torch.from_numpy(x.T[:, :, None])), "mean").numpy()
    np.testing.assert_allclose(df.filter(like="emb_").to_numpy(), want, atol=1e-5, rtol=1e-5)
    tok = invoke("embed", s["bold"], "--model", "sc-mbm-voxels", "--weights", s["weights"], "--roi-mask", s["mask"],
                 "--pooling", "tokens", "--average-window", "16", "--aggregate", "mean", "-o", tmp_path / "t.tsv")
    assert tok.exit_code == 0, tok.output
    assert len(pd.read_csv(tmp_path / "t.tsv", sep="\t")) == model.n_patches  # one run, averaged, a row per token


def test_a_checkpoint_on_another_voxel_set_is_refused_with_the_reason(tmp_path, voxel_setup, tiny_brainlm):
    from brainfm_cli.models import load

    s = voxel_setup
    cases = {"count differs": occipital_mask(lower=0.0), "not the same voxels": occipital_mask(shift=1)}
    for reason, mask in cases.items():
        path = write_mask(tmp_path / f"m{len(reason)}.nii.gz", mask)
        r = invoke("embed", s["bold"], "--model", "sc-mbm-voxels", "--weights", s["weights"], "--roi-mask", path)
        assert r.exit_code == 1 and reason in r.output and "fix:" in r.output, r.output
    names = list(s["voxels"].names)
    data = np.random.default_rng(0).standard_normal((40, len(names)))
    tsv = write_timeseries_tsv(tmp_path / "sub-02_task-rest_timeseries.tsv", data, names[::-1])
    r = invoke("embed", tsv, "--model", "sc-mbm-voxels", "--weights", s["weights"])
    assert r.exit_code == 1 and "in another order" in r.output
    ok = write_timeseries_tsv(tmp_path / "ok" / "sub-03_task-rest_timeseries.tsv", data, names)
    assert invoke("embed", ok, "--model", "sc-mbm-voxels", "--weights", s["weights"]).exit_code == 0
    from brainfm_cli.data.voxels import read_voxel_set

    assert read_voxel_set(ok).names == names  # a voxel series' header is a voxel list too
    with pytest.raises(BrainfmError, match="needs its voxel set"):
        load("sc-mbm-voxels", pretrained=False)
    r = invoke("embed", s["bold"], "--model", "brainlm", "--weights", tiny_brainlm, "--average-window", "8")
    assert r.exit_code == 1 and "--average-window is for models that average" in r.output


def test_parcel_vectors_are_the_offline_default(tmp_path):
    from brainfm_cli.models import load

    corpus = make_region_corpus(tmp_path / "deriv", n_subjects=1, n_vols=60)
    torch.manual_seed(0)
    weights = load("sc-mbm", pretrained=False, architecture=TINY["sc-mbm"]).save(tmp_path / "w.safetensors")
    out = invoke("embed", corpus, "--model", "sc-mbm", "--weights", weights, "--pooling", "cls", "-o", tmp_path / "e.tsv")
    assert out.exit_code == 0, out.output
    assert len(pd.read_csv(tmp_path / "e.tsv", sep="\t")) == 15  # 60 frames at TR 2 s, 4 per 8 s sample
    bad = invoke("embed", write_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", n_vols=20), "--model", "sc-mbm",
                 "--weights", weights, "--roi-mask", write_mask(tmp_path / "m.nii.gz", occipital_mask()))
    assert bad.exit_code == 1 and "not voxels" in bad.output


@pytest.mark.slow
def test_voxels_command_pretrain_and_embed(tmp_path, voxel_setup):
    s = voxel_setup
    for sub in ("02", "03"):
        write_bold(tmp_path / "bids" / f"sub-{sub}" / "func" / f"sub-{sub}_task-rest_bold.nii.gz", n_vols=48,
                   seed=int(sub))
    out = run_cli("voxels", tmp_path / "bids", "--roi-mask", s["mask"], "-o", tmp_path / "vox", "--quiet")
    assert out.returncode == 0, out.stderr
    listing = pd.read_csv(tmp_path / "vox" / "voxels.tsv", sep="\t")
    assert listing["name"].tolist() == s["voxels"].names
    arch = [f"--arch={k}={v}" for k, v in TINY["sc-mbm-voxels"].items()]
    run = run_cli("pretrain", "--val-fraction", "0", "--crops-per-run", "1", tmp_path / "vox", "--model", "sc-mbm-voxels", f"--arch=voxels={tmp_path / 'vox'}",
                  *arch, "-o", tmp_path / "run", "--epochs", "4", "--batch-size", "2", "--quiet")
    assert run.returncode == 0, run.stderr
    metrics = pd.read_csv(tmp_path / "run" / "metrics.tsv", sep="\t")
    assert len(metrics) == 4 and np.isfinite(metrics["loss"]).all() and metrics["grad_norm"].notna().all()
    emb = run_cli("embed", s["bold"], "--model", tmp_path / "run" / "model.yaml", "--roi-mask", s["mask"],
                  "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 2


def test_a_model_trained_from_scratch_starts_by_predicting_the_mean():
    from brainfm_cli.models import load

    model = load("sc-mbm", pretrained=False, architecture=TINY["sc-mbm"])
    assert torch.count_nonzero(model.decoder_pred.weight) == 0  # a random head's noise made it collapse (R² −1.6)
    trained = load("sc-mbm-sim")
    assert torch.count_nonzero(trained.decoder_pred.weight) > 0  # weights replace the initialisation
