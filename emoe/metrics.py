"""Evaluation metrics of the MSA literature (MOSI/MOSEI, CH-SIMS, intent classification), numpy only.

Definitions follow the MMSA toolkit that EMOE's reference code uses, so numbers are comparable with
published tables; names match the Parquet schema in ``docs/results.md``. Accuracies and F1 are
fractions in [0, 1]. F1 is implemented here (no scikit-learn dependency) with scikit-learn's
conventions: a class whose F1 has a zero denominator scores 0, weighted F1 weights by true support,
and macro averages run over the classes present in either labels or predictions.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from emoe_schema import metric_mode  # directions are a fact of the results schema, named there once

__all__ = [
    "METRIC_NAMES",
    "MetricKind",
    "classification_metrics",
    "compute_metrics",
    "metric_mode",
    "pearson",
    "regression_metrics",
    "sims_metrics",
    "weighted_f1",
]

MetricKind = Literal["mosi", "sims", "classification"]

#: Keys returned by each metric family (the training loop adds ``loss``).
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "mosi": ("mae", "corr", "acc2", "f1", "acc2_hz", "f1_hz", "acc3", "acc5", "acc7"),
    "sims": ("mae", "corr", "acc2", "f1", "acc3", "acc5"),
    "classification": ("acc", "f1_macro", "precision_macro", "recall_macro"),
}

# CH-SIMS bins as in MMSA: class i holds values in (edge[i-1], edge[i]] after clipping to [-1, 1].
_SIMS_EDGES: dict[int, tuple[float, ...]] = {
    2: (0.0,),
    3: (-0.1, 0.1),
    5: (-0.7, -0.1, 0.1, 0.7),
}


def _vector(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array (or shape (N, 1)), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: no samples")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name}: {int((~np.isfinite(arr)).sum())} non-finite value(s)")
    return arr


def _pair(preds: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, y = _vector(preds, "preds"), _vector(labels, "labels")
    if len(p) != len(y):
        raise ValueError(f"preds has {len(p)} samples but labels has {len(y)}")
    return p, y


def pearson(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson correlation in float64; 0.0 (not NaN) when either side is constant or N < 2."""
    x, y = _pair(a, b)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    xc = x.astype(np.float64) - x.mean(dtype=np.float64)
    yc = y.astype(np.float64) - y.mean(dtype=np.float64)
    denom = np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    if denom == 0 or not np.isfinite(denom):
        return 0.0
    return float(np.clip(np.dot(xc, yc) / denom, -1.0, 1.0))


def _confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Confusion matrix (true x predicted) over the classes present in either array."""
    _, inv = np.unique(np.concatenate([y_true, y_pred]), return_inverse=True)
    k = int(inv.max()) + 1
    t, p = inv[: len(y_true)], inv[len(y_true):]
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted  # = 2 tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    return precision, recall, f1, support


def weighted_f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """F1 per class averaged with weights = true support (scikit-learn's ``average='weighted'``)."""
    p, t = _pair(y_pred, y_true)
    _, _, f1, support = _per_class(_confusion(t, p))
    return float((f1 * support).sum() / support.sum())


def _accuracy(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b))


