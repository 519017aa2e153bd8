"""Statistics over seeds as DataFrame -> DataFrame functions: summaries with t-based confidence intervals,
and paired tests of each variant against a baseline (pairing by seed, Holm correction).

Everything stays in stored units (fractions for accuracies); display scaling happens in plots and tables.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["holm", "is_log_spaced", "paired_comparison", "summarize", "t_halfwidth"]

_SUMMARY_COLS = ["metric", "n", "mean", "std", "sem", "ci_low", "ci_high"]


def _as_list(by: str | Sequence[str]) -> list[str]:
    return [by] if isinstance(by, str) else list(by)


def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"{what}: columns {missing} not in the table (have {sorted(map(str, df.columns))})")


def is_log_spaced(values: Sequence[float] | np.ndarray | pd.Series) -> bool:
    """True when the distinct values are positive and ratio-spaced (a log axis suits them).

    Ratio-spaced: at least 3 distinct values whose log gaps are roughly equal (max/min <= 1.6) while their
    linear gaps are not, or positive values spanning at least two decades.
    """
    v = pd.to_numeric(pd.Series(np.asarray(values).ravel()), errors="coerce").dropna().unique()
    u = np.sort(v.astype(float))
    if u.size < 2 or u[0] <= 0:
        return False
    if u[-1] / u[0] >= 100:
        return True
    if u.size < 3:
        return False
    log_gaps, lin_gaps = np.diff(np.log(u)), np.diff(u)
    return bool(log_gaps.max() / log_gaps.min() <= 1.6 and lin_gaps.max() / lin_gaps.min() > 1.6)


def t_halfwidth(std: np.ndarray | pd.Series, n: np.ndarray | pd.Series, confidence: float = 0.95) -> np.ndarray:
    """Half-width of the t-based CI of a mean: t_{(1+c)/2, n-1} * std / sqrt(n); NaN where n < 2."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n_arr = np.asarray(n, dtype=float)
    std_arr = np.asarray(std, dtype=float)
    dof = np.where(n_arr >= 2, n_arr - 1, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sps.t.ppf((1 + confidence) / 2, dof) * std_arr / np.sqrt(n_arr)


def summarize(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str], *,
              confidence: float = 0.95) -> pd.DataFrame:
    """Mean, sample std (ddof=1), n, SEM and t-based CI of each metric over the rows of each group.

    Returns one row per (group, metric) with columns ``*by, metric, n, mean, std, sem, ci_low, ci_high``.
    Non-finite values are left out of n; with n < 2 the std and CI are NaN (not zero).
    """
    keys = _as_list(by)
    metrics = list(metrics)
    _check_columns(df, [*keys, *metrics], "summarize")
    if df.empty:
        return pd.DataFrame(columns=[*keys, *_SUMMARY_COLS])
    values = df[metrics].apply(pd.to_numeric, errors="coerce").replace([np.inf, -np.inf], np.nan)
    grouped = pd.concat([df[keys], values], axis=1).groupby(keys, dropna=False, sort=True)
    agg = grouped[metrics].agg(["count", "mean", "std"])
    agg.columns = agg.columns.set_names(["metric", "stat"])
    long = agg.stack("metric", future_stack=True).reset_index()
    long = long.rename(columns={"count": "n"})
    long["n"] = long["n"].astype("int64")
    long["sem"] = long["std"] / np.sqrt(long["n"].where(long["n"] > 0))
    half = t_halfwidth(long["std"], long["n"], confidence)
    long["ci_low"] = long["mean"] - half
    long["ci_high"] = long["mean"] + half
    return long[[*keys, *_SUMMARY_COLS]]


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaNs stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out


def _paired_tests(diff: np.ndarray) -> tuple[float, float, float, str]:
    """(t statistic, p paired t, p Wilcoxon, note) for paired differences ``diff``."""
    n = diff.size
    if n < 2:
        return np.nan, np.nan, np.nan, f"n={n} paired seed(s): no test"
    notes = []
    if np.ptp(diff) <= 1e-12 * max(1.0, float(np.abs(diff).max())):  # equal up to rounding
        t, p_t = np.nan, np.nan
        notes.append("identical differences across seeds (zero variance): t-test undefined")
    else:
        res = sps.ttest_1samp(diff, 0.0)
        t, p_t = float(res.statistic), float(res.pvalue)
    nonzero = int(np.count_nonzero(diff))
    if nonzero == 0:
        p_w = np.nan
        notes.append("all differences zero: Wilcoxon undefined")
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_w = float(sps.wilcoxon(diff, zero_method="wilcox").pvalue)
        if 2.0 / 2**nonzero >= 0.05:
            notes.append(f"Wilcoxon cannot reach p<0.05 with {nonzero} non-zero pairs (min p={2.0 / 2**nonzero:.3g})")
    return t, p_t, p_w, "; ".join(notes)


def paired_comparison(df: pd.DataFrame, *, baseline: Hashable, metrics: Sequence[str], group: str = "variant",
                      pair: str = "seed", confidence: float = 0.95) -> pd.DataFrame:
    """Each group vs ``baseline`` on every metric, paired by ``pair`` (seed): diff = group - baseline.

    Returns one row per (group, metric): n_pairs, baseline_mean, mean, diff_mean, diff_std, diff_ci_low/high,
    t, p_t (paired t-test), p_wilcoxon (signed-rank), their Holm-corrected versions p_t_holm and
    p_wilcoxon_holm (family: all groups compared on that metric), and a note when a test is undefined.
    """
    metrics = list(metrics)
    _check_columns(df, [group, pair, *metrics], "paired_comparison")
    if baseline not in set(df[group]):
        raise ValueError(f"baseline {baseline!r} not among {group} values {sorted(map(str, df[group].unique()))}")
    dup = df.duplicated([group, pair])
    if dup.any():
        raise ValueError(f"paired_comparison: several rows per ({group}, {pair}), e.g. "
                         f"{df.loc[dup, [group, pair]].iloc[0].tolist()}; filter to one row per seed first")
    wide = df.pivot(index=pair, columns=group, values=metrics)
    rows = []
    for metric in metrics:
        base = wide[(metric, baseline)].to_numpy(dtype=float)
        for name in [g for g in pd.unique(df[group]) if g != baseline]:
            other = wide[(metric, name)].to_numpy(dtype=float)
            ok = np.isfinite(base) & np.isfinite(other)
            diff = other[ok] - base[ok]
            t, p_t, p_w, note = _paired_tests(diff)
            n = diff.size
            d_std = float(np.std(diff, ddof=1)) if n >= 2 else np.nan
            half = float(t_halfwidth(np.array([d_std]), np.array([n]), confidence)[0])
            d_mean = float(diff.mean()) if n else np.nan
            rows.append({group: name, "metric": metric, "n_pairs": n,
                         "baseline_mean": float(base[ok].mean()) if n else np.nan,
                         "mean": float(other[ok].mean()) if n else np.nan,
                         "diff_mean": d_mean, "diff_std": d_std,
                         "diff_ci_low": d_mean - half, "diff_ci_high": d_mean + half,
                         "t": t, "p_t": p_t, "p_wilcoxon": p_w, "note": note})
    out = pd.DataFrame(rows, columns=[group, "metric", "n_pairs", "baseline_mean", "mean", "diff_mean",
                                      "diff_std", "diff_ci_low", "diff_ci_high", "t", "p_t", "p_wilcoxon",
                                      "note"])
    for col in ("p_t", "p_wilcoxon"):
        out[f"{col}_holm"] = out.groupby("metric", sort=False)[col].transform(lambda s: holm(s.to_numpy()))
    return out
