"""Result structures returned by the model and by training, shared across the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:  # the records are numpy: the harness's driver reads them without importing torch
    import torch

__all__ = ["EpochRecord", "FitResult", "ModelOutput", "RouterRecord"]


@dataclass
class ModelOutput:
    """What ``EMOE.forward`` returns (modality order l, v, a everywhere).

    pred:     (B, n_out)   fused prediction y_c
    uni_pred: (B, 3, n_out) unimodal predictions y_l, y_v, y_a
    weights:  (B, 3)       router weights w (rows sum to 1)
    h:        (B, 3, d)    expert representations h_l, h_v, h_a (last time step, after final LayerNorm)
    p_uni:    (B, 3, d)    unimodal head representations p_l, p_v, p_a (input of the unimodal output layers)
    p_fused:  (B, D)       fused head representation p_c, D = d (sum) or 3d (concat)
    """

    pred: torch.Tensor
    uni_pred: torch.Tensor
    weights: torch.Tensor
    h: torch.Tensor
    p_uni: torch.Tensor
    p_fused: torch.Tensor


@dataclass
class EpochRecord:
    """One epoch of training, handed to ``fit``'s ``on_epoch`` callback.

    train: mean training loss terms over the epoch {"loss", "task", "uni", "sim", "ent", "ud"}
    valid: validation metrics (always includes "loss" = validation L1/CE and the task metrics)
    test:  test metrics, only when this epoch improved validation (else None)
    router_mean: mean router weights on the validation split {"w_l", "w_v", "w_a"}
    last: whether ``fit``'s stopping rule ends training after this epoch (budget spent, or
          ``train.early_stop`` epochs without improvement); False when the callback stops it
    """

    epoch: int  # 1-based
    train: dict[str, float]
    valid: dict[str, float]
    lr: float
    improved: bool
    best_epoch: int
    test: dict[str, float] | None = None
    router_mean: dict[str, float] = field(default_factory=dict)
    time_s: float = 0.0
    last: bool = False


@dataclass
class RouterRecord:
    """Per-sample router weights, predictions and labels of one split (test, or validation) at the selected epoch."""

    weights: np.ndarray  # (N, 3) float32, l v a
    preds: np.ndarray  # (N,) float32 fused predictions (class index for classification)
    labels: np.ndarray  # (N,)
    ids: np.ndarray | None = None
    reliability: np.ndarray | None = None  # (N, 3) true reliabilities (synthetic data)


@dataclass
class FitResult:
    """Outcome of ``fit``: selected-epoch metrics, history, router weights at the selected epoch."""

    status: Literal["completed", "diverged"]
    best_epoch: int  # 0 if no epoch finished
    epochs_run: int
    valid: dict[str, float]  # metrics at best_epoch
    test: dict[str, float]  # test metrics at best_epoch
    history: list[EpochRecord]
    router: RouterRecord | None
    error: str | None = None  # e.g. "diverged: non-finite training loss (nan) at epoch 3, batch 17"
    extra: dict[str, Any] = field(default_factory=dict)
    valid_router: RouterRecord | None = None  # the same per-sample record on the validation split
