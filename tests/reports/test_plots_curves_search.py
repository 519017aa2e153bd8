"""Learning curves and search figures: drawn values equal the statistics they claim to show."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.patches import Rectangle

from reports.load import load_study
from reports.plots import (
    plot_best_so_far,
    plot_importance,
    plot_learning_curves,
    plot_learning_curves_panels,
    plot_parallel_coordinates,
)
from reports.plots.search import normalize_params
from reports.search_stats import best_so_far, param_importance


def test_learning_curves_are_means_per_epoch(ablation_dir: Path) -> None:
    epochs = load_study(ablation_dir).epochs
    ax = plot_learning_curves(epochs, y="valid_acc7", order=["full", "no_unimodal"])
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["full", "no_unimodal"]
    for ln, v in zip(lines, ["full", "no_unimodal"]):
        means = epochs[epochs.variant == v].groupby("epoch")["valid_acc7"].mean() * 100
        np.testing.assert_allclose(ln.get_xdata(), means.index)
        np.testing.assert_allclose(ln.get_ydata(), means.to_numpy(), rtol=1e-10)
    assert ax.get_ylabel() == "Validation Acc-7 (%)"
    title = ax.get_legend().get_title().get_text()
    assert "95% CI over n=4–5 seeds still training" in title  # no_unimodal lost a seed
    with pytest.raises(ValueError, match="at most 3"):
        plot_learning_curves(epochs, y="valid_mae", max_groups=3)


def test_learning_curve_panels(ablation_dir: Path) -> None:
    fig = plot_learning_curves_panels(load_study(ablation_dir).epochs, metrics=["valid_mae", "train_loss"],
                                      order=["full", "no_distill"])
    assert [len(a.get_lines()) for a in fig.axes] == [2, 2]
    assert len(fig.legends) == 1 and [t.get_text() for t in fig.legends[0].get_texts()] == ["full", "no_distill"]


@pytest.mark.parametrize("x", ["order", "cum_epochs"])
def test_best_so_far_step_line(search_dir: Path, x: str) -> None:
    trials = load_study(search_dir).trials
    ax = plot_best_so_far(trials, metric="valid_mae", mode="min", x=x)  # type: ignore[arg-type]
    bsf = best_so_far(trials, metric="valid_mae", mode="min")
    step = next(ln for ln in ax.get_lines() if ln.get_label() == "best so far")
    np.testing.assert_allclose(step.get_xdata(), bsf[x])
    np.testing.assert_allclose(step.get_ydata(), bsf["best"])
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(dots.get_offsets()) == 18  # 24 trials, every 4th pruned
    assert "6 pruned/failed" in " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert ax.get_ylabel() == "Validation MAE (lower is better)"


def test_importance_bars(search_dir: Path) -> None:
    study = load_study(search_dir)
    imp = param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min", method="eta2")
    ax = plot_importance(imp)
    bars = sorted((p for p in ax.patches if isinstance(p, Rectangle)), key=lambda r: -r.get_y())
    np.testing.assert_allclose([b.get_width() for b in bars], imp["importance"])
    assert ax.get_yticklabels()[0].get_text() == "Learning rate"
    assert "η²" in ax.get_xlabel()


def test_parallel_coordinates(search_dir: Path) -> None:
    trials = load_study(search_dir).trials
    params = ["train.lr", "model.d_model", "model.n_heads"]
    ax = plot_parallel_coordinates(trials, params=params, metric="valid_mae", mode="min")
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    done = trials[trials.status == "completed"].reset_index(drop=True)
    segs = lines.get_segments()
    assert len(segs) == len(done) == 18
    lr = np.log(done["train.lr"].to_numpy())  # lr spans decades: log-scaled axis
    np.testing.assert_allclose([s[0, 1] for s in segs], (lr - lr.min()) / (lr.max() - lr.min()))
    np.testing.assert_allclose(lines.get_array(), done["valid_mae"])
    best = next(ln for ln in ax.get_lines() if ln.get_label() == "best trial")
    np.testing.assert_allclose(best.get_ydata(), segs[int(done["valid_mae"].idxmin())][:, 1])
    assert next(t.get_text() for t in ax.get_xticklabels()) == "Learning rate\n(log)"  # the axis says so
    cbar_axes = next(a for a in ax.figure.axes if a is not ax)
    assert cbar_axes.get_ylabel() == "Validation MAE (lower is better)"
    with pytest.raises(ValueError, match="at least two"):
        plot_parallel_coordinates(trials, params=["train.lr"], metric="valid_mae", mode="min")


def test_normalize_categorical_and_constant() -> None:
    import pandas as pd

    df = pd.DataFrame({"f": ["sum", "concat", "sum"], "c": [3.0, 3.0, 3.0]})
    norm, ticks = normalize_params(df, ["f", "c"])
    np.testing.assert_allclose(norm["f"], [1.0, 0.0, 1.0])
    np.testing.assert_allclose(norm["c"], 0.5)
    assert ticks["f"] == [(0.0, "concat"), (1.0, "sum")] and ticks["c"] == [(0.5, "3")]


def test_importance_of_too_few_trials_draws_no_bars(search_dir: Path) -> None:
    import pandas as pd

    from reports.search_stats import too_few_note

    imp = pd.DataFrame({"param": ["train.lr", "model.d_model"], "importance": [np.nan, np.nan],
                        "method": "none", "note": too_few_note(5)})
    ax = plot_importance(imp)
    assert not [p for p in ax.patches if isinstance(p, Rectangle) and p.get_width() > 0]
    assert any(t.get_text().startswith("Too few trials to judge\n(5 completed") for t in ax.texts)
    assert ax.get_xlabel() == "Importance (not computed)"
