"""The EMOE objective as pure functions of the model's outputs, one per term, plus their weighted total.

total = task + uni_weight * uni + balance_weight * (ent + sim_alpha * sim) + distill_weight * ud
Regression uses L1 (and squared errors for the importance target); classification uses cross-entropy.
Every function returns tensors (no host-device synchronisation); the caller reads them once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emoe.config import LOSS_WEIGHTS, LossConfig
from emoe.outputs import ModelOutput

__all__ = [
    "EPOCH_LOSSES",
    "LOSS_NAMES",
    "LOSS_TERMS",
    "LossTerms",
    "distillation_loss",
    "distillation_target",
    "entropy_balance_loss",
    "importance_target",
    "per_sample_error",
    "similarity_loss",
    "task_loss",
    "total_loss",
    "unimodal_loss",
    "weighted_total",
]

#: The objective's terms, in the order they are reported everywhere (the results' ``train_<term>`` columns).
LOSS_TERMS: tuple[str, ...] = ("task", "uni", "sim", "ent", "ud")
#: The terms and their weighted total (``LossTerms`` fields).
LOSS_NAMES: tuple[str, ...] = (*LOSS_TERMS, "total")
#: An epoch's mean training losses: the weighted total as ``loss``, then the terms.
EPOCH_LOSSES: tuple[str, ...] = ("loss", *LOSS_TERMS)
#: ``LossTerms.stacked()``'s fields, in ``EPOCH_LOSSES`` order (the total is an epoch's ``loss``).
_STACKED: tuple[str, ...] = ("total", *LOSS_TERMS)
_TASKS = ("regression", "classification")


def _check_task(task: str) -> None:
    if task not in _TASKS:
        raise ValueError(f"task: must be one of {list(_TASKS)}, got {task!r}")


def _targets(pred: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Labels in the form the task needs: (B,) floats for regression, (B,) class indices otherwise."""
    _check_task(task)
    y = y.reshape(-1)
    if y.shape[0] != pred.shape[0]:
        raise ValueError(f"y: {y.shape[0]} labels for a batch of {pred.shape[0]} predictions")
    if task == "regression":
        if pred.shape[-1] != 1:
            raise ValueError(f"pred: regression needs one output per sample, got {pred.shape[-1]} "
                             f"(use task='classification' for n_outputs > 1)")
        return y.to(pred.dtype)
    if y.is_floating_point():
        raise ValueError(f"y: classification needs integer class labels, got dtype {y.dtype}")
    return y.long()


def task_loss(pred: torch.Tensor, y: torch.Tensor, task: str = "regression") -> torch.Tensor:
    """L1(y_c, y) for regression, cross-entropy for classification; pred (B, n_out), y (B,)."""
    target = _targets(pred, y, task)
    if task == "regression":
        return F.l1_loss(pred.reshape(-1), target)
    return F.cross_entropy(pred, target)


def unimodal_loss(uni_pred: torch.Tensor, y: torch.Tensor, task: str = "regression") -> torch.Tensor:
    """(L(y_l, y) + L(y_v, y) + L(y_a, y)) / 3 with L the task loss; uni_pred (B, 3, n_out)."""
    target = _targets(uni_pred, y, task)  # (B,)
    if task == "regression":
        return (uni_pred[..., 0] - target.unsqueeze(1)).abs().mean()
    b, m, c = uni_pred.shape
    return F.cross_entropy(uni_pred.reshape(b * m, c), target.repeat_interleave(m))


def per_sample_error(uni_pred: torch.Tensor, y: torch.Tensor, task: str = "regression") -> torch.Tensor:
    """e_m per sample (B, 3): (y_m - y)^2 for regression, the per-sample cross-entropy otherwise."""
    target = _targets(uni_pred, y, task)
    if task == "regression":
        return (uni_pred[..., 0] - target.unsqueeze(1)) ** 2
    b, m, c = uni_pred.shape
    ce = F.cross_entropy(uni_pred.reshape(b * m, c), target.repeat_interleave(m), reduction="none")
    return ce.view(b, m)


def importance_target(errors: torch.Tensor, kind: str = "inverse", eps: float = 0.1) -> torch.Tensor:
    """Target weights t (B, 3) from errors (B, 3), without gradient.

    inverse (reference): t_m = (1 / (e_m + eps)) / sum_k 1 / (e_k + eps); softmax: t = softmax(-e).
    """
    e = errors.detach()
    if kind == "inverse":
        if not eps > 0:
            raise ValueError(f"importance_eps: must be > 0, got {eps}")
        inv = 1.0 / (e + eps)
        return inv / inv.sum(dim=1, keepdim=True)
    if kind == "softmax":
        return torch.softmax(-e, dim=1)
    raise ValueError(f"importance: must be 'inverse' or 'softmax', got {kind!r}")


