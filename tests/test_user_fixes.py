"""What a new user and a fault-injection pass found: each case fails without its fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from brainfm_cli.errors import BrainfmError
from conftest import invoke, make_bids, run_cli
from test_probe import write_embeddings, write_participants


def test_a_target_constant_among_the_matched_participants_is_refused(tmp_path):
    """The only participant of the second class has no embedding: one class left, nothing to predict."""
    ids = [f"sub-{i:02d}" for i in range(12)]
    emb = write_embeddings(tmp_path / "e.tsv", np.random.default_rng(0).standard_normal((11, 4)), ids[:11])
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, dx=["a"] * 11 + ["b"],
                              age=[30.0] * 11 + [60.0])
    res = invoke("probe", emb, "--target", "dx", "--participants", part, "-o", tmp_path / "o", "--repeats", "1",
                 "--permutations", "0", "--folds", "3")
    assert res.exit_code == 1 and "'a' for every one of the 11 participant(s)" in res.stderr
    res = invoke("probe", emb, "--target", "age", "--task", "regression", "--participants", part, "-o",
                 tmp_path / "o2", "--repeats", "1", "--permutations", "0", "--folds", "3")
    assert res.exit_code == 1 and "for every one of the 11" in res.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_filter_cut_off_at_or_above_nyquist_is_an_error(tmp_path):
    bids = make_bids(tmp_path / "bids", subjects=("01",), n_vols=30, tr=2.0)
    res = invoke("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--low-pass", "0.4")
    assert res.exit_code == 1 and "Nyquist frequency 0.25 Hz" in res.stderr and "TR 2 s" in res.stderr
    assert not list((tmp_path / "out").rglob("*_timeseries.tsv")) if (tmp_path / "out").exists() else True


def test_an_interrupted_simulation_leaves_nothing(tmp_path):
    out = tmp_path / "sim"
    proc = subprocess.Popen([sys.executable, "-m", "brainfm_cli", "simulate", "-o", str(out), "--participants", "40",
                             "--duration", "300", "-q"], stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, BRAINFM_OFFLINE="1"))
    partial = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".sim.partial")]  # noqa: E731
    for _ in range(300):
        if partial() and any(partial()[0].rglob("*_timeseries.tsv")):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists() and not partial()  # neither the dataset nor the folder it was built in


def test_the_same_weights_give_the_same_file_bytes_in_every_process(tmp_path):
    code = ("import torch, sys; from brainfm_cli.models.checkpoint import save_checkpoint; "
            "save_checkpoint({'w': torch.arange(6.).reshape(2, 3), 'b': torch.ones(2)}, {'name': 'x', 'v': [1, 2]}, "
            "sys.argv[1], {'run': 'a', 'seed': '0', 'steps': '3'})")
    for name in ("a", "b", "c"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / f"{name}.safetensors")], check=True)
    blobs = {(tmp_path / f"{n}.safetensors").read_bytes() for n in "abc"}
    assert len(blobs) == 1
    from brainfm_cli.models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(tmp_path / "a.safetensors")
    assert ckpt.card == {"name": "x", "v": [1, 2]} and ckpt.metadata["seed"] == "0"


COMMANDS = [["parcellate"], ["atlases"], ["gradients"], ["embed"], ["models"], ["models", "show"], ["pretrain"],
            ["probe"], ["reconstruct"], ["simulate"], ["voxels"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_help_page_renders_with_placeholders_that_mean_something(command):
    for flag in ("--help", "-h"):
        res = invoke(*command, flag)
        assert res.exit_code == 0, res.output
        assert "Usage: " in res.stdout
        options = res.stdout.split("Options:")[-1]
        for python_type in ("<str>", "<bool>", "<int>", "<float>", "<path>", "<list[str]>"):
            assert python_type not in options, (command, python_type)
    if command == ["embed"]:
        assert "hf://ORG/REPO[/SUB]" in res.stdout  # brackets are text, not markup
        assert "--weights FILE|hf://REPO" in res.stdout and "--tr SECONDS" in res.stdout
        assert "--overwrite " in res.stdout and "--overwrite BOOL" not in res.stdout


def test_several_labels_after_one_filter_flag_as_bids_apps_take_them(tmp_path):
    from brainfm_cli.cli._options import expand_entity_lists

    bids = make_bids(tmp_path / "bids", subjects=("01", "02", "03"), n_vols=30)
    res = invoke("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--participant-label",
                 "01", "02", "-q")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name.split("_")[0] for p in (tmp_path / "out").rglob("*_timeseries.tsv")) == ["sub-01", "sub-02"]
    assert expand_entity_lists(["probe", "--task", "regression", "x"]) == ["probe", "--task", "regression", "x"]
    assert expand_entity_lists(["embed", "--run", "1", "2", "-q"]) == ["embed", "--run", "1", "--run", "2", "-q"]
    res = invoke("parcellate", bids, "02", "-o", tmp_path / "o2", "--atlas", "dosenbach160")
    assert res.exit_code == 1 and "'02' looks like a participant label" in res.stderr


def test_files_that_are_not_checkpoints_are_named_so(tmp_path):
    from brainfm_cli.models.checkpoint import read_checkpoint

    (tmp_path / "page.pt").write_text("<html>rate limited</html>")
    (tmp_path / "noise.bin").write_bytes(np.random.default_rng(0).bytes(4096).replace(b"\x80", b"\x00"))
    for name in ("page.pt", "noise.bin"):
        with pytest.raises(BrainfmError, match="not a checkpoint"):
            read_checkpoint(tmp_path / name)


def test_weak_messages_say_what_is_wrong(tmp_path):
    import pandas as pd

    from brainfm_cli.io.files import read_tsv
    from brainfm_cli.io.timeseries import read_timeseries

    path = tmp_path / "sub-01_task-rest_timeseries.tsv"
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}).to_csv(path, sep="\t", index=False)
    path.write_text(path.read_text().replace("2.0\t2.0", "2.0\tNaN"))
    with pytest.raises(BrainfmError, match="(?s)'NaN' at line 3, column 'b'.*write missing values as n/a"):
        read_timeseries(path)
    part = write_participants(tmp_path / "p.tsv", participant_id=["sub-01", "sub-02"], age=[20.0, 30.0])
    res = invoke("probe", "-", "--target", "age", "--participants", part, "-o", tmp_path / "o", input="")
    assert res.exit_code == 1 and "nothing arrived on standard input" in res.stderr
    with pytest.raises(BrainfmError, match="the TSV file is empty"):
        (tmp_path / "empty.tsv").write_text("")
        read_tsv(tmp_path / "empty.tsv")


def test_a_failed_parcellate_leaves_no_description_in_a_new_folder(tmp_path):
    bids = make_bids(tmp_path / "bids", subjects=("01",), n_vols=30, tr=2.0)
    res = invoke("parcellate", bids, "-o", tmp_path / "out", "--atlas", "dosenbach160", "--confounds", "simple")
    assert res.exit_code == 1
    assert not (tmp_path / "out" / "dataset_description.json").exists()
