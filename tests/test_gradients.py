"""Diffusion-map gradients: the properties a diffusion map must have, an independent eigen-solve, the CLI."""

import json

import numpy as np
import pandas as pd
import pytest

from brainfm_cli.data.gradients import (
    compute_gradients,
    diffusion_map,
    load_gradients,
    normalized_angle_affinity,
)
from brainfm_cli.io.timeseries import timeseries_path, write_timeseries
from brainfm_cli.errors import BrainfmError

from conftest import run_cli


def _two_communities(n_runs=4, regions=40, seed=0):
    rng = np.random.default_rng(seed)
    community = np.r_[np.zeros(regions // 2), np.ones(regions // 2)].astype(bool)
    runs = []
    for _ in range(n_runs):
        a, b = rng.standard_normal((150, 1)), rng.standard_normal((150, 1))
        runs.append(np.where(community, b, a) + rng.standard_normal((150, regions)))
    return runs, community


def test_planted_two_communities_split_by_first_gradient():
    runs, community = _two_communities()
    g, lam, _ = compute_gradients(runs, [f"sub-{i}" for i in range(len(runs))])
    first = g[:, 0]
    assert (np.sign(first[community]) == np.sign(first[community][0])).all()
    assert (np.sign(first[~community]) == -np.sign(first[community][0])).all()


def test_diffusion_map_properties():
    runs, _ = _two_communities(regions=50, seed=1)
    g, lam, fc = compute_gradients(runs, [f"sub-{i}" for i in range(len(runs))])
    norms = np.linalg.norm(g, axis=0)
    assert (np.diff(norms) <= 1e-12).all() and (np.diff(lam) <= 1e-12).all()  # decreasing, eigenvalue-scaled
    aff = normalized_angle_affinity(fc)
    d = aff.sum(1) ** -0.5
    q = (d[:, None] * aff * d[None, :]).sum(1)
    np.testing.assert_allclose(q @ g, 0, atol=1e-8)  # zero mean under the walk's stationary weights
    gram = (g * q[:, None]).T @ g
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0, atol=1e-8)  # orthogonal under the same weights
    assert np.abs(g.mean(0)).max() < 0.05 * norms.max()  # and nearly so in the plain sense
    assert (g[np.abs(g).argmax(0), np.arange(g.shape[1])] > 0).all()  # sign convention


def test_matches_an_independent_eigensolve_of_the_random_walk():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((30, 30))
    fc = np.tanh(x @ x.T / 30)
    aff = normalized_angle_affinity(fc)
    ours, lam = diffusion_map(aff, n_components=5)
    d = aff.sum(1) ** -0.5
    w = d[:, None] * aff * d[None, :]
    p = w / w.sum(1, keepdims=True)
    vals, vecs = np.linalg.eig(p)  # general (non-symmetric) solver on P itself
    order = np.argsort(-vals.real)
    vals, vecs = vals.real[order], vecs.real[:, order]
    pi = w.sum(1) / w.sum()  # stationary distribution: diffusion maps are pi-orthonormal, psi_0 = 1
    vecs = vecs / np.sqrt((pi[:, None] * vecs**2).sum(0))
    vecs = vecs * np.sign(vecs[0, 0])
    expect_lam = (vals / vals[0])[1:6]
    expect_lam = expect_lam / (1 - expect_lam)
    expect = vecs[:, 1:6] * expect_lam
    expect *= np.sign(expect[np.abs(expect).argmax(0), np.arange(5)])
    np.testing.assert_allclose(lam, expect_lam, rtol=1e-8)
    np.testing.assert_allclose(ours, expect, atol=1e-8)


def test_affinity_keeps_top_decile_per_row():
    rng = np.random.default_rng(3)
    fc = np.corrcoef(rng.standard_normal((40, 100)))
    aff = normalized_angle_affinity(fc, sparsity=0.9)
    assert aff.shape == (40, 40) and np.allclose(aff, aff.T) and (aff >= 0).all() and np.allclose(np.diag(aff), 1)


def test_too_many_components_is_an_error():
    runs, _ = _two_communities(regions=20)
    with pytest.raises(BrainfmError, match="components"):
        from brainfm_cli.data.gradients import GradientRecipe

        compute_gradients(runs, ["a"] * len(runs), GradientRecipe(n_components=25))


def test_cli_writes_tsv_and_sidecar(tmp_path):
    runs, _ = _two_communities(n_runs=3, regions=30)
    cols = [f"r{i:02d}" for i in range(30)]
    for i, r in enumerate(runs):
        path = timeseries_path(tmp_path / "ts", {"sub": f"{i:02d}", "task": "rest"}, "toy")
        write_timeseries(pd.DataFrame(r, columns=cols), path, {"RepetitionTime": 2.0})
    out = run_cli("gradients", tmp_path / "ts", "-o", tmp_path / "g.tsv", "--n-components", "5")
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(tmp_path / "g.tsv", sep="\t")
    assert list(table.columns) == ["region"] + [f"gradient_{i:02d}" for i in range(1, 6)]
    assert table["region"].tolist() == cols
    side = json.loads((tmp_path / "g.json").read_text())
    assert side["NumberOfParticipants"] == 3 and side["Recipe"]["sparsity"] == 0.9
    np.testing.assert_allclose(load_gradients(tmp_path / "g.tsv", 30), table.iloc[:, 1:].to_numpy())
    again = run_cli("gradients", tmp_path / "ts", "-o", tmp_path / "g.tsv")
    assert again.returncode == 1 and "--overwrite" in again.stderr


def test_cli_with_an_atlas_orders_rows_as_the_atlas_and_names_unknown_columns(tmp_path):
    from brainfm_cli.atlases import load_atlas

    labels = list(load_atlas("dosenbach160").labels)[:30]
    runs, _ = _two_communities(n_runs=3, regions=30)
    shuffled = labels[::-1]  # the corpus in another order than the atlas
    for i, r in enumerate(runs):
        path = timeseries_path(tmp_path / "ts", {"sub": f"{i:02d}", "task": "rest"}, "dosenbach160")
        write_timeseries(pd.DataFrame(r, columns=shuffled), path, {"RepetitionTime": 2.0})
    out = run_cli("gradients", tmp_path / "ts", "-o", tmp_path / "g.tsv", "--n-components", "5",
                  "--atlas", "dosenbach160")
    assert out.returncode == 0, out.stderr
    assert pd.read_csv(tmp_path / "g.tsv", sep="\t")["region"].tolist() == labels
    assert json.loads((tmp_path / "g.json").read_text())["Atlas"] == "dosenbach160"
    bad = run_cli("gradients", tmp_path / "ts", "-o", tmp_path / "h.tsv", "--atlas", "aal")
    assert bad.returncode == 1 and "match no region of atlas aal" in bad.stderr
