"""Shared test fixtures: small real NIfTI runs, BIDS and fMRIPrep-derivative folders built in tmp_path."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

# 6 mm MNI grid covering the whole MNI152 bounding box: small enough for fast tests.
AFFINE_6MM = np.array([[-6.0, 0, 0, 90], [0, 6.0, 0, -126], [0, 0, 6.0, -72], [0, 0, 0, 1]])
SHAPE_6MM = (31, 37, 31)

os.environ.setdefault("BRAINFM_OFFLINE", "1")  # tests never download
# --dtype auto stays float32 on every CPU, so figures do not depend on the processor (test_device.py tests it)
os.environ.setdefault("BRAINFM_CPU_BF16", "0")
# Each test session has its own brainfm data folder: never the user's cache, never another run's.
_DATA = tempfile.mkdtemp(prefix="brainfm-tests-")
os.environ["BRAINFM_DATA"] = _DATA
atexit.register(shutil.rmtree, _DATA, True)


def brain_mask(shape=SHAPE_6MM, affine=AFFINE_6MM) -> np.ndarray:
    """A generous ellipsoid around the MNI brain: voxels outside it stay constant (zero), like real data."""
    ijk = np.indices(shape).reshape(3, -1).T
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    centre, axes = np.array([0.0, -18.0, 8.0]), np.array([80.0, 112.0, 88.0])
    return (((xyz - centre) / axes) ** 2).sum(axis=1).reshape(shape) <= 1.0


def write_bold(path: Path, n_vols: int = 40, tr: float | None = 2.0, seed: int = 0, data: np.ndarray | None = None,
               affine=AFFINE_6MM, sidecar: bool = False, header_tr: float | None = None) -> Path:
    """Write a 4-D float32 NIfTI of noise inside a brain mask (or ``data``); optionally its BIDS sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        rng = np.random.default_rng(seed)
        data = rng.standard_normal(SHAPE_6MM + (n_vols,)).astype(np.float32) * 10 + 100
        data[~brain_mask()] = 0
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")
    zooms = img.header.get_zooms()
    img.header.set_zooms(zooms[:3] + ((header_tr if header_tr is not None else tr or 0.0),))
    nib.save(img, path)
    if sidecar and tr is not None:
        (path.parent / (path.name.split(".")[0] + ".json")).write_text(json.dumps({"RepetitionTime": tr}))
    return path


def make_bids(root: Path, subjects=("01", "02"), sessions=(None,), task="rest", n_vols=40, tr=2.0) -> Path:
    """A raw BIDS dataset; the TR lives in a root-level sidecar (inheritance)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0"}))
    (root / f"task-{task}_bold.json").write_text(json.dumps({"RepetitionTime": tr, "TaskName": task}))
    for i, sub in enumerate(subjects):
        for ses in sessions:
            folder = root / f"sub-{sub}" / (f"ses-{ses}" if ses else "") / "func"
            name = f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + f"_task-{task}_bold.nii.gz"
            write_bold(folder / name, n_vols=n_vols, tr=tr, seed=i)
    return root


NILEARN_CONFOUNDS = Path(__import__("nilearn").__file__).parent / "interfaces" / "fmriprep" / "data"


def make_fmriprep(root: Path, subjects=("01",), spaces=("MNI152NLin2009cAsym",), tr=2.0) -> Path:
    """An fMRIPrep derivatives folder with nilearn's real fMRIPrep confounds file (30 volumes, 3 non-steady)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "fMRIPrep", "DatasetType": "derivative", "GeneratedBy": [{"Name": "fMRIPrep"}]}))
    for i, sub in enumerate(subjects):
        func = root / f"sub-{sub}" / "func"
        func.mkdir(parents=True, exist_ok=True)
        base = f"sub-{sub}_task-rest"
        conf = pd.read_csv(NILEARN_CONFOUNDS / "test-v21_desc-confounds_timeseries.tsv", sep="\t")
        conf["framewise_displacement"] = [np.nan] + [0.1] * 29  # calm motion, with two spikes to scrub
        conf["std_dvars"] = [np.nan] + [1.0] * 29
        conf.loc[[12, 20], ["framewise_displacement", "std_dvars"]] = [0.9, 2.5]
        conf.to_csv(func / f"{base}_desc-confounds_timeseries.tsv", sep="\t", index=False, na_rep="n/a")
        shutil.copy(NILEARN_CONFOUNDS / "test-v21_desc-confounds_timeseries.json",
                    func / f"{base}_desc-confounds_timeseries.json")
        for space in spaces:
            name = f"{base}_space-{space}_desc-preproc_bold.nii.gz"
            write_bold(func / name, n_vols=30, tr=tr, seed=10 + i, sidecar=True)
            mask = nib.Nifti1Image(brain_mask().astype(np.uint8), AFFINE_6MM)
            nib.save(mask, func / f"{base}_space-{space}_desc-brain_mask.nii.gz")
    return root


