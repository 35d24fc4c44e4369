"""The one error path: every command's failures become ``error: … / fix: …`` and an exit status (no traceback)."""

from __future__ import annotations

import pytest

from brainfm_cli.cli._errors import raised_by_brainfm
from brainfm_cli.errors import BrainfmError
from conftest import invoke, make_region_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_region_corpus(tmp_path_factory.mktemp("corpus"), n_subjects=1, n_vols=110)


def test_architecture_values_are_checked_against_each_other_up_front(tmp_path, corpus):
    res = invoke("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "run", "--arch", "num_heads=5", "-q")
    assert res.exit_code == 1
    assert "embed_dim=512 is not divisible by num_heads=5" in res.stderr and "fix:" in res.stderr
    assert not (tmp_path / "run").exists()
    res = invoke("pretrain", corpus, "--model", "brainlm", "-o", tmp_path / "run", "--arch", "depth=0", "-q")
    assert res.exit_code == 1 and "depth must be a positive integer" in res.stderr


def test_an_unknown_size_names_the_sizes_there_are(tmp_path, corpus):
    res = invoke("pretrain", corpus, "--model", "brain-jepa", "-o", tmp_path / "run", "--size", "huge", "-q")
    assert res.exit_code == 1 and "no size 'huge'" in res.stderr and "ViT-S" in res.stderr


def test_brainfm_value_errors_are_messages_and_library_errors_stay_tracebacks():
    from brainfm_cli.layers.attention import Attention

    with pytest.raises(ValueError) as ours:
        Attention(10, 3)
    assert raised_by_brainfm(ours.value)
    with pytest.raises(ValueError) as theirs:
        int("x")
    assert not raised_by_brainfm(theirs.value)


def test_interrupts_exit_130_and_messages_are_printed_verbatim(monkeypatch, tmp_path, corpus):
    import brainfm_cli.tasks.gradients as task

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(task, "gradients_from_corpus", interrupted)
    res = invoke("gradients", corpus, "-o", tmp_path / "g.tsv")
    assert res.exit_code == 130 and "interrupted" in res.stderr

    def failing(*_a, **_k):
        raise BrainfmError("weights at hf://ORG/REPO[/SUB] are [bold]missing[/bold]", path="x.pt", fix="[see] docs")

    monkeypatch.setattr(task, "gradients_from_corpus", failing)
    res = invoke("gradients", corpus, "-o", tmp_path / "g.tsv")
    assert res.exit_code == 1
    assert "error: x.pt: weights at hf://ORG/REPO[/SUB] are [bold]missing[/bold]" in res.stderr
    assert "fix: [see] docs" in res.stderr
