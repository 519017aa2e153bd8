"""Reference checkpoints: renaming round trip, clear errors, and a hand-built reference-style forward."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from emoe.compat import CheckpointError, load_reference_checkpoint, load_reference_state_dict
from emoe.config import ModelConfig
from emoe.model import EMOE

TINY = dict(d_text=16, d_audio=3, d_vision=5, len_text=6, len_audio=6, len_vision=6, d_model=16, n_heads=2,
            n_levels=2, kernel_l=3, kernel_v=2, kernel_a=3)


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**TINY, **kw})


# Written independently of emoe.compat: our name prefix -> the reference implementation's prefix.
OURS_TO_REFERENCE = {
    "shared_conv.": "encoder_c.",
    "router.l1.": "Router.l1.", "router.l2.": "Router.l2.",
    "router.transfer_v.": "transfer_v_ali.", "router.transfer_a.": "transfer_a_ali.",
    **{f"proj.{m}.": f"proj_{m}." for m in "lva"},
    **{f"experts.{m}.": f"self_attentions_{m}." for m in "lva"},
    **{f"heads.{m}.fc1.": f"proj1_{m}." for m in "lva"},
    **{f"heads.{m}.fc2.": f"proj2_{m}." for m in "lva"},
    **{f"heads.{m}.out.": f"out_layer_{m}." for m in "lva"},
    "fused_head.fc1.": "proj1_c.", "fused_head.fc2.": "proj2_c.", "fused_head.out.": "out_layer_c.",
}


def to_reference(model: EMOE, cfg: ModelConfig, *, extras: bool = True) -> dict[str, torch.Tensor]:
    """The model's weights under reference names, plus the keys a reference checkpoint also carries."""
    sd: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        prefix = next(p for p in OURS_TO_REFERENCE if name.startswith(p))
        sd[OURS_TO_REFERENCE[prefix] + name[len(prefix):]] = value.clone()
    if extras:
        d = cfg.d_model
        for m in "lva":
            sd[f"encoder_{m}.weight"] = torch.randn(d, d, 1)  # defined, never used
            sd[f"self_attentions_{m}.version"] = torch.tensor([2.0])
            sd[f"self_attentions_{m}.embed_positions._float_tensor"] = torch.tensor([1.0])
        if cfg.d_text == d:  # the reference always defines proj_l, and skips it when widths agree
            sd["proj_l.weight"] = torch.randn(d, cfg.d_text, cfg.kernel_l)
        if cfg.aligned:  # defined on aligned data too, never used there
            sd["transfer_a_ali.weight"], sd["transfer_a_ali.bias"] = torch.randn(50, 50), torch.randn(50)
            sd["transfer_v_ali.weight"], sd["transfer_v_ali.bias"] = torch.randn(50, 50), torch.randn(50)
    return sd


def random_model(cfg: ModelConfig, seed: int = 0) -> EMOE:
    torch.manual_seed(seed)
    model = EMOE(cfg)
    with torch.no_grad():  # move every parameter off its initial value (zero biases, unit LayerNorms)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def inputs(cfg: ModelConfig, batch: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, cfg.len_text, cfg.d_text, generator=g)
    audio = torch.randn(batch, cfg.len_audio, cfg.d_audio, generator=g)
    vision = torch.randn(batch, cfg.len_vision, cfg.d_vision, generator=g)
    text[0, 2] = 0.0  # a zero step: the expert's first channel is exactly 0 there (position quirk)
    audio[1, :4] = 0.0  # leading padding: the first conv windows see only zeros
    return {"text": text, "audio": audio, "vision": vision}


FIELDS = ("pred", "uni_pred", "weights", "h", "p_uni", "p_fused")


@pytest.mark.parametrize("fusion,unaligned", [("sum", False), ("concat", True), ("sum", True)])
def test_reference_state_dict_round_trip_gives_identical_outputs(fusion, unaligned):
    cfg = tiny_cfg(fusion=fusion, **(dict(len_audio=9, len_vision=11) if unaligned else {}))
    source = random_model(cfg)
    loaded = load_reference_state_dict(to_reference(source, cfg), cfg).eval()
    x = inputs(cfg)
    a, b = source(**x), loaded(**x)
    for field in FIELDS:
        assert torch.equal(getattr(a, field), getattr(b, field)), field