@dataclass
class CliResult:
    """What a finished ``brainfm`` command left: exit status and both streams (like ``CompletedProcess``)."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(*args, input: str | None = None, cwd=None) -> CliResult:
    """Run ``brainfm`` in-process with typer's CliRunner (no interpreter start-up). Stricter than a subprocess: an
    exception that escapes the command's error handling fails the test instead of looking like exit status 1."""
    from typer.testing import CliRunner

    from brainfm_cli.cli.app import app

    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        res = CliRunner().invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})
    finally:
        os.chdir(old)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return CliResult(res.exit_code, res.stdout, res.stderr)


def run_process(*args, input: str | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run ``brainfm`` as a real subprocess (``python -m brainfm_cli``), for what needs one: start-up, pipes
    between processes, signals."""
    env = dict(os.environ, BRAINFM_OFFLINE="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "brainfm_cli", *map(str, args)], capture_output=True, text=True,
                          input=input, cwd=cwd, env=env)


def invoke(*args, input: str | None = None):
    """Run ``brainfm`` in-process with typer's CliRunner; returns the runner's result (exit code, streams)."""
    from typer.testing import CliRunner

    from brainfm_cli.cli.app import app

    res = CliRunner().invoke(app, [str(a) for a in args], input=input, env={"COLUMNS": "200"})
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an interrupted or failed write would leave behind."""
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".part")] if Path(folder).exists() else []


@pytest.fixture
def bids(tmp_path) -> Path:
    return make_bids(tmp_path / "bids")


@pytest.fixture
def fmriprep(tmp_path) -> Path:
    return make_fmriprep(tmp_path / "fmriprep")


# Tiny architectures for tests: the real code paths at a size a 2-core CPU runs in milliseconds.
TINY = {
    "brainlm": dict(embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "brainlm-vitmae-111m": dict(embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "brain-jepa": dict(size="tiny", embed_dim=32, depth=2, num_heads=4, predictor_dim=16, predictor_depth=2),
    "brain-jepa-ukb": dict(size="tiny", embed_dim=32, depth=2, num_heads=4, predictor_dim=16, predictor_depth=2),
    "sc-mbm": dict(embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "sc-mbm-voxels": dict(embed_dim=32, depth=2, num_heads=4, decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "semantoks": dict(embed_dim=32, depth=2, num_heads=4, projection_hidden_dim=32, projection_dim=16),
    "semantoks-ukb": dict(embed_dim=32, depth=2, num_heads=4, projection_hidden_dim=32, projection_dim=16),
}


def seitzman_labels() -> list[str]:
    from brainfm_cli.atlases import load_atlas

    return list(load_atlas("seitzman300").labels)


def write_timeseries_tsv(path: Path, data: np.ndarray, columns: list[str], tr: float | None = 2.0) -> Path:
    """A region time-series TSV as parcellate writes it (with a sidecar holding the TR unless ``tr`` is None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(data, columns=columns).to_csv(path, sep="\t", index=False, na_rep="n/a")
    if tr is not None:
        path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": tr}))
    return path


def make_region_corpus(root: Path, n_subjects: int = 3, n_vols: int = 220, tr: float = 2.0, seed: int = 0,
                       columns: list[str] | None = None) -> Path:
    """A derivatives folder of Seitzman-300 region series with shared low-frequency structure (learnable)."""
    columns = columns or seitzman_labels()
    rng = np.random.default_rng(seed)
    t = np.arange(n_vols) * tr
    for s in range(n_subjects):
        sources = np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (0.01, 0.03, 0.05, 0.08)], 1)
        mixing = rng.standard_normal((4, len(columns)))
        data = sources @ mixing + 0.3 * rng.standard_normal((n_vols, len(columns)))
        name = f"sub-{s + 1:02d}_task-rest_atlas-seitzman300_timeseries.tsv"
        write_timeseries_tsv(root / f"sub-{s + 1:02d}" / "func" / name, data, columns, tr)
    return root


@pytest.fixture(scope="session")
def tiny_brainlm(tmp_path_factory) -> Path:
    """A brainfm checkpoint of a randomly initialised tiny BrainLM in the Seitzman-300 space."""
    from brainfm_cli.models import load

    path = tmp_path_factory.mktemp("weights") / "brainlm-tiny.safetensors"
    import torch

    torch.manual_seed(0)
    load("brainlm", pretrained=False, architecture=TINY["brainlm"]).save(path)
    return path
