"""Per-sample paired tests of each variant against the baseline on one shared test set (df -> df).

Seed-level tests see 3-5 numbers per variant; the test set holds hundreds of utterances. Here the unit is
the test sample: a paired bootstrap resamples samples (the same draw for variant and baseline) and
recomputes the metric difference, giving a percentile CI and a two-sided p-value (twice the smaller tail
share of differences on either side of zero, i.e. the level at which the percentile interval first excludes
zero). Two scopes: ``ensemble`` averages each sample's prediction over the seeds both variants share (one
model per variant, seed noise averaged out), and per ``seed`` (plus ``seed mean``, the mean over seeds of
the per-seed difference under a common resample). McNemar's exact and mid-p tests (Fagerland, Lydersen &
Laake 2013) compare Acc-2 correctness sample by sample.

These tests treat the test set as a sample from a population and the trained models as fixed: they answer
"would these models differ on new utterances", not "would retraining with new seeds reproduce the gap";
the seed-level tests of ``reports.stats`` answer the second. :func:`evidence` Holm-corrects both together.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from reports.sample_metrics import batched_metric, correct_acc2
from reports.stats import holm

__all__ = ["bootstrap_p", "evidence", "mcnemar", "sample_comparison"]

_CHUNK_CELLS = 2_000_000  # resample rows x samples gathered at once (bounds memory on MOSEI-sized sets)


def mcnemar(b: int, c: int) -> tuple[float, float]:
    """Two-sided McNemar (exact binomial, mid-p) for ``b`` and ``c`` discordant pairs; (1, 1) when b = c = 0.

    exact = P(|X - n/2| >= |b - n/2|) under X ~ Bin(b + c, 1/2); mid-p subtracts the probability of the
    observed count, once per tail (Fagerland et al. 2013, BMC Med Res Methodol 13:91).
    """
    n = b + c
    if n == 0:
        return 1.0, 1.0
    k = min(b, c)
    tail = 2.0 * float(sps.binom.cdf(k, n, 0.5))
    return min(1.0, tail), min(1.0, tail - float(sps.binom.pmf(k, n, 0.5)))


def bootstrap_p(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p of H0: difference = 0, from resampled differences (NaNs dropped).

    p = 2 * min(#(d <= 0) + 1, #(d >= 0) + 1) / (B + 1), capped at 1: the +1 counts the observed data among
    the resamples, so p is never 0; identical predictions (every d = 0) give p = 1.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    lo, hi = np.count_nonzero(d <= 0) + 1, np.count_nonzero(d >= 0) + 1
    return float(min(1.0, 2.0 * min(lo, hi) / (d.size + 1)))


def _resampled(metric: str, preds: list[np.ndarray], y: np.ndarray, idx: np.ndarray, kind: str) -> np.ndarray:
    """Metric of each prediction vector on each resample (rows of ``idx``): shape (len(preds), B)."""
    out = np.empty((len(preds), idx.shape[0]))
    step = max(1, _CHUNK_CELLS // max(1, idx.shape[1]))
    for start in range(0, idx.shape[0], step):
        rows = idx[start:start + step]
        yy = y[rows]
        for i, p in enumerate(preds):
            out[i, start:start + step] = batched_metric(metric, p[rows], yy, kind)
    return out


def _row(metric: str, scope: str, value: float, base: float, diffs: np.ndarray, confidence: float,
         n: int) -> dict[str, object]:
    ok = diffs[np.isfinite(diffs)]
    a = (1 - confidence) / 2
    lo, hi = (np.quantile(ok, [a, 1 - a]) if ok.size else (np.nan, np.nan))
    return {"metric": metric, "scope": scope, "n_samples": n, "baseline_value": base, "value": value,
            "diff": value - base, "ci_low": float(lo), "ci_high": float(hi), "p_boot": bootstrap_p(ok)}


def sample_comparison(preds: tuple[np.ndarray, dict[tuple[Hashable, int], np.ndarray]], *, baseline: Hashable,
                      metrics: Sequence[str], label_kind: str = "mosi", n_resamples: int = 2000,
                      confidence: float = 0.95, per_seed: bool = True, seed: int = 0) -> pd.DataFrame:
    """Each variant vs ``baseline`` on the per-sample predictions ``preds`` = (labels, {(variant, seed): pred}).

    Returns one row per (variant, metric, scope) with ``n_seeds``, ``n_samples``, baseline and variant value,
    ``diff`` = variant - baseline (stored units), the percentile bootstrap CI, ``p_boot``; Acc-2 rows add
    the McNemar discordant counts ``b`` (variant right, baseline wrong), ``c`` and ``p_mcnemar`` (exact),
    ``p_mcnemar_midp``. Scopes: ``ensemble``, ``seed <s>`` per shared seed and ``seed mean``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples must be at least 100, got {n_resamples}")
    y, vectors = preds
    variants = list(dict.fromkeys(v for v, _ in vectors))
    if baseline not in variants:
        raise ValueError(f"baseline {baseline!r} has no predictions (have {sorted(map(str, variants))})")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n_resamples, y.size))  # one draw shared by every comparison
    memo: dict[tuple[object, ...], tuple[float, np.ndarray]] = {}

    def scored(metric: str, variant: Hashable, seeds: tuple[int, ...]) -> tuple[float, np.ndarray]:
        """(metric on the full test set, metric on every resample) of the seed-averaged predictions."""
        key = (metric, variant, seeds)
        if key not in memo:  # the baseline's resamples are computed once, not once per variant
            p = np.mean([vectors[(variant, s)] for s in seeds], axis=0)
            memo[key] = (float(batched_metric(metric, p, y, label_kind)),
                         _resampled(metric, [p], y, idx, label_kind)[0])
        return memo[key]

    rows: list[dict[str, object]] = []
    for name in (v for v in variants if v != baseline):
        seeds = tuple(sorted({s for v, s in vectors if v == name} & {s for v, s in vectors if v == baseline}))
        if not seeds:
            continue
        scopes: list[tuple[str, tuple[int, ...]]] = [("ensemble", seeds)]
        if per_seed:
            scopes += [(f"seed {s}", (s,)) for s in seeds]
        for metric in metrics:
            found = []
            for scope, used in scopes:
                (v_full, v_res), (b_full, b_res) = scored(metric, name, used), scored(metric, baseline, used)
                row = _row(metric, scope, v_full, b_full, v_res - b_res, confidence, y.size)
                row["n_seeds"] = len(used)
                if metric == "acc2":  # McNemar on the same (seed-averaged) predictions
                    ok_v, mask = correct_acc2(np.mean([vectors[(name, s)] for s in used], axis=0), y, label_kind)
                    ok_b, _ = correct_acc2(np.mean([vectors[(baseline, s)] for s in used], axis=0), y, label_kind)
                    b, c = int((ok_v & ~ok_b & mask).sum()), int((~ok_v & ok_b & mask).sum())
                    row["b"], row["c"] = b, c
                    row["p_mcnemar"], row["p_mcnemar_midp"] = mcnemar(b, c)
                found.append(row)
            if per_seed and len(seeds) > 1:  # mean over seeds of the per-seed difference, same resamples
                per = [scored(metric, x, (s,)) for s in seeds for x in (name, baseline)]
                v_mean = float(np.mean([f for f, _ in per[0::2]]))
                b_mean = float(np.mean([f for f, _ in per[1::2]]))
                diffs = np.mean([v[1] - b[1] for v, b in zip(per[0::2], per[1::2])], axis=0)
                found.append(_row(metric, "seed mean", v_mean, b_mean, diffs, confidence, y.size)
                             | {"n_seeds": len(seeds)})
            rows += [r | {"variant": name} for r in found]
    cols = ["variant", "metric", "scope", "n_seeds", "n_samples", "baseline_value", "value", "diff", "ci_low",
            "ci_high", "p_boot", "b", "c", "p_mcnemar", "p_mcnemar_midp"]
    out = pd.DataFrame(rows)
    return out.reindex(columns=cols) if not out.empty else pd.DataFrame(columns=cols)


