import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from brainfm_cli.io.files import atomic_group, atomic_write, read_tsv, sidecar_path, write_tsv
from brainfm_cli.errors import BrainfmError

from conftest import leftovers, make_bids


def test_atomic_write_leaves_nothing_on_error_or_interrupt(tmp_path):
    target = tmp_path / "out.tsv"
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with atomic_write(target) as fh:
                fh.write("half")
                raise exc
        assert not target.exists() and not list(tmp_path.iterdir())


def test_atomic_group_all_or_nothing(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "a.json"
    with pytest.raises(ValueError):
        with atomic_group([a, b]) as (ta, tb):
            ta.write_text("x")
            raise ValueError
    assert not a.exists() and not b.exists()
    with atomic_group([a, b]) as (ta, tb):
        ta.write_text("x")
        tb.write_text("{}")
    assert a.read_text() == "x" and b.read_text() == "{}"


def test_tsv_round_trip_with_na(tmp_path):
    df = pd.DataFrame({"a": [1.5, 2.0], "b": [float("nan")] * 2})
    write_tsv(df, tmp_path / "x.tsv")
    assert "n/a" in (tmp_path / "x.tsv").read_text()
    back = read_tsv(tmp_path / "x.tsv")
    assert back["b"].isna().all() and back["a"].tolist() == [1.5, 2.0]
    with pytest.raises(BrainfmError, match="not found"):
        read_tsv(tmp_path / "missing.tsv")
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(BrainfmError, match="empty"):
        read_tsv(tmp_path / "empty.tsv")


def test_sidecar_path():
    assert sidecar_path("a/sub-01_bold.nii.gz").name == "sub-01_bold.json"
    assert sidecar_path("a/x_timeseries.tsv").name == "x_timeseries.json"


@pytest.mark.slow
def test_ctrl_c_during_parcellate_leaves_no_partial_file(tmp_path):
    """SIGINT at some point of a multi-run job: every file present is complete, none is half-written."""
    bids = make_bids(tmp_path / "bids", subjects=[f"{i:02d}" for i in range(8)], n_vols=60)
    out = tmp_path / "out"
    env = dict(os.environ, BRAINFM_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "brainfm_cli", "parcellate", str(bids), "-o", str(out),
                             "--atlas", "dosenbach160", "-q"], stderr=subprocess.PIPE, text=True, env=env)
    while not list(out.rglob("*_timeseries.tsv")) and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert not leftovers(out)
    for tsv in out.rglob("*_timeseries.tsv"):
        assert sidecar_path(tsv).exists()
        assert pd.read_csv(tsv, sep="\t").shape == (60, 160)
    if proc.returncode != 0:
        assert "Traceback" not in err


@pytest.mark.parametrize("dtype", [np.float32, np.int16, ">f4"])
def test_fast_gz_reader_equals_nibabel(tmp_path, dtype):
    import nibabel as nib

    from brainfm_cli.io.nifti import read_data

    data = (np.random.default_rng(0).random((6, 7, 8, 5)) * 1000).astype(np.float32)
    img = nib.Nifti1Image(data.astype(dtype), np.eye(4))
    nib.save(img, tmp_path / "x.nii.gz")
    loaded = nib.load(tmp_path / "x.nii.gz")
    ours = read_data(loaded, tmp_path / "x.nii.gz")
    assert ours.dtype == np.float32 and ours.flags["F_CONTIGUOUS"]
    np.testing.assert_array_equal(ours, loaded.get_fdata(dtype=np.float32))


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os

    from brainfm_cli.io.files import write_json

    write_json({"a": 1}, tmp_path / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~mask