def regression_metrics(preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """MOSI/MOSEI metrics: MAE, Corr, Acc-2/F1 non-zero and has-zero, Acc-3/5/7.

    acc2/f1: over samples with label != 0, (pred > 0) vs (label > 0); NaN if every label is 0.
    acc2_hz/f1_hz: over all samples, (pred >= 0) vs (label >= 0).
    acc7/acc5/acc3: clip both to [-3, 3]/[-2, 2]/[-1, 1], round half to even (numpy), exact match.
    """
    p, y = _pair(preds, labels)
    p, y = p.astype(np.float64), y.astype(np.float64)
    out = {"mae": float(np.mean(np.abs(p - y))), "corr": pearson(p, y)}
    nz = y != 0
    if nz.any():
        out["acc2"] = _accuracy(p[nz] > 0, y[nz] > 0)
        out["f1"] = weighted_f1(y[nz] > 0, p[nz] > 0)
    else:
        out["acc2"] = out["f1"] = float("nan")
    out["acc2_hz"] = _accuracy(p >= 0, y >= 0)
    out["f1_hz"] = weighted_f1(y >= 0, p >= 0)
    for name, bound in (("acc3", 1.0), ("acc5", 2.0), ("acc7", 3.0)):
        out[name] = _accuracy(np.round(np.clip(p, -bound, bound)), np.round(np.clip(y, -bound, bound)))
    return {k: out[k] for k in METRIC_NAMES["mosi"]}


def _sims_bins(x: np.ndarray, n: int) -> np.ndarray:
    # MMSA compares float32 arrays with the edges, so a label of exactly 0.1 falls in (-0.1, 0.1].
    edges = np.asarray(_SIMS_EDGES[n], dtype=np.float32)
    return np.searchsorted(edges, x.astype(np.float32), side="left")


def sims_metrics(preds: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """CH-SIMS metrics as in MMSA: both sides clipped to [-1, 1], then MAE, Corr and binned accuracies.

    Bins (upper edge included): Acc-2 [-1, 0] | (0, 1]; Acc-3 [-1, -0.1] | (-0.1, 0.1] | (0.1, 1];
    Acc-5 edges -0.7, -0.1, 0.1, 0.7. f1 is the weighted F1 of the Acc-2 classes.
    """
    p, y = _pair(preds, labels)
    p = np.clip(p.astype(np.float64), -1.0, 1.0)
    y = np.clip(y.astype(np.float64), -1.0, 1.0)
    b2p, b2y = _sims_bins(p, 2), _sims_bins(y, 2)
    return {
        "mae": float(np.mean(np.abs(p - y))),
        "corr": pearson(p, y),
        "acc2": _accuracy(b2p, b2y),
        "f1": weighted_f1(b2y, b2p),
        "acc3": _accuracy(_sims_bins(p, 3), _sims_bins(y, 3)),
        "acc5": _accuracy(_sims_bins(p, 5), _sims_bins(y, 5)),
    }


def _classes(x: ArrayLike, name: str, n_classes: int) -> np.ndarray:
    arr = _vector(x, name)
    if arr.dtype.kind == "f":
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"{name}: class indices must be integers, got non-integral floats")
        arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n_classes)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} value(s) outside [0, {n_classes}), "
                         f"e.g. {arr[bad][0]}")
    return arr.astype(np.int64)


def classification_metrics(pred_classes: ArrayLike, labels: ArrayLike, n_classes: int) -> dict[str, float]:
    """Accuracy and macro F1/precision/recall (over classes present in labels or predictions)."""
    if not isinstance(n_classes, int | np.integer) or n_classes < 2:
        raise ValueError(f"n_classes: must be an integer >= 2, got {n_classes!r}")
    p = _classes(pred_classes, "pred_classes", int(n_classes))
    y = _classes(labels, "labels", int(n_classes))
    if len(p) != len(y):
        raise ValueError(f"pred_classes has {len(p)} samples but labels has {len(y)}")
    precision, recall, f1, _ = _per_class(_confusion(y, p))
    return {
        "acc": _accuracy(p, y),
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
    }


def compute_metrics(preds: ArrayLike, labels: ArrayLike, kind: MetricKind | str,
                    *, n_classes: int | None = None) -> dict[str, float]:
    """Metrics of one family. For ``classification`` preds may be logits (N, C) or class indices (N,)."""
    if kind == "mosi":
        return regression_metrics(preds, labels)
    if kind == "sims":
        return sims_metrics(preds, labels)
    if kind == "classification":
        arr = np.asarray(preds)
        if arr.ndim == 2 and arr.shape[1] > 1:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ValueError("preds: non-finite logits")
            if n_classes is not None and n_classes != arr.shape[1]:
                raise ValueError(f"n_classes={n_classes} but preds has {arr.shape[1]} logit columns")
            n_classes = arr.shape[1]
            arr = arr.argmax(axis=1)
        if n_classes is None:
            raise ValueError("n_classes: required when classification preds are class indices")
        return classification_metrics(arr, labels, n_classes)
    raise ValueError(f"kind: must be one of {list(METRIC_NAMES)}, got {kind!r}")
