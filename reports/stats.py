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

__all__ = ["holm", "is_log_spaced", "paired_comparison", "paired_tests_many", "summarize", "t_halfwidth"]

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


def paired_tests_many(diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """:func:`_paired_tests` of each row of ``diffs`` (one row per comparison, NaN where a pair is missing):
    the t statistics, paired t and Wilcoxon p-values and notes, equal to calling it row by row.

    Rows of finite, non-constant, non-zero differences without tied magnitudes (almost every row of real
    metrics) go through scipy's tests vectorised over rows, which costs about as much as one call; the
    others (missing pairs, zero variance, zeros, ties: where the per-row path picks its own method) are
    tested one by one. A grid of thousands of configurations needs this to report in seconds."""
    d = np.atleast_2d(np.asarray(diffs, dtype=float))
    k, n = d.shape
    t, p_t, p_w = np.full(k, np.nan), np.full(k, np.nan), np.full(k, np.nan)
    notes = [""] * k
    if k == 0:
        return t, p_t, p_w, notes
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(d).all(axis=1)
        mag = np.sort(np.abs(np.where(finite[:, None], d, 0.0)), axis=1)
        scale = np.maximum(1.0, np.abs(d).max(axis=1, initial=0.0, where=np.isfinite(d)))
        spread = np.ptp(np.where(finite[:, None], d, 0.0), axis=1) > 1e-12 * scale
    fast = finite & (n >= 2) & spread & (d != 0).all(axis=1) & (np.diff(mag, axis=1) != 0).all(axis=1)
    rows = np.flatnonzero(fast)
    if rows.size:
        res = sps.ttest_1samp(d[rows], 0.0, axis=1)
        t[rows], p_t[rows] = res.statistic, res.pvalue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_w[rows] = sps.wilcoxon(d[rows], zero_method="wilcox", axis=1).pvalue
        if 2.0 / 2**n >= 0.05:
            note = f"Wilcoxon cannot reach p<0.05 with {n} non-zero pairs (min p={2.0 / 2**n:.3g})"
            for i in rows:
                notes[i] = note
    for i in np.flatnonzero(~fast):
        row = d[i][np.isfinite(d[i])]
        t[i], p_t[i], p_w[i], notes[i] = _paired_tests(row)
    return t, p_t, p_w, notes


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
        if df.empty:
            raise ValueError("no completed trials to compare")
        raise ValueError(f"baseline {baseline!r} not among {group} values {sorted(map(str, df[group].unique()))}")
    dup = df.duplicated([group, pair])
    if dup.any():
        raise ValueError(f"paired_comparison: several rows per ({group}, {pair}), e.g. "
                         f"{df.loc[dup, [group, pair]].iloc[0].tolist()}; filter to one row per seed first")
    wide = df.pivot(index=pair, columns=group, values=metrics)
    names = [g for g in pd.unique(df[group]) if g != baseline]
    rows = []
    for metric in metrics:
        base = wide[(metric, baseline)].to_numpy(dtype=float)
        other = wide[metric][names].to_numpy(dtype=float).T if names else np.empty((0, base.size))
        diff = other - base[None, :]  # NaN where either side is missing
        t, p_t, p_w, notes = paired_tests_many(diff)
        ok = np.isfinite(diff)
        n = ok.sum(axis=1)
        full = ok.all(axis=1)
        d_mean, d_std = np.full(len(names), np.nan), np.full(len(names), np.nan)
        b_mean, o_mean = np.full(len(names), np.nan), np.full(len(names), np.nan)
        if full.any() and base.size:  # every pair present: row-wise reductions (as the per-row ones below)
            d_mean[full], b_mean[full] = diff[full].mean(axis=1), base.mean()
            o_mean[full] = other[full].mean(axis=1)
            if base.size >= 2:
                d_std[full] = diff[full].std(axis=1, ddof=1)
        for k in np.flatnonzero(~full):
            keep = ok[k]
            if keep.any():
                d_mean[k], b_mean[k], o_mean[k] = diff[k][keep].mean(), base[keep].mean(), other[k][keep].mean()
            if keep.sum() >= 2:
                d_std[k] = float(np.std(diff[k][keep], ddof=1))
        half = t_halfwidth(d_std, n, confidence)
        for i, name in enumerate(names):
            rows.append({group: name, "metric": metric, "n_pairs": int(n[i]),
                         "baseline_mean": float(b_mean[i]), "mean": float(o_mean[i]),
                         "diff_mean": float(d_mean[i]), "diff_std": float(d_std[i]),
                         "diff_ci_low": float(d_mean[i] - half[i]), "diff_ci_high": float(d_mean[i] + half[i]),
                         "t": float(t[i]), "p_t": float(p_t[i]), "p_wilcoxon": float(p_w[i]), "note": notes[i]})
    out = pd.DataFrame(rows, columns=[group, "metric", "n_pairs", "baseline_mean", "mean", "diff_mean",
                                      "diff_std", "diff_ci_low", "diff_ci_high", "t", "p_t", "p_wilcoxon",
                                      "note"])
    for col in ("p_t", "p_wilcoxon"):
        out[f"{col}_holm"] = out.groupby("metric", sort=False)[col].transform(lambda s: holm(s.to_numpy()))
    return out
