"""Effect sizes over seeds and the honest-emphasis rule of the results tables (df -> df / sets).

- :func:`bootstrap_mean_ci`: percentile bootstrap CI of a mean of paired differences. With the handful of
  seeds a study has, every one of the n^n equally likely resamples is enumerated (exact bootstrap, no Monte
  Carlo noise, reproducible); above 10^5 resamples a seeded Monte Carlo draw of 20,000 is used. With fewer
  than ~10 seeds a percentile interval is narrower than the t interval (it under-covers): the tests, not the
  interval, decide significance.
- :func:`effect_sizes`: ``reports.stats.paired_comparison`` plus that bootstrap CI of the difference.
- :func:`emphasis`: which rows a table may mark. A row is *best* only when it is significantly better than
  every other row (paired t-test over seeds against the row with the best mean over the seeds all rows
  share, Holm-corrected over those k - 1 comparisons, p < alpha); the rows *tied* with the best are those
  not significantly worse than it. Rows with fewer than 2 seeds are not tested and not marked.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from reports.stats import holm, paired_comparison, paired_tests_many

__all__ = ["Emphasis", "bootstrap_mean_ci", "effect_sizes", "emphasis"]

_EXACT_LIMIT = 100_000
_MC_RESAMPLES = 20_000


def bootstrap_mean_ci(values: np.ndarray | Sequence[float], confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (NaN with fewer than 2 finite values).

    Exact over all n^n resamples when n^n <= 10^5 (n <= 6), quantiles by linear interpolation (numpy's
    default, as scipy.stats.bootstrap's percentile method).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return float("nan"), float("nan")
    if n**n <= _EXACT_LIMIT:
        codes = np.arange(n**n)[:, None] // (n ** np.arange(n))[None, :] % n  # every index tuple once
    else:
        codes = np.random.default_rng(seed).integers(0, n, size=(_MC_RESAMPLES, n))
    means = x[codes].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return float(lo), float(hi)


def effect_sizes(df: pd.DataFrame, *, baseline: Hashable, metrics: Sequence[str], group: str = "variant",
                 pair: str = "seed", confidence: float = 0.95) -> pd.DataFrame:
    """``paired_comparison`` rows plus ``boot_ci_low``/``boot_ci_high``: bootstrap CI of the mean Δ over seeds."""
    comp = paired_comparison(df, baseline=baseline, metrics=metrics, group=group, pair=pair, confidence=confidence)
    wide = df.pivot(index=pair, columns=group, values=list(metrics))
    lows, highs = np.full(len(comp), np.nan), np.full(len(comp), np.nan)
    for metric, idx in comp.groupby("metric", sort=False).indices.items():
        names = comp[group].to_numpy()[idx]
        diff = (wide[metric][list(names)].to_numpy(dtype=float)
                - wide[(metric, baseline)].to_numpy(dtype=float)[:, None]).T  # one row per comparison
        lows[idx], highs[idx] = _bootstrap_rows(diff, confidence)
    return comp.assign(boot_ci_low=lows, boot_ci_high=highs)


def _bootstrap_rows(diffs: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bootstrap_mean_ci` of each row: rows without missing values share one exact enumeration
    (thousands of comparisons in one pass), the others are resampled one by one."""
    k, n = diffs.shape
    lows, highs = np.full(k, np.nan), np.full(k, np.nan)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    full = np.isfinite(diffs).all(axis=1)
    if not (n >= 2 and n**n <= _EXACT_LIMIT):
        full[:] = False
    rows = np.flatnonzero(full)
    if rows.size:
        codes = np.arange(n**n)[:, None] // (n ** np.arange(n))[None, :] % n
        a = (1 - confidence) / 2
        for chunk in np.array_split(rows, max(1, rows.size * n**n // 2_000_000)):  # bounded memory
            means = diffs[chunk][:, codes].mean(axis=2)
            lows[chunk], highs[chunk] = np.quantile(means, [a, 1 - a], axis=1)
    for i in np.flatnonzero(~full):
        lows[i], highs[i] = bootstrap_mean_ci(diffs[i], confidence)
    return lows, highs


@dataclass(frozen=True)
class Emphasis:
    """Rows (group labels) to mark in one metric column, and why."""

    best: frozenset[Hashable] = field(default_factory=frozenset)  # significantly better than every other row
    tied: frozenset[Hashable] = field(default_factory=frozenset)  # not significantly worse than the best
    testable: bool = False  # False: no pair of rows had >= 2 shared seeds with spread, so nothing is marked
    untested: frozenset[Hashable] = field(default_factory=frozenset)  # rows with fewer than 2 seeds: unmarked


def emphasis(df: pd.DataFrame, *, metric: str, group: str, higher_is_better: bool, pair: str = "seed",
             alpha: float = 0.05) -> Emphasis:
    """Apply the emphasis rule to ``metric`` over the groups of ``df`` (one row per group and seed).

    Only rows with at least 2 seeds can be tested; the others are left unmarked (``untested``) and are not
    compared, so one lucky single-seed run cannot take the lead and silence a column. The leader is the
    best mean over the seeds every tested row has (with fewer than 2 such seeds, over each row's own): a
    row with an extra easy seed, or a rival whose hard seed diverged, must not lead on seeds the others
    lack, since a seed moves every configuration alike.
    """
    data = df[[group, pair, metric]].copy()
    data[metric] = pd.to_numeric(data[metric], errors="coerce")
    data = data[np.isfinite(data[metric])]
    wide = data.pivot_table(index=pair, columns=group, values=metric, aggfunc="mean", sort=False)
    counts = wide.notna().sum()
    untested = frozenset(counts.index[counts < 2])
    wide = wide.loc[:, counts >= 2]
    if wide.shape[1] < 2:
        return Emphasis(untested=untested)
    common = wide.dropna()
    means = (common if len(common) >= 2 else wide).mean()
    leader = means.idxmax() if higher_is_better else means.idxmin()
    sign = 1.0 if higher_is_better else -1.0
    others = [g for g in wide.columns if g != leader]
    d = sign * (wide[leader].to_numpy(dtype=float)[:, None] - wide[others].to_numpy(dtype=float)).T  # > 0: leader better
    _, pvals, _, _ = paired_tests_many(d)  # one row per other group, in one vectorised pass
    favourable = list(np.where(np.isfinite(d), d, 0.0).sum(axis=1) > 0)  # the mean's sign (False when empty)
    if not np.isfinite(pvals).any():
        return Emphasis(untested=untested)
    p_holm = holm(np.array(pvals, dtype=float))
    worse = [bool(np.isfinite(p) and p < alpha and f) for p, f in zip(p_holm, favourable)]
    if all(worse):
        return Emphasis(best=frozenset([leader]), testable=True, untested=untested)
    tied = {leader, *(g for g, w in zip(others, worse) if not w)}
    return Emphasis(tied=frozenset(tied), testable=True, untested=untested)
