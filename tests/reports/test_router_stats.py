"""Router statistics by hand: reliability correlations, label bins and per-bin mean weights over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reports.router_stats import (
    has_reliability,
    label_bins,
    reliability_correlation,
    weights_by_label,
    weights_long,
)


def _router() -> pd.DataFrame:
    """Two seeds x four samples; w_l tracks r_l, w_v is constant, w_a = the rest."""
    r_l = np.array([0.1, 0.4, 0.5, 0.9, 0.2, 0.3, 0.6, 0.8])
    w_l = np.array([0.2, 0.3, 0.5, 0.7, 0.1, 0.4, 0.4, 0.6])
    w_v = np.full(8, 0.2)
    return pd.DataFrame({
        "variant": "full", "trial_id": ["t1"] * 4 + ["t2"] * 4, "config_id": "c", "seed": [1] * 4 + [2] * 4,
        "sample": np.tile(np.arange(4), 2), "label": [-2.6, -0.2, 0.3, 2.9, -2.6, -0.2, 0.3, 2.9],
        "w_l": w_l, "w_v": w_v, "w_a": 1 - w_l - w_v, "r_l": r_l, "r_v": np.linspace(0, 1, 8), "r_a": 1 - r_l,
    })


def test_weights_long_has_one_row_per_sample_and_modality() -> None:
    long = weights_long(_router())
    assert len(long) == 8 * 3 and set(long["modality"]) == {"l", "v", "a"}
    lw = long[long.modality == "l"]
    np.testing.assert_allclose(lw["weight"], _router()["w_l"])
    np.testing.assert_allclose(lw["reliability"], _router()["r_l"])


def test_reliability_correlation_pooled_and_per_seed() -> None:
    r = _router()
    corr = reliability_correlation(r).set_index("modality")
    expected = np.corrcoef(r["w_l"], r["r_l"])[0, 1]
    assert corr.loc["l", "r_pooled"] == pytest.approx(expected)
    assert corr.loc["l", "n_samples"] == 8
    per_seed = [np.corrcoef(g["w_l"], g["r_l"])[0, 1] for _, g in r.groupby("seed")]
    assert corr.loc["l", "n"] == 2 and corr.loc["l", "mean"] == pytest.approx(np.mean(per_seed))
    assert np.isnan(corr.loc["v", "r_pooled"])  # constant weight: correlation undefined, not 0
    assert corr.loc["a", "r_pooled"] == pytest.approx(np.corrcoef(r["w_a"], r["r_a"])[0, 1])


def test_has_reliability() -> None:
    r = _router()
    assert has_reliability(r)
    assert not has_reliability(r.assign(r_l=np.nan, r_v=np.nan, r_a=np.nan))
    assert not has_reliability(r.drop(columns=["r_a"]))


def test_label_bins_rules() -> None:
    sentiment = label_bins(np.array([-2.6, -0.2, 0.3, 2.9, 1.4, -1.6, 0.8, 2.2, -0.9, 0.1, 1.1]))
    assert list(sentiment.cat.categories) == ["−3", "−2", "−1", "0", "1", "2", "3"]
    assert list(sentiment[:4]) == ["−3", "0", "0", "3"]  # rounded; -0.2 -> "0", never "-0"
    classes = label_bins(np.array([0, 1, 2, 1, 0]))
    assert list(classes.cat.categories) == ["0", "1", "2"]
    wide = label_bins(np.linspace(-10, 10, 50))
    assert len(wide.cat.categories) == 7 and wide.notna().all()


def test_weights_by_label_means_over_seeds() -> None:
    out = weights_by_label(_router())
    assert list(out.columns[:3]) == ["variant", "label_bin", "modality"]
    # bin "0" holds samples 1 and 2 of each seed: seed1 w_l mean (0.3+0.5)/2=0.4, seed2 (0.4+0.4)/2=0.4
    zero_l = out[(out.label_bin == "0") & (out.modality == "l")].iloc[0]
    assert zero_l["n_samples"] == 4 and zero_l["n"] == 2
    assert zero_l["mean"] == pytest.approx(0.4) and zero_l["std"] == pytest.approx(0.0)
    # bin "3": seed1 0.7, seed2 0.6 -> mean 0.65, std sqrt(0.005)
    three_l = out[(out.label_bin == "3") & (out.modality == "l")].iloc[0]
    assert three_l["mean"] == pytest.approx(0.65) and three_l["std"] == pytest.approx(np.sqrt(0.005))
    assert list(out["label_bin"].cat.categories) == ["−3", "0", "3"]
    np.testing.assert_allclose(out.groupby(["label_bin"], observed=True)["mean"].sum(), 1.0)  # weights sum to 1
