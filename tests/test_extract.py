"""Our precomputed extraction against nilearn's maskers on the same image (the reference)."""

import warnings

import nibabel as nib
import numpy as np
import pytest

from brainfm_cli.atlases import load_atlas
from brainfm_cli.atlases.base import Atlas
from brainfm_cli.data.extract import extract, region_weights

from conftest import AFFINE_6MM, SHAPE_6MM, brain_mask

AFFINE_3MM = np.array([[-3.0, 0, 0, 90], [0, 3.0, 0, -126], [0, 0, 3.0, -72], [0, 0, 0, 1]])


def _noise(shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.asfortranarray(rng.standard_normal(shape).astype(np.float32))


def _nilearn_spheres(atlas, img):
    from nilearn.maskers import NiftiSpheresMasker

    out = np.zeros((img.shape[3], atlas.n_regions))
    for r in np.unique(atlas.radii()):
        idx = np.nonzero(atlas.radii() == r)[0]
        masker = NiftiSpheresMasker([tuple(c) for c in atlas.coords[idx]], radius=float(r), allow_overlap=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[:, idx] = masker.fit_transform(img)
    return out


def test_overlapping_spheres_count_for_both_like_nilearn():
    seeds = np.array([[0.0, -20.0, 10.0], [4.0, -20.0, 10.0], [-40.0, 20.0, 30.0]])
    atlas = Atlas(name="t", labels=["a", "b", "c"], kind="spheres", coords=seeds, radius=6.0)
    data = _noise((61, 73, 61, 12))
    w = region_weights(atlas, data.shape, AFFINE_3MM)
    member = w.membership.toarray() > 0
    assert (member[0] & member[1]).any()  # a shared voxel belongs to both spheres
    ours = extract(data, w).signals
    ref = _nilearn_spheres(atlas, nib.Nifti1Image(np.asarray(data), AFFINE_3MM))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.slow
def test_seitzman_matches_nilearn_spheres_masker():
    atlas = load_atlas("seitzman300")
    data = _noise((61, 73, 61, 20), seed=1)
    ours = extract(data, region_weights(atlas, data.shape, AFFINE_3MM)).signals
    ref = _nilearn_spheres(atlas, nib.Nifti1Image(np.asarray(data), AFFINE_3MM))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_labels_match_nilearn_labels_masker():
    from nilearn.maskers import NiftiLabelsMasker

    atlas = load_atlas("aal")
    data = _noise(SHAPE_6MM + (15,), seed=2)
    ours = extract(data, region_weights(atlas, data.shape, AFFINE_6MM)).signals
    masker = NiftiLabelsMasker(atlas.image, strategy="mean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = masker.fit_transform(nib.Nifti1Image(np.asarray(data), AFFINE_6MM))
    ids = [int(v) for k, v in masker.region_ids_.items() if k != "background"]
    np.testing.assert_allclose(ours[:, [atlas.indices.index(i) for i in ids]], ref, atol=1e-5)


def test_maps_match_nilearn_maps_masker():
    from nilearn.maskers import NiftiMapsMasker

    rng = np.random.default_rng(3)
    maps = np.zeros(SHAPE_6MM + (4,), dtype=np.float32)
    for k in range(4):
        maps[4 + 5 * k: 10 + 5 * k, 8:20, 6:18, k] = rng.uniform(0.2, 1.0, size=(6, 12, 12))
    img = nib.Nifti1Image(maps, AFFINE_6MM)
    atlas = Atlas(name="m", labels=list("abcd"), kind="maps", image=img)
    data = _noise(SHAPE_6MM + (10,), seed=4)
    ours = extract(data, region_weights(atlas, data.shape, AFFINE_6MM)).signals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = NiftiMapsMasker(img).fit_transform(nib.Nifti1Image(np.asarray(data), AFFINE_6MM))
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_coverage_counts_voxels_outside_fov_and_constant():
    seeds = np.array([[0.0, -20.0, 10.0], [0.0, -20.0, 500.0]])  # second sphere far outside the image
    atlas = Atlas(name="t", labels=["in", "out"], kind="spheres", coords=seeds, radius=8.0)
    data = _noise(SHAPE_6MM + (8,))
    w = region_weights(atlas, data.shape, AFFINE_6MM)
    cov = extract(data, w).coverage
    assert cov[0] == pytest.approx(1.0) and cov[1] == 0.0
    data[~brain_mask()] = 0
    data[:, :, 14:, :] = 5.0  # the top slice of the first sphere becomes constant
    cov = extract(np.asfortranarray(data), w).coverage
    assert cov[0] == pytest.approx(0.4)  # 4 of its 10 voxels still carry signal


def test_weights_are_cached_per_grid():
    atlas = load_atlas("dosenbach160")
    a = region_weights(atlas, SHAPE_6MM, AFFINE_6MM)
    assert region_weights(atlas, SHAPE_6MM + (50,), AFFINE_6MM) is a
    assert region_weights(atlas, (61, 73, 61), AFFINE_3MM) is not a
