"""Every loss term against a value worked out by hand on small tensors, plus the weighted total."""

from __future__ import annotations

import math

import pytest
import torch

from emoe.config import LOSS_WEIGHTS, LossConfig
from emoe.losses import (
    EPOCH_LOSSES,
    LOSS_NAMES,
    LOSS_TERMS,
    distillation_loss,
    distillation_target,
    entropy_balance_loss,
    importance_target,
    per_sample_error,
    similarity_loss,
    task_loss,
    total_loss,
    unimodal_loss,
)
from emoe.outputs import ModelOutput

LN2, LN3 = math.log(2.0), math.log(3.0)


def val(t: torch.Tensor) -> float:
    return float(t.detach())


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert value.ndim == 0
    got = val(value)
    assert abs(got - expected) < tol, (got, expected)


def test_task_loss_l1_and_cross_entropy():
    close(task_loss(torch.tensor([[1.0], [-0.5]]), torch.tensor([0.5, 0.5])), (0.5 + 1.0) / 2)
    logits = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # CE: ln 2 and -ln(3/4)
    close(task_loss(logits, torch.tensor([0, 0]), "classification"), (LN2 + math.log(4 / 3)) / 2)


def test_unimodal_loss_is_the_mean_of_the_three_modality_losses():
    uni = torch.tensor([[1.0, 0.0, -1.0], [2.0, 2.0, 2.0]]).unsqueeze(-1)  # (B=2, 3, 1)
    y = torch.tensor([0.0, 1.0])
    # |errors|: l (1, 1), v (0, 1), a (1, 1) -> modality means 1, 0.5, 1 -> 2.5 / 3
    close(unimodal_loss(uni, y), 2.5 / 3)
    logits = torch.zeros(1, 3, 2)
    logits[0, 0] = torch.tensor([LN3, 0.0])  # l: -ln(3/4); v, a: ln 2
    close(unimodal_loss(logits, torch.tensor([0]), "classification"), (math.log(4 / 3) + 2 * LN2) / 3)


def test_per_sample_error_is_squared_error_or_per_sample_cross_entropy():
    uni = torch.tensor([[0.0, 0.5, 1.0]]).unsqueeze(-1)
    torch.testing.assert_close(per_sample_error(uni, torch.tensor([0.0])), torch.tensor([[0.0, 0.25, 1.0]]))
    logits = torch.zeros(1, 3, 2)
    logits[0, 2] = torch.tensor([0.0, LN3])  # a predicts class 1 with p 3/4; the label is 0
    expected = torch.tensor([[LN2, LN2, math.log(4.0)]])
    torch.testing.assert_close(per_sample_error(logits, torch.tensor([0]), "classification"), expected)


def test_inverse_importance_target_by_hand():
    # e = (0, 0.25, 1) -> 1 / (e + 0.1) = (10, 20/7, 10/11) -> normalised (77, 22, 7) / 106
    e = torch.tensor([[0.0, 0.25, 1.0], [0.3, 0.3, 0.3]])
    t = importance_target(e, "inverse", 0.1)
    torch.testing.assert_close(t, torch.tensor([[77 / 106, 22 / 106, 7 / 106], [1 / 3, 1 / 3, 1 / 3]]))


def test_softmax_importance_target_by_hand():
    e = torch.tensor([[0.0, 0.25, 1.0]])
    z = 1 + math.exp(-0.25) + math.exp(-1.0)
    expected = torch.tensor([[1 / z, math.exp(-0.25) / z, math.exp(-1.0) / z]])
    torch.testing.assert_close(importance_target(e, "softmax"), expected)


def test_importance_target_carries_no_gradient():
    uni = torch.tensor([[0.0, 0.5, 1.0]], requires_grad=True).unsqueeze(-1)
    t = importance_target(per_sample_error(uni, torch.tensor([0.0])))
    assert not t.requires_grad


def test_similarity_loss_by_hand_and_gradient_only_into_weights():
    w = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]], requires_grad=True)
    t = torch.tensor([[77 / 106, 22 / 106, 7 / 106], [1 / 3, 1 / 3, 1 / 3]], requires_grad=True)
    # differences (24, -4.5, -19.5) / 106 and 0 -> squares sum 976.5 / 106^2, mean over 6 entries
    loss = similarity_loss(w, t)
    close(loss, 976.5 / 106**2 / 6)
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    assert t.grad is None


