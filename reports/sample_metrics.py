"""Regression metrics of the MSA literature computed from per-sample predictions, batched over resamples.

The definitions are those of ``emoe.metrics`` (MMSA's): MOSI/MOSEI ``mae``, ``corr``, ``acc2``/``f1`` over the
samples with a non-zero label ((pred > 0) vs (label > 0), weighted F1), ``acc7`` with both sides clipped to
[-3, 3] and rounded half to even; CH-SIMS clips both sides to [-1, 1] first and bins at 0 for ``acc2``/``f1``.
They are rewritten here (reports does not import emoe, which needs torch) over 2-D arrays, one row per
bootstrap resample, so thousands of resamples cost a few array passes; tests check them against emoe.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["SAMPLE_METRICS", "batched_metric", "correct_acc2", "sample_metric_names"]

#: Metrics the per-sample tests support, per label kind (``study.json`` ``label_kind``).
SAMPLE_METRICS: dict[str, tuple[str, ...]] = {"mosi": ("mae", "corr", "acc2", "f1", "acc7"),
                                              "sims": ("mae", "corr", "acc2", "f1")}


def sample_metric_names(label_kind: str) -> tuple[str, ...]:
    """The metric names of ``label_kind`` that :func:`batched_metric` computes."""
    if label_kind not in SAMPLE_METRICS:
        raise ValueError(f"per-sample tests support label kinds {sorted(SAMPLE_METRICS)}, not {label_kind!r}")
    return SAMPLE_METRICS[label_kind]


def _mean(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    if mask is None:
        return x.mean(axis=-1)
    n = mask.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (x & mask).sum(axis=-1) / np.maximum(n, 1), np.nan)


def _corr(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    pc = p - p.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((pc * pc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (pc * yc).sum(axis=-1) / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)  # constant side: 0, as emoe.metrics.pearson


def _weighted_f1(t: np.ndarray, q: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Binary weighted F1 (weights = true support) of boolean truths ``t`` and predictions ``q``."""
    m = np.ones_like(t) if mask is None else mask
    total = m.sum(axis=-1).astype(float)
    out = np.zeros(t.shape[:-1])
    for tc, qc in ((t, q), (~t, ~q)):
        tp = (tc & qc & m).sum(axis=-1)
        support = (tc & m).sum(axis=-1)
        predicted = (qc & m).sum(axis=-1)
        den = support + predicted
        f1 = np.where(den > 0, 2.0 * tp / np.maximum(den, 1), 0.0)
        out += f1 * support
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, out / np.maximum(total, 1), np.nan)


def _sims_positive(x: np.ndarray) -> np.ndarray:
    # MMSA bins float32 values at 0 with the upper edge included: class 1 is (0, 1].
    return x.astype(np.float32) > np.float32(0.0)


def correct_acc2(pred: np.ndarray, label: np.ndarray, label_kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample Acc-2 correctness and the mask of samples Acc-2 counts (MOSI: non-zero labels)."""
    if label_kind == "sims":
        p, y = np.clip(pred, -1, 1), np.clip(label, -1, 1)
        return _sims_positive(p) == _sims_positive(y), np.ones(np.shape(label), dtype=bool)
    return (pred > 0) == (label > 0), label != 0


def batched_metric(name: str, pred: np.ndarray, label: np.ndarray, label_kind: str = "mosi") -> np.ndarray:
    """Metric ``name`` of each row of ``pred``/``label`` (shape (..., n)); returns shape (...,).

    NaN where the metric is undefined (``acc2``/``f1`` when every label of a row is 0).
    """
    sample_metric_names(label_kind)
    p, y = np.asarray(pred, dtype=np.float64), np.asarray(label, dtype=np.float64)
    if label_kind == "sims":
        p, y = np.clip(p, -1.0, 1.0), np.clip(y, -1.0, 1.0)
    fns: dict[str, Callable[[], np.ndarray]] = {
        "mae": lambda: np.abs(p - y).mean(axis=-1),
        "corr": lambda: _corr(p, y),
    }
    if label_kind == "sims":
        fns["acc2"] = lambda: _mean(_sims_positive(p) == _sims_positive(y))
        fns["f1"] = lambda: _weighted_f1(_sims_positive(y), _sims_positive(p), None)
    else:
        nz = y != 0
        fns["acc2"] = lambda: _mean((p > 0) == (y > 0), nz)
        fns["f1"] = lambda: _weighted_f1(y > 0, p > 0, nz)
        fns["acc7"] = lambda: _mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))
    if name not in fns:
        raise ValueError(f"metric {name!r} is not a per-sample metric of {label_kind!r} data; "
                         f"choose from {list(fns)}")
    return fns[name]()
