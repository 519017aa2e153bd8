"""Search figures: best-so-far against configurations and compute, parameter importance, and parallel
coordinates of the searched parameters coloured by the objective."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize

from reports.metrics import axis_label, metric_info, param_label
from reports.plots._common import completed_rows, require_columns
from reports.search_stats import IMPORTANCE_LABELS, best_so_far
from reports.stats import is_log_spaced
from reports.style import PAGE_WIDTH, color, new_axes, styled

__all__ = ["normalize_params", "plot_best_so_far", "plot_importance", "plot_parallel_coordinates"]

_X_LABELS = {
    "order": "Configuration (in start order)",
    "cum_epochs": "Compute: cumulative epochs (all trials)",
    "cum_time_s": "Compute: cumulative trial time (s)",
}


@styled
def plot_best_so_far(trials: pd.DataFrame, *, metric: str, mode: str,
                     x: Literal["order", "cum_epochs", "cum_time_s"] = "order", ax: Axes | None = None) -> Axes:
    """Each completed configuration's value (dots) and the running best (step line) against ``x``."""
    if x not in _X_LABELS:
        raise ValueError(f"x must be one of {list(_X_LABELS)}, got {x!r}")
    bsf = best_so_far(trials, metric=metric, mode=mode)
    ax = new_axes(ax)
    label = axis_label(metric, mode=mode)
    scale = metric_info(metric, mode=mode).scale
    done = bsf[bsf["value"].notna()]
    ax.scatter(done[x], done["value"] * scale, s=10, color=color(0), alpha=0.6, linewidths=0,
               label=f"configuration ({len(done)} completed)", zorder=3)
    ax.step(bsf[x], bsf["best"] * scale, where="post", color=color(3), label="best so far", zorder=4)
    skipped = int((~bsf["completed"]).sum())
    if skipped:
        ax.plot([], [], " ", label=f"{skipped} pruned/failed (compute counted)")
    ax.set_xlabel(_X_LABELS[x])
    ax.set_ylabel(label)
    ax.legend(loc="best")
    return ax


@styled
def plot_importance(importance: pd.DataFrame, *, ax: Axes | None = None) -> Axes:
    """Horizontal bars of ``param_importance`` output (most important on top), labelled with its method."""
    require_columns(importance, ["param", "importance", "method"], "plot_importance")
    ax = new_axes(ax, height=0.8 + 0.3 * len(importance))
    pos = np.arange(len(importance))[::-1]
    ax.barh(pos, importance["importance"].to_numpy(float), color=color(0), height=0.6)
    ax.set_yticks(pos, [param_label(p) for p in importance["param"]])
    method = str(importance["method"].iloc[0]) if len(importance) else "eta2"
    ax.set_xlabel(IMPORTANCE_LABELS.get(method, method))
    ax.set_xlim(0, max(1e-9, float(importance["importance"].max())) * 1.1)
    ax.grid(axis="y", visible=False)
    return ax


def normalize_params(df: pd.DataFrame, params: Sequence[str]) -> tuple[pd.DataFrame, dict[str, list[tuple[float, str]]]]:
    """Map each parameter to [0, 1] (log scale when ratio-spaced; categories evenly spaced) and give the
    tick positions and labels of each parameter's axis."""
    out = pd.DataFrame(index=df.index)
    ticks: dict[str, list[tuple[float, str]]] = {}
    for p in params:
        s = df[p]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            v = s.to_numpy(float)
            log = is_log_spaced(v)
            t = np.log(v) if log else v
            lo, hi = np.nanmin(t), np.nanmax(t)
            out[p] = (t - lo) / (hi - lo) if hi > lo else 0.5
            ticks[p] = [(0.0, f"{np.nanmin(v):.3g}"), (1.0, f"{np.nanmax(v):.3g}")] if hi > lo else [
                (0.5, f"{np.nanmin(v):.3g}")]
        else:
            cats = sorted(s.astype(str).unique())
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            out[p] = s.astype(str).map(pos).astype(float)
            ticks[p] = [(pos[c], c) for c in cats]
    return out, ticks


@styled
def plot_parallel_coordinates(trials: pd.DataFrame, *, params: Sequence[str], metric: str, mode: str,
                              ax: Axes | None = None) -> Axes:
    """One polyline per completed trial across the parameter axes (each scaled to [0, 1]), coloured by
    ``metric``; the best trial is drawn thicker in black."""
    require_columns(trials, [*params, metric], "plot_parallel_coordinates")
    if len(params) < 2:
        raise ValueError("plot_parallel_coordinates: needs at least two parameters")
    data = completed_rows(trials).dropna(subset=[metric, *params]).reset_index(drop=True)
    ax = new_axes(ax, width=PAGE_WIDTH, height=2.8)
    norm_df, ticks = normalize_params(data, params)
    values = data[metric].to_numpy(float)
    label = axis_label(metric, mode=mode)
    scale = metric_info(metric, mode=mode).scale
    xs = np.arange(len(params), dtype=float)
    segs = [np.column_stack([xs, row]) for row in norm_df[list(params)].to_numpy(float)]
    cmap = colormaps["viridis" if mode == "max" else "viridis_r"]
    norm = Normalize(vmin=np.min(values) * scale, vmax=np.max(values) * scale) if len(values) else Normalize()
    lines = LineCollection(segs, array=values * scale, cmap=cmap, norm=norm, linewidths=0.9, alpha=0.8)
    ax.add_collection(lines)
    if len(values):
        best = int(np.argmin(values) if mode == "min" else np.argmax(values))
        ax.plot(xs, segs[best][:, 1], color="black", linewidth=2.0, label="best trial", zorder=5)
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.12))
    for i, p in enumerate(params):
        ax.axvline(i, color="0.3", linewidth=0.6)
        for y, text in ticks[p]:
            ax.text(i + 0.03, y, text, fontsize=6, va="center", ha="left", color="0.1",
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xlim(-0.1, len(params) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xticks(xs, [param_label(p) for p in params])
    ax.set_yticks([])
    ax.grid(False)
    ax.set_ylabel("scaled value (min → max)")
    cbar = ax.figure.colorbar(lines, ax=ax, pad=0.01)
    cbar.set_label(label)
    return ax
