"""Seed planning: paired t-test power against published values, the seed count, and the ``plan`` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.__main__ import main
from reports.power import paired_differences_sd, paired_t_power, seed_plan, seeds_needed


@pytest.mark.parametrize(("d", "n", "power"), [(0.2, 199, 0.8017), (0.5, 34, 0.8078), (0.8, 15, 0.8213),
                                                (1.0, 10, 0.8031)])
def test_seeds_needed_matches_published_tables(d: float, n: int, power: float) -> None:
    # G*Power / statsmodels TTestPower, two-sided alpha = 0.05, 80% power: 199, 34, 15, 10 pairs
    assert seeds_needed(d * 0.02, 0.02) == n
    assert paired_t_power(n, d * 0.02, 0.02) == pytest.approx(power, abs=1e-4)
    assert paired_t_power(n - 1, d * 0.02, 0.02) < 0.8


def test_power_by_hand() -> None:
    assert paired_t_power(8, 0.0, 1.0) == pytest.approx(0.05)  # no effect: the level
    # n = 2: df = 1, nc = sqrt(2) * 3; power = P(T > 12.706) + P(T < -12.706) under nct(1, 4.243)
    crit = sps.t.ppf(0.975, 1)
    want = sps.nct.sf(crit, 1, 3 * np.sqrt(2)) + sps.nct.cdf(-crit, 1, 3 * np.sqrt(2))
    assert paired_t_power(2, 3.0, 1.0) == pytest.approx(want)
    big = paired_t_power(400, 0.1, 1.0)  # large n: the normal approximation
    assert big == pytest.approx(sps.norm.sf(1.96 - 0.1 * 20) + sps.norm.cdf(-1.96 - 0.1 * 20), abs=2e-3)
    with pytest.raises(ValueError, match="delta must be non-zero"):
        seeds_needed(0.0, 1.0)


def test_a_large_effect_has_a_power_near_one_not_nan() -> None:
    # delta / sd = 7 with 3 to 5 pairs: scipy's nct.cdf in the far lower tail is NaN there, and a NaN power
    # made seeds_needed skip n = 3 and answer 4 (found planning a 5-seed ablation: "power now nan")
    for n in (3, 4, 5):
        assert 0.99 < paired_t_power(n, 0.01, 0.00143) <= 1.0
    assert seeds_needed(0.01, 0.00143) == 3
    # Monte Carlo check of n = 3: the paired t-test's rejection rate under the alternative
    rng = np.random.default_rng(0)
    d = rng.normal(0.01, 0.00143, size=(200_000, 3))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(3))
    assert paired_t_power(3, 0.01, 0.00143) == pytest.approx(np.mean(np.abs(t) > sps.t.ppf(0.975, 2)), abs=2e-3)
    grid = [paired_t_power(n, 0.01, sd) for n in range(2, 40) for sd in np.linspace(5e-4, 2e-2, 50)]
    assert np.isfinite(grid).all()


def test_seed_plan_from_paired_differences() -> None:
    df = pd.DataFrame({"variant": ["a"] * 3 + ["b"] * 3 + ["c"] * 3, "seed": [1, 2, 3] * 3,
                       "test_mae": [0.5, 0.6, 0.7, 0.52, 0.61, 0.74, 0.5, 0.6, 0.7]})
    sd = paired_differences_sd(df, metric="test_mae", baseline="a")
    assert list(sd["b"]) == ["b", "c"] and sd.loc[1, "diff_sd"] == 0  # zero spread: dropped by seed_plan
    assert sd.loc[0, "diff_sd"] == pytest.approx(np.std([0.02, 0.01, 0.04], ddof=1))
    plan = seed_plan(df, metrics=["test_mae"], delta=0.02, baseline="a").iloc[0]
    assert plan["n_config_pairs"] == 1 and plan["pilot_seeds"] == 3
    assert plan["seeds_pooled"] == seeds_needed(0.02, plan["sd_pooled"])
    assert len(paired_differences_sd(df, metric="test_mae")) == 3  # every pair without a baseline


def test_plan_cli(ablation_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ablation_dir), "--delta", "0.01", "--metric", "test_mae"]) == 0
    out = capsys.readouterr().out
    assert "| test_mae | 0.01 | 5 |" in out and "80% power" in out
    assert main(["plan", str(ablation_dir), "--delta", "0.01", "--metric", "test_bogus"]) == 2
    assert "test_bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["plan", str(ablation_dir)])  # --delta is required
    assert exc.value.code == 2
