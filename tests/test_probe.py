"""brainfm probe: planted signal, the leakage trap, the permutation null, agreement with scikit-learn, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.utils.estimator_checks import parametrize_with_checks

from brainfm_cli.tasks import probe as lib

from conftest import invoke, leftovers, run_cli, run_process


def _ids(n):
    return [f"sub-{i:03d}" for i in range(n)]


def write_embeddings(path, X, ids, extra: dict | None = None):
    df = pd.DataFrame(X, columns=[f"emb_{i:04d}" for i in range(X.shape[1])])
    for j, (k, v) in enumerate({"participant_id": ids, **(extra or {})}.items()):
        df.insert(j, k, v)
    df.to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def write_participants(path, **columns):
    pd.DataFrame(columns).to_csv(path, sep="\t", index=False, na_rep="n/a")
    return path


def planted(n=200, d=10, r2=0.6, seed=0):
    """Features with a linear signal explaining ``r2`` of the target's variance (the rest is noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    s = X @ rng.standard_normal(d)
    s = (s - s.mean()) / s.std()
    noise = rng.standard_normal(n)
    noise = (noise - noise.mean()) / noise.std()
    return X, 40 + 10 * (np.sqrt(r2) * s + np.sqrt(1 - r2) * noise)


def leakage_trap(n_sub=40, rows=6, d=60, seed=0):
    """Several rows per participant: a strong participant-specific offset, a target random per participant."""
    rng = np.random.default_rng(seed)
    offsets = 3.0 * rng.standard_normal((n_sub, d))
    X = np.repeat(offsets, rows, axis=0) + rng.standard_normal((n_sub * rows, d))
    y = rng.standard_normal(n_sub)
    sub = np.repeat(np.arange(n_sub), rows)
    window = np.tile(np.arange(rows), n_sub)
    return X, y, sub, window


def _metric(result, model, metric):
    m = result.metrics
    return m[(m.model == model) & (m.metric == metric)].iloc[0]


# ------------------------------------------------------------------------------------------------------------------
# Correctness


def test_planted_linear_signal_is_recovered(tmp_path):
    X, y = planted()
    emb = write_embeddings(tmp_path / "emb.tsv", X, _ids(len(y)))
    part = write_participants(tmp_path / "participants.tsv", participant_id=_ids(len(y)), age=y)
    res = lib.probe([str(emb)], part, "age", tmp_path / "out", repeats=3, permutations=19, seed=1)
    r2 = _metric(res, "emb", "r2")
    assert res.setup.task == "regression"
    assert abs(r2["mean"] - 0.6) < 0.08, r2
    assert r2["ci_low"] < r2["mean"] < r2["ci_high"] and r2["ci_low"] > 0.3
    assert abs(_metric(res, "emb", "pearson_r")["mean"] - np.sqrt(0.6)) < 0.06
    assert r2["p_permutation"] == pytest.approx(1 / 20)  # no shuffled target comes close
    assert r2["n"] == len(y)


def test_leakage_trap_grouped_cv_finds_nothing(tmp_path):
    X, y, sub, window = leakage_trap()
    ids = np.array(_ids(len(y)))
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids[sub], {"window": window})
    part = write_participants(tmp_path / "participants.tsv", participant_id=ids, score=y)
    res = lib.probe([str(emb)], part, "score", tmp_path / "grouped", aggregate="none", repeats=2, permutations=0)
    grouped = _metric(res, "emb", "r2")["mean"]
    assert grouped < 0.05  # a participant's windows never sit on both sides of a split
    pred = res.predictions[res.predictions.repeat == 0]
    assert len(pred) == len(ids) and pred.participant_id.is_unique  # one prediction per participant

    # the trap is real: pretend every window is its own participant (an ungrouped split) and the same code
    # "predicts" the random target from the participant offsets
    row_ids = np.array([f"sub-{s:03d}x{w}" for s, w in zip(sub, window)])
    emb_rows = write_embeddings(tmp_path / "rows.tsv", X, row_ids)
    part_rows = write_participants(tmp_path / "rows_participants.tsv", participant_id=row_ids, score=y[sub])
    leaky = lib.probe([str(emb_rows)], part_rows, "score", tmp_path / "ungrouped", repeats=1, permutations=0)
    assert _metric(leaky, "rows", "r2")["mean"] > 0.5


