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


# ------------------------------------------------------------------------------------------------------------------
# 16 (rest): the probe report's figures and tables, the same words on the console and in the report, piped names


def _regression_inputs(tmp_path, n=30):
    from test_probe import planted

    X, y = planted(n=n, d=4)
    ids = [f"sub-{i:03d}" for i in range(n)]
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids)
    return emb, ids, y


def test_side_by_side_figures_keep_their_captions_under_them():
    """A figure is as wide as its image, so its caption wraps below it instead of running on under its neighbour."""
    import base64
    import re

    from brainfm_cli.io.report import HtmlReport, new_figure

    rep = HtmlReport("t")
    for width in (3.5, 2.0):
        fig = new_figure(width, 2.0)
        fig.subplots().plot([0, 1], [0, 1])
        rep.figure(fig, caption="a caption long enough to run past the edge of a narrow figure " * 3)
    figures = re.findall(r'<figure style="width: (\d+)px"><img [^>]*src="data:image/png;base64,([^"]+)">'
                         r"<figcaption>[^<]+</figcaption></figure>", rep.render())
    assert len(figures) == 2
    for width, png in figures:
        assert int(width) == int.from_bytes(base64.b64decode(png)[16:20], "big")
    assert [int(w) for w, _ in figures] == [350, 200]


def test_the_participants_table_says_why_in_words_and_fits_the_page(tmp_path):
    """Column names in words that can wrap (not 'not_shared_with_other_models'), only the reasons that occurred,
    and a box that scrolls rather than the page when a table is still too wide."""
    import pandas as pd

    from brainfm_cli.tasks import probe as lib

    emb, ids, y = _regression_inputs(tmp_path)
    age = y.copy()
    age[:2] = np.nan
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, age=age)
    pd.read_csv(emb, sep="\t").drop(index=5).to_csv(tmp_path / "short.tsv", sep="\t", index=False)
    res = lib.probe([str(emb), str(tmp_path / "short.tsv")], part, "age", tmp_path / "out", repeats=1,
                    permutations=0, folds=3)
    html = (tmp_path / "out" / "report.html").read_text()
    part_html = html.split("<h2>Participants</h2>")[1].split("<h2>")[0]
    assert '<div class="table"><table>' in part_html and "_" not in part_html.split("<tbody>")[0]
    assert "td { white-space: nowrap; }" in html and ".table { max-width: 100%; overflow-x: auto;" in html
    table = lib.participants_table(res)
    assert list(table.columns) == ["model", "rows", "participants", "no age value", "not in every model", "used"]
    assert table.set_index("model").loc["emb", "not in every model"] == 1
    assert "1 not in every model" in " ".join(res.notes)  # the notes use the table's words


def test_console_and_report_show_the_same_scores_in_the_same_words(tmp_path):
    import re

    emb, ids, y = _regression_inputs(tmp_path)
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, age=y)
    out = run_cli("probe", emb, "--target", "age", "--participants", part, "-o", tmp_path / "o", "--repeats", "2",
                  "--permutations", "3", "--folds", "3")
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "o" / "report.html").read_text()
    scores = html.split("<h2>Scores</h2>")[1].split("<figure")[0]
    header = re.findall(r"<th[^>]*>([^<]*)</th>", scores)
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", scores.split("<tbody>")[1])]
    assert header == ["model", "metric", "mean", "95 % CI", "permutation p"]
    assert [r[1] for r in rows] == ["R²", "MAE", "Pearson r"] and "r2" not in scores and "mae" not in scores
    console = [line.strip("│┃ ") for line in out.stdout.splitlines()]
    assert any(all(h in line for h in header) for line in console)  # the same column names
    for row in rows:  # every row of the report's table appears on the console, cell for cell
        assert any([c.strip() for c in line.split("│")] == row for line in console), row
    assert "R²" in html.split("<h2>Paired")[0] and ">r2<" not in html


def test_piped_embeddings_are_named_with_name_or_say_how(tmp_path):
    import pandas as pd

    emb, ids, y = _regression_inputs(tmp_path)
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, age=y)
    args = ["--target", "age", "--participants", part, "--repeats", "1", "--permutations", "0", "--folds", "3"]
    named = run_cli("probe", "-", *args, "--name", "brainlm", "-o", tmp_path / "named", input=emb.read_text())
    assert named.returncode == 0, named.stderr
    assert set(pd.read_csv(tmp_path / "named" / "metrics.tsv", sep="\t").model) == {"brainlm"}
    assert "stdin" not in (tmp_path / "named" / "report.html").read_text().replace("<stdin>", "")
    unnamed = run_cli("probe", "-", *args, "-o", tmp_path / "unnamed", input=emb.read_text())
    assert unnamed.returncode == 0, unnamed.stderr
    assert "a pipe carries no sidecar" in unnamed.stderr and "--name" in unnamed.stderr
    assert "a pipe carries no sidecar" in (tmp_path / "unnamed" / "report.html").read_text()
    both = run_cli("probe", emb, "-", *args, "--name", "a", "--name", "b", "-o", tmp_path / "both",
                   input=emb.read_text())
    assert both.returncode == 0, both.stderr
    assert list(pd.read_csv(tmp_path / "both" / "metrics.tsv", sep="\t").model.unique()) == ["a", "b"]
    wrong = run_cli("probe", emb, "-", *args, "--name", "a", "-o", tmp_path / "wrong", input=emb.read_text())
    assert wrong.returncode == 1 and "1 --name for 2 embeddings file(s)" in wrong.stderr


# ------------------------------------------------------------------------------------------------------------------
# 17 (part): each atlas's template, as its own source names it


def test_atlases_name_their_template_as_their_source_does():
    from brainfm_cli.atlases import list_atlases, load_atlas

    rows = {r["name"]: r for r in list_atlases()}
    assert all(r["space"] != "MNI152" and r["space_source"] for r in rows.values())
    expected = {"aal": "MNIColin27", "marsatlas": "MNIColin27", "harvard-oxford": "MNI152NLin6Asym",
                "schaefer<N>-<N>": "MNI152NLin6Asym", "difumo<N>": "MNI152NLin6Asym", "yeo<N>": "MNI152NLin6Asym",
                "basc<N>": "MNI152NLin2009aSym", "seitzman300": "MNI, template unknown",
                "juelich": "MNI152, version unknown"}
    assert {k: rows[k]["space"] for k in expected} == expected
    for name in ("seitzman300", "power264", "aal", "juelich"):  # what a run's sidecar records is what the list says
        assert load_atlas(name).space == rows[name]["space"]
    out = run_cli("atlases")
    assert out.returncode == 0 and "MNIColin27" in out.stdout and "MNI152NLin2009aSym" in out.stdout
