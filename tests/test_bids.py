import json
import logging

import pytest

from brainfm_cli.io.bids import BoldRun, RunFilter, discover_bold, parse_entities, resolve_tr
from brainfm_cli.io.nifti import load_bold
from brainfm_cli.errors import BrainfmError

from conftest import make_bids, make_fmriprep, write_bold


def test_parse_entities():
    ent, suffix = parse_entities("sub-01_ses-a_task-rest_run-2_space-MNI_desc-preproc_bold.nii.gz")
    assert ent == {"sub": "01", "ses": "a", "task": "rest", "run": "2", "space": "MNI", "desc": "preproc"}
    assert suffix == "bold"


def test_bids_discovery_and_filters(tmp_path):
    root = make_bids(tmp_path / "ds", subjects=("01", "02", "03"), sessions=("a", "b"), n_vols=10)
    assert len(discover_bold([root])) == 6
    runs = discover_bold([root], RunFilter(participant_label=["sub-02", "03"], session=["b"]))
    assert sorted(r.entities["sub"] for r in runs) == ["02", "03"]
    assert all(r.entities["ses"] == "b" for r in runs)
    with pytest.raises(BrainfmError, match="participants present: 01, 02, 03"):
        discover_bold([root], RunFilter(participant_label=["09"]))


def test_sidecar_inheritance_deeper_wins(tmp_path):
    root = make_bids(tmp_path / "ds", subjects=("01", "02"), n_vols=10, tr=2.0)
    (root / "sub-02" / "sub-02_task-rest_bold.json").write_text(json.dumps({"RepetitionTime": 1.5}))
    trs = {r.entities["sub"]: resolve_tr(r, load_bold(r.path)) for r in discover_bold([root])}
    assert trs == {"01": 2.0, "02": 1.5}


def test_header_and_sidecar_disagree_warns_sidecar_wins(tmp_path, caplog):
    root = make_bids(tmp_path / "ds", subjects=("01",), n_vols=10, tr=2.0)
    (run,) = discover_bold([root])
    write_bold(run.path, n_vols=10, tr=2.0, header_tr=3.0)
    with caplog.at_level(logging.WARNING, logger="brainfm"):
        assert resolve_tr(run, load_bold(run.path)) == 2.0
    assert "disagrees" in caplog.text


def test_tr_override_rules(tmp_path):
    f = write_bold(tmp_path / "x.nii.gz", n_vols=5, tr=2.0)
    run = BoldRun(path=f, entities={"sub": "x"})
    assert resolve_tr(run, load_bold(f)) == 2.0
    assert resolve_tr(run, load_bold(f), override=0.8) == 0.8  # no sidecar: --tr overrides the header
    with pytest.raises(BrainfmError, match="positive"):
        resolve_tr(run, load_bold(f), override=0)
    run.metadata = {"RepetitionTime": 2.0}
    with pytest.raises(BrainfmError, match="contradicts"):
        resolve_tr(run, load_bold(f), override=1.0)
    run.metadata = {"RepetitionTime": 0}
    with pytest.raises(BrainfmError, match="RepetitionTime 0"):
        resolve_tr(run, load_bold(f))


def test_header_tr_in_milliseconds(tmp_path):
    f = write_bold(tmp_path / "x.nii.gz", n_vols=5, tr=None, header_tr=720.0)
    img = load_bold(f)
    img.header.set_xyzt_units("mm", "msec")
    from brainfm_cli.io.nifti import header_tr

    assert header_tr(img) == pytest.approx(0.72)


def test_fmriprep_space_choice_and_confounds(tmp_path):
    root = make_fmriprep(tmp_path / "prep", spaces=("MNI152NLin2009cAsym", "T1w"))
    (run,) = discover_bold([root])
    assert run.entities["space"] == "MNI152NLin2009cAsym" and run.derivatives
    assert run.confounds.name == "sub-01_task-rest_desc-confounds_timeseries.tsv"
    assert discover_bold([root], space="T1w")[0].entities["space"] == "T1w"
    with pytest.raises(BrainfmError, match="spaces present"):
        discover_bold([root], space="MNI152NLin6Asym")


def test_empty_and_non_bids_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BrainfmError, match="not a BIDS dataset"):
        discover_bold([tmp_path / "empty"])
    (tmp_path / "x" / "sub-01").mkdir(parents=True)
    with pytest.raises(BrainfmError, match="sub-\\* folders but no"):
        discover_bold([tmp_path / "x"])
