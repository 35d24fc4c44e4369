"""``brainfm simulate``: realistic BOLD, recoverable planted effects, a stimulation truth that matches theory,
a NIfTI round trip through ``parcellate``, and byte-identical output under a seed."""

import filecmp
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfm_cli.atlases import load_atlas
from brainfm_cli.io.timeseries import discover_timeseries, read_timeseries
from brainfm_cli.tasks.simulate import SimulationConfig, simulate_dataset
from brainfm_cli.tasks.simulate.connectome import same_network
from brainfm_cli.tasks.simulate.dynamics import Hemodynamics

from conftest import AFFINE_6MM, SHAPE_6MM, invoke, leftovers, run_cli

TRUTH = "derivatives/simulation"


def _noiseless(root, run_file):
    """The ground-truth noiseless BOLD of the run a time-series (or parcellated) file came from."""
    stem = run_file.name.split("_atlas-")[0].removesuffix("_bold.nii.gz")
    (match,) = (root / TRUTH).rglob(f"{stem}_atlas-*_desc-noiseless_bold.tsv")
    return pd.read_csv(match, sep="\t")


def _fc_by_membership(series: np.ndarray, networks: list[str]):
    fc = np.corrcoef(series.T)
    same = same_network(networks)
    iu = np.triu_indices(len(networks), 1)
    return fc, fc[iu][same[iu]].mean(), fc[iu][~same[iu]].mean()


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("linear") / "bids"
    simulate_dataset(root, load_atlas("seitzman300"), SimulationConfig(participants=1, duration=600, tr=2.0, seed=3))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("model", ["linear", "hopf"])
def test_simulated_bold_is_realistic(tmp_path, linear_run, model):
    from scipy.signal import welch

    atlas = load_atlas("seitzman300")
    root = linear_run
    if model == "hopf":
        root = tmp_path / "bids"
        simulate_dataset(root, atlas, SimulationConfig(participants=1, duration=600, tr=2.0, seed=3, model="hopf"))
    (f,) = discover_timeseries([root])
    ts = read_timeseries(f)
    assert ts.tr == 2.0 and ts.data.shape == (300, 300) and list(ts.data.columns) == atlas.labels
    x = ts.data.to_numpy() - ts.data.to_numpy().mean(axis=0)
    assert 0.2 < np.median(x.std(axis=0)) < 3.0  # percent signal change, like real BOLD
    freqs, power = welch(x, fs=1 / ts.tr, axis=0, nperseg=128)
    low = power[freqs < 0.1].sum(axis=0) / power.sum(axis=0)
    assert np.median(low) > 0.75 and low.min() > 0.5
    fc, within, between = _fc_by_membership(x, atlas.networks)
    assert within > between + 0.15 and within > 0.2
    nets = np.array(atlas.networks)
    better = [fc[np.ix_(nets == n, nets == n)][np.triu_indices((nets == n).sum(), 1)].mean()
              > fc[np.ix_(nets == n, nets != n)].mean() for n in set(atlas.networks) if n != "unassigned"]
    assert all(better)
    # the observed series is the noiseless truth plus the measurement noise the sidecar records
    clean = _noiseless(root, f).to_numpy()
    resid = ts.data.to_numpy() - 100 - clean
    assert abs(resid.std() / ts.sidecar["MeasurementNoiseSD"] - 1) < 0.05
    assert abs(resid.mean()) < 0.01


@pytest.mark.slow
def test_stimulation_truth_matches_linear_theory(linear_run):
    """The written response equals the steady state of the written coupling: x = tau (I - G C)^-1 u, then
    the Balloon-Windkessel fixed point; each network's own regions respond most."""
    truth = linear_run / TRUTH
    sim = json.loads((truth / "simulation.json").read_text())
    coupling = pd.read_csv(truth / "reference_coupling.tsv", sep="\t", index_col="region")
    gain = json.loads((truth / "reference_coupling.json").read_text())["GlobalGain"]
    response = pd.read_csv(truth / "stimulation_response.tsv", sep="\t", index_col="region")
    meta = json.loads((truth / "stimulation_response.json").read_text())
    model = sim["NeuralModel"]
    regions = pd.read_csv(truth / "regions.tsv", sep="\t")
    c = coupling.to_numpy()
    assert np.allclose(c, c.T) and list(coupling.columns) == list(response.index) == list(regions.region)
    u = np.stack([(regions.network == n).to_numpy() for n in response.columns], axis=1) * meta["Protocol"]["amplitude"]
    x = model["tau_s"] * np.linalg.solve(np.eye(len(c)) - gain * c, u)
    steady = Hemodynamics().steady_bold(model["drive_gain"] * x)
    r = np.corrcoef(steady.ravel(), response.to_numpy().ravel())[0, 1]
    assert r > 0.98
    assert 0.8 < (response.to_numpy() * steady).sum() / (steady ** 2).sum() < 1.1
    for n in response.columns:
        own = (regions.network == n).to_numpy()
        assert response[n][own].mean() > 5 * abs(response[n][~own].mean())
    course = pd.read_csv(truth / "stimulation_timecourse.tsv", sep="\t")
    assert set(course.network) == set(response.columns) and course.time.iloc[0] == 0.0
    assert (course[course.time == 0.0].iloc[:, 2:].to_numpy() == 0).all()