def test_entropy_balance_is_scaled_negative_entropy_with_clamp():
    w = torch.tensor([[0.5, 0.25, 0.25], [1.0, 0.0, 0.0]])
    # row 0: 3 * (0.5 ln 0.5 + 2 * 0.25 ln 0.25) = -4.5 ln 2; row 1: ~0 (zeros clamped at 1e-9)
    close(entropy_balance_loss(w), -4.5 * LN2 / 2)
    assert torch.isfinite(entropy_balance_loss(torch.tensor([[1.0, 0.0, 0.0]])))
    close(entropy_balance_loss(torch.full((2, 3), 1 / 3)), -3 * LN3)  # uniform: the minimum


def test_distillation_sum_by_hand():
    p_fused = torch.zeros(1, 2, requires_grad=True)
    p_uni = torch.tensor([[[2 * LN3, 0.0], [0.0, 0.0], [5.0, 5.0]]], requires_grad=True)
    w = torch.tensor([[0.5, 0.5, 0.0]], requires_grad=True)
    torch.testing.assert_close(distillation_target(p_uni, w, "sum"), torch.tensor([[LN3, 0.0]]))
    # softmax(q) = (3/4, 1/4), softmax(p_c) = (1/2, 1/2) -> mean of 1/16 and 1/16
    loss = distillation_loss(p_fused, p_uni, w, "sum")
    close(loss, 1 / 16)
    loss.backward()
    assert p_fused.grad is not None and p_fused.grad.abs().sum() > 0
    assert p_uni.grad is None and w.grad is None  # no gradient through q, nor through w in q


def test_distillation_concat_by_hand():
    p_fused = torch.zeros(1, 6)
    p_uni = torch.tensor([[[LN3, 0.0], [7.0, 7.0], [9.0, 9.0]]])
    w = torch.tensor([[1.0, 0.0, 0.0]])
    q = distillation_target(p_uni, w, "concat")  # [w_l p_l ; w_v p_v ; w_a p_a], no factor 3
    torch.testing.assert_close(q, torch.tensor([[LN3, 0.0, 0.0, 0.0, 0.0, 0.0]]))
    # softmax(q) = (3, 1, 1, 1, 1, 1) / 8, softmax(p_c) = 1/6 -> diffs 5/24 and five times -1/24
    close(distillation_loss(p_fused, p_uni, w, "concat"), (25 + 5) / 576 / 6)
    with pytest.raises(ValueError, match="p_fused"):
        distillation_loss(torch.zeros(1, 2), p_uni, w, "concat")


def _output(n_out: int = 1) -> ModelOutput:
    torch.manual_seed(0)
    b, d = 4, 5
    w = torch.softmax(torch.randn(b, 3), dim=1)
    return ModelOutput(pred=torch.randn(b, n_out, requires_grad=True),
                       uni_pred=torch.randn(b, 3, n_out, requires_grad=True),
                       weights=w.requires_grad_(), h=torch.randn(b, 3, d),
                       p_uni=torch.randn(b, 3, d, requires_grad=True),
                       p_fused=torch.randn(b, d, requires_grad=True))


@pytest.mark.parametrize("task,n_out", [("regression", 1), ("classification", 3)])
def test_total_is_the_weighted_sum_of_the_terms(task, n_out):
    out = _output(n_out)
    y = torch.tensor([0.5, -1.0, 2.0, 0.0]) if task == "regression" else torch.tensor([0, 2, 1, 1])
    cfg = LossConfig(task=task, uni_weight=0.7, balance_weight=0.2, sim_alpha=0.3, distill_weight=0.4)
    terms = total_loss(out, y, cfg, "sum")
    err = per_sample_error(out.uni_pred, y, task)
    close(terms.task, val(task_loss(out.pred, y, task)))
    close(terms.uni, val(unimodal_loss(out.uni_pred, y, task)))
    close(terms.sim, val(similarity_loss(out.weights, importance_target(err))))
    close(terms.ent, val(entropy_balance_loss(out.weights)))
    close(terms.ud, val(distillation_loss(out.p_fused, out.p_uni, out.weights, "sum")))
    expected = (terms.task + 0.7 * terms.uni + 0.2 * (terms.ent + 0.3 * terms.sim) + 0.4 * terms.ud)
    close(terms.total, val(expected), 1e-5)
    floats = terms.to_floats()
    assert list(floats) == list(LOSS_NAMES) and floats["total"] == pytest.approx(val(terms.total))
    assert terms.stacked().shape == (6,) and not terms.stacked().requires_grad


