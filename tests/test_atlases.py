import numpy as np
import nibabel as nib
import pandas as pd
import pytest

from brainfm_cli.atlases import list_atlases, load_atlas
from brainfm_cli.atlases.networks import TRANSFER_NOTE
from brainfm_cli.errors import BrainfmError

from conftest import AFFINE_6MM, SHAPE_6MM


def test_seitzman_default_is_complete():
    a = load_atlas()
    assert a.name == "seitzman300" and a.n_regions == 300 and a.kind == "spheres"
    assert len(set(a.networks) - {"unassigned"}) == 13
    assert set(a.anatomy) >= {"cortexL", "cortexR", "cerebellum", "thalamus"}
    radii = a.radii()
    deep = np.isin(a.anatomy, ["cerebellum", "thalamus", "basalGanglia", "hippocampus", "amygdala"])
    assert (radii[deep] == 4).all() and (radii[~deep] == 5).all()
    assert a.region_coords().shape == (300, 3)


@pytest.mark.parametrize("name,n", [("dosenbach160", 160), ("power264", 264), ("aal", 120),
                                    pytest.param("harvard-oxford", 113, marks=pytest.mark.slow)])
def test_offline_atlases_load_with_centroids(name, n):
    a = load_atlas(name)
    assert a.n_regions == n
    c = a.region_coords()
    assert c.shape == (n, 3) and np.isfinite(c).all()
    assert (np.abs(c) < 120).all()  # inside MNI space


def test_label_centroid_is_centre_of_mass(tmp_path):
    data = np.zeros(SHAPE_6MM, dtype=np.int16)
    data[2:5, 3:6, 4:7] = 7
    nib.save(nib.Nifti1Image(data, AFFINE_6MM), tmp_path / "a.nii.gz")
    pd.DataFrame({"index": [7], "name": ["box"]}).to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    a = load_atlas(str(tmp_path / "a.nii.gz"), tmp_path / "a.tsv")
    expect = AFFINE_6MM[:3, :3] @ np.array([3, 4, 5]) + AFFINE_6MM[:3, 3]
    np.testing.assert_allclose(a.region_coords()[0], expect)


def test_network_transfer_by_nearest_centroid():
    power = load_atlas("power264", transfer=True)
    seitz = load_atlas("seitzman300")
    assert power.network_source == TRANSFER_NOTE and len(power.networks) == 264
    d = np.linalg.norm(power.coords[:, None] - seitz.coords[None], axis=2)
    np.testing.assert_array_equal(power.networks, np.array(seitz.networks)[d.argmin(axis=1)])


def test_unknown_atlas_suggests_closest():
    with pytest.raises(BrainfmError, match="did you mean seitzman300"):
        load_atlas("seitzmann300")


def test_fetchable_atlas_offline_and_uncached_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINFM_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("BRAINFM_OFFLINE", "1")
    from brainfm_cli.atlases import fetch

    fetch.fetch_atlas.cache_clear()
    with pytest.raises(BrainfmError) as err:
        load_atlas("schaefer400-7")
    assert "not in the cache" in str(err.value) and "--atlas FILE.nii.gz" in str(err.value)
    assert str(tmp_path / "cache") in str(err.value)


def test_schaefer_size_checked():
    with pytest.raises(BrainfmError, match="100..1000"):
        load_atlas("schaefer150-7")


def test_user_atlas_errors(tmp_path):
    data = np.zeros(SHAPE_6MM, dtype=np.int16)
    data[2:5, 3:6, 4:7] = 1
    nib.save(nib.Nifti1Image(data, AFFINE_6MM), tmp_path / "a.nii.gz")
    with pytest.raises(BrainfmError, match="--atlas-labels"):
        load_atlas(str(tmp_path / "a.nii.gz"))
    pd.DataFrame({"idx": [1]}).to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(BrainfmError, match="lacks column"):
        load_atlas(str(tmp_path / "a.nii.gz"), tmp_path / "bad.tsv")
    pd.DataFrame({"index": [1, 2], "name": ["a", "b"]}).to_csv(tmp_path / "two.tsv", sep="\t", index=False)
    with pytest.raises(BrainfmError, match="do not occur in the image"):
        load_atlas(str(tmp_path / "a.nii.gz"), tmp_path / "two.tsv")


def test_listing_covers_every_family():
    names = {r["name"] for r in list_atlases()}
    assert {"seitzman300", "dosenbach160", "power264", "aal", "harvard-oxford"} <= names
    assert any(n.startswith("schaefer") for n in names) and any(n.startswith("difumo") for n in names)
    for row in list_atlases():
        assert row["licence"] and row["space"]


def test_a_folder_named_like_an_atlas_is_not_an_atlas_file(tmp_path, monkeypatch):
    from brainfm_cli.atlases import load_atlas

    monkeypatch.chdir(tmp_path)
    (tmp_path / "dosenbach160").mkdir()
    assert load_atlas("dosenbach160").n_regions == 160