@pytest.mark.slow
def test_planted_phenotype_effects_are_recoverable_from_fc(tmp_path):
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import KFold, cross_val_predict

    root = tmp_path / "bids"
    atlas = load_atlas("dosenbach160")
    simulate_dataset(root, atlas, SimulationConfig(participants=32, duration=180, tr=2.0, seed=4))
    people = pd.read_csv(root / "participants.tsv", sep="\t")
    effects = json.loads((root / TRUTH / "phenotype_effects.json").read_text())
    target = effects["diagnosis"]["network"]
    assert target == "default" and set(people.diagnosis) == {0, 1} and set(people.sex) == {"F", "M"}
    iu = np.triu_indices(atlas.n_regions, 1)
    fc = []
    for pid in people.participant_id:
        (f,) = discover_timeseries([root / pid])
        fc.append(np.arctanh(np.corrcoef(read_timeseries(f).data.to_numpy().T)[iu]))
    fc = np.array(fc)
    cv = KFold(5, shuffle=True, random_state=0)
    ridge = RidgeCV(alphas=np.logspace(-2, 4, 13))
    age = people.age.to_numpy(float)
    r2_age = r2_score(age, cross_val_predict(ridge, fc, age, cv=cv))
    assert r2_age > 0.2
    coords = atlas.region_coords()
    dist = np.linalg.norm(coords[:, None] - coords[None], axis=-1)[iu]
    long_range = fc[:, dist > np.quantile(dist, 0.75)].mean(axis=1)
    assert np.corrcoef(long_range, age)[0, 1] < -0.3  # age weakens long-range coupling
    nets = np.array(atlas.networks)
    in_target = (nets[iu[0]] == target) & (nets[iu[1]] == target)
    in_other = (nets[iu[0]] == nets[iu[1]]) & (nets[iu[0]] != target)
    design = np.c_[age, people.diagnosis, people.sex.eq("M")]
    beta_target = LinearRegression().fit(design, fc[:, in_target].mean(axis=1)).coef_[1]
    beta_other = LinearRegression().fit(design, fc[:, in_other].mean(axis=1)).coef_[1]
    assert beta_target < -0.05 and abs(beta_other) < abs(beta_target) / 3  # the planted network, downwards
    control = people.control_score.to_numpy(float)
    assert r2_score(control, cross_val_predict(ridge, fc, control, cv=cv)) < r2_age - 0.2


@pytest.mark.slow
def test_nifti_round_trip_through_parcellate(tmp_path):
    root, out = tmp_path / "bids", tmp_path / "derivatives"
    sim = run_cli("simulate", "-o", root, "--space", "mni", "--voxel-size", 6, "--participants", 2, "--sessions", 2,
                  "--duration", 90, "--tr", 1.5, "--seed", 7)
    assert sim.returncode == 0, sim.stderr
    assert sim.stdout == "" and not leftovers(root)
    images = sorted(root.glob("sub-*/ses-*/func/*_bold.nii.gz"))
    assert [p.name for p in images] == [f"sub-0{s}_ses-{k}_task-rest_bold.nii.gz" for s in (1, 2) for k in (1, 2)]
    img = nib.load(images[0])
    assert img.shape == SHAPE_6MM + (60,) and np.allclose(img.affine, AFFINE_6MM)
    assert img.header.get_zooms()[3] == pytest.approx(1.5)
    sidecar = images[0].with_name(images[0].name.replace(".nii.gz", ".json"))
    assert json.loads(sidecar.read_text())["RepetitionTime"] == 1.5
    par = run_cli("parcellate", root, "-o", out)
    assert par.returncode == 0, par.stderr
    files = sorted(out.rglob("*_timeseries.tsv"))
    assert len(files) == 4
    for f in files:
        ts = read_timeseries(f)
        assert ts.tr == 1.5 and not ts.missing_regions
        truth = _noiseless(root, f)
        r = [np.corrcoef(ts.data[c], truth[c])[0, 1] for c in truth.columns]
        assert min(r) >= 0.95, f"{f.name}: worst region r = {min(r):.3f}"