def test_leakage_trap_with_sites_keeps_sites_apart(tmp_path):
    X, y, sub, window = leakage_trap(n_sub=30, rows=2, d=5, seed=3)
    ids = np.array(_ids(len(y)))
    site = np.array(list("abcdef"))[np.arange(len(y)) % 6]
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids[sub], {"window": window})
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, score=y, site=site)
    res = lib.probe([str(emb)], part, "score", tmp_path / "out", group_by="site", repeats=3, permutations=0)
    pred = res.predictions.merge(pd.DataFrame({"participant_id": ids, "site": site}), on="participant_id")
    assert (pred.groupby(["repeat", "site"]).fold.nunique() == 1).all()
    assert pred.groupby("repeat").fold.nunique().eq(5).all()


def _null_setup(n_sub, task, seed, rows=3, d=5):
    rng = np.random.default_rng(seed)
    X = np.repeat(rng.standard_normal((n_sub, d)), rows, axis=0) + rng.standard_normal((n_sub * rows, d))
    ids = np.array(_ids(n_sub))
    fs = lib.FeatureSet("null", "embedding", pd.DataFrame({"participant_id": np.repeat(ids, rows),
                                                           "window": np.tile(np.arange(rows), n_sub)}), X, "mem")
    target = rng.standard_normal(n_sub) if task == "regression" else np.where(rng.random(n_sub) < 0.5, "a", "b")
    if task == "classification":
        target[:5], target[5:10] = "a", "b"
    part = pd.DataFrame({"t": target}, index=pd.Index(ids, name="participant_id"))
    return lib.build_setup([fs], part, "t", task, "mem", None, [], "none", 5)


def _null_pvalues(task, n_datasets, permutations, n_sub):
    metric = "r2" if task == "regression" else "balanced_accuracy"
    out = []
    for i in range(n_datasets):
        setup = _null_setup(n_sub, task, seed=100 + i)
        models = lib.cross_validate(setup, repeats=1, folds=5, permutations=permutations, seed=i)
        out.append(models[0].summary[metric]["p_permutation"])
    return np.array(out)


def test_permutation_pvalues_are_uniform_under_the_null():
    p = _null_pvalues("regression", n_datasets=60, permutations=19, n_sub=30)
    assert set(np.round(p * 20)).issubset(set(range(1, 21)))  # p = k / 20
    assert 0.38 < p.mean() < 0.62
    for q in (0.2, 0.5, 0.8):
        assert abs((p <= q).mean() - q) < 0.18, (q, np.sort(p))
    assert stats.kstest(p, stats.uniform(0, 1.05).cdf).pvalue > 0.001


@pytest.mark.slow
def test_classification_permutation_pvalues_under_the_null():
    p = _null_pvalues("classification", n_datasets=30, permutations=9, n_sub=24)
    assert 0.35 < p.mean() < 0.7
    assert (p <= 0.2).mean() < 0.4


