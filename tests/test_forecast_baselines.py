"""Forecasting baselines and metrics (``tasks.forecast.baselines``) on small synthetic processes of known truth."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from brainfm_cli.errors import BrainfmError
from brainfm_cli.tasks.forecast.baselines import (
    BASELINES,
    ForecastWindows,
    LSTMForecaster,
    MeanForecaster,
    PersistenceForecaster,
    RidgeAR,
    VARForecaster,
    forecast_metrics,
    forecast_windows,
)

SUBJECTS = [f"sub-{i}" for i in range(5)]


def simulate(step, regions: int, n_runs: int = 5, T: int = 300, burn: int = 100, seed: int = 0) -> list[np.ndarray]:
    """``n_runs`` runs ``[regions, T]`` of ``x_t = step(x_{t-1}, x_{t-2}) + noise``, z-scored per region."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n_runs):
        x = np.zeros((regions, T + burn))
        for t in range(2, T + burn):
            x[:, t] = step(x[:, t - 1], x[:, t - 2]) + rng.standard_normal(regions)
        x = x[:, burn:]
        runs.append((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True))
    return runs


def ar2(regions=4, **kw):
    """Independent AR(2) regions, an oscillation that decays (roots of modulus 0.87)."""
    return simulate(lambda a, b: 1.5 * a - 0.75 * b, regions, **kw)


def coupled(**kw):
    """Region 1 is driven by region 0's past, which its own past cannot predict."""
    A = np.array([[0.3, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 0.6]])
    return simulate(lambda a, b: A @ a, 3, **kw)


def split(runs, context, horizon, stride=None):
    """Train on the first four participants; score windows of the fifth."""
    return runs[:4], SUBJECTS[:4], forecast_windows(runs[4:], SUBJECTS[4:], context, horizon, stride)


def score(model, train, subs, test):
    return forecast_metrics(test.future, model.fit(train, subs).predict(test.context))


def score_of(model, test):
    """R² averaged over the horizon of a fitted model."""
    return forecast_metrics(test.future, model.predict(test.context)).r2.iloc[-1]


def test_windows_are_consecutive_context_future_pairs():
    runs = [np.arange(60.0).reshape(2, 30), np.arange(40.0).reshape(2, 20), np.ones((2, 5))]
    w = forecast_windows(runs, ["a", "b", "c"], context=6, horizon=4)
    assert w.context.shape == (5, 2, 6) and w.future.shape == (5, 2, 4) and w.context.dtype == np.float32
    assert w.participants == ["a", "a", "a", "b", "b"]  # the 5-sample run gives none; windows do not overlap
    np.testing.assert_array_equal(w.context[1], runs[0][:, 10:16])
    np.testing.assert_array_equal(w.future[1], runs[0][:, 16:20])
    assert len(forecast_windows(runs, ["a", "b", "c"], 6, 4, stride=2)) == 11 + 6


def test_ridge_ar_beats_persistence_and_mean_on_an_ar2_process():
    train, subs, test = split(ar2(), context=30, horizon=10, stride=5)
    tables = {name: score(BASELINES[name](30, 10), train, subs, test) for name in ("mean", "persistence", "ridge_ar")}
    step1 = {k: t.r2.iloc[0] for k, t in tables.items()}
    average = {k: t.r2.iloc[-1] for k, t in tables.items()}
    assert step1["ridge_ar"] > 0.8 and step1["ridge_ar"] > step1["persistence"] + 0.1
    assert average["ridge_ar"] > average["persistence"] + 0.3 and average["ridge_ar"] > average["mean"] + 0.1
    model = RidgeAR(30, 10).fit(train, subs)
    assert model.lags_ >= 2 and model.cv_mse_.shape == (len(model.lag_grid_), len(model.penalties))


def test_mean_scores_zero_r2_on_held_out_windows():
    train, subs, test = split(ar2(T=600), context=30, horizon=10, stride=1)
    model = MeanForecaster(30, 10).fit(train, subs)
    np.testing.assert_allclose(model.mean_, np.concatenate(train, axis=1).mean(1))
    table = forecast_metrics(test.future, model.predict(test.context))
    assert np.abs(table.r2.astype(float)).max() < 0.02


