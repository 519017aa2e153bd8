"""Search statistics: best-so-far and compute by hand, eta-squared by hand, importance ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.load import load_study
from reports.search_stats import best_so_far, eta_squared, param_importance

T0 = pd.Timestamp("2026-01-01", tz="UTC")


def _trials() -> pd.DataFrame:
    rows = [  # config, status, objective, epochs, time, start offset (s)
        ("A", "completed", 0.9, 10, 20.0, 0),
        ("B", "pruned", 0.5, 3, 5.0, 1),  # pruned: compute counts, value does not
        ("C", "completed", 0.7, 10, 15.0, 2),
        ("D", "completed", 0.6, 8, 12.0, 3),
        ("E", "failed", np.nan, 0, 1.0, 4),
        ("C", "completed", 0.8, 10, 15.0, 5),  # second seed of C
    ]
    return pd.DataFrame([{"config_id": c, "variant": f"v{c}", "status": s, "valid_mae": o, "epochs_run": e,
                          "time_total_s": t, "started_at": T0 + pd.Timedelta(seconds=d)}
                         for c, s, o, e, t, d in rows])


def test_best_so_far_min_by_hand() -> None:
    b = best_so_far(_trials(), metric="valid_mae", mode="min")
    assert list(b["config_id"]) == ["A", "B", "C", "D", "E"]
    assert list(b["order"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(b["value"], [0.9, np.nan, 0.75, 0.6, np.nan])
    np.testing.assert_allclose(b["best"], [0.9, 0.9, 0.75, 0.6, 0.6])
    assert list(b["cum_epochs"]) == [10, 13, 33, 41, 41]
    np.testing.assert_allclose(b["cum_time_s"], [20, 25, 55, 67, 68])
    assert list(b["completed"]) == [True, False, True, True, False]


def test_best_so_far_max_and_leading_gap() -> None:
    t = _trials()
    np.testing.assert_allclose(best_so_far(t, metric="valid_mae", mode="max")["best"], [0.9] * 5)
    late = t.assign(started_at=t["started_at"].where(t.config_id != "B", T0 - pd.Timedelta(seconds=9)))
    b = best_so_far(late, metric="valid_mae", mode="min")
    assert b["config_id"].iloc[0] == "B" and np.isnan(b["best"].iloc[0]) and b["best"].iloc[1] == 0.9


def test_best_so_far_errors() -> None:
    with pytest.raises(ValueError, match="mode"):
        best_so_far(_trials(), metric="valid_mae", mode="lowest")
    with pytest.raises(KeyError, match="valid_acc"):
        best_so_far(_trials(), metric="valid_acc", mode="max")


def test_eta_squared_by_hand() -> None:
    # grand mean 4, SS_total 20, group means 2 and 6 -> SS_between 16
    assert eta_squared(pd.Series(["a", "a", "b", "b"]), pd.Series([1.0, 3.0, 5.0, 7.0])) == pytest.approx(0.8)
    assert eta_squared(pd.Series([1, 1, 1, 1]), pd.Series([1.0, 3.0, 5.0, 7.0])) == 0.0
    x = pd.Series(np.arange(10.0))  # 5 quantile bins of two values each
    y = pd.Series(np.arange(10.0))
    within = 5 * 2 * 0.25  # each pair deviates +-0.5 from its bin mean
    assert eta_squared(x, y) == pytest.approx(1 - within / float(((y - y.mean()) ** 2).sum()))


@pytest.mark.parametrize("method", ["eta2", "ped-anova", "auto"])
def test_param_importance_ranks_the_dominant_parameter_first(search_dir: Path, method: str) -> None:
    study = load_study(search_dir)
    imp = param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min", method=method)
    assert list(imp.columns) == ["param", "importance", "method", "note"]
    assert set(imp["param"]) == set(study.varied)
    assert imp["param"].iloc[0] == "train.lr"  # the fixture's quality depends on lr only
    assert (imp["importance"] >= 0).all()
    if method != "auto":
        assert set(imp["method"]) == {method}


def test_param_importance_constant_parameter_and_bad_method(search_dir: Path) -> None:
    t = load_study(search_dir).trials.assign(**{"model.fixed": 3})
    imp = param_importance(t, params=["train.lr", "model.fixed"], metric="valid_mae", mode="min", method="eta2")
    assert imp.set_index("param").loc["model.fixed", "importance"] == 0.0
    with pytest.raises(ValueError, match="method"):
        param_importance(t, params=["train.lr"], metric="valid_mae", mode="min", method="shap")


def test_param_importance_fanova_when_sklearn_is_installed(search_dir: Path) -> None:
    pytest.importorskip("sklearn")
    study = load_study(search_dir)
    imp = param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min", method="fanova")
    assert imp["param"].iloc[0] == "train.lr" and imp["importance"].sum() == pytest.approx(1.0)


def test_conditional_parameters_with_missing_values(search_dir: Path) -> None:
    t = load_study(search_dir).trials.copy()
    t.loc[t.index % 3 == 0, "model.n_levels"] = np.nan  # e.g. only defined for some architectures
    for method in ("eta2", "ped-anova"):
        imp = param_importance(t, params=["train.lr", "model.n_levels"], metric="valid_mae", mode="min",
                               method=method)
        assert np.isfinite(imp["importance"]).all() and imp["param"].iloc[0] == "train.lr"


def test_too_few_trials_to_judge_importance(make_study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With 5 trials every continuous parameter would get η² = 1: nothing is judged, and it says why."""
    from reports.search_stats import MIN_IMPORTANCE_TRIALS

    study = load_study(make_study("hpo", tmp_path / "h5", n_trials=5))
    raw = param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min", method="eta2")
    assert raw["importance"].isna().all() and set(raw["method"]) == {"none"}
    assert set(raw["note"]) == {f"too few trials to judge (5 completed; needs ≥ {MIN_IMPORTANCE_TRIALS})"}
    many = load_study(make_study("hpo", tmp_path / "h12", n_trials=MIN_IMPORTANCE_TRIALS + 2))
    imp = param_importance(many.trials, params=many.varied, metric="valid_mae", mode="min", method="eta2")
    assert np.isfinite(imp["importance"]).all() and set(imp["note"]) == {""}
    const = param_importance(many.trials.assign(**{"model.fixed": 3}), params=["train.lr", "model.fixed"],
                             metric="valid_mae", mode="min", method="eta2").set_index("param")
    assert const.loc["model.fixed", "note"] == "did not vary" and const.loc["train.lr", "note"] == ""


def test_a_categorical_parameter_beside_log_scaled_ones(search_dir: Path) -> None:
    """hpo.yaml searches model.router (strings) beside train.lr (log): Optuna's importance takes both."""
    t = load_study(search_dir).trials.copy()
    t["model.router"] = np.where(t.index % 2 == 0, "learned", "uniform")
    for method in ("ped-anova", "fanova"):
        imp = param_importance(t, params=["train.lr", "model.router"], metric="valid_mae", mode="min",
                               method=method, log=["train.lr"])
        assert set(imp["param"]) == {"train.lr", "model.router"} and np.isfinite(imp["importance"]).all()
