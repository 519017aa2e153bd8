"""EMOE learns on the synthetic benchmark: it beats the mean predictor and its router follows reliability.

Issue 2 "Done means": a small EMOE trained on CPU in well under a minute. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from emoe.config import EMOEConfig, ModelConfig, TrainConfig
from emoe.data.synthetic import make_synthetic
from emoe.train import train_emoe


@pytest.mark.slow  # ~15 s alone, 20+ s when the shared machine is busy
def test_small_emoe_beats_mean_predictor_and_router_tracks_true_reliability():
    # The "small" preset has sequences of 8 steps and 1200 training samples: the faithful flattened router
    # has L * (d_t + d_v + d_a)^2 / 8 first-layer weights (26k here). At 20 steps and 600 samples (162k
    # weights) it memorises the training set: router/reliability correlation about 0.3 on train but under
    # 0.1 on test. With more samples per router weight it generalises.
    data = make_synthetic("small")
    # Reference losses and architecture at a small width; lr 1e-3 with an optimiser step per batch instead
    # of the reference's 1e-4 and 10-batch window, which needs ~100 epochs to get this far.
    cfg = EMOEConfig(
        model=ModelConfig(**data.dims, d_model=32, n_heads=4, n_levels=1),
        train=TrainConfig(lr=1e-3, batch_size=32, update_epochs=1, max_epochs=6, device="cpu", seed=1111),
    )
    start = time.perf_counter()
    res = train_emoe(cfg, data)
    seconds = time.perf_counter() - start

    mean_mae = float(np.abs(data.test.labels - data.train.labels.mean()).mean())
    assert res.status == "completed" and res.router is not None and res.router.reliability is not None
    w, r = res.router.weights, res.router.reliability  # (N_test, 3) each, order l, v, a
    corr = [float(np.corrcoef(w[:, m], r[:, m])[0, 1]) for m in range(3)]
    top = float((w.argmax(1) == r.argmax(1)).mean())
    print(f"\nsynthetic {data.name}: trained {res.epochs_run} epochs in {seconds:.1f} s, selected {res.best_epoch}"
          f"\n  test MAE {res.test['mae']:.3f} vs training-mean predictor {mean_mae:.3f}"
          f" (ratio {res.test['mae'] / mean_mae:.2f}), corr {res.test['corr']:.3f}"
          f"\n  router~reliability Pearson l/v/a {corr[0]:.3f} {corr[1]:.3f} {corr[2]:.3f}"
          f", top modality agrees on {top:.1%} (chance 33%)")

    # Predicting the training mean gives MAE ~1.1 here, and the label noise floors any model near 0.25;
    # observed ~0.50 (ratio ~0.45) over data/training seeds. At most 0.7x the mean predictor is a clear win
    # that a model ignoring the inputs (or one stuck near the mean) cannot reach.
    assert res.test["mae"] <= 0.7 * mean_mae
    # A router independent of the inputs has correlation 0 with the true reliabilities, with a standard
    # deviation of about 1/sqrt(300) = 0.058 per modality on 300 test samples (0.033 for the mean of three).
    # Observed 0.55-0.75; 0.3 is ~9 standard deviations above chance, and every modality must be positive.
    assert np.mean(corr) >= 0.3 and min(corr) > 0.1
    # The router's favourite modality is the truly most reliable one far more often than chance (1/3).
    assert top >= 0.45