def _planted_classes(n=90, d=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.standard_normal((n, d)) + 0.9 * np.eye(k, d)[y]
    return X, y


@pytest.mark.parametrize("p", [8, 150])  # fewer and more features than rows (the Gram/rotation path)
def test_ridge_probe_equals_sklearn_gridsearch(p):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(p)
    X = rng.standard_normal((60, p)) * rng.uniform(0.5, 3, p) + rng.uniform(-2, 2, p)
    y = X[:, :4] @ np.array([1.0, -0.5, 0.3, 0.2]) + rng.standard_normal(60)
    groups = np.repeat(np.arange(30), 2)
    ours = lib.RidgeProbe(random_state=7).fit(X[:50], y[:50], groups=groups[:50])
    inner = ours.inner_splits(X[:50], y[:50], groups[:50])
    assert all(not set(groups[tr]) & set(groups[va]) for tr, va in inner)
    np.testing.assert_allclose(ours.grid_, lib.RIDGE_SCALES * max(50, p))
    ref = make_pipeline(StandardScaler(), RidgeCV(alphas=ours.grid_, cv=inner,
                                                  scoring="neg_mean_squared_error")).fit(X[:50], y[:50])
    assert ours.alpha_ == pytest.approx(ref[-1].alpha_)
    np.testing.assert_allclose(ours.predict(X[50:]), ref.predict(X[50:]), rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("k,p", [(2, 6), (2, 120), (3, 6)])
def test_logistic_probe_equals_sklearn_gridsearch(k, p):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _planted_classes(n=90, d=p, k=k, seed=p)
    labels = np.array(["ctl", "pat", "sib"])[y]
    ours = lib.LogisticProbe(random_state=3).fit(X[:72], labels[:72])
    inner = ours.inner_splits(X[:72], np.unique(labels[:72], return_inverse=True)[1])
    ref = make_pipeline(StandardScaler(), GridSearchCV(
        LogisticRegression(class_weight="balanced", tol=1e-10, max_iter=20000), {"C": lib.logistic_Cs(72, p)},
        cv=inner, scoring="neg_log_loss")).fit(X[:72], labels[:72])
    assert ours.best_param_ == pytest.approx(ref[-1].best_params_["C"])
    assert list(ours.classes_) == list(ref.classes_)
    np.testing.assert_allclose(ours.predict_proba(X[72:]), ref.predict_proba(X[72:]), atol=2e-5)


def test_cross_validated_predictions_equal_sklearn_on_the_same_folds(tmp_path):
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import mean_absolute_error, r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = planted(n=80, d=12, r2=0.4, seed=5)
    ids = np.array(_ids(len(y)))
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids)
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, age=y)
    res = lib.probe([str(emb)], part, "age", tmp_path / "out", repeats=2, permutations=0, seed=11)
    pred = pd.read_csv(tmp_path / "out" / "predictions.tsv", sep="\t")
    metrics = pd.read_csv(tmp_path / "out" / "metrics.tsv", sep="\t")
    assert list(metrics.columns) == ["model", "metric", "mean", "ci_low", "ci_high", "p_permutation", "n"]
    per_repeat = []
    for r in range(2):
        pr = pred[pred.repeat == r].set_index("participant_id").loc[ids]
        assert sorted(pr.fold.unique()) == [0, 1, 2, 3, 4]
        for k in range(5):
            test = (pr.fold == k).to_numpy()
            inner_seed = lib.derive_seed(11, 1, r, k)
            inner = list(lib.ShuffledGroupKFold(5, inner_seed).split(X[~test], None, ids[~test]))
            ref = make_pipeline(StandardScaler(), RidgeCV(alphas=lib.ridge_alphas((~test).sum(), 12), cv=inner,
                                                          scoring="neg_mean_squared_error"))
            ref.fit(X[~test], y[~test])
            np.testing.assert_allclose(pr.prediction[test], ref.predict(X[test]), rtol=2e-6)
        per_repeat.append([r2_score(pr.target, pr.prediction), mean_absolute_error(pr.target, pr.prediction),
                           stats.pearsonr(pr.target, pr.prediction)[0]])
    expected = np.mean(per_repeat, axis=0)
    got = metrics.set_index("metric").loc[["r2", "mae", "pearson_r"], "mean"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert res.comparisons.empty  # one embedding, no baseline: nothing to compare


def test_classification_metrics_equal_sklearn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    for k in (2, 3, 4):
        y = rng.integers(0, k, 50)
        proba = rng.dirichlet(np.ones(k), 50)
        proba[np.arange(50), y] += 0.3 * rng.random(50)
        proba /= proba.sum(1, keepdims=True)
        ours = lib.classification_scores(y, proba, k)
        pred = proba.argmax(1)
        assert ours["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
        assert ours["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", labels=range(k), zero_division=0))
        ref_auc = roc_auc_score(y, proba[:, 1]) if k == 2 else roc_auc_score(y, proba, multi_class="ovr")
        assert ours["roc_auc"] == pytest.approx(ref_auc)


def test_interval_and_paired_test_formulas():
    folds = np.array([0.30, 0.42, 0.25, 0.38, 0.35, 0.28, 0.40, 0.33, 0.31, 0.37])
    lo, hi, p = lib.corrected_t(0.34, folds, 1 / 4)
    se = np.sqrt((1 / 10 + 1 / 4) * folds.var(ddof=1))
    assert (lo, hi) == pytest.approx((0.34 - stats.t.ppf(0.975, 9) * se, 0.34 + stats.t.ppf(0.975, 9) * se))
    assert p == pytest.approx(2 * stats.t.sf(0.34 / se, 9))
    assert all(np.isnan(lib.corrected_t(-0.49, np.full(10, -0.49), 1 / 4)))  # identical folds: no spread, no interval
    np.testing.assert_allclose(lib.holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])
    assert lib.permutation_p(0.5, np.array([0.1, 0.5, 0.7]), lower_is_better=False) == pytest.approx(3 / 4)
    assert lib.permutation_p(2.0, np.array([1.0, 3.0, 4.0]), lower_is_better=True) == pytest.approx(2 / 4)