def _all_files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
@pytest.mark.parametrize("space", ["regions", "mni"])
def test_same_seed_gives_byte_identical_files(tmp_path, space):
    args = ["--space", space, "--voxel-size", 6, "--atlas", "dosenbach160", "--participants", 2, "--duration", 40]
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        done = run_cli("simulate", "-o", tmp_path / name, "--seed", seed, *args)
        assert done.returncode == 0, done.stderr
    a, b, c = (tmp_path / n for n in "abc")
    files = _all_files(a)
    assert files == _all_files(b) == _all_files(c) and len(files) > 20
    _, mismatch, errors = filecmp.cmpfiles(a, b, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    data = [p for p in files if p.name.endswith(("_bold.nii.gz", "_timeseries.tsv"))]
    assert len(data) == 2
    assert all(not filecmp.cmp(a / p, c / p, shallow=False) for p in data)


@pytest.mark.slow
def test_sessions_runs_and_the_timeseries_contract(tmp_path):
    root = tmp_path / "sim"
    done = run_cli("simulate", "-o", root, "--atlas", "dosenbach160", "--participants", 2, "--sessions", 2,
                   "--runs", 2, "--duration", 40, "--tr", 0.8)
    assert done.returncode == 0, done.stderr
    files = discover_timeseries([root])  # the ground truth under derivatives/ is not mistaken for data
    assert len(files) == 8
    assert files[0].relative_to(root).as_posix() == \
        "sub-01/ses-1/func/sub-01_ses-1_task-rest_run-1_atlas-dosenbach160_timeseries.tsv"
    atlas = load_atlas("dosenbach160")
    runs = [read_timeseries(f) for f in files]
    for ts in runs:
        assert ts.tr == 0.8 and ts.data.shape == (50, 160) and list(ts.data.columns) == atlas.labels
        for key in ("SamplingFrequency", "Atlas", "Sources", "ConfoundsStrategy", "NumberOfVolumesDiscarded",
                    "NumberOfVolumes", "Networks", "GeneratedBy"):
            assert key in ts.sidecar
        assert ts.sidecar["Simulated"] is True and ts.sidecar["Atlas"]["name"] == "dosenbach160"
    assert not np.allclose(runs[0].data, runs[1].data)
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    people = pd.read_csv(root / "participants.tsv", sep="\t")
    described = json.loads((root / "participants.json").read_text())
    assert list(people.participant_id) == ["sub-01", "sub-02"] and set(described) == set(people.columns)
    for pid in people.participant_id:
        c = pd.read_csv(root / TRUTH / pid / f"{pid}_coupling.tsv", sep="\t", index_col="region")
        assert c.shape == (160, 160) and np.allclose(c, c.T) and (np.diag(c) == 0).all()
    response = pd.read_csv(root / TRUTH / "stimulation_response.tsv", sep="\t", index_col="region")
    assert response.shape == (160, 6) and response.notna().all().all()
    assert (root / TRUTH / "simulation.json").is_file() and (root / TRUTH / "stimulation_response.json").is_file()


def test_refuses_atlas_without_networks_and_non_empty_output(tmp_path):
    out = invoke("simulate", "-o", tmp_path / "x", "--atlas", "power264")
    assert out.exit_code == 1 and "--transfer-networks" in out.output
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    out = invoke("simulate", "-o", tmp_path / "full", "--atlas", "dosenbach160")
    assert out.exit_code == 1 and "--overwrite" in out.output
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    out = invoke("simulate", "-o", tmp_path / "y", "--space", "fsaverage")
    assert out.exit_code == 1 and "regions or mni" in out.output
    out = invoke("simulate", "-o", tmp_path / "y", "--duration", 10, "--tr", 2)
    assert out.exit_code == 1 and "fewer than 10 volumes" in out.output
    assert not (tmp_path / "y").exists()
