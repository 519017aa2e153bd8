"""Sensitivity figures: the drawn line is the mean over seeds, the band spans the t-based 95% CI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from reports.load import load_study
from reports.plots import plot_sensitivity, plot_sensitivity_panels, plot_sensitivity_two_axis


def _expected(trials: pd.DataFrame, x: str, y: str, scale: float) -> pd.DataFrame:
    g = trials[trials.status == "completed"].groupby(x)[y]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(), "n": g.count()})
    half = stats.t.ppf(0.975, out["n"] - 1) * out["std"] / np.sqrt(out["n"])
    return pd.DataFrame({"mean": out["mean"] * scale, "lo": (out["mean"] - half) * scale,
                         "hi": (out["mean"] + half) * scale})


def _band_limits(band: PolyCollection, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    verts = np.concatenate([p.vertices for p in band.get_paths()])
    lo = np.array([verts[np.isclose(verts[:, 0], x), 1].min() for x in xs])
    hi = np.array([verts[np.isclose(verts[:, 0], x), 1].max() for x in xs])
    return lo, hi


def test_line_is_mean_and_band_is_ci(grid_dir: Path) -> None:
    trials = load_study(grid_dir).trials
    ax = plot_sensitivity(trials, x="loss.distill_weight", y="test_acc7")
    exp = _expected(trials, "loss.distill_weight", "test_acc7", 100.0)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), [0.0, 0.1, 0.3, 0.5, 1.0])
    np.testing.assert_allclose(line.get_ydata(), exp["mean"], rtol=1e-10)  # shown in %
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lo, hi = _band_limits(band, exp.index.to_numpy())
    np.testing.assert_allclose(lo, exp["lo"], rtol=1e-8)
    np.testing.assert_allclose(hi, exp["hi"], rtol=1e-8)
    assert ax.get_xscale() == "linear"  # 0 in the grid: no log axis
    assert ax.get_ylabel() == "Test Acc-7 (%)"
    assert ax.get_xlabel().startswith("Distillation weight")
    assert ax.get_legend().get_texts()[0].get_text() == "mean ± 95% CI over n=3 seeds"


def test_log_spaced_values_get_a_log_axis_ticked_at_the_grid(log_grid_dir: Path) -> None:
    ax = plot_sensitivity(load_study(log_grid_dir).trials, x="model.temperature", y="test_mae")
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.03", "0.1", "0.3", "1", "3"]
    assert ax.get_ylabel() == "Test MAE\n(lower is better)"
    ax2 = plot_sensitivity(load_study(log_grid_dir).trials, x="model.temperature", y="test_mae", logx=False)
    assert ax2.get_xscale() == "linear"


def test_hue_draws_one_line_per_level_and_single_seeds_have_no_band() -> None:
    df = pd.DataFrame({"x": [1.0, 2.0, 3.0] * 2, "h": ["a"] * 3 + ["b"] * 3, "seed": 1, "status": "completed",
                       "test_mae": [0.9, 0.8, 0.7, 1.0, 0.95, 0.9]})
    ax = plot_sensitivity(df, x="x", y="test_mae", hue="h")
    lines = ax.get_lines()
    assert len(lines) == 2
    np.testing.assert_allclose(lines[1].get_ydata(), [1.0, 0.95, 0.9])
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # n=1: no interval drawn
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["a", "b"]
    assert "no CI" in legend.get_title().get_text()


def test_two_axis_form_inverts_mae(grid_dir: Path) -> None:
    trials = load_study(grid_dir).trials
    ax = plot_sensitivity_two_axis(trials, x="loss.distill_weight")
    right = next(a for a in ax.figure.axes if a is not ax)
    lo, hi = right.get_ylim()
    assert lo > hi  # inverted: up is better on both axes
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(),
                               _expected(trials, "loss.distill_weight", "test_acc7", 100.0)["mean"])
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(),
                               _expected(trials, "loss.distill_weight", "test_mae", 1.0)["mean"])
    assert ax.get_ylabel() == "Test Acc-7 (%)" and "axis inverted" in right.get_ylabel()
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:2] == ["Acc-7", "MAE"] and "95% CI over n=3 seeds" in texts[2]


def test_panels_share_one_legend(grid_dir: Path) -> None:
    metrics = ["valid_mae", "test_acc2", "test_acc7", "test_mae", "test_corr"]
    fig = plot_sensitivity_panels(load_study(grid_dir).trials, x="loss.distill_weight", metrics=metrics)
    drawn = [a for a in fig.axes if a.get_lines()]
    assert [a.get_ylabel().split("\n")[0] for a in drawn] == [
        "Validation MAE", "Test Acc-2 (%)", "Test Acc-7 (%)", "Test MAE", "Test Corr"]
    assert sum(a.get_legend() is not None for a in fig.axes) == 1  # in the spare sixth slot
    assert fig.get_size_inches()[0] == pytest.approx(6.9)


def test_bad_inputs_name_the_problem(grid_dir: Path) -> None:
    trials = load_study(grid_dir).trials
    with pytest.raises(KeyError, match="test_nope"):
        plot_sensitivity(trials, x="loss.distill_weight", y="test_nope")
    with pytest.raises(TypeError, match="must be numeric"):
        plot_sensitivity(trials, x="variant", y="test_mae")
    with pytest.raises(ValueError, match="positive"):
        plot_sensitivity(trials, x="loss.distill_weight", y="test_mae", logx=True)


def test_paired_reference_plots_differences_to_the_same_seed(grid_dir: Path) -> None:
    trials = load_study(grid_dir).trials
    ax = plot_sensitivity(trials, x="loss.distill_weight", y="test_mae", reference=0.0)
    wide = trials.pivot(index="seed", columns="loss.distill_weight", values="test_mae")
    diff = wide.sub(wide[0.0], axis=0)
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "mean")
    np.testing.assert_allclose(line.get_ydata(), diff.mean().to_numpy(), atol=1e-12)  # 0 at the reference
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    xs = np.array([0.1, 0.3, 0.5, 1.0])
    lo, hi = _band_limits(band, xs)
    half = stats.t.ppf(0.975, 2) * diff[xs].std().to_numpy() / np.sqrt(3)
    np.testing.assert_allclose(hi - lo, 2 * half, rtol=1e-8)
    assert ax.get_ylabel() == "Δ Test MAE vs 0\n(lower is better)"
    assert ax.get_legend().get_texts()[0].get_text().startswith("paired Δ (same seed): mean ± 95% CI")
    with pytest.raises(ValueError, match=r"reference 0\.2"):
        plot_sensitivity(trials, x="loss.distill_weight", y="test_mae", reference=0.2)


def test_a_study_without_completed_trials_says_so(grid_dir: Path) -> None:
    # every trial diverged: the report's skip reason was numpy's "ufunc 'isfinite' not supported ..."
    from reports.stats import paired_comparison

    diverged = load_study(grid_dir).trials.assign(status="diverged")
    with pytest.raises(ValueError, match="no completed trials to plot"):
        plot_sensitivity(diverged, x="loss.distill_weight", y="test_mae")
    with pytest.raises(ValueError, match="no completed trials to compare"):
        paired_comparison(diverged[diverged["status"] == "completed"], baseline="x", metrics=["test_mae"])
