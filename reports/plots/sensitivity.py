"""Sensitivity figures: a metric against a varied hyperparameter, mean line and 95% CI band over seeds,
and the paper's two-axis form (Acc-7 on the left, MAE on an inverted right axis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from reports.metrics import axis_label, metric_info, metric_title, param_label
from reports.plots._common import completed_rows, draw_mean_band, log_axis, require_columns
from reports.stats import is_log_spaced, paired_comparison, summarize
from reports.style import PAGE_WIDTH, band_label, color, new_axes, new_figure, styled

__all__ = ["plot_sensitivity", "plot_sensitivity_panels", "plot_sensitivity_two_axis"]


def _use_log(values: pd.Series, logx: bool | Literal["auto"]) -> bool:
    if logx == "auto":
        return is_log_spaced(values)
    if logx and (pd.to_numeric(values, errors="coerce") <= 0).any():
        raise ValueError("logx=True needs positive x values")
    return bool(logx)


def _series(data: pd.DataFrame, x: str, y: str, confidence: float, reference: float | None = None) -> pd.DataFrame:
    """Per x value: n, mean, ci_low, ci_high of ``y`` over seeds, or (``reference`` given) of the paired
    difference to the trials at x == reference with the same seed (the reference itself at 0, no band)."""
    if reference is None:
        summ = summarize(data, x, [y], confidence=confidence)
    else:
        if not (data[x] == reference).any():
            raise ValueError(f"reference {reference!r} is not among the completed values of {x}")
        comp = paired_comparison(data.dropna(subset=[y]), baseline=reference, metrics=[y], group=x, pair="seed",
                                 confidence=confidence)
        ref_n = int(data.loc[data[x] == reference, y].notna().sum())
        summ = pd.concat([
            pd.DataFrame({x: [reference], "n": [ref_n], "mean": [0.0], "ci_low": [np.nan], "ci_high": [np.nan]}),
            comp[[x, "n_pairs", "diff_mean", "diff_ci_low", "diff_ci_high"]].set_axis(
                [x, "n", "mean", "ci_low", "ci_high"], axis=1),
        ], ignore_index=True)
    summ = summ[summ["n"] > 0].copy()
    summ["_x"] = pd.to_numeric(summ[x], errors="raise")
    return summ.sort_values("_x")


@styled
def plot_sensitivity(trials: pd.DataFrame, *, x: str, y: str, hue: str | None = None, ax: Axes | None = None,
                     logx: bool | Literal["auto"] = "auto", confidence: float = 0.95, legend: bool = True,
                     reference: float | None = None) -> Axes:
    """``y`` (a metric column) against numeric parameter ``x``: mean over seeds with a t-based CI band.

    ``hue`` draws one line per value of a second parameter. Only completed trials count; accuracies are
    shown in %. The x axis is logarithmic when the values are ratio-spaced (``logx="auto"``).
    ``reference`` (a value of x) plots the difference to that value paired by seed instead, which removes
    the seed-to-seed spread that all configurations share (the band is the CI of the paired difference).
    """
    require_columns(trials, [x, y, hue], "plot_sensitivity")
    data = completed_rows(trials)
    if data.empty:
        raise ValueError("no completed trials to plot")
    if not pd.api.types.is_numeric_dtype(data[x]):
        raise TypeError(f"plot_sensitivity: x={x!r} must be numeric (use plot_ablation for named variants)")
    ax = new_axes(ax)
    info = metric_info(y)
    groups = [(None, data)] if hue is None else list(data.groupby(hue, sort=True))
    handles: list[Any] = []
    labels: list[str] = []
    ns: list[int] = []
    pct = f"{round(confidence * 100):d}% CI"
    for i, (level, part) in enumerate(groups):
        s = _series(part, x, y, confidence, reference)
        line, band = draw_mean_band(ax, s["_x"].to_numpy(float), s["mean"].to_numpy() * info.scale,
                                    s["ci_low"].to_numpy() * info.scale, s["ci_high"].to_numpy() * info.scale,
                                    color=color(i))
        ns.extend(s["n"].tolist())
        handles.append((line, band) if band is not None else line)
        labels.append(f"{level:g}" if isinstance(level, float) else str(level))
        line.set_label(labels[-1] if hue is not None else "mean")
    if _use_log(data[x], logx):
        log_axis(ax, data[x])
    ax.set_xlabel(param_label(x))
    if reference is None:
        ax.set_ylabel(axis_label(y, wrap=True))
    else:
        ax.axhline(0.0, color="0.3", linewidth=0.7, linestyle=":")
        ax.set_ylabel(f"Δ {metric_title(y)} vs {reference:g}\n({'pp' if info.percent else info.unit})")
    if not legend:
        return ax
    text = _legend_text(ns, pct, reference)
    if hue is None:
        ax.legend(handles, [text], loc="best")
    else:
        ax.legend(handles, labels, title=f"{param_label(hue)}\n{text}", loc="best")
    return ax


def _legend_text(ns: list[int] | np.ndarray, pct: str, reference: float | None) -> str:
    text = band_label(ns, what=pct)
    if reference is None:
        return text
    return text.replace("mean ± ", "paired Δ (same seed): mean ± ")


@styled
def plot_sensitivity_panels(trials: pd.DataFrame, *, x: str, metrics: Sequence[str], hue: str | None = None,
                            ncols: int = 3, logx: bool | Literal["auto"] = "auto", confidence: float = 0.95,
                            reference: float | None = None) -> Figure:
    """One :func:`plot_sensitivity` panel per metric (page width, ``ncols`` per row) with one shared legend
    (in a spare panel slot when there is one, else below)."""
    if not metrics:
        raise ValueError("plot_sensitivity_panels: give at least one metric")
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = new_figure(PAGE_WIDTH, height=2.1 * nrows + 0.3, nrows=nrows, ncols=ncols)
    flat = axes.ravel()
    for ax, m in zip(flat, metrics):
        plot_sensitivity(trials, x=x, y=m, hue=hue, ax=ax, logx=logx, confidence=confidence, legend=False,
                         reference=reference)
    data = completed_rows(trials)
    ns = summarize(data, [x] if hue is None else [x, hue], [metrics[0]])["n"].to_numpy()
    pct = f"{round(confidence * 100):d}% CI"
    lines = [ln for ln in flat[0].get_lines() if not ln.get_label().startswith("_")]
    bands = list(flat[0].collections)
    handles: list[Any] = [(ln, b) for ln, b in zip(lines, bands)] if len(bands) == len(lines) else list(lines)
    if hue is None:
        labels, title = [_legend_text(ns, pct, reference)], None
    else:
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(data[hue].unique())]
        title = f"{param_label(hue)}\n{_legend_text(ns, pct, reference)}"
    spare = flat[len(metrics):]
    for ax in spare:
        ax.set_axis_off()
    if len(spare):
        spare[0].legend(handles, labels, title=title, loc="center left", borderaxespad=0)
    else:
        fig.legend(handles, labels, title=title, loc="outside lower center", ncols=min(len(labels), 4))
    return fig


@styled
def plot_sensitivity_two_axis(trials: pd.DataFrame, *, x: str, left: str = "test_acc7", right: str = "test_mae",
                              ax: Axes | None = None, logx: bool | Literal["auto"] = "auto",
                              confidence: float = 0.95) -> Axes:
    """The paper's form: ``left`` (e.g. Acc-7 %) on the left axis, ``right`` (e.g. MAE) on a right axis that
    is inverted when lower is better, so that up means better on both. Returns the left axes."""
    require_columns(trials, [x, left, right], "plot_sensitivity_two_axis")
    data = completed_rows(trials)
    ax = new_axes(ax)
    ax_r = ax.twinx()
    ax_r.spines["right"].set_visible(True)
    ax_r.grid(False)
    handles: list[Any] = []
    labels: list[str] = []
    ns: list[int] = []
    for axis, col, c, marker, ls in ((ax, left, color(0), "o", "-"), (ax_r, right, color(3), "s", "--")):
        info = metric_info(col)
        s = _series(data, x, col, confidence)
        line, band = draw_mean_band(axis, s["_x"].to_numpy(float), s["mean"].to_numpy() * info.scale,
                                    s["ci_low"].to_numpy() * info.scale, s["ci_high"].to_numpy() * info.scale,
                                    color=c, marker=marker, linestyle=ls)
        ns.extend(s["n"].tolist())
        handles.append((line, band) if band is not None else line)
        label = axis_label(col, wrap=True)
        if axis is ax_r and not info.higher_is_better:
            axis.invert_yaxis()
            label = label[:-1] + ";\naxis inverted)"
        labels.append(info.name)
        axis.set_ylabel(label, color=c)
        axis.tick_params(axis="y", colors=c)
    if _use_log(data[x], logx):
        log_axis(ax, data[x])
    ax.set_xlabel(param_label(x))
    pct = f"{round(confidence * 100):d}% CI"
    handles.append(Patch(color="0.6", alpha=0.3))
    labels.append(band_label(ns, what=pct).replace("mean ± ", "bands: "))
    ax.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.01), ncols=2)
    return ax