def test_module_prefix_from_data_parallel_is_accepted(tmp_path):
    cfg = tiny_cfg()
    source = random_model(cfg)
    sd = {f"module.{k}": v for k, v in to_reference(source, cfg).items()}
    torch.save(sd, tmp_path / "emoe-mosi.pth")
    loaded = load_reference_checkpoint(tmp_path / "emoe-mosi.pth", cfg)
    x = inputs(cfg)
    assert torch.equal(source(**x).pred, loaded.eval()(**x).pred)


def test_every_problem_is_listed_at_once():
    cfg = tiny_cfg()
    sd = to_reference(random_model(cfg), cfg)
    del sd["proj1_v.bias"]
    sd["mystery.weight"] = torch.zeros(1)
    sd["Router.l2.bias"] = torch.zeros(4)
    sd["self_attentions_a.layers.7.fc1.weight"] = torch.zeros(1)  # a layer this configuration lacks
    with pytest.raises(CheckpointError) as info:
        load_reference_state_dict(sd, cfg)
    text = str(info.value)
    assert "missing from checkpoint: heads.v.fc1.bias" in text
    assert "unexpected key in checkpoint: mystery.weight" in text
    assert "shape mismatch: Router.l2.bias is (4,), the model's router.l2.bias is (3,)" in text
    assert "self_attentions_a.layers.7.fc1.weight" in text
    assert len(info.value.problems) == 4


def test_a_mean_pooled_router_cannot_take_a_reference_router():
    cfg = tiny_cfg(router_input="mean")
    with pytest.raises(CheckpointError, match="router_input"):
        load_reference_state_dict({}, cfg)


def test_constant_router_ignores_the_reference_router():
    cfg = tiny_cfg()
    sd = to_reference(random_model(cfg), cfg)
    model = load_reference_state_dict(sd, tiny_cfg(router="uniform"))
    torch.testing.assert_close(model(**inputs(cfg)).weights, torch.full((3, 3), 1 / 3))


# --- an independent forward written the way the reference code computes it -------------------

def _ref_positions(first_channel: torch.Tensor, dim: int) -> torch.Tensor:
    """fairseq make_positions + SinusoidalPositionalEmbedding on (B, L) -> (B, L, dim)."""
    b, length = first_channel.shape
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    table = torch.arange(length + 1, dtype=torch.float).unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(table), torch.cos(table)], dim=1)
    table[0] = 0
    mask = first_channel.ne(0)
    positions = first_channel.clone().masked_scatter_(mask, torch.arange(1, length + 1).to(first_channel).expand(b, length)[mask])
    return table.index_select(0, positions.long().view(-1)).view(b, length, dim)


def _ref_attention(x: torch.Tensor, sd: dict, prefix: str, n_heads: int) -> torch.Tensor:
    length, bsz, d = x.shape  # sequence first, as in the reference
    hd = d // n_heads
    q, k, v = F.linear(x, sd[prefix + "in_proj_weight"], sd[prefix + "in_proj_bias"]).chunk(3, dim=-1)
    q = (q * hd**-0.5).contiguous().view(length, bsz * n_heads, hd).transpose(0, 1)
    k = k.contiguous().view(length, bsz * n_heads, hd).transpose(0, 1)
    v = v.contiguous().view(length, bsz * n_heads, hd).transpose(0, 1)
    weights = torch.bmm(q, k.transpose(1, 2))
    weights = weights + torch.triu(torch.full((length, length), float("-inf")), 1).unsqueeze(0)
    attn = torch.bmm(F.softmax(weights.float(), dim=-1), v)
    attn = attn.transpose(0, 1).contiguous().view(length, bsz, d)
    return F.linear(attn, sd[prefix + "out_proj.weight"], sd[prefix + "out_proj.bias"])


