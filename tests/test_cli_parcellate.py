"""``brainfm parcellate`` and ``brainfm atlases`` as a user runs them: real subprocesses, real files."""

import gzip
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import AFFINE_6MM, SHAPE_6MM, invoke, leftovers, run_cli, run_process, write_bold


def test_help_lists_commands_and_version():
    out = run_process("--help")  # a real interpreter: the module entry point starts
    assert out.returncode == 0 and "parcellate" in out.stdout and "atlases" in out.stdout
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("brainfm ")


@pytest.mark.slow
def test_parcellate_bids_dataset(tmp_path, bids):
    out = run_cli("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--detrend", "-j", "2")
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "out").rglob("*_timeseries.tsv"))
    assert [f.name for f in files] == ["sub-01_task-rest_atlas-dosenbach160_timeseries.tsv",
                                       "sub-02_task-rest_atlas-dosenbach160_timeseries.tsv"]
    side = json.loads(files[0].with_suffix(".json").read_text())
    assert side["RepetitionTime"] == 2.0 and side["Detrend"] is True and side["Atlas"]["n_regions"] == 160
    assert out.stdout == ""  # progress and messages go to stderr


@pytest.mark.slow
def test_stdout_pipe_with_one_run(tmp_path, bids):
    out = run_process("parcellate", bids, "-o", "-", "--participant-label", "sub-01", "--atlas", "dosenbach160")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 41 and len(lines[0].split("\t")) == 160
    many = run_cli("parcellate", bids, "-o", "-", "--atlas", "dosenbach160")
    assert many.returncode == 1 and "one run" in many.stderr


@pytest.mark.slow
def test_fmriprep_with_confounds(tmp_path, fmriprep):
    out = run_cli("parcellate", fmriprep, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--confounds",
                  "scrubbing", "--high-pass", "0.01")
    assert out.returncode == 0, out.stderr
    (f,) = (tmp_path / "out").rglob("*_timeseries.tsv")
    side = json.loads(f.with_suffix(".json").read_text())
    assert side["ConfoundsStrategy"] == "scrubbing" and side["NumberOfVolumesDiscarded"] == 3
    assert len(pd.read_csv(f, sep="\t")) == side["NumberOfVolumes"] <= 27


@pytest.mark.slow
def test_user_atlas_from_files(tmp_path, bids):
    labels = np.zeros(SHAPE_6MM, dtype=np.int16)
    labels[10:14, 10:20, 10:20] = 3
    labels[16:20, 10:20, 10:20] = 5
    nib.save(nib.Nifti1Image(labels, AFFINE_6MM), tmp_path / "mine.nii.gz")
    pd.DataFrame({"index": [3, 5], "name": ["left", "right"]}).to_csv(tmp_path / "mine.tsv", sep="\t", index=False)
    out = run_cli("parcellate", bids, "-o", tmp_path / "out", "--atlas", tmp_path / "mine.nii.gz",
                  "--atlas-labels", tmp_path / "mine.tsv", "--transfer-networks")
    assert out.returncode == 0, out.stderr
    f = next((tmp_path / "out").rglob("*_timeseries.tsv"))
    assert list(pd.read_csv(f, sep="\t").columns) == ["left", "right"]
    side = json.loads(f.with_suffix(".json").read_text())
    assert "transferred from seitzman300" in side["NetworksSource"]


@pytest.mark.slow
def test_atlases_listing():
    out = run_cli("atlases", "--tsv")
    assert out.returncode == 0
    table = pd.read_csv(__import__("io").StringIO(out.stdout), sep="\t")
    assert {"seitzman300", "aal"} <= set(table["name"]) and "licence" in table.columns
    out = run_cli("atlases", "--fetch", "schaefer400-7")
    assert out.returncode == 1 and "not in the cache" in out.stderr


