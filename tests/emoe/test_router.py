"""The router: input layout (l, v, a), time-axis transfer maps, widths, temperature, constant routers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from emoe.config import ModelConfig
from emoe.model import EMOE
from emoe.router import ConstantRouter, LearnedRouter, router_in_features


def _router(**kw) -> LearnedRouter:
    args = dict(d_text=4, d_vision=2, d_audio=2, len_text=3, len_vision=3, len_audio=3)
    args.update(kw)
    return LearnedRouter(**args)


def test_flattened_input_concatenates_l_v_a_per_step_then_flattens():
    r = _router(d_text=2, d_vision=1, d_audio=1, len_text=2, len_vision=2, len_audio=2)
    text = torch.tensor([[[1.0, 1.5], [2.0, 2.5]]])
    vision = torch.tensor([[[3.0], [4.0]]])
    audio = torch.tensor([[[5.0], [6.0]]])
    assert r.transfer_v is None and r.transfer_a is None  # aligned: no transfer maps
    assert r.features(text, vision, audio).tolist() == [[1.0, 1.5, 3.0, 5.0, 2.0, 2.5, 4.0, 6.0]]
    assert r.l1.weight.shape == (1, 8) and r.l2.weight.shape == (3, 1)


def test_unaligned_inputs_are_mapped_to_text_length_over_the_time_axis_per_channel():
    r = _router(d_text=1, d_vision=2, d_audio=1, len_text=2, len_vision=4, len_audio=3)
    assert r.transfer_v is not None and r.transfer_a is not None
    assert r.transfer_v.weight.shape == (2, 4) and r.transfer_a.weight.shape == (2, 3)
    with torch.no_grad():  # vision: step 0 = mean of steps 0-1, step 1 = mean of 2-3; audio: pick steps 0, 2
        r.transfer_v.weight.copy_(torch.tensor([[0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]]))
        r.transfer_v.bias.zero_()
        r.transfer_a.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
        r.transfer_a.bias.fill_(10.0)
    text = torch.tensor([[[1.0], [2.0]]])
    vision = torch.tensor([[[1.0, 10.0], [3.0, 30.0], [5.0, 50.0], [7.0, 70.0]]])
    audio = torch.tensor([[[100.0], [200.0], [300.0]]])
    feats = r.features(text, vision, audio)
    assert feats.tolist() == [[1.0, 2.0, 20.0, 110.0, 2.0, 6.0, 60.0, 310.0]]


def test_one_unaligned_modality_maps_both_like_the_reference():
    r = _router(len_text=3, len_vision=5, len_audio=3)
    assert r.transfer_v is not None and r.transfer_a is not None
    assert r.transfer_a.weight.shape == (3, 3)


def test_mean_pooled_input_needs_no_transfer_and_is_narrow():
    r = _router(len_text=3, len_vision=7, len_audio=5, pooling="mean")
    assert r.transfer_v is None and r.transfer_a is None
    text, vision, audio = torch.randn(2, 3, 4), torch.randn(2, 7, 2), torch.randn(2, 5, 2)
    expected = torch.cat([text.mean(1), vision.mean(1), audio.mean(1)], dim=1)
    torch.testing.assert_close(r.features(text, vision, audio), expected)
    assert r.l1.weight.shape == (1, 8)  # hidden = 8 // 8


def test_widths_of_the_faithful_mosi_router():
    n_in = router_in_features("flatten", d_text=768, d_vision=20, d_audio=5, len_text=50)
    assert n_in == 50 * 793 == 39650
    assert n_in * (n_in // 8) == 196_505_400  # the ~196M weights of the first Linear
    assert router_in_features("mean", d_text=768, d_vision=20, d_audio=5, len_text=50) == 793


def test_weights_follow_the_reference_formula_and_temperature():
    torch.manual_seed(0)
    r = _router(temperature=0.1)
    text, vision, audio = torch.randn(5, 3, 4), torch.randn(5, 3, 2), torch.randn(5, 3, 2)
    x = r.features(text, vision, audio)
    hidden = torch.relu(r.l1(x) / r.l1(x).norm(dim=1, keepdim=True))
    logits = r.l2(hidden)
    w = r(text=text, vision=vision, audio=audio)
    torch.testing.assert_close(w, torch.softmax(logits * 10.0, dim=1))
    torch.testing.assert_close(w.sum(1), torch.ones(5))
    r.temperature = 1.0  # a higher temperature gives flatter weights
    w_flat = r(text=text, vision=vision, audio=audio)
    assert (w_flat.max(1).values <= w.max(1).values + 1e-6).all()


def test_invalid_router_settings_are_rejected_with_their_name():
    with pytest.raises(ValueError, match="temperature"):
        _router(temperature=0.0)
    with pytest.raises(ValueError, match="router_input"):
        _router(pooling="max")
    with pytest.raises(ValueError, match="hidden width"):
        _router(d_text=2, d_vision=2, d_audio=2, pooling="mean")


def test_constant_routers_give_the_same_weights_to_every_sample():
    text, vision, audio = torch.randn(4, 3, 4), torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    uniform = ConstantRouter()(text=text, vision=vision, audio=audio)
    torch.testing.assert_close(uniform, torch.full((4, 3), 1 / 3))
    fixed = ConstantRouter((0.5, 0.3, 0.2))(text=text, vision=vision, audio=audio)
    torch.testing.assert_close(fixed, torch.tensor([[0.5, 0.3, 0.2]]).expand(4, 3))
    assert list(ConstantRouter().parameters()) == []
    with pytest.raises(ValueError, match="fixed_weights"):
        ConstantRouter((0.5, 0.6, -0.1))


def test_router_sees_raw_inputs_not_text_dropout():
    cfg = ModelConfig(d_text=12, d_audio=3, d_vision=5, len_text=6, len_audio=6, len_vision=6, d_model=8,
                      n_heads=2, n_levels=1, kernel_l=3, kernel_v=3, kernel_a=3, text_dropout=0.9)
    torch.manual_seed(0)
    model = EMOE(cfg)
    text, audio, vision = torch.randn(3, 6, 12), torch.randn(3, 6, 3), torch.randn(3, 6, 5)
    expected = F.softmax(model.router.l2(torch.relu(F.normalize(model.router.l1(
        torch.cat([text, vision, audio], -1).flatten(1)), dim=1))) / cfg.temperature, dim=1)
    model.train()
    train_out = model(text=text, audio=audio, vision=vision)
    torch.testing.assert_close(train_out.weights, expected)
    model.eval()
    eval_out = model(text=text, audio=audio, vision=vision)
    torch.testing.assert_close(eval_out.weights, train_out.weights)
    assert (eval_out.h[:, 0] - train_out.h[:, 0]).abs().max() > 1e-4  # the text expert does see dropout
