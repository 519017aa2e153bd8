"""Sensitivity figures: a metric against a varied hyperparameter, mean line and 95% CI band over seeds,
and the paper's two-axis form (Acc-7 on the left, MAE on an inverted right axis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from reports.metrics import axis_label, metric_info, param_label
from reports.plots._common import completed_rows, draw_mean_band, log_axis, require_columns
from reports.stats import is_log_spaced, summarize
from reports.style import PAGE_WIDTH, band_label, color, new_axes, new_figure, styled

__all__ = ["plot_sensitivity", "plot_sensitivity_panels", "plot_sensitivity_two_axis"]


def _use_log(values: pd.Series, logx: bool | Literal["auto"]) -> bool:
    if logx == "auto":
        return is_log_spaced(values)
    if logx and (pd.to_numeric(values, errors="coerce") <= 0).any():
        raise ValueError("logx=True needs positive x values")
    return bool(logx)


def _series(data: pd.DataFrame, x: str, y: str, confidence: float) -> pd.DataFrame:
    summ = summarize(data, x, [y], confidence=confidence)
    summ = summ[summ["n"] > 0].copy()
    summ["_x"] = pd.to_numeric(summ[x], errors="raise")
    return summ.sort_values("_x")


@styled
def plot_sensitivity(trials: pd.DataFrame, *, x: str, y: str, hue: str | None = None, ax: Axes | None = None,
                     logx: bool | Literal["auto"] = "auto", confidence: float = 0.95, legend: bool = True) -> Axes:
    """``y`` (a metric column) against numeric parameter ``x``: mean over seeds with a t-based CI band.

    ``hue`` draws one line per value of a second parameter. Only completed trials count; accuracies are
    shown in %. The x axis is logarithmic when the values are ratio-spaced (``logx="auto"``).
    """
    require_columns(trials, [x, y, hue], "plot_sensitivity")
    data = completed_rows(trials)
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
        s = _series(part, x, y, confidence)
        line, band = draw_mean_band(ax, s["_x"].to_numpy(float), s["mean"].to_numpy() * info.scale,
                                    s["ci_low"].to_numpy() * info.scale, s["ci_high"].to_numpy() * info.scale,
                                    color=color(i))
        ns.extend(s["n"].tolist())
        handles.append((line, band) if band is not None else line)
        labels.append(f"{level:g}" if isinstance(level, float) else str(level))
    if _use_log(data[x], logx):
        log_axis(ax, data[x])
    ax.set_xlabel(param_label(x))
    ax.set_ylabel(axis_label(y, wrap=True))
    if not legend:
        return ax
    if hue is None:
        ax.legend(handles, [band_label(ns, what=pct)], loc="best")
    else:
        ax.legend(handles, labels, title=f"{param_label(hue)}\n{band_label(ns, what=pct)}", loc="best")
    return ax


@styled
def plot_sensitivity_panels(trials: pd.DataFrame, *, x: str, metrics: Sequence[str], hue: str | None = None,
                            ncols: int = 3, logx: bool | Literal["auto"] = "auto",
                            confidence: float = 0.95) -> Figure:
    """One :func:`plot_sensitivity` panel per metric (page width, ``ncols`` per row) with one shared legend
    (in a spare panel slot when there is one, else below)."""
    if not metrics:
        raise ValueError("plot_sensitivity_panels: give at least one metric")
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = new_figure(PAGE_WIDTH, height=2.1 * nrows + 0.3, nrows=nrows, ncols=ncols)
    flat = axes.ravel()
    for ax, m in zip(flat, metrics):
        plot_sensitivity(trials, x=x, y=m, hue=hue, ax=ax, logx=logx, confidence=confidence, legend=False)
    data = completed_rows(trials)
    ns = summarize(data, [x] if hue is None else [x, hue], [metrics[0]])["n"].to_numpy()
    pct = f"{round(confidence * 100):d}% CI"
    lines = flat[0].get_lines()
    bands = [c for c in flat[0].collections]
    handles: list[Any] = [(ln, b) for ln, b in zip(lines, bands)] if len(bands) == len(lines) else list(lines)
    if hue is None:
        labels, title = [band_label(ns, what=pct)], None
    else:
        labels = [f"{v:g}" if isinstance(v, float) else str(v) for v in sorted(data[hue].unique())]
        title = f"{param_label(hue)}\n{band_label(ns, what=pct)}"
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