def test_a_stacked_members_weight_row_gives_the_total_its_config_would_and_terms_stack_total_first():
    """The stack (``emoe.stack``) weights the terms by a (4,) tensor row in ``LOSS_WEIGHTS`` order, and a step
    returns ``stacked()``, which epochs sum into ``EPOCH_LOSSES`` columns: both orders are checked here."""
    out = _output()
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    cfg = LossConfig(uni_weight=0.7, balance_weight=0.2, sim_alpha=0.3, distill_weight=0.4)
    row = torch.tensor([getattr(cfg, name) for name in LOSS_WEIGHTS])
    alone, stacked = total_loss(out, y, cfg, "sum"), total_loss(out, y, LossConfig(), "sum", term_weights=row)
    assert val(stacked.total) == pytest.approx(val(alone.total), rel=1e-6)
    assert val(stacked.total) != pytest.approx(val(total_loss(out, y, LossConfig(), "sum").total), rel=1e-3)
    vector = alone.stacked().tolist()
    expected = {"loss": val(alone.total), **{n: val(getattr(alone, n)) for n in LOSS_TERMS}}
    assert dict(zip(EPOCH_LOSSES, vector)) == pytest.approx(expected, rel=1e-6)
    assert set(LOSS_WEIGHTS) < set(vars(cfg)) and all(isinstance(getattr(cfg, n), float) for n in LOSS_WEIGHTS)


def test_each_weight_set_to_zero_removes_its_term():
    out = _output()
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    full = total_loss(out, y, LossConfig(), "sum")
    assert val(full.total) == pytest.approx(val(full.task + full.uni + 0.1 * (full.ent + 0.1 * full.sim)
                                                  + 0.1 * full.ud), abs=1e-6)
    cases = {"uni_weight": full.uni, "distill_weight": 0.1 * full.ud, "sim_alpha": 0.1 * 0.1 * full.sim,
             "balance_weight": 0.1 * (full.ent + 0.1 * full.sim)}
    for name, removed in cases.items():
        ablated = total_loss(out, y, LossConfig(**{name: 0.0}), "sum")
        assert val(ablated.total) == pytest.approx(val(full.total - removed), abs=1e-6), name


def test_gradient_reaches_the_router_through_sim_and_ent_only():
    out = _output()
    y = torch.tensor([0.5, -1.0, 2.0, 0.0])
    cfg = LossConfig(uni_weight=0.0, distill_weight=1.0)
    terms = total_loss(out, y, cfg, "sum")
    (terms.total - terms.task).backward()  # balance and distillation terms only
    assert out.weights.grad is not None and out.weights.grad.abs().sum() > 0
    assert out.p_fused.grad is not None and out.p_fused.grad.abs().sum() > 0
    for no_grad in (out.uni_pred.grad, out.p_uni.grad):  # uni_weight 0 may leave an all-zero gradient
        assert no_grad is None or not no_grad.any()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="regression needs one output"):
        task_loss(torch.zeros(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="integer class labels"):
        task_loss(torch.zeros(2, 3), torch.zeros(2), "classification")
    with pytest.raises(ValueError, match="3 labels for a batch of 2"):
        task_loss(torch.zeros(2, 1), torch.zeros(3))
    with pytest.raises(ValueError, match="importance"):
        importance_target(torch.zeros(1, 3), "ratio")
    with pytest.raises(ValueError, match="task"):
        task_loss(torch.zeros(2, 1), torch.zeros(2), "ranking")
