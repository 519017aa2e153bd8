"""Seed planning: how many seeds a paired comparison needs to detect a difference, from a pilot's variance.

Two configurations trained on the same seeds are compared by the paired t-test on their per-seed
differences D (mean delta, standard deviation sd). With n seeds, t = mean(D) / (sd / sqrt(n)) follows a
noncentral t distribution with n - 1 degrees of freedom and noncentrality delta / sd * sqrt(n), so the
power of the two-sided test at level alpha is P(|T| > t_{1-alpha/2, n-1}) (``scipy.stats.nct``; the
textbook computation of e.g. G*Power and statsmodels' TTestPower). The pilot gives sd per metric: the
spread over seeds of the paired differences between its configurations.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from reports.load import Study
from reports.tables import Table

__all__ = ["paired_differences_sd", "paired_t_power", "plan_table", "seed_plan", "seeds_needed"]

MAX_SEEDS = 10_000


def paired_t_power(n: int, delta: float, sd: float, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test with ``n`` pairs for a true mean difference ``delta``."""
    if n < 2:
        return float("nan")
    if sd <= 0 or not np.isfinite(sd):
        raise ValueError(f"sd must be positive and finite, got {sd}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    df, nc = n - 1, abs(delta) / sd * np.sqrt(n)
    crit = sps.t.ppf(1 - alpha / 2, df)
    # P(T < -crit) written as the upper tail of -T: scipy's nct.cdf far in the lower tail returns NaN for a
    # large noncentrality (df 4, nc 15.6), and a NaN power made seeds_needed skip the n it was looking for
    return float(sps.nct.sf(crit, df, nc) + sps.nct.sf(crit, df, -nc))


def seeds_needed(delta: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Smallest n >= 2 whose paired t-test power reaches ``power``; None above ``MAX_SEEDS``."""
    if delta == 0:
        raise ValueError("delta must be non-zero: the difference to detect")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    n = max(2, int(np.floor((z * sd / abs(delta)) ** 2)))  # the normal approximation never overshoots
    while n <= MAX_SEEDS:
        if paired_t_power(n, delta, sd, alpha) >= power:
            return n
        n += 1
    return None


def paired_differences_sd(df: pd.DataFrame, *, metric: str, group: str = "variant", pair: str = "seed",
                          baseline: Hashable | None = None) -> pd.DataFrame:
    """Std (ddof = 1) over seeds of the paired differences between configurations, for one metric.

    With ``baseline``: each group against it; otherwise every pair of groups. Pairs with fewer than 2 shared
    seeds are left out. Columns: a, b, n_pairs, diff_mean, diff_sd.
    """
    wide = df.pivot_table(index=pair, columns=group, values=metric, aggfunc="mean")
    names = list(wide.columns)
    pairs = ([(baseline, g) for g in names if g != baseline] if baseline is not None and baseline in names
             else list(combinations(names, 2)))
    rows = []
    for a, b in pairs:
        d = (wide[b] - wide[a]).to_numpy(dtype=float)
        d = d[np.isfinite(d)]
        if d.size >= 2:
            rows.append({"a": a, "b": b, "n_pairs": d.size, "diff_mean": d.mean(), "diff_sd": d.std(ddof=1)})
    return pd.DataFrame(rows, columns=["a", "b", "n_pairs", "diff_mean", "diff_sd"])


def seed_plan(df: pd.DataFrame, *, metrics: Sequence[str], delta: float, group: str = "variant",
              baseline: Hashable | None = None, power: float = 0.8, alpha: float = 0.05) -> pd.DataFrame:
    """Per metric: the pilot's sd of paired differences (pooled over configuration pairs, and the largest),
    the seeds needed for each, and the power the pilot's own seed count has.

    The pooled sd is the root mean of the pair variances weighted by their degrees of freedom. Columns:
    metric, delta, n_config_pairs, pilot_seeds, sd_pooled, sd_max, seeds_pooled, seeds_max, power_now.
    """
    rows = []
    for m in metrics:
        if m not in df.columns:
            raise KeyError(f"metric column {m!r} not in the trials table")
        d = paired_differences_sd(df, metric=m, group=group, baseline=baseline)
        d = d[d["diff_sd"] > 0]
        row: dict[str, object] = {"metric": m, "delta": delta, "n_config_pairs": len(d)}
        if d.empty:
            rows.append(row | {"pilot_seeds": 0})
            continue
        dof = d["n_pairs"] - 1
        pooled = float(np.sqrt((dof * d["diff_sd"] ** 2).sum() / dof.sum()))
        worst = float(d["diff_sd"].max())
        pilot = int(d["n_pairs"].max())
        rows.append(row | {"pilot_seeds": pilot, "sd_pooled": pooled, "sd_max": worst,
                           "seeds_pooled": seeds_needed(delta, pooled, power, alpha),
                           "seeds_max": seeds_needed(delta, worst, power, alpha),
                           "power_now": paired_t_power(pilot, delta, pooled, alpha)})
    cols = ["metric", "delta", "n_config_pairs", "pilot_seeds", "sd_pooled", "sd_max", "seeds_pooled",
            "seeds_max", "power_now"]
    return pd.DataFrame(rows).reindex(columns=cols)


def plan_table(study: Study, *, metrics: Sequence[str], delta: float, power: float = 0.8,
               alpha: float = 0.05) -> Table:
    """:func:`seed_plan` of a study's completed trials (an ablation pairs each variant with its baseline)."""
    done = study.trials[study.trials["status"] == "completed"]
    base = study.baseline if study.kind == "ablation" else None
    plan = seed_plan(done, metrics=metrics, delta=delta, baseline=base, power=power, alpha=alpha)
    pairs = "each variant vs the baseline" if base is not None else "every pair of configurations"
    table = Table(header=["Metric", "Δ", "pilot seeds", "sd of paired Δ (pooled)", "seeds needed",
                          "sd of paired Δ (largest)", "seeds needed (largest)", "power now"], rows=[],
                  align="lrrrrrrr",
                  caption=(f"Seeds for {power:.0%} power to detect Δ with a two-sided paired t-test at α = {alpha:g} "
                           f"(noncentral t), from the spread over seeds of the paired differences of {pairs} in "
                           f"{study.name} (stored units; accuracies as fractions). 'power now': at the pilot's seed "
                           "count with the pooled sd. A pilot of a few seeds estimates sd loosely: prefer the "
                           "largest."))
    for r in plan.itertuples(index=False):
        if not r.n_config_pairs:
            table.rows.append([r.metric, f"{delta:g}", "–", "–", "no pair with 2 seeds and spread", "–", "–", "–"])
            continue
        need = [str(n) if n is not None and n == n else f">{MAX_SEEDS}" for n in (r.seeds_pooled, r.seeds_max)]
        table.rows.append([r.metric, f"{delta:g}", str(r.pilot_seeds), f"{r.sd_pooled:.3g}", need[0],
                           f"{r.sd_max:.3g}", need[1], f"{r.power_now:.2f}"])
    return table