def _ref_encoder(x_in: torch.Tensor, sd: dict, prefix: str, n_heads: int, n_levels: int) -> torch.Tensor:
    d = x_in.shape[-1]
    x = math.sqrt(d) * x_in + _ref_positions(x_in.transpose(0, 1)[:, :, 0], d).transpose(0, 1)

    def ln(t, name):
        return F.layer_norm(t, (d,), sd[name + ".weight"], sd[name + ".bias"])

    for i in range(n_levels):
        p = f"{prefix}layers.{i}."
        x = x + _ref_attention(ln(x, p + "layer_norms.0"), sd, p + "self_attn.", n_heads)
        h = F.relu(F.linear(ln(x, p + "layer_norms.1"), sd[p + "fc1.weight"], sd[p + "fc1.bias"]))
        x = x + F.linear(h, sd[p + "fc2.weight"], sd[p + "fc2.bias"])
    return ln(x, prefix + "layer_norm")


def reference_forward(sd: dict, cfg: ModelConfig, text, audio, video) -> dict[str, torch.Tensor]:
    """The reference EMOE forward in eval mode, reading the reference-named state dict directly."""
    lin = lambda t, name: F.linear(t, sd[name + ".weight"], sd[name + ".bias"])  # noqa: E731
    if cfg.aligned:
        m_i = torch.cat((text, video, audio), dim=2)
    else:
        audio_ = lin(audio.permute(0, 2, 1), "transfer_a_ali").permute(0, 2, 1)
        video_ = lin(video.permute(0, 2, 1), "transfer_v_ali").permute(0, 2, 1)
        m_i = torch.cat((text, video_, audio_), dim=2)
    r = lin(m_i.view(m_i.shape[0], -1), "Router.l1")
    m_w = torch.softmax(lin(F.relu(F.normalize(r, p=2, dim=1)), "Router.l2") / cfg.temperature, dim=1)
    feats, preds, projs = {}, {}, {}
    for m, x, d_m in (("l", text, cfg.d_text), ("v", video, cfg.d_vision), ("a", audio, cfg.d_audio)):
        x = x.transpose(1, 2)
        if d_m != cfg.d_model:
            x = F.conv1d(x, sd[f"proj_{m}.weight"])
        c = F.conv1d(x, sd["encoder_c.weight"]).permute(2, 0, 1)
        feats[m] = _ref_encoder(c, sd, f"self_attentions_{m}.", cfg.n_heads, cfg.n_levels)[-1]
        projs[m] = lin(F.relu(lin(feats[m], f"proj1_{m}")), f"proj2_{m}") + feats[m]
        preds[m] = lin(projs[m], f"out_layer_{m}")
    rows = []
    for i in range(m_w.shape[0]):
        parts = [feats["l"][i] * m_w[i][0], feats["v"][i] * m_w[i][1], feats["a"][i] * m_w[i][2]]
        rows.append(sum(parts) if cfg.fusion == "sum" else torch.cat(parts, dim=0) * 3)
    c_fusion = torch.stack(rows)
    c_proj = lin(F.relu(lin(c_fusion, "proj1_c")), "proj2_c") + c_fusion
    return {"pred": lin(c_proj, "out_layer_c"), "weights": m_w, "p_fused": c_proj,
            "uni_pred": torch.stack([preds[m] for m in "lva"], 1), "h": torch.stack([feats[m] for m in "lva"], 1),
            "p_uni": torch.stack([projs[m] for m in "lva"], 1)}


@pytest.mark.parametrize("fusion,unaligned", [("sum", False), ("concat", True)])
def test_loaded_model_matches_a_hand_built_reference_forward(fusion, unaligned):
    cfg = tiny_cfg(fusion=fusion, **(dict(len_audio=9, len_vision=11) if unaligned else {}))
    torch.manual_seed(5)
    sd = {}
    for key, value in to_reference(random_model(cfg, seed=5), cfg).items():
        sd[key] = value + 0.05 * torch.randn_like(value) if value.is_floating_point() else value
    model = load_reference_state_dict(sd, cfg).eval()
    x = inputs(cfg)
    expected = reference_forward(sd, cfg, x["text"], x["audio"], x["vision"])
    for fast in (True, False):
        out = model.set_fast_path(fast)(**x)
        for field in FIELDS:
            torch.testing.assert_close(getattr(out, field), expected[field], rtol=1e-5, atol=1e-5,
                                       msg=lambda m, f=field: f"{f}: {m}")
