"""``brainfm embed`` as a user runs it: TSV folders, NIfTI runs, pipes, poolings, and every bad input."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import (TINY, leftovers, make_region_corpus, run_cli, run_process, seitzman_labels, write_bold,
                      write_timeseries_tsv)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_region_corpus(tmp_path_factory.mktemp("deriv"), n_subjects=2, n_vols=250)


def test_embed_a_derivatives_folder(tmp_path, corpus, tiny_brainlm):
    out = run_cli("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "e.tsv")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    # 250 volumes at TR 2 s = 500 s → 500 samples at 1 s → two 200-sample windows per run
    assert list(df.columns[:4]) == ["participant_id", "task", "window", "source"]
    assert df["participant_id"].tolist() == ["sub-01", "sub-01", "sub-02", "sub-02"]
    assert df.filter(like="emb_").shape[1] == TINY["brainlm"]["embed_dim"]
    side = json.loads((tmp_path / "e.json").read_text())
    assert side["Model"] == "brainlm" and len(side["WeightsSHA256"]) == 64 and side["Pooling"] == "cls"
    assert side["Preprocessing"]["RepetitionTime"] == 1.0 and side["Compute"]["dtype"] == "float32"
    assert out.stdout == ""


def test_embed_matches_the_python_api(tmp_path, corpus, tiny_brainlm):
    from brainfm_cli.data.preprocess import Preprocessor
    from brainfm_cli.models import load

    out = run_cli("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", "-",
                  "--participant-label", "01", "--pooling", "mean")
    df = pd.read_csv(__import__("io").StringIO(out.stdout), sep="\t")
    model = load("brainlm", weights=tiny_brainlm)
    ts = pd.read_csv(next(corpus.rglob("sub-01_*.tsv")), sep="\t").to_numpy()
    x, _ = Preprocessor.from_space(model.card.input).prepare(ts, 2.0)
    with torch.inference_mode():
        want = model.pool(model.encode(torch.from_numpy(x[None, :, :200])), "mean")[0].numpy()
    np.testing.assert_allclose(df.filter(like="emb_").to_numpy()[0], want, rtol=1e-5, atol=1e-5)


def test_pipe_paths_in_and_rows_out_with_aggregation_and_tokens(tmp_path, corpus, tiny_brainlm):
    paths = "\n".join(str(p) for p in sorted(corpus.rglob("*_timeseries.tsv"))) + "\n"
    out = run_process("embed", "-", "--model", "brainlm", "--weights", tiny_brainlm, "--aggregate", "mean", input=paths)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 3 and "window" not in lines[0]
    tok = run_cli("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "--pooling", "tokens",
                  "--participant-label", "02", "--stride", "400")
    df = pd.read_csv(__import__("io").StringIO(tok.stdout), sep="\t")
    assert tok.returncode == 0, tok.stderr
    assert len(df) == 3000 and df["token"].tolist()[:3] == [0, 1, 2]  # one window: the next would start at 400 > 500 − 200


@pytest.mark.slow
def test_embed_a_nifti_run_parcellated_on_the_fly(tmp_path, tiny_brainlm):
    bold = write_bold(tmp_path / "sub-07_task-rest_bold.nii.gz", n_vols=110, tr=2.0)
    out = run_cli("embed", bold, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "e.tsv",
                  "--missing-regions", "zero")
    assert out.returncode == 0, out.stderr
    df = pd.read_csv(tmp_path / "e.tsv", sep="\t")
    assert df["participant_id"].tolist() == ["sub-07"] and np.isfinite(df.filter(like="emb_").to_numpy()).all()


def _bad(tmp_path, name, data, columns, tr=2.0):
    return write_timeseries_tsv(tmp_path / name, data, columns, tr)


@pytest.mark.parametrize("case,needle", [
    ("regions", "regions, but brainlm needs 300"),
    ("text", "non-numeric value 'oops'"),
    ("short", "shorter than one model window"),
    ("nan", "n/a inside"),
    ("missing", "have no data"),
    ("no_tr", "--tr"),
])
def test_bad_region_tables(tmp_path, tiny_brainlm, case, needle):
    from conftest import invoke

    labels = seitzman_labels()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((120, 300))
    if case == "regions":
        path = _bad(tmp_path, "sub-01_timeseries.tsv", data[:, :299], labels[:299])
    elif case == "text":
        df = pd.DataFrame(data, columns=labels).astype(object)
        df.iloc[3, 5] = "oops"
        path = tmp_path / "sub-01_timeseries.tsv"
        df.to_csv(path, sep="\t", index=False)
        path.with_suffix(".json").write_text('{"RepetitionTime": 2.0}')
    elif case == "short":
        path = _bad(tmp_path, "sub-01_timeseries.tsv", data[:8], labels)
    elif case == "nan":
        data[5, 3] = np.nan
        path = _bad(tmp_path, "sub-01_timeseries.tsv", data, labels)
    elif case == "missing":
        data[:, 3] = np.nan
        path = _bad(tmp_path, "sub-01_timeseries.tsv", data, labels)
    else:
        path = _bad(tmp_path, "sub-01_timeseries.tsv", data, labels, tr=None)
    result = invoke("embed", path, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "out.tsv")
    assert result.exit_code == 1, result.output
    assert needle in result.output and path.name in result.output and "fix:" in result.output
    assert not (tmp_path / "out.tsv").exists() and not leftovers(tmp_path)


def test_bad_weights_devices_and_names(tmp_path, corpus, tiny_brainlm):
    from conftest import invoke

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_brainlm.read_bytes()[:1000])
    r = invoke("embed", corpus, "--model", "brainlm", "--weights", cut)
    assert r.exit_code == 1 and "truncated or corrupt" in r.output
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Exploit()}, evil)
    r = invoke("embed", corpus, "--model", "brainlm", "--weights", evil)
    assert r.exit_code == 1 and "refused to load" in r.output
    r = invoke("embed", corpus, "--model", "brainlm-vitmae-111m", "--weights", tiny_brainlm, "--coords",
               _coords_file(tmp_path))
    assert r.exit_code == 1 and "not brainlm_vitmae" in r.output
    r = invoke("embed", corpus, "--model", "brian-lm")
    assert r.exit_code == 1 and "did you mean brainlm" in r.output
    if not torch.cuda.is_available():
        r = invoke("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "--device", "cuda")
        assert r.exit_code == 1 and "no CUDA GPU" in r.output
    (tmp_path / "exists.tsv").write_text("x")
    r = invoke("embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", tmp_path / "exists.tsv")
    assert r.exit_code == 1 and "already exists" in r.output and (tmp_path / "exists.tsv").read_text() == "x"


def _coords_file(tmp_path):
    path = tmp_path / "A424_Coordinates.dat"
    rng = np.random.default_rng(0)
    path.write_text("\n".join(f"{i + 1} {x} {y} {z}" for i, (x, y, z) in enumerate(rng.integers(-60, 60, (424, 3)))))
    return path


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("true",))


def test_a_model_whose_atlas_brainfm_cannot_fetch_asks_for_it_first(tmp_path):
    from conftest import invoke

    bold = write_bold(tmp_path / "sub-01_task-rest_bold.nii.gz", n_vols=10)
    r = invoke("embed", bold, "--model", "semantoks-ukb")
    assert r.exit_code == 1 and "--atlas FILE.nii.gz --atlas-labels" in r.output and "ships no weights" not in r.output


def _run_on_a_terminal(args, stdout_path):
    """Run ``brainfm ARGS`` with standard error on a pseudo-terminal (so progress bars are live) and standard
    output to a file; returns (exit status, what the terminal showed)."""
    import os
    import subprocess
    import sys

    master, slave = os.openpty()
    with open(stdout_path, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "brainfm_cli", *map(str, args)], stdout=fh, stderr=slave,
                                env=dict(os.environ, BRAINFM_OFFLINE="1", TERM="xterm", COLUMNS="120"))
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: the process is done with the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = proc.wait()
    os.close(master)
    return code, b"".join(chunks).decode(errors="replace")


def test_data_goes_to_stdout_while_the_progress_bar_draws_on_a_terminal(tmp_path, corpus, tiny_brainlm):
    code, terminal = _run_on_a_terminal(["embed", corpus, "--model", "brainlm", "--weights", tiny_brainlm, "-o", "-"],
                                        tmp_path / "f.tsv")
    assert code == 0, terminal
    df = pd.read_csv(tmp_path / "f.tsv", sep="\t")
    assert len(df) == 4 and df.filter(like="emb_").shape[1] == TINY["brainlm"]["embed_dim"]
    assert "emb_0000" not in terminal  # no TSV was drawn on the terminal
