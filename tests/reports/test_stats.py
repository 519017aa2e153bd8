"""Seed statistics against hand-computed values (t quantiles from tables, closed-form p for df=2)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from reports.stats import holm, is_log_spaced, paired_comparison, summarize, t_halfwidth

T_975 = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631}  # Student t quantiles (two-sided 95%)


def test_summarize_matches_hand_computed_mean_std_ci() -> None:
    df = pd.DataFrame({"cfg": ["A"] * 4 + ["B"] + ["C"] * 3,
                       "m": [1.0, 2.0, 3.0, 4.0, 10.0, 5.0, np.nan, 7.0]})
    s = summarize(df, "cfg", ["m"]).set_index("cfg")
    assert list(s.columns) == ["metric", "n", "mean", "std", "sem", "ci_low", "ci_high"]
    a = s.loc["A"]
    std_a = math.sqrt(5 / 3)
    assert (a["n"], a["mean"]) == (4, 2.5)
    assert a["std"] == pytest.approx(std_a)
    assert a["sem"] == pytest.approx(std_a / 2)
    assert a["ci_low"] == pytest.approx(2.5 - T_975[3] * std_a / 2, rel=1e-7)
    assert a["ci_high"] == pytest.approx(2.5 + T_975[3] * std_a / 2, rel=1e-7)
    b = s.loc["B"]  # a single seed: no spread, no interval (NaN, never zero)
    assert b["n"] == 1 and b["mean"] == 10.0
    assert np.isnan(b["std"]) and np.isnan(b["ci_low"]) and np.isnan(b["ci_high"])
    c = s.loc["C"]  # the NaN is not a seed
    assert c["n"] == 2 and c["mean"] == 6.0 and c["std"] == pytest.approx(math.sqrt(2))
    assert c["ci_high"] - c["mean"] == pytest.approx(T_975[1] * 1.0, rel=1e-7)


def test_summarize_long_format_over_several_keys_and_metrics() -> None:
    df = pd.DataFrame({"x": [0.1, 0.1, 0.2, 0.2], "h": ["a", "a", "a", "b"], "m1": [1, 3, 5, 7],
                       "m2": [0.5, 0.7, 0.1, 0.2]})
    s = summarize(df, ["x", "h"], ["m1", "m2"])
    assert len(s) == 3 * 2
    row = s[(s.x == 0.1) & (s.h == "a") & (s.metric == "m2")].iloc[0]
    assert row["mean"] == pytest.approx(0.6) and row["n"] == 2


def test_summarize_rejects_unknown_columns() -> None:
    with pytest.raises(KeyError, match="nope"):
        summarize(pd.DataFrame({"a": [1]}), "a", ["nope"])


def test_t_halfwidth_and_bad_confidence() -> None:
    assert t_halfwidth(np.array([1.0]), np.array([3]))[0] == pytest.approx(T_975[2] / math.sqrt(3), rel=1e-7)
    assert np.isnan(t_halfwidth(np.array([1.0]), np.array([1]))[0])
    with pytest.raises(ValueError, match="confidence"):
        t_halfwidth(np.array([1.0]), np.array([3]), confidence=95)


def test_holm_by_hand() -> None:
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    out = holm([0.02, np.nan, 0.04])  # NaN is not a comparison: m = 2
    np.testing.assert_allclose(out[[0, 2]], [0.04, 0.04])
    assert np.isnan(out[1])
    np.testing.assert_allclose(holm([0.6, 0.7]), [1.0, 1.0])  # capped at 1, monotone
    assert holm([]).size == 0


def _paired_frame() -> pd.DataFrame:
    rows = [("full", 1, 0.50), ("full", 2, 0.60), ("full", 3, 0.70),
            ("a", 1, 0.55), ("a", 2, 0.62), ("a", 3, 0.80),
            ("b", 1, 0.40), ("b", 2, 0.50), ("b", 3, 0.60),
            ("c", 1, 0.90)]
    return pd.DataFrame(rows, columns=["variant", "seed", "test_mae"])


def test_paired_comparison_by_hand() -> None:
    comp = paired_comparison(_paired_frame(), baseline="full", metrics=["test_mae"]).set_index("variant")
    assert set(comp.index) == {"a", "b", "c"}
    a = comp.loc["a"]
    d = np.array([0.05, 0.02, 0.10])
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 2)
    t = d.mean() / (sd / math.sqrt(3))
    assert a["n_pairs"] == 3
    assert a["diff_mean"] == pytest.approx(d.mean()) and a["diff_std"] == pytest.approx(sd)
    assert a["t"] == pytest.approx(t)
    assert a["p_t"] == pytest.approx(1 - t / math.sqrt(t * t + 2))  # closed form of the t(2) tail
    assert a["p_wilcoxon"] == pytest.approx(0.25)  # exact: all 3 signs positive, 2 * 1/8
    assert a["diff_ci_high"] - a["diff_mean"] == pytest.approx(T_975[2] * sd / math.sqrt(3), rel=1e-6)
    assert a["baseline_mean"] == pytest.approx(0.6) and a["mean"] == pytest.approx(0.656666667)
    assert "Wilcoxon cannot reach p<0.05" in a["note"]
    b = comp.loc["b"]  # every seed exactly 0.1 lower: t undefined, said so
    assert np.isnan(b["p_t"]) and "zero variance" in b["note"]
    assert b["diff_mean"] == pytest.approx(-0.1)
    c = comp.loc["c"]  # one paired seed: no test at all
    assert c["n_pairs"] == 1 and np.isnan(c["p_t"]) and np.isnan(c["p_wilcoxon"]) and "n=1" in c["note"]
    assert a["p_t_holm"] == pytest.approx(a["p_t"])  # the only defined p in the family


def test_paired_comparison_holm_family_is_per_metric() -> None:
    rng = np.random.default_rng(0)
    rows = [(v, s, base + rng.normal(0, 0.01), base * 2) for v, base in (("full", 1.0), ("x", 1.1), ("y", 1.2))
            for s in range(5)]
    df = pd.DataFrame(rows, columns=["variant", "seed", "m1", "m2"])
    comp = paired_comparison(df, baseline="full", metrics=["m1", "m2"])
    for _, fam in comp.groupby("metric"):
        np.testing.assert_allclose(fam["p_t_holm"], holm(fam["p_t"].to_numpy()), equal_nan=True)


def test_paired_comparison_errors() -> None:
    df = _paired_frame()
    with pytest.raises(ValueError, match="baseline 'nope'"):
        paired_comparison(df, baseline="nope", metrics=["test_mae"])
    with pytest.raises(ValueError, match="several rows"):
        paired_comparison(pd.concat([df, df.iloc[:1]]), baseline="full", metrics=["test_mae"])


@pytest.mark.parametrize(("values", "expected"), [
    ([0.01, 0.1, 1.0, 10.0], True),
    ([0.1, 0.2, 0.4, 0.8], True),
    ([1e-5, 1e-4, 3e-4, 1e-3], True),  # spans two decades
    ([0.0, 0.1, 0.3, 0.5, 1.0], False),  # zero: no log axis
    ([0.2, 0.4, 0.6, 0.8], False),
    ([1, 2, 3], False),
    ([1.0, 3.0], False),
    ([-1.0, 1.0, 10.0], False),
])
def test_is_log_spaced(values: list[float], expected: bool) -> None:
    assert is_log_spaced(values) is expected
