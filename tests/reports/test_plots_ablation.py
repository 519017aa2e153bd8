"""Ablation figures: bar lengths are the paired differences (or means), n and significance are shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.patches import Rectangle

from reports.load import load_study
from reports.plots import plot_ablation, plot_ablation_panels
from reports.plots.ablation import stars
from reports.stats import paired_comparison


def _bars(ax) -> list[Rectangle]:  # type: ignore[no-untyped-def]
    return sorted((p for p in ax.patches if isinstance(p, Rectangle)), key=lambda r: -r.get_y())


def test_delta_bars_are_paired_differences(ablation_dir: Path) -> None:
    trials = load_study(ablation_dir).trials
    ax = plot_ablation(trials, y="test_acc7", baseline="full")
    done = trials[trials.status == "completed"]
    wide = done.pivot(index="seed", columns="variant", values="test_acc7")
    order = [v for v in pd.unique(done["variant"]) if v != "full"]
    expected = [(wide[v] - wide["full"]).mean() * 100 for v in order]  # NaN seed of no_unimodal skipped
    bars = _bars(ax)
    assert len(bars) == 5  # one per variant; the baseline is the reference, not a bar
    np.testing.assert_allclose([b.get_width() for b in bars], expected, rtol=1e-10)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{v} (n={4 if v == 'no_unimodal' else 5})" for v in order]
    assert "full: " in ax.get_title() and "(n=5)" in ax.get_title() and ax.get_title().startswith("Test Acc-7 (%)")
    assert ax.get_xlabel() == "Δ vs full (pp)"


def test_stars_follow_holm_corrected_paired_t(ablation_dir: Path) -> None:
    trials = load_study(ablation_dir).trials
    ax = plot_ablation(trials, y="test_mae", baseline="full")
    comp = paired_comparison(trials[trials.status == "completed"], baseline="full", metrics=["test_mae"])
    expected = sorted(s for s in (stars(p) for p in comp["p_t_holm"]) if s)
    drawn = sorted(t.get_text() for t in ax.texts if set(t.get_text()) == {"*"})
    assert drawn == expected and drawn  # the fixture has real effects
    uniform = ax.get_yticklabels()[0]
    assert uniform.get_text().startswith("uniform_router")
    worse = _bars(ax)[0]  # higher MAE is worse: drawn in the 'worse' colour (orange)
    assert worse.get_width() > 0
    np.testing.assert_allclose(worse.get_facecolor()[:3], (0xE6 / 255, 0x9F / 255, 0x00 / 255), atol=1e-6)


def test_stars_thresholds() -> None:
    assert [stars(p) for p in (0.001, 0.0099, 0.01, 0.049, 0.05, np.nan)] == ["**", "**", "*", "*", "", ""]


def test_absolute_bars_are_means_with_baseline_on_top(ablation_dir: Path) -> None:
    trials = load_study(ablation_dir).trials
    ax = plot_ablation(trials, y="test_mae", baseline="full", kind="absolute", order=["no_distill", "full"])
    bars = _bars(ax)
    done = trials[trials.status == "completed"]
    means = done.groupby("variant")["test_mae"].mean()
    np.testing.assert_allclose([b.get_width() for b in bars], [means["full"], means["no_distill"]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["full (n=5)", "no_distill (n=5)"]
    assert ax.get_xlabel() == "mean ± std"


def test_a_single_seed_has_no_error_bar(ablation_dir: Path) -> None:
    trials = load_study(ablation_dir).trials
    one = trials[(trials["variant"] != "no_distill") | (trials["seed"] == trials["seed"].min())]
    ax = plot_ablation(one, y="test_mae", baseline="full", kind="absolute", order=["full", "no_distill"])
    (bars,) = [c for c in ax.containers if hasattr(c, "has_xerr") and c.has_xerr]
    segments = bars.lines[2][0].get_segments()  # the horizontal error lines
    assert [round(float(seg[0][1]), 6) for seg in segments] == [1.0]  # full (top) only, none for n=1
    done = one[one.status == "completed"]
    sd = done[done.variant == "full"]["test_mae"].std(ddof=1)
    np.testing.assert_allclose(segments[0][:, 0], _bars(ax)[0].get_width() + np.array([-sd, sd]))


def test_panels_and_errors(ablation_dir: Path) -> None:
    trials = load_study(ablation_dir).trials
    metrics = ["test_acc2", "test_f1", "test_acc7", "test_mae", "test_corr"]
    fig = plot_ablation_panels(trials, metrics=metrics, baseline="full")
    drawn = [a for a in fig.axes if a.patches]
    assert len(drawn) == 5 and all(len(_bars(a)) == 5 for a in drawn)
    legend_axes = [a for a in fig.axes if a.get_legend() is not None]
    assert len(legend_axes) == 1 and not legend_axes[0].axison  # the spare slot holds the legend
    texts = " ".join(t.get_text() for t in legend_axes[0].get_legend().get_texts())
    assert "95% CI of paired Δ" in texts and "Holm" in texts
    with pytest.raises(ValueError, match="baseline 'nope'"):
        plot_ablation(trials, y="test_mae", baseline="nope")
    with pytest.raises(ValueError, match="kind"):
        plot_ablation(trials, y="test_mae", baseline="full", kind="pie")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown"):
        plot_ablation(trials, y="test_mae", baseline="full", order=["ghost"])
