"""Metrics against values computed by hand (and against scikit-learn when it happens to be installed)."""

from __future__ import annotations

import numpy as np
import pytest

from emoe.metrics import (
    METRIC_NAMES,
    classification_metrics,
    compute_metrics,
    metric_mode,
    pearson,
    regression_metrics,
    sims_metrics,
    weighted_f1,
)

PREDS = np.array([1.6, -0.4, 0.0, 2.4, 0.5, 0.3], dtype=np.float32)
LABELS = np.array([1.0, -1.0, 0.0, 3.0, -2.0, -0.2], dtype=np.float32)


def test_regression_metrics_by_hand() -> None:
    m = regression_metrics(PREDS, LABELS)
    assert list(m) == list(METRIC_NAMES["mosi"])
    assert m["mae"] == pytest.approx(4.8 / 6, abs=1e-6)  # 0.6 + 0.6 + 0 + 0.6 + 2.5 + 0.5
    # non-zero labels (5): pred>0 T F T T T vs label>0 T F T F F
    assert m["acc2"] == pytest.approx(3 / 5)
    # class True: tp 2, fp 2, fn 0 -> 2/3 (support 2); False: tp 1, fn 2 -> 1/2 (support 3)
    assert m["f1"] == pytest.approx((2 * 2 / 3 + 3 * 0.5) / 5)
    # has-zero: pred>=0 T F T T T T vs label>=0 T F T T F F
    assert m["acc2_hz"] == pytest.approx(4 / 6)
    assert m["f1_hz"] == pytest.approx((3 * 0.75 + 3 * 0.5) / 6)
    # rounded after clipping: acc7 p [2,0,0,2,0,0] y [1,-1,0,3,-2,0]; acc5 p [2,0,0,2,0,0] y [1,-1,0,2,-2,0];
    # acc3 p [1,0,0,1,0,0] y [1,-1,0,1,-1,0]
    assert (m["acc7"], m["acc5"], m["acc3"]) == pytest.approx((2 / 6, 3 / 6, 4 / 6))
    assert m["corr"] == pytest.approx(np.corrcoef(PREDS, LABELS)[0, 1], abs=1e-6)


def test_regression_edge_cases() -> None:
    m = regression_metrics(np.full(4, 0.7), [1.0, -1.0, 2.0, 0.0])
    assert m["corr"] == 0.0  # constant prediction: defined, not NaN
    assert pearson([1.0, 2.0], [3.0, 3.0]) == 0.0
    assert pearson([0.1] * 5, [0.1, 0.2, 0.3, 0.4, 0.5]) == 0.0  # constant in float, no rounding garbage
    zeros = regression_metrics([0.5, -0.5], [0.0, 0.0])
    assert np.isnan(zeros["acc2"]) and np.isnan(zeros["f1"])
    assert zeros["acc2_hz"] == 0.5
    assert regression_metrics(PREDS[:, None], LABELS)["mae"] == pytest.approx(0.8)  # (N, 1) accepted
    perfect = regression_metrics(LABELS, LABELS)
    assert perfect["mae"] == 0 and perfect["corr"] == pytest.approx(1.0)
    assert all(perfect[k] == 1.0 for k in ("acc2", "f1", "acc2_hz", "f1_hz", "acc3", "acc5", "acc7"))


