"""Batched evaluation of an EMOE model on one split: validation loss, task metrics and router weights.

Used by ``emoe.train.fit`` every epoch (validation) and on improved epochs (test); usable on its own.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emoe.config import EMOEConfig
from emoe.data.arrays import Split
from emoe.data.batches import iter_batches
from emoe.metrics import compute_metrics
from emoe.outputs import RouterRecord

__all__ = ["NonFiniteOutput", "autocast_context", "bf16_active", "evaluate", "split_loss", "summarize"]


class NonFiniteOutput(ValueError):
    """The model predicted NaN or infinity on an evaluation split (the run has diverged)."""


def bf16_active(cfg: EMOEConfig, device: torch.device) -> bool:
    """Whether ``train.bf16`` applies on ``device`` (CUDA, or CPU with ``allow_cpu_bf16``)."""
    t = cfg.train
    return bool(t.bf16 and (device.type == "cuda" or t.allow_cpu_bf16))


def autocast_context(cfg: EMOEConfig, device: torch.device) -> AbstractContextManager[object]:
    """bf16 autocast when ``train.bf16`` is on and the device allows it (CUDA, or CPU with allow_cpu_bf16)."""
    if bf16_active(cfg, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def split_loss(pred: torch.Tensor, labels: torch.Tensor, task: str) -> torch.Tensor:
    """Mean task loss over all rows: L1 of the score (regression) or cross-entropy of the logits.

    pred: (N, n_out) float; labels: (N,) float score or int64 class index. Returns a 0-d float32 tensor.
    """
    if task == "classification":
        return F.cross_entropy(pred.float(), labels.long())
    return (pred.float().reshape(-1) - labels.float().reshape(-1)).abs().mean()


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, cfg: EMOEConfig, kind: str,
             device: torch.device | str) -> tuple[dict[str, float], RouterRecord]:
    """Evaluate ``model`` on ``split`` in eval mode without gradients, in batches of ``train.eval_batch_size``.

    Returns the metrics (``"loss"`` is the split's L1 or cross-entropy, then ``compute_metrics``' task
    metrics for ``kind``) and the per-sample router weights, predictions and labels (class indices for
    classification). Raises ``NonFiniteOutput`` when a prediction is NaN or infinite. Outputs stay on the
    device until the end, so the loop has no host synchronisation. The model's train/eval mode is restored.
    """
    if len(split) == 0:
        raise ValueError("evaluate: the split is empty")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    preds: list[torch.Tensor] = []
    weights: list[torch.Tensor] = []
    try:
        with autocast_context(cfg, device):
            for batch in iter_batches(split, cfg.train.eval_batch_size, device=device):
                out = model(text=batch.text, audio=batch.audio, vision=batch.vision)
                preds.append(out.pred.float())  # (B, n_out)
                weights.append(out.weights.float())  # (B, 3)
    finally:
        model.train(was_training)
    return summarize(torch.cat(preds), torch.cat(weights), split, cfg, kind)


def summarize(pred: torch.Tensor, w: torch.Tensor, split: Split, cfg: EMOEConfig,
              kind: str) -> tuple[dict[str, float], RouterRecord]:
    """Metrics and router record of a split's predictions pred (N, n_out) and router weights w (N, 3).

    Shared by ``evaluate`` and the stacked evaluation of ``emoe.stack`` (one call per member).
    """
    device = pred.device
    task = cfg.loss.task
    labels_t = torch.tensor(split.labels, device=device)  # a copy: the split may be read-only shared memory
    loss = split_loss(pred, labels_t, task)
    # one transfer to the host for everything the metrics need
    pred_np = pred.cpu().numpy()
    if not np.isfinite(pred_np).all():
        raise NonFiniteOutput(f"{int((~np.isfinite(pred_np)).any(axis=1).sum())} of {len(pred_np)} "
                              "predictions are non-finite")
    if task == "classification":
        metrics = compute_metrics(pred_np, split.labels, kind)  # logits (N, C)
        point_np = pred_np.argmax(axis=1)
    else:
        point_np = pred_np.reshape(-1)
        metrics = compute_metrics(point_np, split.labels, kind)
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["loss"] = float(loss.item())
    record = RouterRecord(
        weights=w.cpu().numpy().astype(np.float32),
        preds=point_np.astype(np.float32),
        labels=np.array(split.labels, copy=True),
        ids=None if split.ids is None else np.array(split.ids, copy=True),
        reliability=None if split.reliability is None else np.array(split.reliability, dtype=np.float32),
    )
    return metrics, record