def test_persistence_is_exact_on_a_constant_series():
    runs = [np.repeat(np.array([[1.0], [-2.0], [3.5]]), 40, axis=1)] * 2
    w = forecast_windows(runs, ["a", "b"], 10, 5, stride=3)
    pred = PersistenceForecaster(10, 5).fit(runs, ["a", "b"]).predict(w.context)
    np.testing.assert_array_equal(pred, w.future)
    table = forecast_metrics(w.future, pred)
    assert (table.r2 == 1).all() and (table.mse == 0).all()


def independent_ridge(train, lags, horizon, penalty, pooled, contexts):
    """The ridge-AR forecast computed without the library: the lagged design written out row by row (every
    position of every run, or the last ``lags`` samples of each training window), fitted with sklearn's Ridge
    whose ``alpha`` is the penalty times the number of rows it is fitted on."""
    rows = []  # (region, features, targets)
    if isinstance(train, ForecastWindows):
        for c, f in zip(train.context, train.future):
            rows += [(r, c[r, -lags:], f[r]) for r in range(c.shape[0])]
    else:
        for x in train:
            for t in range(lags - 1, x.shape[1] - horizon):
                rows += [(r, x[r, t - lags + 1:t + 1], x[r, t + 1:t + 1 + horizon]) for r in range(x.shape[0])]
    regions = contexts.shape[1]
    out = np.zeros((len(contexts), regions, horizon))
    for r in ([None] if pooled else range(regions)):
        mine = [row for row in rows if pooled or row[0] == r]
        fit = Ridge(alpha=penalty * len(mine)).fit(np.array([m[1] for m in mine]), np.array([m[2] for m in mine]))
        for q in (range(regions) if pooled else [r]):
            out[:, q] = fit.predict(contexts[:, q, -lags:].astype(np.float64))
    return out


@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("source", ["runs", "windows"])
def test_ridge_ar_agrees_with_sklearn_ridge_on_the_same_design(pooled, source):
    runs = ar2(regions=3, T=120)
    train, subs, test = split(runs, context=20, horizon=5, stride=5)
    if source == "windows":
        train, subs = forecast_windows(train, subs, 20, 5, stride=2), None
    model = RidgeAR(20, 5, penalties=(0.3, 3.0), pooled=pooled).fit(train, subs)  # penalties large enough to matter
    expected = independent_ridge(train, model.lags_, 5, model.penalty_, pooled, test.context)
    np.testing.assert_allclose(model.predict(test.context), expected, rtol=1e-6, atol=1e-6)



def fit_in_form(model, train, form, monkeypatch):
    """Fit with the ridge solves forced into one form ("primal", "dual" or "auto"), recording the size of every
    matrix the cross-validation eigendecomposes."""
    sizes, eigh = [], np.linalg.eigh
    monkeypatch.setattr(np.linalg, "eigh", lambda a: sizes.append(a.shape[-1]) or eigh(a))
    model._form = form
    model.fit(train)
    monkeypatch.setattr(np.linalg, "eigh", eigh)
    return model, sizes


def var_forecast(model, contexts):
    """The VAR forecast in float64 from its coefficients (features: the last ``lags`` samples, lag-major)."""
    n, regions, _ = contexts.shape
    X = contexts[:, :, -model.lags_:].astype(np.float64).transpose(0, 2, 1).reshape(n, -1)
    return (X @ model.coef_[0] + model.intercept_[0]).reshape(n, regions, -1)


