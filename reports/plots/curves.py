"""Learning curves from the epochs table: per configuration, the mean over seeds per epoch with a 95% CI
band. Early stopping ends seeds at different epochs, so later points average the seeds still training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from reports.metrics import axis_label, metric_info
from reports.plots._common import draw_mean_band, require_columns
from reports.stats import summarize
from reports.style import PAGE_WIDTH, band_label, color, new_axes, new_figure, styled

__all__ = ["curve_label", "plot_learning_curves", "plot_learning_curves_panels"]


@styled
def plot_learning_curves(epochs: pd.DataFrame, *, y: str, hue: str = "variant", ax: Axes | None = None,
                         order: Sequence[str] | None = None, max_groups: int = 8, legend: bool = True,
                         bands: bool | None = None, confidence: float = 0.95) -> Axes:
    """``y`` (an epochs column such as ``valid_mae`` or ``train_loss``) against the epoch, one line per
    ``hue`` level (``order`` selects and orders them). CI bands are drawn for up to 3 lines unless
    ``bands`` says otherwise: more overlapping bands hide each other."""
    require_columns(epochs, ["epoch", y, hue], "plot_learning_curves")
    levels = list(order) if order is not None else list(pd.unique(epochs[hue]))
    if len(levels) > max_groups:
        raise ValueError(f"plot_learning_curves: {len(levels)} {hue} levels; pass order= with at most "
                         f"{max_groups} (e.g. the best configurations)")
    ax = new_axes(ax)
    info = metric_info(y)
    summ = summarize(epochs[epochs[hue].isin(levels)], [hue, "epoch"], [y], confidence=confidence)
    summ = summ[summ["n"] > 0]
    show_bands = len(levels) <= 3 if bands is None else bands
    nan = np.full(len(summ), np.nan)
    lo = summ["ci_low"].to_numpy() if show_bands else nan
    hi = summ["ci_high"].to_numpy() if show_bands else nan
    summ = summ.assign(_lo=lo, _hi=hi)
    handles: list[Any] = []
    labels: list[str] = []
    for i, level in enumerate(levels):
        s = summ[summ[hue] == level].sort_values("epoch")
        if s.empty:
            continue
        line, band = draw_mean_band(ax, s["epoch"].to_numpy(float), s["mean"].to_numpy() * info.scale,
                                    s["_lo"].to_numpy() * info.scale, s["_hi"].to_numpy() * info.scale,
                                    color=color(i), marker=None, alpha=0.15)
        line.set_label(str(level))
        handles.append((line, band) if band is not None else line)
        labels.append(str(level))
    ax.set_xlabel("Epoch")
    ax.set_ylabel(axis_label(y, wrap=True))
    if legend:
        ax.legend(handles, labels, title=curve_label(summ["n"].to_numpy(), show_bands), loc="best")
    return ax


def curve_label(ns: np.ndarray, bands: bool) -> str:
    """Legend title of learning curves: what the line (and band) show over which seeds."""
    text = band_label(ns, qualifier="still training")
    return text if bands or "no CI" in text else text.replace("mean ± 95% CI", "mean") + " (bands omitted)"


@styled
def plot_learning_curves_panels(epochs: pd.DataFrame, *, metrics: Sequence[str], hue: str = "variant",
                                order: Sequence[str] | None = None, max_groups: int = 8) -> Figure:
    """Learning curves of several metrics side by side (page width), one shared legend below."""
    fig, axes = new_figure(PAGE_WIDTH, height=2.6, ncols=len(metrics))
    for ax, m in zip(axes[0], metrics):
        plot_learning_curves(epochs, y=m, hue=hue, ax=ax, order=order, max_groups=max_groups, legend=False)
    levels = list(order) if order is not None else list(pd.unique(epochs[hue]))
    lines = list(axes[0, 0].get_lines())
    n = summarize(epochs[epochs[hue].isin(levels)], [hue, "epoch"], [metrics[0]])["n"].to_numpy()
    fig.legend(lines, [ln.get_label() for ln in lines], loc="outside lower center",
               ncols=min(4, max(len(lines), 1)), title=curve_label(n, len(levels) <= 3))
    return fig