# ------------------------------------------------------------------------------------------------------------------
# The FC baseline, several models, the CLI


def _fc_dataset(root, n=40, regions=12, T=80, seed=0, coverage_gap=True):
    """Region time series whose correlation between regions 0-3 tracks a binary trait; plus weak embeddings."""
    rng = np.random.default_rng(seed)
    ids = _ids(n)
    trait = np.arange(n) % 2
    names = [f"R{j:02d}" for j in range(regions)]
    rows = []
    for i, sid in enumerate(ids):
        for run in (1, 2):
            data = rng.standard_normal((T, regions))
            data[:, :4] += (1.2 if trait[i] else 0.1) * rng.standard_normal((T, 1))
            df = pd.DataFrame(data, columns=names)
            if coverage_gap:
                df["R11"] = np.nan  # a region without coverage: dropped from the FC features, visibly
            path = root / "ts" / sid / "func" / f"{sid}_task-rest_run-{run}_atlas-toy_timeseries.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(path, sep="\t", index=False, na_rep="n/a")
            path.with_suffix(".json").write_text(json.dumps({"RepetitionTime": 2.0}))
            rows.append((sid, str(run), rng.standard_normal(6) + 0.4 * trait[i]))
    emb = pd.DataFrame([r[2] for r in rows], columns=[f"emb_{k:04d}" for k in range(6)])
    emb.insert(0, "participant_id", [r[0] for r in rows])
    emb.insert(1, "run", [r[1] for r in rows])
    emb.to_csv(root / "emb.tsv", sep="\t", index=False)
    part = pd.DataFrame({"participant_id": ids, "dx": np.where(trait, "patient", "control"),
                         "age": rng.uniform(20, 60, n).round(1)})
    part.loc[0, "dx"] = np.nan
    part.to_csv(root / "participants.tsv", sep="\t", index=False, na_rep="n/a")
    return root


