"""The reference EMOE training procedure, step for step, as the baseline that faster paths must equal.

The reference implementation cannot run here, so this module reproduces its procedure on our model's
parameters: unfused attention over every time step (``nn.MultiheadAttention`` arithmetic), fusion by a
Python loop over the batch, single-tensor Adam, and a host read of the loss and predictions after every
batch (the reference logs them). Used by ``bench/model_step.py`` as the speed baseline and by the tests
to hold ``emoe.train.train_epoch`` and the model's fast path to the same outputs.
"""

from __future__ import annotations

import math

import torch

from emoe.config import MODALITIES, EMOEConfig
from emoe.data.arrays import Split
from emoe.data.batches import iter_batches
from emoe.encoders import TransformerEncoder
from emoe.losses import total_loss
from emoe.model import EMOE
from emoe.outputs import ModelOutput

__all__ = ["reference_epoch", "reference_forward", "reference_optimizer"]


def reference_forward(model: EMOE, *, text: torch.Tensor, audio: torch.Tensor,
                      vision: torch.Tensor) -> ModelOutput:
    """EMOE's forward pass the way the reference computes it, on ``model``'s parameters.

    Same operations, in the same order (so dropout draws the same random numbers) as ``EMOE.forward``
    with the plain path; the fused representation is built one sample at a time, as the reference does.
    text (B, L_t, d_t) features, audio (B, L_a, d_a), vision (B, L_v, d_v).
    """
    if model.text_encoder is not None:
        text = model.text_encoder(text)
    weights = model.router(text=text, vision=vision, audio=audio)  # (B, 3)
    inputs = {"l": model.drop(text, model.text_dropout, model.training), "v": vision, "a": audio}
    reps = []
    for m in MODALITIES:
        c = inputs[m].transpose(1, 2)  # (B, d_m, L_m)
        if m in model.proj:
            c = model.proj[m](c)
        c = model.shared_conv(c).transpose(1, 2)  # (B, L', d)
        expert: TransformerEncoder = model.experts[m]  # type: ignore[assignment]
        reps.append(expert.sequence(c, fast=False)[:, -1])  # every step, then the last: (B, d)
    h = torch.stack(reps, dim=1)  # (B, 3, d)
    p_list, y_list = zip(*(model.heads[m](h[:, i]) for i, m in enumerate(MODALITIES)))
    w = weights.to(h.dtype)
    fused = []
    for i in range(h.shape[0]):  # the reference's per-sample fusion loop
        parts = [w[i, k] * h[i, k] for k in range(len(MODALITIES))]
        fused.append(3 * torch.cat(parts) if model.fusion == "concat" else parts[0] + parts[1] + parts[2])
    p_fused, pred = model.fused_head(torch.stack(fused))
    return ModelOutput(pred=pred, uni_pred=torch.stack(y_list, dim=1), weights=weights, h=h,
                       p_uni=torch.stack(p_list, dim=1), p_fused=p_fused)


def reference_optimizer(model: torch.nn.Module, cfg: EMOEConfig) -> torch.optim.Adam:
    """The reference's optimiser on CPU: Adam updating one parameter tensor at a time (no foreach)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, foreach=False)


def reference_epoch(model: EMOE, split: Split, cfg: EMOEConfig, optimizer: torch.optim.Optimizer, *,
                    generator: torch.Generator, device: torch.device | str = "cpu") -> dict[str, float]:
    """One training epoch by the reference procedure; returns {"loss": mean total loss over batches}.

    Batches come in the order ``emoe.train.train_epoch`` uses for the same generator state. Gradients are
    zeroed at the start of each window of ``train.update_epochs`` batches; Adam steps at its end and after
    a last, partial window; the loss is not divided by the window. Every batch reads its loss and
    predictions back to the host, as the reference's logging does. No bf16, clipping or divergence checks.
    """
    t = cfg.train
    model.train()
    n_batches = math.ceil(len(split) / t.batch_size)
    loss_sum = 0.0
    preds = []
    for i, batch in enumerate(iter_batches(split, t.batch_size, device=device, generator=generator,
                                           shuffle=True)):
        if i % t.update_epochs == 0:
            optimizer.zero_grad()
        out = reference_forward(model, text=batch.text, audio=batch.audio, vision=batch.vision)
        terms = total_loss(out, batch.labels, cfg.loss, cfg.model.fusion)
        terms.total.backward()
        loss_sum += terms.total.item()
        preds.append(out.pred.detach().cpu())
        if (i + 1) % t.update_epochs == 0 or i + 1 == n_batches:
            optimizer.step()
    return {"loss": loss_sum / max(n_batches, 1)}
