"""Regions without data (``--missing-regions mask``): out of every loss, and out of attention where a family has a
token per region, so what a zero-filled region holds can change nothing; they are never scored."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm_cli.models import build
from brainfm_cli.models.objective import StepInfo
from conftest import TINY, run_cli
from test_pretrain import learnable_corpus

N = 30  # regions of the learnable corpus (the first 30 of Seitzman-300)


def _info(seed=0):
    return StepInfo(3, 10, torch.Generator().manual_seed(seed))


def _objective(name, **arch):
    from brainfm_cli.engine.ema import build_objective
    from brainfm_cli.models import get_card

    card = get_card(name).with_architecture(**TINY[name], **arch)
    torch.manual_seed(0)
    return build_objective(build(card), {})


def _garbage(x, absent):
    """``x`` with the absent regions' values replaced by large noise (what no model should read)."""
    y = x.clone()
    y[absent] = 50 * torch.randn_like(y[absent])
    return y


@pytest.mark.parametrize("name", ["brainlm", "brain-jepa"])
def test_absent_regions_change_neither_the_loss_nor_the_embedding(name):
    obj = _objective(name).eval()
    model = obj.model
    R, T = model.card.input.n_regions, model.card.input.seq_len
    x = torch.randn(2, R, T)
    absent = torch.zeros(2, R, dtype=torch.bool)
    absent[0, [3, 40, 41]] = True
    absent[1, 7] = True
    valid = torch.full((2,), T)
    with torch.no_grad():
        a = obj(x, valid, _info(), absent)[0]
        b = obj(_garbage(x, absent), valid, _info(), absent)[0]
        c = obj(_garbage(x, absent), valid, _info(), None)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)  # without the mask the same values do count
    mask = model.padding_mask([T, T], T, absent)
    with torch.no_grad():
        e1 = model.pool(model.encode(x, mask), "mean")
        e2 = model.pool(model.encode(_garbage(x, absent), mask), "mean")
    torch.testing.assert_close(e1, e2)


def test_brainlm_hides_absent_tokens_first_and_never_scores_them():
    obj = _objective("brainlm")
    x = torch.randn(1, 300, 200)
    absent = torch.zeros(1, 300, dtype=torch.bool)
    absent[0, :30] = True  # 300 of 3000 tokens: fewer than the 2250 a 0.75 mask hides
    seen = {}

    def spy(xx, keep, gone):
        seen["keep"], seen["gone"] = keep, gone
        return torch.zeros(1, 3000, 20)

    obj.model.reconstruct = spy
    obj(x, torch.tensor([200]), _info(), absent)
    assert bool(seen["gone"][0, :300].all()) and not bool(seen["gone"][0, 300:].any())
    assert not bool((seen["keep"] < 300).any())  # no token of an absent region is visible


def test_semantoks_masks_a_network_with_no_data_and_keeps_zeros_otherwise():
    obj = _objective("semantoks")
    model = obj.model
    groups = model.groups()
    absent = torch.zeros(1, model.n_regions, dtype=torch.bool)
    absent[0, groups[2]] = True  # a whole network
    absent[0, groups[0][0]] = True  # one region of another
    mask = model.padding_mask([model.card.input.seq_len], model.card.input.seq_len, absent)
    assert mask.shape == (1, model.n_networks, model.n_patches)
    assert bool(mask[0, 2].all()) and int(mask.sum()) == model.n_patches


def test_sc_mbm_leaves_absent_voxels_out_of_the_loss():
    from brainfm_cli.models.sc_mbm import masked_voxel_loss

    pred, target = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    masked = torch.tensor([[0, 1], [1, 2]])
    w = torch.ones(2, 3, 4)
    w[0, 0] = 0  # the first patch of sample 0 has no data
    target[0, 0] = 100.0
    assert float(masked_voxel_loss(pred, target, masked, w)) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def holey(tmp_path_factory):
    """The learnable corpus with one region without data in two of the five participants' runs."""
    root = learnable_corpus(tmp_path_factory.mktemp("holey"), n_subjects=5, n_vols=240)
    for sub in ("sub-02", "sub-04"):
        path = next((root / sub / "func").glob("*.tsv"))
        table = pd.read_csv(path, sep="\t")
        table.iloc[:, 5] = np.nan
        table.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return root


def test_pretrain_and_reconstruct_mask_regions_without_data(tmp_path, holey):
    args = ("--model", "brainlm", "--atlas", "seitzman300", "--size", "tiny", "--max-steps", "4", "--batch-size", "4",
            "--val-every", "2", "-q")
    refused = run_cli("pretrain", holey, "-o", tmp_path / "no", *args)
    assert refused.returncode == 1 and "--missing-regions mask" in refused.stderr
    out = run_cli("pretrain", holey, "-o", tmp_path / "run", *args, "--missing-regions", "mask")
    assert out.returncode == 0, out.stderr
    val = pd.read_csv(tmp_path / "run" / "validation.tsv", sep="\t")
    assert np.isfinite(val["val_loss"]).all() and "val_fc_r2" in val
    rec = run_cli("reconstruct", holey, "--model", tmp_path / "run" / "model.yaml", "-o", tmp_path / "rec",
                  "--mask-ratio", "0.5", "--missing-regions", "mask", "-q")
    assert rec.returncode == 0, rec.stderr
    zero = run_cli("reconstruct", holey, "--model", tmp_path / "run" / "model.yaml", "-o", tmp_path / "rec0",
                   "--mask-ratio", "0.5", "--missing-regions", "zero", "-q")
    n_mask = pd.read_csv(tmp_path / "rec" / "metrics.tsv", sep="\t")["n_values"].iloc[0]
    n_zero = pd.read_csv(tmp_path / "rec0" / "metrics.tsv", sep="\t")["n_values"].iloc[0]
    assert n_mask < n_zero  # the hidden values of the two empty regions are not scored under mask


def test_an_unknown_missing_regions_mode_is_an_error(tmp_path, holey):
    out = run_cli("pretrain", holey, "--model", "brainlm", "-o", tmp_path / "r", "--missing-regions", "drop")
    assert out.returncode == 1 and "error, mask or zero" in out.stderr
