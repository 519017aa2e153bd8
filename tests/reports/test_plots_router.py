"""Router figures: violins per modality and level, correlation text, bar heights per label bin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PathCollection, PolyCollection
from matplotlib.patches import Rectangle

from reports.load import completed, load_study
from reports.plots import (
    plot_router_by_label,
    plot_router_correlation,
    plot_router_reliability,
    plot_router_weights,
)
from reports.router_stats import weights_by_label


@pytest.fixture(scope="module")
def router(ablation_dir: Path) -> pd.DataFrame:
    study = load_study(ablation_dir)
    return completed(study.router, study.trials)


def test_weight_violins_per_level_and_modality(router: pd.DataFrame) -> None:
    sub = router[router.variant.isin(["full", "no_distill", "uniform_router"])]
    ax = plot_router_weights(sub, order=["full", "no_distill", "uniform_router"])
    violins = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(violins) == 2 * 3  # two learned routers x three modalities
    flat = [c for c in ax.collections if isinstance(c, LineCollection) and np.allclose(
        np.concatenate([s[:, 1] for s in c.get_segments()]), 1 / 3)]
    assert len(flat) == 3  # the uniform router: a constant 1/3, drawn as a bar, not a KDE
    for v in violins:  # each violin spans the data range of its weights
        y = np.concatenate([p.vertices[:, 1] for p in v.get_paths()])
        assert y.min() >= 0 and y.max() <= 1
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Language", "Vision", "Acoustic"]
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:3] == ["full", "no_distill", "uniform_router"] and "5 seed(s)" in texts[3]
    with pytest.raises(ValueError, match="at most 2"):
        plot_router_weights(sub, max_levels=2)


def test_reliability_panels_show_pearson_r(router: pd.DataFrame) -> None:
    full = router[router.variant == "full"]
    fig = plot_router_reliability(full, max_points=200)
    axes = [a for a in fig.axes if a.collections]
    assert len(axes) == 3
    for ax, m, name in zip(axes, "lva", ("Language", "Vision", "Acoustic")):
        r = np.corrcoef(full[f"w_{m}"], full[f"r_{m}"])[0, 1]
        assert ax.get_title() == f"{name}: r = {r:.2f}".replace("-", "−")
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert len(points.get_offsets()) == 200
    assert "600 test samples" in fig.get_suptitle()
    with pytest.raises(ValueError, match="several variants"):
        plot_router_reliability(router)
    with pytest.raises(ValueError, match="no true reliabilities"):
        plot_router_reliability(full.assign(r_l=np.nan, r_v=np.nan, r_a=np.nan))


def test_weights_by_label_bars(router: pd.DataFrame) -> None:
    full = router[router.variant == "full"]
    ax = plot_router_by_label(full)
    summ = weights_by_label(full)
    bins = list(summ["label_bin"].cat.categories)
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 3 * len(bins)
    for i, m in enumerate("lva"):
        heights = [b.get_height() for b in bars[i * len(bins):(i + 1) * len(bins)]]
        expected = summ[summ.modality == m].set_index("label_bin").reindex(bins)["mean"]
        np.testing.assert_allclose(heights, expected, rtol=1e-10)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    counts = summ[summ.modality == "l"].set_index("label_bin").reindex(bins)["n_samples"]
    assert labels == [f"{b}\n({c})" for b, c in zip(bins, counts)]
    assert "error bars: 95% CI over n=5 seeds" in ax.get_legend().get_title().get_text()
    errs = [c for c in ax.containers if getattr(c, "has_yerr", False)]
    assert [len(c.lines[2][0].get_segments()) for c in errs] == [len(bins)] * 3
    one = full[full["trial_id"] == full["trial_id"].iloc[0]]  # one seed: no error bars at all (were of length 0)
    ax = plot_router_by_label(one)
    assert all(len(c.lines[2][0].get_segments()) == 0 for c in ax.containers if getattr(c, "has_yerr", False))
    assert "one seed: no error bars" in ax.get_legend().get_title().get_text()


def test_router_correlation_against_a_parameter(log_grid_dir: Path) -> None:
    study = load_study(log_grid_dir)
    ax = plot_router_correlation(study.router, study.trials, x="model.temperature")
    lines = ax.get_lines()[:3]
    assert [ln.get_label() for ln in lines] == ["Language", "Vision", "Acoustic"]
    merged = study.router.merge(study.trials[["trial_id", "model.temperature"]], on="trial_id")
    per_trial = merged.groupby("trial_id").apply(
        lambda g: pd.Series({"t": g["model.temperature"].iloc[0], "r": np.corrcoef(g["w_v"], g["r_v"])[0, 1]}),
        include_groups=False)
    expected = np.tanh(np.arctanh(per_trial["r"]).groupby(per_trial["t"]).mean())  # Fisher-z average
    np.testing.assert_allclose(lines[1].get_xdata(), expected.index)
    np.testing.assert_allclose(lines[1].get_ydata(), expected.to_numpy(), rtol=1e-10)
    assert ax.get_xscale() == "log" and "n=3 seeds" in ax.get_legend().get_title().get_text()