def similarity_loss(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the mean over modalities of (t_m - w_m)^2; no gradient into the target."""
    return ((target.detach() - weights) ** 2).mean()


def entropy_balance_loss(weights: torch.Tensor, floor: float = 1e-9) -> torch.Tensor:
    """Mean over the batch of N * sum_m w_m log w_m (N modalities, w clamped at >= floor).

    The negative entropy scaled by N: minimising it spreads the weights over the modalities.
    """
    w = weights.clamp_min(floor)
    return (weights.shape[1] * (w * torch.log(w)).sum(dim=1)).mean()


def distillation_target(p_uni: torch.Tensor, weights: torch.Tensor, fusion: str) -> torch.Tensor:
    """q without gradient: sum_m w_m p_m (sum, (B, d)) or [w_l p_l ; w_v p_v ; w_a p_a] (concat, (B, 3d))."""
    weighted = weights.detach().unsqueeze(-1) * p_uni.detach()  # (B, 3, d)
    if fusion == "sum":
        return weighted.sum(1)
    if fusion == "concat":
        return weighted.flatten(1)
    raise ValueError(f"fusion: must be 'sum' or 'concat', got {fusion!r}")


def distillation_loss(p_fused: torch.Tensor, p_uni: torch.Tensor, weights: torch.Tensor,
                      fusion: str) -> torch.Tensor:
    """Mean over batch and features of (softmax(p_c) - softmax(q))^2, softmax over the feature axis."""
    q = distillation_target(p_uni, weights, fusion)
    if q.shape != p_fused.shape:
        raise ValueError(f"p_fused: shape {tuple(p_fused.shape)} does not match the {fusion} "
                         f"distillation target {tuple(q.shape)}")
    return ((torch.softmax(p_fused, dim=-1) - torch.softmax(q, dim=-1)) ** 2).mean()


@dataclass
class LossTerms:
    """Each term of the objective and the weighted total, as 0-d tensors (``total`` carries gradient)."""

    task: torch.Tensor
    uni: torch.Tensor
    sim: torch.Tensor
    ent: torch.Tensor
    ud: torch.Tensor
    total: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """Detached float32 (6,) tensor in ``EPOCH_LOSSES`` order (the total first), what a training step
        returns beside the total, to accumulate on the device without syncing."""
        return torch.stack([getattr(self, n) for n in _STACKED]).detach().float()

    def to_floats(self) -> dict[str, float]:
        """Plain floats keyed by ``LOSS_NAMES`` (one host-device transfer)."""
        values = dict(zip(_STACKED, self.stacked().tolist()))
        return {n: values[n] for n in LOSS_NAMES}


def total_loss(out: ModelOutput, y: torch.Tensor, cfg: LossConfig, fusion: str, *,
               term_weights: torch.Tensor | None = None) -> LossTerms:
    """Every term of the EMOE objective for one batch, computed in float32, and their weighted total.

    ``term_weights``: the terms' weights as a (4,) tensor in ``LOSS_WEIGHTS`` order, in place of ``cfg``'s (a
    stacked member's own, ``emoe.stack``, where members may differ in them); ``cfg`` gives the rest.
    """
    pred, uni_pred = out.pred.float(), out.uni_pred.float()
    weights, p_uni, p_fused = out.weights.float(), out.p_uni.float(), out.p_fused.float()
    task = task_loss(pred, y, cfg.task)
    uni = unimodal_loss(uni_pred, y, cfg.task)
    target = importance_target(per_sample_error(uni_pred, y, cfg.task), cfg.importance, cfg.importance_eps)
    sim = similarity_loss(weights, target)
    ent = entropy_balance_loss(weights)
    ud = distillation_loss(p_fused, p_uni, weights, fusion)
    scale = ({name: getattr(cfg, name) for name in LOSS_WEIGHTS} if term_weights is None
             else {name: term_weights[i] for i, name in enumerate(LOSS_WEIGHTS)})
    total = weighted_total(task, uni, sim, ent, ud, **scale)
    return LossTerms(task=task, uni=uni, sim=sim, ent=ent, ud=ud, total=total)


def weighted_total(task: torch.Tensor, uni: torch.Tensor, sim: torch.Tensor, ent: torch.Tensor, ud: torch.Tensor, *,
                   uni_weight: float | torch.Tensor, balance_weight: float | torch.Tensor,
                   sim_alpha: float | torch.Tensor, distill_weight: float | torch.Tensor) -> torch.Tensor:
    """task + uni_weight * uni + balance_weight * (ent + sim_alpha * sim) + distill_weight * ud.

    The weights may be tensors (one per stacked member in ``emoe.stack``): same arithmetic, same order.
    """
    return task + uni_weight * uni + balance_weight * (ent + sim_alpha * sim) + distill_weight * ud
