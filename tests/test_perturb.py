"""``brainfm perturb``: a region or network altered in silico, the forecast and embedding responses beside a VAR,
every network in turn against the simulator's truth, and the optimised perturbation between two states."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    """A small simulated dataset in Dosenbach-160 space (networks, few regions), with its stimulation truth."""
    out = tmp_path_factory.mktemp("sim") / "ds"
    res = run_cli("simulate", "-o", out, "--space", "regions", "--atlas", "dosenbach160", "--participants", "3",
                  "--duration", "420", "--tr", "2", "--seed", "3", "-q")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory, simulated):
    out = tmp_path_factory.mktemp("pre") / "run"
    res = run_cli("pretrain", simulated, "--model", "brainlm", "--atlas", "dosenbach160", "--size", "tiny", "-o", out,
                  "--max-steps", "4",
                  "--batch-size", "2", "--val-fraction", "0", "-q")
    assert res.returncode == 0, res.stderr
    return out / "model.yaml"


def test_scaling_by_one_changes_nothing_exactly(tmp_path, simulated, model):
    res = run_cli("perturb", simulated, "--model", model, "--network", "occipital", "--mode", "scale", "--value", "1",
                  "-o", tmp_path / "p", "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "p" / "response.tsv", sep="\t")
    assert (table[["delta", "abs_delta", "relative_change", "var_delta"]].to_numpy() == 0).all()
    side = json.loads((tmp_path / "p" / "response.json").read_text())
    assert all(v["cosine_distance"] == 0 for v in side["EmbeddingChange"]["occipital"].values())


def test_a_perturbed_network_moves_the_forecast_and_the_report_has_a_glass_brain(tmp_path, simulated, model):
    res = run_cli("perturb", simulated, "--model", model, "--network", "occipital", "--mode", "add", "--value", "2",
                  "-o", tmp_path / "p", "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "p" / "response.tsv", sep="\t")
    assert len(table) == 160 and {"region", "network", "delta", "corr_change", "var_delta"} <= set(table.columns)
    visual = table[table.network == "occipital"]
    assert visual["var_delta"].mean() > table[table.network != "occipital"]["var_delta"].abs().mean()
    assert (tmp_path / "p" / "report.html").read_text().count("<img") >= 1


def test_all_networks_compares_model_and_var_with_the_simulators_truth(tmp_path, simulated, model):
    res = run_cli("perturb", simulated, "--model", model, "--all-networks", "-o", tmp_path / "n", "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(tmp_path / "n" / "network_response.tsv", sep="\t")
    truth = pd.read_csv(simulated / "derivatives" / "simulation" / "stimulation_response.tsv", sep="\t")
    assert set(table.method) == {"model", "var"} and len(table) == 2 * len(truth)
    assert list(table.columns[2:]) == list(truth.columns[1:])  # the simulator's shape: a column per network
    side = json.loads((tmp_path / "n" / "network_response.json").read_text())
    overall = {r["method"]: r["r"] for r in side["TruthAgreement"] if r["network"] == "overall"}
    assert set(overall) == {"model", "var"} and all(np.isfinite(v) for v in overall.values())
    summary = pd.read_csv(tmp_path / "n" / "network_summary.tsv", sep="\t")
    assert len(summary) == 2 * (len(truth.columns) - 1)


def test_the_optimised_perturbation_brings_rest_closer_to_the_target(tmp_path, simulated, model):
    subs = sorted(p.name for p in simulated.glob("sub-*"))
    rest = [str(next((simulated / s).rglob("*_timeseries.tsv"))) for s in subs[:2]]
    target = str(next((simulated / subs[2]).rglob("*_timeseries.tsv")))
    res = run_cli("perturb", "optimise", *rest, "--target", target, "--model", model, "--steps", "30",
                  "-o", tmp_path / "o", "-q")
    assert res.returncode == 0, res.stderr
    side = json.loads((tmp_path / "o" / "perturbation.json").read_text())
    assert side["RelativeDistanceAfter"] < side["RelativeDistanceBefore"]
    table = pd.read_csv(tmp_path / "o" / "perturbation.tsv", sep="\t")
    assert table["rank"].tolist() == list(range(1, 161)) and table["magnitude"].is_monotonic_decreasing


def test_bad_perturbations_name_the_fix(tmp_path, simulated, model):
    res = run_cli("perturb", simulated, "--model", model, "--network", "ocipital", "-o", tmp_path / "a", "-q")
    assert res.returncode == 1 and "closest: occipital" in res.stderr and not (tmp_path / "a").exists()
    res = run_cli("perturb", simulated, "--model", model, "-o", tmp_path / "b", "-q")
    assert res.returncode == 1 and "--all-networks" in res.stderr
    other = tmp_path / "aal"
    from test_pretrain import learnable_corpus

    learnable_corpus(other, n_subjects=1, n_vols=240, n_regions=20)
    res = run_cli("perturb", "optimise", simulated, "--target", other, "--model", model, "-o", tmp_path / "c", "-q")
    assert res.returncode == 1 and "regions" in res.stderr
    res = run_cli("perturb", simulated, "--model", "semantoks-sim", "--all-networks", "-o", tmp_path / "d", "-q")
    assert res.returncode == 1 and "forecast fit" in res.stderr