def evidence(seed_tests: pd.DataFrame, sample_tests: pd.DataFrame, *, group: str = "variant") -> pd.DataFrame:
    """Seed-level and per-sample tests in one long frame, Holm-corrected together per metric.

    ``seed_tests`` is ``reports.stats.paired_comparison`` output (metric columns such as ``test_mae``);
    ``sample_tests`` is :func:`sample_comparison` output (bare names such as ``mae``). The family of a metric
    holds, for every variant: the paired t-test over seeds, the bootstrap over samples of the ensemble and,
    for Acc-2, McNemar's mid-p test. Per-seed rows are descriptive and left out of the family.
    Columns: variant, metric (as in seed_tests), test, estimate, ci_low, ci_high, p, p_holm.
    """
    rows = []
    for r in seed_tests.itertuples(index=False):
        rows.append({"variant": getattr(r, group), "metric": r.metric, "test": "paired t over seeds",
                     "estimate": r.diff_mean, "ci_low": r.diff_ci_low, "ci_high": r.diff_ci_high, "p": r.p_t})
    split = {str(m).split("_", 1)[1]: str(m).split("_", 1)[0] for m in seed_tests["metric"] if "_" in str(m)}
    ens = sample_tests[sample_tests["scope"] == "ensemble"]
    for r in ens.itertuples(index=False):
        col = f"{split.get(r.metric, 'test')}_{r.metric}"
        rows.append({"variant": r.variant, "metric": col, "test": "bootstrap over samples (ensemble)",
                     "estimate": r.diff, "ci_low": r.ci_low, "ci_high": r.ci_high, "p": r.p_boot})
        if r.metric == "acc2" and np.isfinite(r.p_mcnemar_midp):
            rows.append({"variant": r.variant, "metric": col, "test": "McNemar mid-p (ensemble)",
                         "estimate": r.diff, "ci_low": np.nan, "ci_high": np.nan, "p": r.p_mcnemar_midp})
    out = pd.DataFrame(rows, columns=["variant", "metric", "test", "estimate", "ci_low", "ci_high", "p"])
    out["p_holm"] = np.nan
    for _, part in out.groupby("metric", sort=False):
        out.loc[part.index, "p_holm"] = holm(part["p"].to_numpy(dtype=float))
    return out.rename(columns={"variant": group})
