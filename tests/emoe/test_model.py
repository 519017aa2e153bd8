"""EMOE end to end: output structure, batched fusion, every switch, data set shapes, fast == plain, BERT."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from emoe.config import ModelConfig
from emoe.model import EMOE, fuse
from emoe.outputs import ModelOutput

SMALL = dict(d_text=12, d_audio=5, d_vision=7, len_text=8, len_audio=8, len_vision=8, d_model=16, n_heads=2,
             n_levels=2, kernel_l=3, kernel_v=2, kernel_a=3)
UNALIGNED = dict(len_audio=11, len_vision=13)


def small_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{**SMALL, **kw})


def inputs(cfg: ModelConfig, batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"text": torch.randn(batch, cfg.len_text, cfg.d_text, generator=g),
            "audio": torch.randn(batch, cfg.len_audio, cfg.d_audio, generator=g),
            "vision": torch.randn(batch, cfg.len_vision, cfg.d_vision, generator=g)}


def test_output_structure_and_shapes():
    cfg = small_cfg(n_outputs=1)
    torch.manual_seed(0)
    out = EMOE(cfg).eval()(**inputs(cfg, batch=3))
    assert isinstance(out, ModelOutput)
    assert out.pred.shape == (3, 1) and out.uni_pred.shape == (3, 3, 1)
    assert out.weights.shape == (3, 3) and out.h.shape == (3, 3, 16)
    assert out.p_uni.shape == (3, 3, 16) and out.p_fused.shape == (3, 16)
    torch.testing.assert_close(out.weights.sum(1), torch.ones(3))


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_batched_fusion_equals_the_per_sample_formula(fusion):
    torch.manual_seed(0)
    h, w = torch.randn(5, 3, 4), torch.softmax(torch.randn(5, 3), dim=1)
    rows = []
    for i in range(5):  # the reference's loop over the batch
        if fusion == "sum":
            rows.append(h[i, 0] * w[i, 0] + h[i, 1] * w[i, 1] + h[i, 2] * w[i, 2])
        else:
            rows.append(torch.cat([h[i, 0] * w[i, 0], h[i, 1] * w[i, 1], h[i, 2] * w[i, 2]]) * 3)
    torch.testing.assert_close(fuse(h, w, fusion), torch.stack(rows))


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_model_fused_head_sees_the_weighted_fusion_of_expert_outputs(fusion):
    cfg = small_cfg(fusion=fusion)
    torch.manual_seed(1)
    model = EMOE(cfg).eval()
    out = model(**inputs(cfg, batch=4))
    rows = []
    for i in range(4):
        parts = [out.h[i, m] * out.weights[i, m] for m in range(3)]
        rows.append(sum(parts) if fusion == "sum" else torch.cat(parts) * 3)
    p_fused, pred = model.fused_head(torch.stack(rows))
    torch.testing.assert_close(out.p_fused, p_fused)
    torch.testing.assert_close(out.pred, pred)
    for m, name in enumerate("lva"):  # unimodal heads read their own expert's output
        p, y = model.heads[name](out.h[:, m])
        torch.testing.assert_close(out.p_uni[:, m], p)
        torch.testing.assert_close(out.uni_pred[:, m], y)


def _assert_trains(model: torch.nn.Module, out: ModelOutput) -> None:
    loss = out.pred.float().sum() + out.uni_pred.float().sum() + (out.weights * torch.arange(3.0)).sum()
    loss = loss + out.p_fused.float().square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad}"


ROUTERS = [("learned", "flatten"), ("learned", "mean"), ("uniform", "flatten"), ("fixed", "flatten")]
COMBOS = [(*r, f, a, n) for r, f, a, n in itertools.product(ROUTERS, ["sum", "concat"], [True, False], [1])]
COMBOS += [("learned", "flatten", "sum", False, 4), ("fixed", "mean", "concat", True, 3)]


@pytest.mark.parametrize("router,router_input,fusion,aligned,n_outputs", COMBOS)
def test_forward_and_backward_for_every_switch_combination(router, router_input, fusion, aligned, n_outputs):
    cfg = small_cfg(router=router, router_input=router_input, fusion=fusion, n_outputs=n_outputs,
                    fixed_weights=(0.5, 0.3, 0.2), **({} if aligned else UNALIGNED))
    torch.manual_seed(0)
    model = EMOE(cfg).train()
    out = model(**inputs(cfg))
    assert out.pred.shape == (2, n_outputs) and out.uni_pred.shape == (2, 3, n_outputs)
    assert out.p_fused.shape == (2, 16 * (3 if fusion == "concat" else 1))
    if router == "fixed":
        torch.testing.assert_close(out.weights, torch.tensor([[0.5, 0.3, 0.2]] * 2))
    has_transfer = router == "learned" and router_input == "flatten" and not aligned
    assert (getattr(model.router, "transfer_v", None) is not None) == has_transfer
    _assert_trains(model, out)


DATASETS = {  # (d_text, d_audio, d_vision, len_text, len_audio, len_vision)
    "mosi_aligned": (768, 5, 20, 50, 50, 50),
    "mosi_unaligned": (768, 5, 20, 50, 375, 500),
    "mosei_aligned": (768, 74, 35, 50, 50, 50),
    "mosei_unaligned": (768, 74, 35, 50, 500, 500),
}


def _dataset_cfg(name: str, **kw) -> ModelConfig:
    d_t, d_a, d_v, l_t, l_a, l_v = DATASETS[name]
    return ModelConfig(d_text=d_t, d_audio=d_a, d_vision=d_v, len_text=l_t, len_audio=l_a, len_vision=l_v,
                       **kw)


@pytest.mark.parametrize("name", list(DATASETS))
def test_forward_and_backward_on_mosi_and_mosei_shapes(name):
    cfg = _dataset_cfg(name, d_model=8, n_heads=2, n_levels=1, router_input="mean")
    torch.manual_seed(0)
    model = EMOE(cfg).train()
    out = model(**inputs(cfg))
    assert out.pred.shape == (2, 1) and out.h.shape == (2, 3, 8)
    _assert_trains(model, out)


@pytest.mark.parametrize("fusion", ["sum", "concat"])
def test_fast_path_equals_plain_path_for_the_whole_model(fusion):
    cfg = small_cfg(fusion=fusion, **UNALIGNED)
    torch.manual_seed(2)
    model = EMOE(cfg).eval()
    x = inputs(cfg, batch=3)
    results = []
    for fast in (True, False):
        model.set_fast_path(fast).zero_grad()
        out = model(**x)
        (out.pred.sum() + out.uni_pred.sum() + out.p_fused.square().sum()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters()])
        results.append((out, grads))
    (fast_out, fast_grad), (plain_out, plain_grad) = results
    for field in ("pred", "uni_pred", "weights", "h", "p_uni", "p_fused"):
        torch.testing.assert_close(getattr(fast_out, field), getattr(plain_out, field), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=1e-4, atol=1e-5)


def test_eval_is_deterministic_and_training_uses_dropout():
    cfg = small_cfg()
    torch.manual_seed(3)
    model = EMOE(cfg).eval()
    x = inputs(cfg)
    assert torch.equal(model(**x).pred, model(**x).pred)
    model.train()
    a, b = model(**x).pred, model(**x).pred
    assert not torch.equal(a, b)


def test_projection_is_skipped_when_the_input_width_equals_d_model():
    cfg = small_cfg(d_text=16)
    model = EMOE(cfg)
    assert set(model.proj) == {"v", "a"}
    out = model.eval()(**inputs(cfg))
    assert out.h.shape == (2, 3, 16)


def test_bad_input_shapes_are_named():
    cfg = small_cfg()
    model = EMOE(cfg)
    text, audio, vision = inputs(cfg).values()
    with pytest.raises(ValueError, match=r"text: expected shape \(batch, 8, 12\)"):
        model(text=text[:, :5], audio=audio, vision=vision)
    with pytest.raises(ValueError, match="audio"):
        model(text=text, audio=vision, vision=audio)  # swapped modalities
    with pytest.raises(ValueError, match="batch sizes differ"):
        model(text=text, audio=audio[:1], vision=vision)
    with pytest.raises(TypeError):
        model(text, audio, vision)  # keyword-only: a positional swap cannot happen silently


def test_model_runs_in_float64_and_bfloat16_autocast():
    cfg = small_cfg()
    torch.manual_seed(4)
    model = EMOE(cfg).double().eval()
    out = model(**{k: t.double() for k, t in inputs(cfg).items()})
    assert out.pred.dtype == torch.float64
    model = EMOE(cfg).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs(cfg))
    assert torch.isfinite(out.pred.float()).all()
    _assert_trains(model, out)


_FAITHFUL_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import torch
    from emoe.config import ModelConfig
    from emoe.model import EMOE
    d_t, d_a, d_v, l_t, l_a, l_v = json.loads(sys.argv[1])
    cfg = ModelConfig(d_text=d_t, d_audio=d_a, d_vision=d_v, len_text=l_t, len_audio=l_a, len_vision=l_v)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = EMOE(cfg).train()
    text, audio, vision = torch.randn(2, l_t, d_t), torch.randn(2, l_a, d_a), torch.randn(2, l_v, d_v)
    out = model(text=text, audio=audio, vision=vision)
    (out.pred.sum() + out.uni_pred.sum() + out.weights[:, 0].sum()).backward()
    # a norm per gradient: isfinite() on the router's gradient would itself allocate several copies
    grads_ok = all(p.grad is not None and bool(torch.isfinite(torch.linalg.vector_norm(p.grad)))
                   for p in model.parameters())
    print(json.dumps({"router_l1": model.router.l1.weight.numel(),
                      "params": sum(p.numel() for p in model.parameters()),
                      "grads_ok": grads_ok, "seconds": time.perf_counter() - start,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


@pytest.mark.slow
@pytest.mark.parametrize("name,router_in", [("mosi_unaligned", 50 * 793), ("mosei_unaligned", 50 * 877)])
def test_full_size_faithful_model_constructs_and_trains_one_step_within_memory(name, router_in):
    """The faithful configuration (d_model 256, 4 levels, flattened router) in a fresh process.

    The first router layer dominates: P = router_in * (router_in // 8) float32 weights (196.5M on MOSI,
    240.4M on MOSEI). Weights plus gradients are 8P bytes; the peak must stay below 8P + 1 GiB, which
    leaves room for torch itself (~0.25 GiB), the other 11M parameters and the activations (~0.3 GiB),
    but fails on one more copy of the router's weights (4P bytes, 0.75-0.9 GiB).
    """
    result = subprocess.run([sys.executable, "-c", _FAITHFUL_SCRIPT, json.dumps(DATASETS[name])],
                            capture_output=True, text=True, timeout=600, check=True)
    info = json.loads(result.stdout.strip().splitlines()[-1])
    router_weights = router_in * (router_in // 8)
    assert info["router_l1"] == router_weights
    assert info["grads_ok"]
    print(f"\n{name}: {info['params'] / 1e6:.1f}M parameters, peak RSS {info['peak_rss_mb']:.0f} MB, "
          f"{info['seconds']:.1f} s")
    assert info["peak_rss_mb"] < (8 * router_weights) / 2**20 + 1024


# --- text as BERT token triples (optional extra) -------------------------------------------------

def _tiny_bert_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(tmp_path)
    return tmp_path


def _tokens(batch: int, length: int) -> torch.Tensor:
    ids = torch.randint(1, 60, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -3:] = 0
    return torch.stack([ids, mask, torch.zeros_like(ids)], dim=1)  # (B, 3, L)


def test_bert_text_input_trains_end_to_end(tmp_path):
    path = _tiny_bert_dir(tmp_path)
    cfg = small_cfg(text_input="bert", bert_path=str(path), d_text=768)
    torch.manual_seed(0)
    model = EMOE(cfg).train()
    assert model.dims["l"] == 16  # the BERT hidden size replaces d_text
    x = inputs(cfg)
    audio, vision = x["audio"], x["vision"]
    out = model(text=_tokens(2, cfg.len_text), audio=audio, vision=vision)
    assert out.pred.shape == (2, 1)
    (out.pred.sum() + out.uni_pred.sum()).backward()
    emb = model.text_encoder.model.embeddings.word_embeddings.weight
    assert emb.grad is not None and emb.grad.abs().sum() > 0  # BERT is fine-tuned
    with pytest.raises(ValueError, match="BERT tokens"):
        model(text=torch.randn(2, cfg.len_text, 16), audio=audio, vision=vision)


def test_bert_loading_errors_name_the_problem(tmp_path):
    pytest.importorskip("transformers")
    from emoe.bert import load_bert

    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_bert(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_bert(tmp_path)


def test_missing_transformers_gives_an_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    cfg = small_cfg(text_input="bert", bert_path=str(tmp_path))
    with pytest.raises(ImportError, match=r"pip install -e '\.\[bert\]'"):
        EMOE(cfg)
