"""Per-sample paired tests: batched metrics equal emoe.metrics, McNemar and bootstrap against scipy and hand
computation, no difference found between identical predictions, a planted difference found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from reports.load import ResultsError, load_study
from reports.paired import bootstrap_p, evidence, mcnemar, sample_comparison
from reports.predictions import load_predictions, sample_matrix
from reports.sample_metrics import batched_metric, sample_metric_names
from reports.stats import holm, paired_comparison


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.round(np.clip(rng.normal(0, 1.5, n), -3, 3) * 3) / 3  # MOSI-like thirds, some exact zeros
    y[:7] = 0.0
    p = y + rng.normal(0, 0.8, n)
    p[:3] = [0.5, -2.5, 2.5]  # rounding ties (half to even)
    return y, p


@pytest.mark.parametrize("kind", ["mosi", "sims"])
def test_batched_metrics_equal_emoe_definitions(kind: str) -> None:
    em = pytest.importorskip("emoe.metrics")
    y, p = _data()
    if kind == "sims":
        y, p = y / 3, p / 3
        y[10] = 0.1
    want = em.compute_metrics(p, y, kind)
    rows = np.stack([p, p[::-1]])  # a batch of two "resamples"
    for name in sample_metric_names(kind):
        got = batched_metric(name, rows, np.stack([y, y]), kind)
        assert got[0] == pytest.approx(want[name], abs=1e-12), name
        assert got[1] == pytest.approx(em.compute_metrics(p[::-1], y, kind)[name], abs=1e-12), name
    with pytest.raises(ValueError, match="not a per-sample metric"):
        batched_metric("acc7", p, y, "sims")


def test_mcnemar_by_hand_and_against_binomtest() -> None:
    exact, mid = mcnemar(1, 6)  # P(X <= 1 | n=7) = 8/128; two-sided 16/128; mid-p subtracts P(X=1) = 7/128
    assert exact == pytest.approx(0.125) and mid == pytest.approx(9 / 128)
    for b, c in [(3, 11), (20, 9), (40, 40), (0, 5)]:
        assert mcnemar(b, c)[0] == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue)
    assert mcnemar(4, 4)[1] == pytest.approx(1.0) and mcnemar(0, 0) == (1.0, 1.0)


def test_bootstrap_p_by_hand() -> None:
    assert bootstrap_p(np.array([1.0, 2.0, -1.0, 3.0])) == pytest.approx(2 * 2 / 5)  # 1 below 0 (+1) of 4 (+1)
    assert bootstrap_p(np.zeros(50)) == 1.0
    assert bootstrap_p(np.full(999, 0.1)) == pytest.approx(2 / 1000)


def _vectors(y: np.ndarray, preds: dict[tuple[str, int], np.ndarray]) -> tuple[np.ndarray, dict]:
    return y, preds


def test_bootstrap_ci_matches_scipy_paired_percentile() -> None:
    y, p = _data(200, seed=3)
    q = p + np.random.default_rng(4).normal(0.05, 0.3, y.size)
    res = sample_comparison(_vectors(y, {("a", 1): p, ("b", 1): q}), baseline="a", metrics=["mae"],
                            n_resamples=20000, per_seed=False)
    row = res.iloc[0]
    ref = sps.bootstrap((q, p, y), lambda q_, p_, y_, axis=-1: np.abs(q_ - y_).mean(axis) - np.abs(p_ - y_).mean(axis),
                        paired=True, vectorized=True, n_resamples=20000, method="percentile",
                        rng=np.random.default_rng(1))
    assert row["diff"] == pytest.approx(np.abs(q - y).mean() - np.abs(p - y).mean())
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert row["ci_low"] == pytest.approx(ref.confidence_interval.low, abs=0.03 * width)
    assert row["ci_high"] == pytest.approx(ref.confidence_interval.high, abs=0.03 * width)


def test_identical_predictions_show_no_difference() -> None:
    y, p = _data()
    preds = {("base", s): p + 0.01 * s for s in (1, 2, 3)} | {("same", s): p + 0.01 * s for s in (1, 2, 3)}
    res = sample_comparison((y, preds), baseline="base", metrics=["mae", "corr", "acc2", "f1", "acc7"],
                            n_resamples=500)
    assert set(res["scope"]) == {"ensemble", "seed 1", "seed 2", "seed 3", "seed mean"}
    assert (res["diff"] == 0).all() and (res["ci_low"] == 0).all() and (res["ci_high"] == 0).all()
    assert (res["p_boot"] == 1).all()
    acc2 = res[(res["metric"] == "acc2") & (res["scope"] != "seed mean")]
    assert (acc2["b"] == 0).all() and (acc2["c"] == 0).all() and (acc2["p_mcnemar_midp"] == 1).all()


def test_planted_difference_is_found() -> None:
    rng = np.random.default_rng(11)
    y = np.clip(rng.normal(0, 1.5, 600), -3, 3)
    preds = {}
    for s in (1, 2, 3):
        preds[("full", s)] = y + rng.normal(0, 0.6, y.size)
        preds[("uniform", s)] = 0.6 * y + rng.normal(0, 1.0, y.size)  # worse: shrunk and noisier
    res = sample_comparison((y, preds), baseline="full", metrics=["mae", "acc2", "corr"], n_resamples=1000)
    ens = res[res["scope"] == "ensemble"].set_index("metric")
    assert ens.loc["mae", "diff"] > 0 and ens.loc["mae", "ci_low"] > 0 and ens.loc["mae", "p_boot"] < 0.01
    assert ens.loc["corr", "ci_high"] < 0 and ens.loc["acc2", "p_mcnemar_midp"] < 0.01
    assert ens.loc["acc2", "c"] > ens.loc["acc2", "b"]  # the baseline is right where the variant errs


def test_evidence_holm_family_joins_seed_and_sample_tests() -> None:
    seed = pd.DataFrame({"variant": ["u", "u", "n", "n"], "seed": [1, 2, 1, 2]})
    seed = pd.concat([seed, pd.DataFrame({"variant": "full", "seed": [1, 2]})])
    seed["test_mae"] = [0.9, 0.95, 0.81, 0.83, 0.8, 0.82]
    seed_tests = paired_comparison(seed, baseline="full", metrics=["test_mae"])
    y, p = _data()
    sample = sample_comparison((y, {("full", 1): p, ("full", 2): p, ("u", 1): p + 0.3, ("u", 2): p + 0.3,
                                    ("n", 1): p, ("n", 2): p}), baseline="full", metrics=["mae"], n_resamples=300)
    ev = evidence(seed_tests, sample)
    assert len(ev) == 4 and set(ev["metric"]) == {"test_mae"}
    assert ev["p_holm"].to_numpy() == pytest.approx(holm(ev["p"].to_numpy()), nan_ok=True)


def test_predictions_fall_back_to_router_and_align(ablation_dir: Path) -> None:
    study = load_study(ablation_dir)
    preds = load_predictions(study)
    assert set(preds["split"]) == {"test"} and "prediction" in preds.columns
    y, vectors = sample_matrix(preds)
    assert y.size == 120 and ("full", 1111) in vectors and ("no_unimodal", 1115) not in vectors  # failed trial


def test_mismatched_labels_are_refused() -> None:
    df = pd.DataFrame({"variant": ["a", "b"], "seed": 1, "sample": 0, "label": [1.0, -1.0],
                       "prediction": [0.5, 0.5], "split": "test"})
    with pytest.raises(ResultsError, match="disagree on the labels"):
        sample_matrix(df)


def test_predictions_table_is_read_first(make_study: Callable[..., Path], tmp_path: Path) -> None:
    """A predictions/ table as docs/results.md describes it (float32, dictionary-coded ids) wins over router/."""
    d = make_study("ablation", tmp_path / "abl", seeds=(1, 2))
    study = load_study(d)
    done = study.trials[study.trials["status"] == "completed"]
    y = np.linspace(-3, 3, 50).astype(np.float32)
    for t in done.itertuples(index=False):
        shift = 0.5 if t.variant == "uniform_router" else 0.0
        n = y.size
        table = pa.table({
            "study": pa.array(["abl"] * n).dictionary_encode(), "trial_id": pa.array([t.trial_id] * n).dictionary_encode(),
            "config_id": pa.array([t.config_id] * n).dictionary_encode(),
            "variant": pa.array([t.variant] * n).dictionary_encode(), "seed": pa.array([t.seed] * n, pa.int64()),
            "split": pa.array(["test"] * n).dictionary_encode(), "sample": pa.array(np.arange(n), pa.int32()),
            "sample_id": pa.array([f"vid_{k}" for k in range(n)]).dictionary_encode(),
            "label": pa.array(y), "prediction": pa.array(y + np.float32(shift + 0.01 * t.seed))})
        (d / "predictions").mkdir(exist_ok=True)
        pq.write_table(table, d / "predictions" / f"{t.trial_id}.parquet")
    preds = load_predictions(load_study(d))
    assert len(preds) == 50 * len(done) and preds["label"].dtype == np.float32
    y_all, vectors = sample_matrix(preds)
    assert y_all.size == 50 and len(vectors) == len(done)
    res = sample_comparison((y_all, vectors), baseline="full", metrics=["mae"], n_resamples=200)
    ens = res[res["scope"] == "ensemble"].set_index("variant")
    assert ens.loc["uniform_router", "diff"] == pytest.approx(0.5, abs=0.02)
    assert ens.loc["uniform_router", "p_boot"] < 0.01 and ens.loc["no_balance", "p_boot"] > 0.05