@pytest.mark.parametrize(("preds", "labels", "match"), [
    ([1.0, 2.0], [1.0], "2 samples but labels has 1"),
    ([], [], "no samples"),
    ([1.0, np.nan], [0.0, 1.0], "non-finite"),
    (np.zeros((2, 2)), np.zeros(2), "1-D"),
    (["a", "b"], [0.0, 1.0], "numbers"),
])
def test_regression_bad_input(preds: object, labels: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        regression_metrics(preds, labels)  # type: ignore[arg-type]


def test_sims_metrics_by_hand() -> None:
    labels = np.array([-1.0, -0.6, -0.1, 0.0, 0.1, 0.4, 0.8, 1.0], dtype=np.float32)
    preds = np.array([-0.8, -0.2, 0.05, 0.2, 0.1, 0.75, 1.5, -0.05], dtype=np.float32)
    m = sims_metrics(preds, labels)
    assert list(m) == list(METRIC_NAMES["sims"])
    # 2 bins (<=0 | >0): y 0 0 0 0 1 1 1 1, p 0 0 1 1 1 1 1 0
    assert m["acc2"] == pytest.approx(5 / 8)
    assert m["f1"] == pytest.approx((4 / 7 + 2 / 3) / 2)  # class 0: tp2 fp1 fn2; class 1: tp3 fp2 fn1
    # 3 bins: y 0 0 0 1 1 2 2 2, p 0 0 1 2 1 2 2 1; 5 bins: y 0 1 1 2 2 3 4 4, p 0 1 2 3 2 4 4 2
    assert m["acc3"] == pytest.approx(5 / 8)
    assert m["acc5"] == pytest.approx(4 / 8)
    assert m["mae"] == pytest.approx(2.55 / 8, abs=1e-6)  # on predictions clipped to [-1, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sims_bin_edges_include_upper_edge(dtype: type) -> None:
    # MMSA bins are (lo, hi]: a label of exactly 0.1 is neutral, -0.1 negative, 0.7 weakly positive
    for label, same_bin in ((0.1, 0.05), (-0.1, -0.5), (0.7, 0.2), (0.0, -0.05)):
        m = sims_metrics(np.array([same_bin], dtype), np.array([label], dtype))
        assert m["acc5"] == 1.0, (label, same_bin)
    assert sims_metrics(np.array([-0.9], dtype), np.array([0.0], dtype))["acc2"] == 1.0  # 0 is negative
    assert sims_metrics(np.array([0.11]), np.array([0.1]))["acc3"] == 0.0


def test_weighted_f1_multiclass_by_hand() -> None:
    y_true, y_pred = [0, 0, 1, 1, 2], [0, 1, 1, 1, 0]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 -> 0.8; class 2: tp0 -> 0; supports 2, 2, 1
    assert weighted_f1(y_true, y_pred) == pytest.approx((2 * 0.5 + 2 * 0.8) / 5)
    m = classification_metrics(y_pred, y_true, n_classes=3)
    assert m == pytest.approx({"acc": 0.6, "f1_macro": 1.3 / 3, "precision_macro": (0.5 + 2 / 3) / 3,
                               "recall_macro": 0.5})


def test_compute_metrics_dispatch() -> None:
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 1.0, 0.2], [0.0, 3.0, 0.1], [0.1, 0.2, 0.3]])
    m = compute_metrics(logits, [0, 1, 2, 2], "classification")
    assert m["acc"] == pytest.approx(0.75)
    assert compute_metrics(PREDS, LABELS, "mosi") == regression_metrics(PREDS, LABELS)
    assert set(compute_metrics(PREDS / 3, LABELS / 3, "sims")) == set(METRIC_NAMES["sims"])
    with pytest.raises(ValueError, match="kind"):
        compute_metrics(PREDS, LABELS, "mosei")
    with pytest.raises(ValueError, match="n_classes"):
        compute_metrics([0, 1], [0, 1], "classification")
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 3], [0, 1], n_classes=3)


def test_metric_mode() -> None:
    assert metric_mode("valid_mae") == "min" and metric_mode("loss") == "min"
    assert metric_mode("test_acc7") == "max" and metric_mode("f1_macro") == "max"


def test_against_sklearn_when_installed() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    p[p == 4] = 3  # a class present in labels only
    assert weighted_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="weighted"))
    m = classification_metrics(p, y, n_classes=5)
    assert m["f1_macro"] == pytest.approx(skm.f1_score(y, p, average="macro"))
    assert m["precision_macro"] == pytest.approx(skm.precision_score(y, p, average="macro", zero_division=0))
    assert m["recall_macro"] == pytest.approx(skm.recall_score(y, p, average="macro"))
