"""The parcellation pipeline on real NIfTI files: round trip, confounds, coverage, parallel runs."""

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfm_cli.atlases import load_atlas
from brainfm_cli.io.bids import discover_bold
from brainfm_cli.data.clean import CleanParams
from brainfm_cli.data.extract import extract_run
from brainfm_cli.tasks.parcellate import parcellate
from brainfm_cli.io.timeseries import read_timeseries
from brainfm_cli.errors import BrainfmError

from conftest import AFFINE_6MM, SHAPE_6MM, write_bold


def _box_atlas(tmp_path, n=6):
    """A label atlas of ``n`` separate boxes on the 6 mm grid, with its labels TSV."""
    labels = np.zeros(SHAPE_6MM, dtype=np.int16)
    for k in range(n):
        labels[4 + 4 * k: 7 + 4 * k, 10:16, 10:16] = k + 1
    nib.save(nib.Nifti1Image(labels, AFFINE_6MM), tmp_path / "boxes.nii.gz")
    pd.DataFrame({"index": range(1, n + 1), "name": [f"box{k}" for k in range(n)],
                  "network": ["A", "A", "B", "B", "C", "C"][:n]}).to_csv(tmp_path / "boxes.tsv", sep="\t", index=False)
    return labels, load_atlas(str(tmp_path / "boxes.nii.gz"), tmp_path / "boxes.tsv")


def test_round_trip_recovers_painted_region_signals(tmp_path):
    labels, atlas = _box_atlas(tmp_path)
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((60, atlas.n_regions))
    data = rng.standard_normal(SHAPE_6MM + (60,)).astype(np.float32) * 0.3
    for k in range(atlas.n_regions):
        data[labels == k + 1] += truth[:, k] * 2
    f = write_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", data=data)
    (run,) = discover_bold([f])
    ts = extract_run(run, atlas, CleanParams(min_coverage=0.0))
    r = [np.corrcoef(ts.data.iloc[:, k], truth[:, k])[0, 1] for k in range(atlas.n_regions)]
    assert min(r) > 0.99
    assert list(ts.data.columns) == [f"box{k}" for k in range(6)]
    assert ts.sidecar["Networks"]["box2"] == "B"


def test_confounds_simple_equals_nilearn_clean_on_the_same_signals(fmriprep):
    from nilearn import signal
    from nilearn.interfaces.fmriprep import load_confounds_strategy

    atlas = load_atlas("dosenbach160")
    (run,) = discover_bold([fmriprep])
    params = CleanParams(confounds="simple", high_pass=0.01, standardize=True)
    ts = extract_run(run, atlas, params)
    raw = extract_run(run, atlas, CleanParams(dummy_scans=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf, mask = load_confounds_strategy(str(run.path), denoise_strategy="simple")
        ref = signal.clean(raw.data.to_numpy(), confounds=conf.to_numpy(), sample_mask=mask, high_pass=0.01, t_r=2.0,
                           standardize="zscore_sample", standardize_confounds=True, detrend=False)
    assert ts.sidecar["NumberOfVolumesDiscarded"] == 3  # fMRIPrep flagged 3 non-steady-state volumes
    assert len(ts.data) == 27
    np.testing.assert_allclose(ts.data.to_numpy(), ref, atol=1e-8)


def test_confounds_without_file_is_an_error(bids):
    run = discover_bold([bids])[0]
    with pytest.raises(BrainfmError, match="--confounds none"):
        extract_run(run, load_atlas("dosenbach160"), CleanParams(confounds="simple"))


def test_filter_without_tr_names_the_flag(tmp_path):
    f = write_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", tr=None)
    (run,) = discover_bold([f])
    with pytest.raises(BrainfmError, match="--tr"):
        extract_run(run, load_atlas("dosenbach160"), CleanParams(high_pass=0.01))
    ts = extract_run(run, load_atlas("dosenbach160"), CleanParams(high_pass=0.01, tr=2.0))
    assert ts.sidecar["RepetitionTime"] == 2.0


def test_low_coverage_regions_become_na_columns_and_are_listed(tmp_path):
    data = np.random.default_rng(1).standard_normal(SHAPE_6MM + (20,)).astype(np.float32)
    data[:, :, :8, :] = 0  # nothing below z = -24 mm: cerebellum and inferior temporal ROIs lose coverage
    f = write_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", data=data)
    (run,) = discover_bold([f])
    ts = extract_run(run, load_atlas("seitzman300"), CleanParams())
    missing = ts.sidecar["RegionsBelowCoverage"]
    assert missing and all(ts.data[m].isna().all() for m in missing)
    assert not ts.data.drop(columns=missing).isna().any().any()
    atlas = load_atlas("seitzman300")
    z = dict(zip(atlas.labels, atlas.coords[:, 2]))
    assert max(z[m] for m in missing) < -19  # only regions centred near or below the cut lose coverage
    assert min(z[k] for k in atlas.labels if k not in missing) > -30


def test_parallel_runs_give_identical_files(tmp_path, bids):
    atlas = load_atlas("dosenbach160")
    one = parcellate([bids], tmp_path / "a", atlas, CleanParams(detrend=True), n_jobs=1)
    two = parcellate([bids], tmp_path / "b", atlas, CleanParams(detrend=True), n_jobs=2)
    assert len(one) == len(two) == 2
    for p in one:
        q = tmp_path / "b" / p.relative_to(tmp_path / "a")
        assert p.read_bytes() == q.read_bytes()
    desc = json.loads((tmp_path / "a" / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "brainfm"
    ts = read_timeseries(one[0])
    assert ts.tr == 2.0 and ts.data.shape == (40, 160)


def test_adding_participants_to_existing_output_is_normal(tmp_path, bids):
    atlas = load_atlas("dosenbach160")
    from brainfm_cli.io.bids import RunFilter

    parcellate([bids], tmp_path / "o", atlas, CleanParams(), RunFilter(participant_label=["01"]))
    parcellate([bids], tmp_path / "o", atlas, CleanParams(), RunFilter(participant_label=["02"]))
    with pytest.raises(BrainfmError, match="already exist"):
        parcellate([bids], tmp_path / "o", atlas, CleanParams())
    assert len(parcellate([bids], tmp_path / "o", atlas, CleanParams(), overwrite=True)) == 2