def test_fc_features_match_a_direct_computation(tmp_path):
    _fc_dataset(tmp_path, n=3)
    fs = lib.fc_features([tmp_path / "ts"])
    assert fs.info["regions_without_coverage"] == ["R11"] and fs.info["regions_used"] == 11
    assert fs.X.shape == (6, 11 * 10 // 2)
    first = pd.read_csv(fs.ids.source[0], sep="\t", na_values="n/a").drop(columns="R11").to_numpy()
    r = np.corrcoef(first.T)[np.triu_indices(11, 1)]
    np.testing.assert_allclose(fs.X[0], np.arctanh(r), rtol=1e-12)
    assert list(fs.ids.participant_id[:2]) == ["sub-000", "sub-000"] and list(fs.ids.run[:2]) == ["1", "2"]


def test_cli_embeddings_against_fc_baseline_classification(tmp_path):
    root = _fc_dataset(tmp_path)
    out = run_cli("probe", root / "emb.tsv", "--target", "dx", "--participants", root / "participants.tsv",
                  "--timeseries", root / "ts", "-o", tmp_path / "report", "--repeats", "3", "--permutations", "9",
                  "--aggregate", "none", "--confounds", "age")
    assert out.returncode == 0, out.stderr
    rep = tmp_path / "report"
    metrics = pd.read_csv(rep / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"emb", "fc"}
    assert set(metrics.metric) == {"balanced_accuracy", "f1_macro", "roc_auc"}
    assert (metrics.n == 39).all()  # one participant has dx = n/a
    fc = metrics[(metrics.model == "fc") & (metrics.metric == "balanced_accuracy")].iloc[0]
    assert fc["mean"] > 0.8 and fc.p_permutation == pytest.approx(0.1)
    comp = pd.read_csv(rep / "comparisons.tsv", sep="\t")
    assert list(comp.model.unique()) == ["emb"] and list(comp.reference.unique()) == ["fc"]
    assert (comp.p_holm >= comp.p).all()
    pred = pd.read_csv(rep / "predictions.tsv", sep="\t")
    assert {"proba_control", "proba_patient"} <= set(pred.columns)
    folds = pred.pivot_table(index=["repeat", "participant_id"], columns="model", values="fold")
    assert (folds["emb"] == folds["fc"]).all()  # the same folds for every model
    side = json.loads((rep / "metrics.json").read_text())
    assert side["Settings"]["seed"] == 0 and side["Settings"]["aggregate"] == "none"
    assert side["Participants"]["accounting"]["missing_target"] == 1
    fc_info = next(m for m in side["Models"] if m["name"] == "fc")
    assert fc_info["regions_without_coverage"] == ["R11"] and fc_info["runs"] == 80
    assert "balanced accuracy" in out.stdout and "fc" in out.stdout
    assert "R11" in out.stderr  # the dropped region is said out loud
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3  # comparison + one confusion matrix per model
    assert "every score between 0 and 1" in html and "R² and r at most 1" not in html  # the task's own range
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert "R11" in html and ("within noise of" in html or "than fc" in html)


def test_fc_alone_and_stdin_pipeline(tmp_path):
    root = _fc_dataset(tmp_path, n=20, coverage_gap=False)
    alone = invoke("probe", "--target", "dx", "--participants", root / "participants.tsv", "--timeseries",
                   root / "ts", "-o", tmp_path / "fc_only", "--repeats", "2", "--permutations", "0", "--folds", "3")
    assert alone.exit_code == 0, alone.output
    assert set(pd.read_csv(tmp_path / "fc_only" / "metrics.tsv", sep="\t").model) == {"fc"}
    text = (root / "emb.tsv").read_text()
    piped = run_process("probe", "-", "--target", "age", "--participants", root / "participants.tsv",
                    "-o", tmp_path / "piped", "--repeats", "1", "--permutations", "0", input=text)
    assert piped.returncode == 0, piped.stderr
    metrics = pd.read_csv(tmp_path / "piped" / "metrics.tsv", sep="\t")
    assert set(metrics.model) == {"stdin"} and set(metrics.metric) == {"r2", "mae", "pearson_r"}
    assert "no FC baseline" in piped.stderr


def test_model_names_from_sidecars_are_made_unique(tmp_path):
    X, y = planted(n=40, d=4)
    ids = _ids(40)
    a = write_embeddings(tmp_path / "a.tsv", X, ids)
    b = write_embeddings(tmp_path / "b.tsv", X[:, ::-1] + 0.1, ids)
    for f in (a, b):
        f.with_suffix(".json").write_text(json.dumps({"model": "brainlm"}))
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, age=y)
    res = lib.probe([str(a), str(b)], part, "age", tmp_path / "out", repeats=2, permutations=0)
    assert [m.name for m in res.models] == ["brainlm", "brainlm-2"]
    assert set(res.comparisons.model) == {"brainlm"} and set(res.comparisons.reference) == {"brainlm-2"}