def test_var_dual_and_primal_solves_agree_with_fewer_rows_than_features(monkeypatch):
    runs = ar2(regions=12, T=130)
    train, subs, test = split(runs, context=20, horizon=5, stride=5)
    windows = forecast_windows(train, subs, 20, 5, stride=25)  # 20 pairs; 12 × 8 = 96 features at the top lag
    fits = {form: fit_in_form(VARForecaster(20, 5, lags=(1, 2, 4, 8)), windows, form, monkeypatch)
            for form in ("primal", "dual", "auto")}
    primal, dual, auto = (fits[f][0] for f in ("primal", "dual", "auto"))
    assert max(fits["primal"][1]) == 96 and max(fits["dual"][1]) == max(fits["auto"][1]) == 15  # 15 rows train
    assert 12 in fits["auto"][1]  # lag 1: 12 features, fewer than the rows, still solved in the primal
    for other in (dual, auto):
        assert (other.lags_, other.penalty_) == (primal.lags_, primal.penalty_)
        np.testing.assert_allclose(other.cv_mse_, primal.cv_mse_, rtol=1e-8)
        np.testing.assert_allclose(var_forecast(other, test.context), var_forecast(primal, test.context), atol=1e-8)
        np.testing.assert_allclose(other.predict(test.context), primal.predict(test.context), atol=1e-6)


@pytest.mark.parametrize("pooled", [True, False])
def test_ridge_ar_dual_and_primal_solves_agree_per_region(pooled, monkeypatch):
    runs = ar2(regions=3, T=60)
    train, subs, test = split(runs, context=20, horizon=5, stride=5)
    windows = forecast_windows(train, subs, 20, 5, stride=15)  # 12 pairs, up to 16 lags
    primal, dual = (fit_in_form(RidgeAR(20, 5, lags=(2, 8, 16), penalties=(1e-4, 0.1, 10.0), pooled=pooled),
                                windows, form, monkeypatch)[0] for form in ("primal", "dual"))
    assert (dual.lags_, dual.penalty_) == (primal.lags_, primal.penalty_)
    np.testing.assert_allclose(dual.cv_mse_, primal.cv_mse_, rtol=1e-8)
    np.testing.assert_allclose(dual.coef_, primal.coef_, atol=1e-8)
    np.testing.assert_allclose(dual.intercept_, primal.intercept_, atol=1e-8)


def test_var_with_fewer_rows_than_features_agrees_with_sklearn_ridge():
    runs = ar2(regions=6, T=130)
    train, subs, test = split(runs, context=20, horizon=5, stride=5)
    windows = forecast_windows(train, subs, 20, 5, stride=25)  # 20 pairs, 48 features
    model = VARForecaster(20, 5, lags=(8,), penalties=(1e-3, 0.1)).fit(windows)
    design = lambda c: c[:, :, -8:].reshape(len(c), -1).astype(np.float64)  # noqa: E731 (ridge ignores feature order)
    fit = Ridge(alpha=model.penalty_ * len(windows)).fit(design(windows.context), windows.future.reshape(20, -1))
    expected = fit.predict(design(test.context)).reshape(test.future.shape)
    np.testing.assert_allclose(model.predict(test.context), expected, rtol=1e-6, atol=1e-6)

def test_var_beats_ridge_ar_when_regions_drive_each_other():
    train, subs, test = split(coupled(), context=20, horizon=5, stride=2)
    var, ar = score(VARForecaster(20, 5), train, subs, test), score(RidgeAR(20, 5), train, subs, test)
    assert var.r2.iloc[0] > ar.r2.iloc[0] + 0.1 and var.r2.iloc[-1] > ar.r2.iloc[-1]


