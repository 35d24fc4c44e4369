"""``pretrain --atlas``: a corpus on the user's own atlas (all of its regions or a subset, any column order)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import AFFINE_6MM, SHAPE_6MM, run_cli, write_timeseries_tsv


def aal_corpus(root, labels, n_subjects=2, n_vols=200, seed=0, shuffle=True):
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(5).standard_normal((3, len(labels)))
    order = list(rng.permutation(len(labels))) if shuffle else list(range(len(labels)))
    for s in range(n_subjects):
        data = rng.standard_normal((n_vols, 3)) @ mixing + 0.3 * rng.standard_normal((n_vols, len(labels)))
        name = f"sub-{s + 1:02d}_task-rest_atlas-aal_timeseries.tsv"
        write_timeseries_tsv(root / f"sub-{s + 1:02d}" / "func" / name, data[:, order],
                             [labels[i] for i in order], 2.0)
    return root


@pytest.fixture(scope="module")
def aal94():
    from brainfm_cli.atlases import load_atlas

    return list(load_atlas("aal").labels)[:94]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, aal94):
    return aal_corpus(tmp_path_factory.mktemp("aal"), aal94)


def test_a_94_region_aal_corpus_trains_with_one_command_and_embeds(tmp_path, corpus, aal94):
    run = tmp_path / "run"
    out = run_cli("pretrain", corpus, "--model", "brainlm", "--atlas", "aal", "--size", "tiny", "-o", run,
                  "--max-steps", "2", "--batch-size", "2", "-q")
    assert out.returncode == 0, out.stderr
    card = yaml.safe_load((run / "model.yaml").read_text())
    space = card["input"]
    assert space["n_regions"] == 94 and space["regions"] == aal94 and space["atlas"] == "aal"
    assert len(space["coordinates"]) == 94 and "94 of the 120 regions" in space["atlas_description"]
    assert card["architecture"]["embed_dim"] == 64 and card["architecture"]["size"] == "tiny"
    emb = run_cli("embed", corpus, "--model", run / "model.yaml", "--aggregate", "mean")
    assert emb.returncode == 0, emb.stderr
    assert len(emb.stdout.splitlines()) == 3  # header + one row per run, columns re-ordered by name


def test_brain_jepa_on_another_atlas_computes_its_gradients_from_the_corpus(tmp_path, corpus):
    run = tmp_path / "run"
    out = run_cli("pretrain", corpus, "--model", "brain-jepa", "--atlas", "aal", "--size", "tiny", "-o", run,
                  "--max-steps", "1", "--batch-size", "2", "-q")
    assert out.returncode == 0, out.stderr
    g = pd.read_csv(run / "gradients.tsv", sep="\t")
    assert g.shape == (94, 31) and g["region"].tolist()[0] == "Precentral_L"
    card = yaml.safe_load((run / "model.yaml").read_text())
    assert card["architecture"]["gradients"] is None
    assert "computed from the training corpus" in card["architecture"]["gradients_source"]
    assert "computed from the training corpus" in json.loads((run / "gradients.json").read_text())["Description"]


def test_semantoks_needs_networks_and_takes_transferred_ones(tmp_path, corpus):
    out = run_cli("pretrain", corpus, "--model", "semantoks", "--atlas", "aal", "--size", "tiny", "-o",
                  tmp_path / "a", "--max-steps", "1", "--batch-size", "2", "-q")
    assert out.returncode == 1 and "--transfer-networks" in out.stderr and not (tmp_path / "a").exists()
    out = run_cli("pretrain", corpus, "--model", "semantoks", "--atlas", "aal", "--transfer-networks", "--size", "tiny",
                  "-o", tmp_path / "b", "--max-steps", "1", "--batch-size", "2", "-q")
    assert out.returncode == 0, out.stderr
    arch = yaml.safe_load((tmp_path / "b" / "model.yaml").read_text())["architecture"]
    assert sum(n for _, n in arch["networks"]) == 94 and "DefaultMode" in arch["network_names"]


def test_a_user_atlas_file_with_labels(tmp_path):
    img = np.zeros(SHAPE_6MM, dtype=np.int16)
    img[5:10, 5:10, 5:10], img[20:25, 5:10, 5:10], img[5:10, 25:30, 5:10], img[5:10, 5:10, 20:25] = 1, 2, 3, 4
    nib.save(nib.Nifti1Image(img, AFFINE_6MM), tmp_path / "mine.nii.gz")
    names = ["alpha", "beta", "gamma", "delta"]
    pd.DataFrame({"index": [1, 2, 3, 4], "name": names}).to_csv(tmp_path / "mine.tsv", sep="\t", index=False)
    corpus = aal_corpus(tmp_path / "c", names[:3])  # a subset: three of the four regions
    out = run_cli("pretrain", corpus, "--model", "brainlm", "--atlas", tmp_path / "mine.nii.gz", "--atlas-labels",
                  tmp_path / "mine.tsv", "--size", "tiny", "-o", tmp_path / "run", "--max-steps", "1",
                  "--batch-size", "2", "-q")
    assert out.returncode == 0, out.stderr
    space = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())["input"]
    assert space["regions"] == ["alpha", "beta", "gamma"] and space["atlas"] == str(tmp_path / "mine.nii.gz")
    centroid = np.array([7, 7, 7]) * 6.0 * np.array([-1, 1, 1]) + AFFINE_6MM[:3, 3]  # region 1: voxels 5..9
    np.testing.assert_allclose(space["coordinates"][0], centroid)


def test_columns_that_match_no_region_name_the_closest(tmp_path, aal94):
    labels = aal94[:10]
    corpus = aal_corpus(tmp_path / "c", [*labels[:9], "Precentral_Left"])
    out = run_cli("pretrain", corpus, "--model", "brainlm", "--atlas", "aal", "--size", "tiny", "-o",
                  tmp_path / "run", "--max-steps", "1", "-q")
    assert out.returncode == 1
    assert "match no region of atlas aal" in out.stderr and "'Precentral_Left' (closest: Precentral_L" in out.stderr
    assert not (tmp_path / "run").exists()