@pytest.mark.slow
def test_byte_reproducible_across_n_jobs(tmp_path):
    root = _fc_dataset(tmp_path, n=24)
    args = ["probe", root / "emb.tsv", "--target", "dx", "--participants", root / "participants.tsv",
            "--timeseries", root / "ts", "--repeats", "2", "--permutations", "4", "--seed", "5", "-q"]
    assert run_cli(*args, "-o", tmp_path / "a", "--n-jobs", "1").returncode == 0
    second = run_cli(*args, "-o", tmp_path / "b", "--n-jobs", "2")
    assert second.returncode == 0, second.stderr
    for name in lib.OUTPUT_FILES:
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        if name == "metrics.json":  # only the command line (output folder, --n-jobs) differs
            ja, jb = json.loads(a), json.loads(b)
            for j in (ja, jb):
                j["GeneratedBy"].pop("Command"), j["Settings"].pop("command"), j["Settings"].pop("n_jobs")
            assert ja == jb
        elif name == "report.html":
            assert a.replace(b"n-jobs 1", b"").replace(b"-o " + str(tmp_path / "a").encode(), b"") == \
                   b.replace(b"n-jobs 2", b"").replace(b"-o " + str(tmp_path / "b").encode(), b"")
        else:
            assert a == b, name
    third = run_cli(*args, "-o", tmp_path / "c", "--n-jobs", "1", "--seed", "6")
    assert (tmp_path / "c" / "predictions.tsv").read_bytes() != (tmp_path / "a" / "predictions.tsv").read_bytes()
    assert third.returncode == 0


# ------------------------------------------------------------------------------------------------------------------
# Bad input


def _bad_case(tmp_path, case):
    X, y = planted(n=30, d=4)
    ids = _ids(30)
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids)
    part = dict(participant_id=ids, age=y, sex=np.array(["F", "M"])[np.arange(30) % 2], const=np.ones(30))
    args = ["--target", "age"]
    if case == "no-match":
        part["participant_id"] = [f"sub-x{i}" for i in range(30)]
        expect = ["no participant of", "sub-000", "sub-x0"]
    elif case == "no-column":
        args = ["--target", "agee"]
        expect = ["no column 'agee'", "age, sex, const"]
    elif case == "constant":
        args = ["--target", "const"]
        expect = ["constant"]
    elif case == "rare-class":
        part["sex"] = np.where(np.arange(30) < 3, "X", part["sex"])
        args = ["--target", "sex"]
        expect = ["fewer participants than the 5 folds", "'X': 3"]
    elif case == "non-numeric":
        df = pd.read_csv(emb, sep="\t")
        df["emb_0002"] = df["emb_0002"].astype(object)
        df.loc[4, "emb_0002"] = "abc"
        df.to_csv(emb, sep="\t", index=False)
        expect = ["non-numeric value 'abc'", "emb_0002"]
    elif case == "duplicates":
        df = pd.read_csv(emb, sep="\t")
        pd.concat([df, df.iloc[[3]]]).to_csv(emb, sep="\t", index=False)
        expect = ["share the same identifiers", "sub-003"]
    elif case == "nan-embedding":
        df = pd.read_csv(emb, sep="\t")
        df.loc[2, "emb_0001"] = np.nan
        df.to_csv(emb, sep="\t", index=False, na_rep="n/a")
        expect = ["missing or infinite", "emb_0001"]
    elif case == "regress-strings":
        args = ["--target", "sex", "--task", "regression"]
        expect = ["not numeric", "--task classification"]
    elif case == "stray-text":
        part["age"] = np.where(np.arange(30) == 7, "unknown", np.round(y, 1).astype(str))
        expect = ["numeric except for 'unknown'", "n/a"]
    elif case == "fc-without-timeseries":
        args += ["--baseline", "fc"]
        expect = ["--timeseries"]
    elif case == "too-few-groups":
        part["site"] = np.array(["a", "b", "c"])[np.arange(30) % 3]
        args += ["--group-by", "site"]
        expect = ["only 3 distinct 'site' values for 5 folds"]
    else:
        raise AssertionError(case)
    write_participants(tmp_path / "participants.tsv", **part)
    return [emb, *args, "--participants", tmp_path / "participants.tsv"], expect