def sinusoids(n_runs=5, T=200, seed=0):
    """Two regions of a 20-sample sinusoid at a random phase per run, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return [np.stack([np.sin(2 * np.pi * t / 20 + rng.uniform(0, 2 * np.pi) + k) for k in (0, 1)])
            + 0.3 * rng.standard_normal((2, T)) for _ in range(n_runs)]


def test_lstm_learns_a_sinusoid_and_is_reproducible_with_its_seed():
    train, subs, test = split(sinusoids(), context=12, horizon=6, stride=6)
    make = lambda seed: LSTMForecaster(12, 6, seed=seed, hidden=16, steps=150, lr=1e-2)  # noqa: E731
    first, again, other = (make(s).fit(train, subs).predict(test.context) for s in (0, 0, 1))
    lstm = forecast_metrics(test.future, first)
    mean = score(MeanForecaster(12, 6), train, subs, test)
    assert lstm.r2.iloc[-1] > mean.r2.iloc[-1] + 0.3
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_lstm_stops_early_on_held_out_participants_instead_of_learning_noise():
    rng = np.random.default_rng(0)
    train, subs, test = split([rng.standard_normal((4, 60)) for _ in range(5)], context=12, horizon=4, stride=1)
    fit = lambda validation: LSTMForecaster(12, 4, hidden=32, steps=150, lr=1e-2,  # noqa: E731
                                            validation=validation).fit(train, subs)
    overfit, stopped = fit(0.0), fit(0.2)
    assert stopped.best_step_ < 150 and len(stopped.val_loss_) >= stopped.patience
    assert score_of(overfit, test) < -0.15 and score_of(stopped, test) > -0.1


def test_every_registered_baseline_forecasts_the_horizon_deterministically():
    train, subs, test = split(ar2(regions=2, T=80), context=12, horizon=4, stride=4)
    for name, cls in BASELINES.items():
        make = lambda: cls(12, 4, seed=3, **({"steps": 5, "hidden": 8} if name == "lstm" else {}))  # noqa: E731
        pred = make().fit(train, subs).predict(test.context)
        assert pred.shape == test.future.shape and pred.dtype == np.float32, name
        np.testing.assert_array_equal(pred, make().fit(train, subs).predict(test.context))


def test_metrics_table_has_a_row_per_step_and_their_mean():
    rng = np.random.default_rng(0)
    truth = rng.standard_normal((7, 3, 4))
    pred = truth + rng.standard_normal((7, 3, 4))
    table = forecast_metrics(truth, pred)
    assert list(table.columns) == ["step", "r2", "pearson_r", "mse", "n_windows"]
    assert table.step.tolist() == [1, 2, 3, 4, "mean"] and (table.n_windows == 7).all()
    a, b = truth[:, :, 2].ravel(), pred[:, :, 2].ravel()
    assert table.r2[2] == pytest.approx(1 - ((a - b) ** 2).sum() / ((a - a.mean()) ** 2).sum())
    assert table.pearson_r[2] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert table.mse[2] == pytest.approx(((a - b) ** 2).mean())
    for col in ("r2", "pearson_r", "mse"):
        assert table[col].iloc[-1] == pytest.approx(table[col].iloc[:4].mean())
    perfect = forecast_metrics(truth, truth)
    assert (perfect.r2 == 1).all() and np.allclose(perfect.pearson_r.astype(float), 1) and (perfect.mse == 0).all()


def test_bad_inputs_say_what_to_fix():
    short = [np.zeros((3, 50)), np.zeros((3, 60))]
    with pytest.raises(BrainfmError, match="longer than every run") as err:
        forecast_windows(short, ["a", "b"], context=50, horizon=20)
    assert "shorten" in err.value.fix
    with pytest.raises(BrainfmError, match="different numbers of regions") as err:
        forecast_windows([np.zeros((3, 50)), np.zeros((4, 50))], ["a", "b"], 10, 5)
    assert err.value.fix
    runs = ar2(regions=3, n_runs=2, T=60)
    model = RidgeAR(10, 5).fit(runs, ["a", "b"])
    with pytest.raises(BrainfmError, match="3 regions") as err:
        model.predict(np.zeros((2, 4, 10)))
    assert "same atlas" in err.value.fix
    with pytest.raises(BrainfmError, match="two or more participants"):
        RidgeAR(10, 5).fit(runs, ["a", "a"])
    with pytest.raises(BrainfmError, match="different numbers of regions"):
        MeanForecaster(10, 5).fit([np.zeros((3, 50)), np.zeros((4, 50))], ["a", "b"])
    with pytest.raises(BrainfmError, match="must both be"):
        forecast_metrics(np.zeros((2, 3, 4)), np.zeros((2, 3, 5)))