def _bad_inputs(tmp_path):
    """(name, inputs, extra args, text the error must contain) for every bad input the issue lists."""
    cases = []
    img3d = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE_6MM, np.float32), AFFINE_6MM), img3d)
    cases.append(("3d", [img3d], [], "must be 4-D"))
    good = write_bold(tmp_path / "sub-02_task-rest_bold.nii.gz", n_vols=20)
    trunc = tmp_path / "sub-03_task-rest_bold.nii.gz"
    trunc.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    cases.append(("truncated", [trunc], [], "truncated or corrupt"))
    notnifti = tmp_path / "sub-04_task-rest_bold.nii.gz"
    notnifti.write_bytes(gzip.compress(b"this is not an image"))
    cases.append(("not-nifti", [notnifti], [], "not a readable NIfTI"))
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    cases.append(("text-file", [txt], [], "not a readable NIfTI"))
    small = np.random.default_rng(0).standard_normal((8, 8, 8, 20)).astype(np.float32)
    fov = write_bold(tmp_path / "sub-05_task-rest_bold.nii.gz", data=small)
    cases.append(("fov", [fov], [], "misses most of the atlas"))
    nan = np.random.default_rng(0).standard_normal(SHAPE_6MM + (20,)).astype(np.float32)
    nan[5:25, 5:30, 5:25, 3] = np.nan
    cases.append(("nan", [write_bold(tmp_path / "sub-06_task-rest_bold.nii.gz", data=nan)], [], "NaN"))
    const = np.full(SHAPE_6MM + (20,), 7.0, np.float32)
    cases.append(("constant", [write_bold(tmp_path / "sub-07_task-rest_bold.nii.gz", data=const)], [], "constant"))
    cases.append(("tr0", [good], ["--tr", "0"], "positive"))
    side = write_bold(tmp_path / "sub-08_task-rest_bold.nii.gz", n_vols=20, sidecar=True)
    cases.append(("tr-contradicts", [side], ["--tr", "3"], "contradicts"))
    (tmp_path / "empty").mkdir()
    cases.append(("empty-folder", [tmp_path / "empty"], [], "no BOLD runs"))
    (tmp_path / "nonbids").mkdir()
    (tmp_path / "nonbids" / "data.csv").write_text("a,b\n")
    cases.append(("non-bids", [tmp_path / "nonbids"], [], "not a BIDS dataset"))
    cases.append(("unknown-atlas", [good], ["--atlas", "shaefer400"], "unknown atlas"))
    cases.append(("confounds-missing", [good], ["--confounds", "compcor"], "confounds"))
    cases.append(("bad-strategy", [good], ["--confounds", "aggressive"], "unknown confounds strategy"))
    return {c[0]: c[1:] for c in cases}


BAD = ["3d", "truncated", "not-nifti", "text-file", "fov", "nan", "constant", "tr0", "tr-contradicts",
       "empty-folder", "non-bids", "unknown-atlas", "confounds-missing", "bad-strategy"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_1_with_named_file_and_fix(tmp_path, case):
    """In-process (CliRunner) for speed; the subprocess path is covered by the tests above and below."""
    inputs, extra, expected = _bad_inputs(tmp_path)[case]
    out_dir = tmp_path / "out"
    res = invoke("parcellate", *inputs, "-o", out_dir, "--atlas", "dosenbach160", *extra)
    assert res.exit_code == 1, res.output
    assert expected in res.stderr
    assert "fix:" in res.stderr
    if case not in ("unknown-atlas", "bad-strategy", "tr0"):
        assert str(inputs[0]) in res.stderr  # the message names the file at fault
    assert not list(out_dir.rglob("*_timeseries.*")) if out_dir.exists() else True
    assert not leftovers(out_dir)
    assert "Traceback" not in res.stderr and res.exception is None or isinstance(res.exception, SystemExit)


@pytest.mark.slow
def test_existing_output_refused_without_overwrite(tmp_path, bids):
    args = ("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160")
    assert run_cli(*args).returncode == 0
    f = next((tmp_path / "out").rglob("*_timeseries.tsv"))
    before = f.read_bytes()
    again = run_cli(*args)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert f.read_bytes() == before
    assert run_cli(*args, "--overwrite", "--standardize").returncode == 0
    assert f.read_bytes() != before



def test_a_run_too_short_for_the_band_pass_is_an_error_naming_it(tmp_path):
    from conftest import make_bids

    bids = make_bids(tmp_path / "bids", subjects=("01",), n_vols=30)
    out = run_cli("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--high-pass", "0.01",
                  "--low-pass", "0.1")
    assert out.returncode == 1 and "too few for the band-pass" in out.stderr and "sub-01" in out.stderr