@pytest.mark.parametrize("case", ["no-match", "no-column", "constant", "rare-class", "non-numeric", "duplicates",
                                  "nan-embedding", "regress-strings", "stray-text", "fc-without-timeseries",
                                  "too-few-groups"])
def test_bad_input_exits_1_with_reason_and_fix(tmp_path, case):
    args, expect = _bad_case(tmp_path, case)
    res = invoke("probe", *args, "-o", tmp_path / "out", "--repeats", "1", "--permutations", "0")
    assert res.exit_code == 1, res.output
    for needle in expect:
        assert needle in res.stderr, (needle, res.stderr)
    assert "fix:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "metrics.tsv").exists() and not leftovers(tmp_path)


def test_existing_report_refused_without_overwrite(tmp_path):
    X, y = planted(n=30, d=3)
    emb = write_embeddings(tmp_path / "emb.tsv", X, _ids(30))
    part = write_participants(tmp_path / "p.tsv", participant_id=_ids(30), age=y)
    args = ["probe", emb, "--target", "age", "--participants", part, "-o", tmp_path / "out", "--repeats", "1",
            "--permutations", "0"]
    assert invoke(*args).exit_code == 0
    before = (tmp_path / "out" / "metrics.tsv").read_bytes()
    again = invoke(*args, "--seed", "3")
    assert again.exit_code == 1 and "--overwrite" in again.stderr
    assert (tmp_path / "out" / "metrics.tsv").read_bytes() == before
    assert invoke(*args, "--seed", "3", "--overwrite").exit_code == 0
    assert (tmp_path / "out" / "metrics.tsv").read_bytes() != before


def test_bad_option_values_exit_1_and_unparsable_command_lines_exit_2(tmp_path):
    res = invoke("probe", "x.tsv", "--target", "age", "--participants", "p.tsv", "-o", tmp_path, "--task", "regr")
    assert res.exit_code == 1 and "--task 'regr' is not one of regression, classification" in res.stderr
    assert invoke("probe", "x.tsv", "--target", "age", "--participants", "p.tsv", "--no-such-flag").exit_code == 2
    res = invoke("probe", "--target", "age", "--participants", tmp_path / "p.tsv", "-o", tmp_path / "o")
    assert res.exit_code == 1 and "nothing to evaluate" in res.stderr


# ------------------------------------------------------------------------------------------------------------------
# Estimator conventions, splitters, confounds, heads


