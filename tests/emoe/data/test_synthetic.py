"""The synthetic benchmark: determinism, shapes, MOSI-like labels, and reliabilities a router can learn."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from emoe.config import ModelConfig
from emoe.data import DataError, check_compatible
from emoe.data.arrays import Split
from emoe.data.synthetic import PRESETS, SyntheticSpec, make_synthetic, synthetic_spec

FIELDS = ("text", "audio", "vision", "labels", "ids", "reliability", "audio_lengths", "vision_lengths")


def _same(a: Split, b: Split) -> bool:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if (x is None) != (y is None):
            return False
        if x is not None and (x.dtype != y.dtype or x.tobytes() != y.tobytes()):
            return False
    return True


def test_deterministic_and_split_streams_independent() -> None:
    spec = synthetic_spec("tiny", ragged=True, len_audio=12, seed=7)
    a, b = make_synthetic(spec), make_synthetic(spec)
    assert all(_same(a.splits()[s], b.splits()[s]) for s in ("train", "valid", "test"))  # bit-identical
    other = make_synthetic(dataclasses.replace(spec, seed=8))
    assert not np.array_equal(a.train.text, other.train.text)
    bigger_test = make_synthetic(dataclasses.replace(spec, n_test=50))
    assert _same(a.train, bigger_test.train) and _same(a.valid, bigger_test.valid)


def test_shapes_dtypes_and_compatibility() -> None:
    data = make_synthetic("small")
    spec = PRESETS["small"]
    assert (len(data.train), len(data.valid), len(data.test)) == (spec.n_train, spec.n_valid, spec.n_test)
    assert data.train.text.shape == (1200, 8, 32) and data.train.audio.shape == (1200, 8, 5)
    assert data.train.vision.shape == (1200, 8, 20) and data.train.reliability.shape == (1200, 3)
    s = data.train
    for arr in (s.text, s.audio, s.vision, s.labels, s.reliability):
        assert arr.dtype == np.float32 and np.isfinite(arr).all()
    assert data.label_kind == "mosi" and data.name == "synthetic:small(seed=0)"
    assert len(set(data.test.ids)) == len(data.test)
    check_compatible(data, ModelConfig(**data.dims))


def test_unaligned_ragged_padding_matches_lengths() -> None:
    data = make_synthetic(synthetic_spec("tiny", len_audio=30, len_vision=40, ragged=True))
    s = data.valid
    assert s.audio.shape[1] == 30 and s.vision.shape[1] == 40 and s.text.shape[1] == 8
    assert s.audio_lengths.min() >= 15 and s.audio_lengths.max() <= 30
    steps = np.arange(40)[None, :]
    nonzero = np.abs(s.vision).sum(axis=2) > 0
    np.testing.assert_array_equal(nonzero, steps < s.vision_lengths[:, None])  # zero padding past the length


def test_labels_mosi_like() -> None:
    y = make_synthetic(synthetic_spec("small", n_train=4000)).train.labels
    assert y.min() >= -3 and y.max() <= 3
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-5)  # 1/3 grid of averaged scores
    assert 0.04 < np.mean(y == 0) < 0.2  # a share of exact zeros
    assert np.mean(y > 0) > 0.35 and np.mean(y < 0) > 0.3  # both signs, roughly centred
    assert abs(y.mean()) < 0.4 and 1.0 < y.std() < 2.0
    assert len(np.unique(y)) >= 15


def test_reliability_varies_per_sample_and_is_visible_in_inputs() -> None:
    data = make_synthetic("small")
    s, r = data.test, data.test.reliability
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)
    best = np.bincount(r.argmax(axis=1), minlength=3) / len(r)
    assert best.min() > 0.2  # every modality is the most reliable one for many samples
    for m, x in enumerate((s.text, s.vision, s.audio)):
        roughness = np.mean(np.diff(x, axis=1) ** 2, axis=(1, 2))  # a raw-input statistic
        rho = spearmanr(roughness, r[:, m]).statistic
        assert rho < -0.8, (m, rho)
    # a linear read-out of the time-mean inputs (what a linear router can do) also recovers the label share
    for m, name in enumerate(("text", "vision", "audio")):
        train_x, test_x = _time_mean(data.train, name), _time_mean(s, name)
        coef, *_ = np.linalg.lstsq(train_x, _share(data.train.reliability, m), rcond=None)
        fit = np.corrcoef(test_x @ coef, _share(r, m))[0, 1]
        assert fit > 0.8, (name, fit)


def _time_mean(split: Split, name: str) -> np.ndarray:
    x = getattr(split, name).mean(axis=1)
    return np.hstack([x, np.ones((len(x), 1), np.float32)])  # with an intercept column


def _share(reliability: np.ndarray, m: int) -> np.ndarray:
    return reliability[:, m] / reliability.max(axis=1)  # the label share c_m of the generative model


def _pooled(s: Split) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    xs = (s.text, s.vision, s.audio)
    means = [torch.from_numpy(x.mean(axis=1)) for x in xs]
    rough = np.stack([np.log(np.mean(np.diff(x, axis=1) ** 2, axis=(1, 2))) for x in xs], axis=1)
    return means, torch.from_numpy(rough), torch.from_numpy(s.labels)


def _fit_gated(data: object, gate: bool) -> tuple[float, np.ndarray]:
    """Linear expert per modality on time-mean features; router = MLP on per-modality roughness."""
    torch.manual_seed(0)
    tr, te = _pooled(data.train), _pooled(data.test)  # type: ignore[attr-defined]
    experts = torch.nn.ModuleList([torch.nn.Linear(m.shape[1], 1) for m in tr[0]])
    router = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    opt = torch.optim.Adam([*experts.parameters(), *router.parameters()], lr=1e-2)

    def forward(means: list[torch.Tensor], rough: torch.Tensor) -> tuple[torch.Tensor, ...]:
        p = torch.cat([e(m) for e, m in zip(experts, means)], dim=1)
        w = torch.softmax(router(rough), dim=1) if gate else torch.full_like(p, 1 / 3)
        return (w * p).sum(dim=1), w, p

    for _ in range(400):
        pred, _, p = forward(tr[0], tr[1])
        loss = (pred - tr[2]).abs().mean() + (p - tr[2][:, None]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred, w, _ = forward(te[0], te[1])
    return float((pred - te[2]).abs().mean()), w.numpy()


def test_input_router_beats_equal_weights_and_follows_reliability() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = make_synthetic("small")
        mae_equal, _ = _fit_gated(data, gate=False)
        mae_gated, w = _fit_gated(data, gate=True)
    finally:
        torch.set_num_threads(threads)
    mae_mean = float(np.abs(data.test.labels - data.train.labels.mean()).mean())
    corr = [np.corrcoef(w[:, m], data.test.reliability[:, m])[0, 1] for m in range(3)]
    print(f"test MAE: train mean {mae_mean:.3f}, equal weights {mae_equal:.3f}, "
          f"input router {mae_gated:.3f}; corr(w, r) l/v/a {np.round(corr, 2)}")
    # Equal weights keep the distractor content of unreliable modalities: the per-sample router must do
    # much better (seen: mean 1.10, equal 0.78, router 0.34; floor ~0.8 * label_noise = 0.24).
    assert mae_equal < 0.8 * mae_mean
    assert mae_gated < 0.7 * mae_equal
    assert min(corr) > 0.5


def test_mosi_sized_generation_is_fast() -> None:
    start = time.perf_counter()
    data = make_synthetic("mosi")
    elapsed = time.perf_counter() - start
    print(f"MOSI-sized synthetic set (1284/229/686, L 50, dims 768/5/20): {elapsed:.2f} s, "
          f"{sum(s.nbytes for s in data.splits().values()) / 1e6:.0f} MB")
    assert data.dims == {"d_text": 768, "len_text": 50, "d_audio": 5, "len_audio": 50, "d_vision": 20,
                         "len_vision": 50}
    assert (len(data.train), len(data.valid), len(data.test)) == (1284, 229, 686)
    assert elapsed < 30  # a few seconds on one core; generous for a shared CI machine


def test_presets_and_spec_errors() -> None:
    mosei = PRESETS["mosei"]
    assert (mosei.n_train, mosei.n_valid, mosei.n_test) == (16326, 1871, 4659)
    assert (mosei.d_text, mosei.d_audio, mosei.d_vision, mosei.len_text) == (768, 74, 35, 50)
    assert PRESETS["mosi_unaligned"].len_audio == 375 and PRESETS["mosi_unaligned"].len_vision == 500
    with pytest.raises(DataError) as info:
        SyntheticSpec(n_train=0, noise=-1.0, concentration=(1.0, 0.0, 1.0), zero_share=1.5)
    msg = str(info.value)
    assert all(f in msg for f in ("n_train:", "noise:", "concentration:", "zero_share:"))
    with pytest.raises(DataError, match="unknown 'huge'"):
        synthetic_spec("huge")
    with pytest.raises(DataError, match="unknown field"):
        synthetic_spec("small", n_trian=5)
    assert synthetic_spec("small", seed=3).describe() == "synthetic:small(seed=3)"
    assert synthetic_spec("small", noise=0.5).describe() == "synthetic(noise=0.5)"
    assert synthetic_spec("tiny", concentration=[2, 2, 2]).concentration == (2, 2, 2)
    listed = SyntheticSpec(concentration=[0.5, 0.5, 0.5])  # type: ignore[arg-type]
    assert hash(listed) == hash(PRESETS["small"]) and listed.describe() == "synthetic:small(seed=0)"
