"""Effect sizes over seeds (exact bootstrap CI) and the emphasis rule: bold only for a significant winner."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.effects import bootstrap_mean_ci, effect_sizes, emphasis
from reports.load import load_study
from reports.sections import plan
from reports.tables import results_table, to_latex, to_markdown


def test_exact_bootstrap_by_hand() -> None:
    # n = 2: resample means 0, 0.5, 0.5, 1 (equally likely); linear quantiles at 2.5% and 97.5%
    lo, hi = bootstrap_mean_ci([0.0, 1.0])
    assert lo == pytest.approx(0.075 * 0.5) and hi == pytest.approx(0.5 + 0.925 * 0.5)
    x = np.array([0.3, -0.1, 0.7])
    means = [np.mean(t) for t in itertools.product(x, repeat=3)]  # all 27 resamples
    assert bootstrap_mean_ci(x, 0.9) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert np.isnan(bootstrap_mean_ci([1.0, np.nan])[0])


def test_monte_carlo_bootstrap_agrees_with_scipy() -> None:
    x = np.random.default_rng(5).normal(0.02, 0.01, 9)  # 9^9 resamples: Monte Carlo
    ref = sps.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(2))
    lo, hi = bootstrap_mean_ci(x)
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.05 * width)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.05 * width)


def _rows(means: dict[str, float], noise: float, seeds: int = 5, shared: float = 0.03) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, shared, seeds)  # shared by every configuration: pairing removes it
    return pd.DataFrame([{"variant": v, "seed": s, "valid_mae": m + seed_effect[s] + rng.normal(0, noise),
                          "status": "completed"} for v, m in means.items() for s in range(seeds)])


def test_clear_winner_is_bold_and_alone() -> None:
    df = _rows({"a": 0.50, "b": 0.60, "c": 0.62}, noise=0.005)
    e = emphasis(df, metric="valid_mae", group="variant", higher_is_better=False)
    assert e.best == {"a"} and e.tied == frozenset() and e.testable
    t = results_table(df, by="variant", metrics=["valid_mae"])
    assert t.bold == {(0, 2)} and t.marked == set()
    assert r"\textbf{0.5" in to_latex(t) and "Bold: significantly better than every other row" in t.caption


def test_indistinguishable_rows_get_no_bold() -> None:
    # the case: 0.461 ± 0.024 against 0.464 ± 0.027 and two more rows, 3 seeds
    df = _rows({"w=0": 0.464, "w=0.1": 0.461, "w=0.3": 0.466, "w=1": 0.47}, noise=0.02, seeds=3)
    t = results_table(df, by="variant", metrics=["valid_mae"])
    assert t.bold == set() and t.marked == {(i, 2) for i in range(4)}
    assert to_markdown(t).split("\n\n")[0].count("†") == 4  # the caption's legend aside


def test_a_significantly_worse_row_is_not_marked() -> None:
    df = _rows({"a": 0.50, "b": 0.501, "c": 0.70}, noise=0.004)
    e = emphasis(df, metric="valid_mae", group="variant", higher_is_better=False)
    assert e.best == frozenset() and e.tied == {"a", "b"}


def test_single_seed_marks_nothing() -> None:
    df = _rows({"a": 0.5, "b": 0.6}, noise=0.01, seeds=1)
    assert not emphasis(df, metric="valid_mae", group="variant", higher_is_better=False).testable
    t = results_table(df, by="variant", metrics=["valid_mae"], caption="cap")
    assert t.bold == set() and t.marked == set() and t.caption == "cap"


def test_a_lucky_single_seed_row_neither_leads_nor_silences_the_column() -> None:
    # "one" failed on 4 of 5 seeds; its one run has the best MAE. It cannot be tested, so it used to become
    # the leader and every comparison was untestable: no mark anywhere, though "a" clearly beats the rest
    df = _rows({"a": 0.50, "b": 0.60, "c": 0.62}, noise=0.005)
    df = pd.concat([df, pd.DataFrame([{"variant": "one", "seed": 0, "valid_mae": 0.3, "status": "completed"}])])
    e = emphasis(df, metric="valid_mae", group="variant", higher_is_better=False)
    assert e.best == {"a"} and e.tied == frozenset() and e.untested == {"one"} and e.testable
    t = results_table(df, by="variant", metrics=["valid_mae"])
    assert t.bold == {(0, 2)} and t.marked == set() and t.rows[3][:2] == ["one", "1"]
    assert "fewer than 2 seeds in a column are not tested" in t.caption


def test_the_leader_is_chosen_on_the_seeds_every_row_has() -> None:
    # seed 3 is easy for everyone; y's seed-3 run diverged (missing). On their own seeds x has the best mean
    # (0.780 vs 0.790), but on the shared seeds 0-2 y beats x and z on every seed: y is the leader, and x,
    # significantly worse than y, must not carry the dagger of "not significantly worse than the best"
    vals = {"x": [0.85, 0.80, 0.83, 0.64], "y": [0.841, 0.789, 0.82, None], "z": [0.88, 0.83, 0.86, 0.75]}
    df = pd.DataFrame([{"variant": v, "seed": s, "valid_mae": m, "status": "completed"}
                       for v, ms in vals.items() for s, m in enumerate(ms) if m is not None])
    e = emphasis(df, metric="valid_mae", group="variant", higher_is_better=False)
    assert df.groupby("variant")["valid_mae"].mean().idxmin() == "x"  # the unpaired leader of before
    assert e.best == {"y"} and e.tied == frozenset()


def test_n_shows_a_range_when_a_metric_is_missing_on_some_seeds() -> None:
    df = _rows({"a": 0.50, "b": 0.60}, noise=0.005, seeds=5).assign(test_corr=0.7)
    df.loc[(df["variant"] == "b") & (df["seed"] == 4), "test_corr"] = np.nan
    t = results_table(df, by="variant", metrics=["valid_mae", "test_corr"])
    assert [r[1] for r in t.rows] == ["5", "4–5"]


def test_effect_sizes_add_bootstrap_ci_of_the_paired_difference() -> None:
    df = pd.DataFrame({"variant": ["base"] * 3 + ["v"] * 3, "seed": [1, 2, 3] * 2,
                       "test_mae": [0.5, 0.6, 0.7, 0.45, 0.58, 0.66]})
    row = effect_sizes(df, baseline="base", metrics=["test_mae"]).iloc[0]
    assert row["diff_mean"] == pytest.approx(-0.11 / 3)
    assert (row["boot_ci_low"], row["boot_ci_high"]) == pytest.approx(bootstrap_mean_ci([-0.05, -0.02, -0.04]))


def test_grid_effects_table_compares_with_the_first_value(grid_dir: Path) -> None:
    item = next(i for i in plan(load_study(grid_dir)) if i.name == "results_effects")
    t = item.make()
    assert t.header[2] == "Δ vs distill_weight=0" and t.header[3] == "95% CI (bootstrap)"
    assert [r[0] for r in t.rows[:4]] == ["distill_weight=0.1", "distill_weight=0.3", "distill_weight=0.5",
                                          "distill_weight=1"]  # the grid's order
    assert {r[1] for r in t.rows} >= {"Val. MAE", "Test MAE"}  # the objective and test metrics told apart