@parametrize_with_checks([lib.RidgeProbe(random_state=0), lib.LogisticProbe(inner_folds=2, random_state=0)])
def test_probes_follow_sklearn_conventions(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([lib.MlpRegressorProbe(alphas=(1.0,), hidden=8, inner_folds=2, random_state=0),
                          lib.MlpClassifierProbe(alphas=(1.0,), hidden=8, inner_folds=2, random_state=0)])
def test_mlp_probes_follow_sklearn_conventions(estimator, check):
    check(estimator)


def test_stratified_group_folds_keep_groups_whole_and_classes_balanced():
    y = np.r_[np.zeros(70, int), np.ones(30, int)]
    folds = lib.assign_folds("classification", y, np.arange(100), 5, random_state=4)
    for k in range(5):
        assert abs((y[folds == k] == 0).sum() - 14) <= 1 and abs((y[folds == k] == 1).sum() - 6) <= 1
    assert (lib.assign_folds("classification", y, np.arange(100), 5, 4) == folds).all()
    assert (lib.assign_folds("classification", y, np.arange(100), 5, 5) != folds).any()
    site = np.arange(100) % 9  # sites mixing both classes
    sf = lib.assign_folds("classification", y, site, 5, random_state=1)
    assert all(len(set(sf[site == s])) == 1 for s in range(9)) and len(set(sf)) == 5
    rf = lib.assign_folds("regression", y, site, 5, random_state=1)
    assert all(len(set(rf[site == s])) == 1 for s in range(9)) and len(set(rf)) == 5


def test_confounds_are_regressed_out_inside_the_folds(tmp_path):
    rng = np.random.default_rng(2)
    n, d = 120, 8
    site = np.arange(n) % 4
    X = 2.0 * rng.standard_normal((4, d))[site] + rng.standard_normal((n, d))
    y = np.array([30.0, 45.0, 50.0, 60.0])[site] + rng.standard_normal(n)  # the target only differs by site
    ids = _ids(n)
    emb = write_embeddings(tmp_path / "emb.tsv", X, ids)
    part = write_participants(tmp_path / "p.tsv", participant_id=ids, score=y, site=np.array(list("abcd"))[site])
    raw = lib.probe([str(emb)], part, "score", tmp_path / "raw", repeats=2, permutations=0)
    clean = lib.probe([str(emb)], part, "score", tmp_path / "clean", repeats=2, permutations=0, confounds=["site"])
    assert _metric(raw, "emb", "r2")["mean"] > 0.5  # site read off the features
    assert _metric(clean, "emb", "r2")["mean"] < 0.05  # nothing left once site is out of the features
    assert clean.setup.confound_names == ["site=b", "site=c", "site=d"]


def test_models_share_participants_and_drops_are_counted(tmp_path):
    root = _fc_dataset(tmp_path, n=20, coverage_gap=False)
    emb = pd.read_csv(root / "emb.tsv", sep="\t", dtype={"run": str})
    emb[emb.participant_id != "sub-005"].to_csv(root / "emb.tsv", sep="\t", index=False)
    shutil.rmtree(root / "ts" / "sub-007")
    res = lib.probe([str(root / "emb.tsv")], root / "participants.tsv", "dx", tmp_path / "out",
                    timeseries=[root / "ts"], repeats=1, permutations=0, folds=3)
    acc = res.setup.accounting["models"]
    assert acc["emb"]["not_shared_with_other_models"] == 1 and acc["fc"]["not_shared_with_other_models"] == 1
    assert acc["emb"]["missing_target"] == 1 and acc["fc"]["missing_target"] == 1  # sub-000 has dx = n/a
    assert len(res.setup.participants) == 17 and "sub-005" not in res.setup.participants
    assert any("1 not in every model" in note for note in res.notes)
    assert "<th class=\"text\">not in every model</th>" in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.slow
def test_mlp_head_recovers_a_planted_signal(tmp_path):
    X, y = planted(n=100, d=6, r2=0.7, seed=4)
    emb = write_embeddings(tmp_path / "emb.tsv", X, _ids(100))
    part = write_participants(tmp_path / "p.tsv", participant_id=_ids(100), age=y)
    res = lib.probe([str(emb)], part, "age", tmp_path / "out", head="mlp", repeats=1, permutations=0)
    assert 0.4 < _metric(res, "emb", "r2")["mean"] < 0.8


def test_a_class_missing_from_a_training_fold_is_handled(tmp_path):
    """Sites can leave a class out of some training folds: its probability is 0 there, the run still completes."""
    rng = np.random.default_rng(0)
    n = 60
    site = np.arange(n) % 6
    dx = np.where(np.arange(n) % 2 == 0, "a", "b")
    dx[site == 0] = "c"  # class c lives at one site only: absent from training whenever that site is tested
    X = rng.standard_normal((n, 4)) + (dx == "a")[:, None]
    emb = write_embeddings(tmp_path / "emb.tsv", X, _ids(n))
    part = write_participants(tmp_path / "p.tsv", participant_id=_ids(n), dx=dx, site=site)
    res = lib.probe([str(emb)], part, "dx", tmp_path / "out", group_by="site", repeats=2, permutations=3)
    pred = res.predictions
    probs = pred[["proba_a", "proba_b", "proba_c"]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    assert (pred.loc[pred.target == "c", "proba_c"] == 0).all()
    assert np.isfinite(_metric(res, "emb", "balanced_accuracy")["mean"])
