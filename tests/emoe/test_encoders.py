"""The modality experts: sinusoidal positions and their quirk, causal attention, fast path == plain path."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from emoe.encoders import CausalSelfAttention, TransformerEncoder, position_embedding, sinusoidal_table


def test_sinusoidal_table_matches_the_formula_by_hand():
    # dim 4: half 2, frequencies exp(-i * ln(10000) / (2 - 1)) = 1 and 1e-4
    table = sinusoidal_table(3, 4)
    assert table.shape == (4, 4)
    assert torch.equal(table[0], torch.zeros(4))
    for p in (1, 2, 3):
        expected = torch.tensor([math.sin(p), math.sin(p * 1e-4), math.cos(p), math.cos(p * 1e-4)])
        torch.testing.assert_close(table[p], expected, rtol=0, atol=1e-6)


def test_sinusoidal_table_rejects_odd_width():
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(5, 7)


def test_positions_start_at_one_and_zero_first_channel_means_padding():
    x = torch.ones(2, 4, 6)
    x[0, 1, 0] = 0.0  # sample 0, step 1: first channel exactly 0 -> the zero row
    x[1, 3, 0] = 0.0
    x[1, 2, 1] = 0.0  # a zero elsewhere than the first channel changes nothing
    pos = position_embedding(x)
    table = sinusoidal_table(4, 6)
    assert torch.equal(pos[0, 1], torch.zeros(6))
    assert torch.equal(pos[1, 3], torch.zeros(6))
    # steps after a padded step keep their own index (position t + 1, not a running count)
    assert torch.equal(pos[0, 2], table[3])
    assert torch.equal(pos[0, 0], table[1])
    assert torch.equal(pos[1, 2], table[3])


def _copy_to_torch_mha(attn: CausalSelfAttention) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(attn.dim, attn.n_heads, batch_first=True)
    mha.load_state_dict(attn.state_dict())  # same parameter names and layout
    return mha.eval()


@pytest.mark.parametrize("fast", [True, False])
def test_attention_equals_torch_multihead_attention_with_a_future_mask(fast):
    torch.manual_seed(0)
    attn = CausalSelfAttention(16, 4).eval()
    x = torch.randn(3, 7, 16)
    mask = torch.ones(7, 7, dtype=torch.bool).triu(1)  # True = not allowed
    expected, _ = _copy_to_torch_mha(attn)(x, x, x, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(attn(x, fast=fast), expected, rtol=1e-5, atol=1e-6)


def test_last_query_only_equals_last_row_of_full_attention():
    torch.manual_seed(1)
    attn = CausalSelfAttention(8, 2).eval()
    x = torch.randn(2, 5, 8)
    full = attn(x, fast=False)
    for fast in (True, False):
        torch.testing.assert_close(attn(x, fast=fast, last_only=True)[:, 0], full[:, -1], rtol=1e-5, atol=1e-6)


def _encoder(seed: int = 0, **kw) -> TransformerEncoder:
    torch.manual_seed(seed)
    enc = TransformerEncoder(16, 4, 2, **kw)
    with torch.no_grad():  # non-trivial biases and LayerNorm affine parameters too
        for p in enc.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return enc.eval()


@pytest.mark.parametrize("fast", [True, False])
def test_causal_mask_holds_later_steps_do_not_change_earlier_outputs(fast):
    enc = _encoder()
    x = torch.randn(2, 9, 16)
    before = enc.sequence(x, fast=fast)
    x2 = x.clone()
    x2[:, 6:] = torch.randn(2, 3, 16)  # change steps 6..8
    after = enc.sequence(x2, fast=fast)
    torch.testing.assert_close(after[:, :6], before[:, :6], rtol=0, atol=1e-6)
    assert (after[:, 6:] - before[:, 6:]).abs().max() > 1e-3  # the changed steps do change


def test_earlier_steps_reach_the_last_output():
    enc = _encoder()
    x = torch.randn(2, 9, 16)
    x2 = x.clone()
    x2[:, 0] = torch.randn(2, 16)  # (a constant shift of all channels would vanish in the LayerNorms)
    assert (enc(x2) - enc(x)).abs().max() > 1e-3


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
def test_fast_path_equals_plain_path_outputs_and_gradients(dtype, tol):
    enc = _encoder(3).to(dtype)
    x = torch.randn(4, 12, 16, dtype=dtype)
    x[1, 3, 0] = 0.0  # exercise the position quirk on both paths
    outs, grads = [], []
    for fast in (True, False):
        enc.zero_grad()
        out = enc(x, fast=fast)
        (out**2).sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in enc.parameters()]))
    assert outs[0].shape == (4, 16)
    torch.testing.assert_close(outs[0], outs[1], rtol=tol, atol=tol)
    torch.testing.assert_close(grads[0], grads[1], rtol=tol * 10, atol=tol * 10)


def test_forward_is_the_last_step_of_the_sequence_output():
    enc = _encoder(4)
    x = torch.randn(2, 6, 16)
    torch.testing.assert_close(enc(x), enc.sequence(x)[:, -1], rtol=1e-5, atol=1e-5)


def test_dropout_only_in_training():
    enc = _encoder(5, attn_dropout=0.5, relu_dropout=0.5, res_dropout=0.5, embed_dropout=0.5)
    x = torch.randn(2, 6, 16)
    assert torch.equal(enc(x), enc(x))
    enc.train()
    torch.manual_seed(0)
    a = enc(x)
    torch.manual_seed(1)
    assert (a - enc(x)).abs().max() > 1e-4


def test_reference_initialisation_xavier_weights_zero_biases():
    torch.manual_seed(0)
    enc = TransformerEncoder(32, 4, 1)
    layer = enc.layers[0]
    for bias in (layer.self_attn.in_proj_bias, layer.self_attn.out_proj.bias, layer.fc1.bias, layer.fc2.bias):
        assert torch.equal(bias, torch.zeros_like(bias))
    bound = math.sqrt(6 / (32 + 128))  # Xavier-uniform bound of fc1 (32 -> 128)
    assert layer.fc1.weight.abs().max() <= bound
    assert layer.fc1.weight.abs().max() > 0.9 * bound
