"""Comparing configurations across data sets: average ranks, the Friedman test and the Nemenyi critical
difference (Demšar 2006, "Statistical comparisons of classifiers over multiple data sets", JMLR 7:1-30).

Each data set is one block: the k configurations are ranked within it (1 = best, ties share the mean rank)
and the ranks are averaged over the N data sets. The Friedman statistic (with scipy's tie correction) and
Iman-Davenport's F test whether all configurations rank alike; two configurations differ at level alpha
when their average ranks differ by more than CD = q_alpha * sqrt(k (k + 1) / (6 N)), with q_alpha the
studentized range quantile over sqrt 2 (Demšar's Table 5). With the three data sets of EMOE the CD is
wide: the test is honest about how little three data sets can separate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

__all__ = ["FriedmanResult", "cliques", "friedman", "friedman_from_ranks", "nemenyi_cd", "ranks"]


def ranks(scores: pd.DataFrame, *, higher_is_better: bool) -> pd.DataFrame:
    """Rank of each configuration (column) within each data set (row): 1 = best, ties averaged."""
    return (-scores if higher_is_better else scores).rank(axis=1, method="average")


def friedman_from_ranks(avg_ranks: np.ndarray | pd.Series, n: int, tie_term: float = 0.0) -> tuple[float, float]:
    """(chi2_F, F_F) from the average ranks over ``n`` blocks (Demšar's eqs.; ``tie_term`` = sum of t^3 - t
    over tied groups, 0 without ties, divides chi2_F by 1 - tie_term / (n k (k^2 - 1)) as scipy does)."""
    r = np.asarray(avg_ranks, dtype=float)
    k = r.size
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(r**2) - k * (k + 1) ** 2 / 4)
    chi2 /= 1 - tie_term / (n * k * (k**2 - 1))
    ff = (n - 1) * chi2 / (n * (k - 1) - chi2) if n * (k - 1) != chi2 else float("inf")
    return float(chi2), float(ff)


def nemenyi_cd(k: int, n: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks for ``k`` configurations over ``n`` data sets."""
    if k < 2 or n < 1:
        raise ValueError(f"need k >= 2 configurations and n >= 1 data sets, got k={k}, n={n}")
    q = sps.studentized_range.ppf(1 - alpha, k, np.inf) / np.sqrt(2)
    return float(q * np.sqrt(k * (k + 1) / (6 * n)))


@dataclass(frozen=True)
class FriedmanResult:
    """Average ranks and the omnibus tests of one metric across data sets."""

    avg_ranks: pd.Series  # per configuration, ascending (best first)
    n: int  # data sets (blocks)
    chi2: float
    p_chi2: float
    f: float  # Iman-Davenport F_F
    p_f: float
    cd: float  # Nemenyi critical difference at alpha


def friedman(scores: pd.DataFrame, *, higher_is_better: bool, alpha: float = 0.05) -> FriedmanResult:
    """Friedman/Iman-Davenport tests and Nemenyi CD for ``scores`` (rows: data sets, columns: configurations);
    rows with a missing score are dropped (a block needs every configuration)."""
    s = scores.dropna(axis=0, how="any")
    n, k = s.shape
    if k < 2 or n < 2:
        raise ValueError(f"a cross-study comparison needs >= 2 configurations on >= 2 data sets, got {k} on {n}")
    r = ranks(s, higher_is_better=higher_is_better)
    tie_term = float(sum((c**3 - c).sum() for c in (row.value_counts().to_numpy() for _, row in r.iterrows())))
    avg = r.mean(axis=0).sort_values(kind="stable")
    if tie_term >= n * k * (k**2 - 1):  # every block all tied: no evidence either way
        chi2, ff, p_chi2, p_f = 0.0, 0.0, 1.0, 1.0
    else:
        chi2, ff = friedman_from_ranks(r.mean(axis=0), n, tie_term)
        p_chi2 = float(sps.chi2.sf(chi2, k - 1))
        p_f = float(sps.f.sf(ff, k - 1, (k - 1) * (n - 1))) if np.isfinite(ff) else 0.0
    return FriedmanResult(avg_ranks=avg, n=n, chi2=chi2, p_chi2=p_chi2, f=ff, p_f=p_f, cd=nemenyi_cd(k, n, alpha))


def cliques(avg_ranks: pd.Series, cd: float) -> list[tuple[int, int]]:
    """Maximal runs (first, last position in ascending rank order) whose rank spread is below ``cd``:
    the groups a critical-difference figure joins with a bar (runs of one are left out)."""
    r = np.sort(np.asarray(avg_ranks, dtype=float))
    runs: list[tuple[int, int]] = []
    for i in range(r.size):
        j = int(np.searchsorted(r, r[i] + cd, side="left")) - 1  # last j with r[j] - r[i] < cd
        if j > i and not (runs and runs[-1][1] >= j):
            runs.append((i, j))
    return runs
