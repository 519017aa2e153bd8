"""Ablation figures: every variant against the baseline (full EMOE), paired by seed.

``kind="delta"`` (default) draws the paired difference variant - baseline per metric with its 95% CI, every
seed's difference as a dot and stars for Holm-corrected paired t-tests; ``kind="absolute"`` draws mean +- std.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reports.metrics import axis_label, metric_info
from reports.plots._common import completed_rows, require_columns
from reports.stats import paired_comparison, summarize
from reports.style import BASELINE_COLOR, PAGE_WIDTH, color, new_axes, new_figure, styled

__all__ = ["ablation_legend", "plot_ablation", "plot_ablation_panels", "stars"]


def stars(p: float) -> str:
    """Significance marks: ``**`` for p < 0.01, ``*`` for p < 0.05, empty otherwise (and for NaN)."""
    if not np.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < 0.05 else ""


def _ref_text(row: pd.Series, scale: float, decimals: int) -> str:
    mean, std = float(row["mean"]) * scale, float(row["std"]) * scale
    return f"{mean:.{decimals}f}" + (f" ± {std:.{decimals}f}" if np.isfinite(std) else "")


def _order(data: pd.DataFrame, group: str, baseline: str, order: Sequence[str] | None) -> list[str]:
    present = list(pd.unique(data[group]))
    if baseline not in present:
        raise ValueError(f"baseline {baseline!r} has no completed trials (have {present})")
    names = list(order) if order is not None else present
    unknown = [v for v in names if v not in present]
    if unknown:
        raise ValueError(f"order names unknown or not completed {group} values {unknown}")
    return [baseline, *[v for v in names if v != baseline]]


@styled
def plot_ablation(trials: pd.DataFrame, *, y: str, baseline: str, group: str = "variant", ax: Axes | None = None,
                  kind: Literal["delta", "absolute"] = "delta", order: Sequence[str] | None = None,
                  p_column: str = "p_t_holm", confidence: float = 0.95) -> Axes:
    """Horizontal bars, one per variant, for metric ``y``; y tick labels show each variant's n seeds.

    delta: one bar per non-baseline variant = mean paired difference to ``baseline`` (display units, e.g.
    percentage points), error bar = its t-based CI, dots = per-seed differences, stars from ``p_column`` of
    :func:`paired_comparison`; the title gives the baseline's mean ± std and n.
    absolute: one bar per variant (baseline on top, grey) = mean, error bar = std over seeds, dots = seeds,
    dashed line = baseline mean.
    """
    require_columns(trials, [group, "seed", y], "plot_ablation")
    if kind not in ("delta", "absolute"):
        raise ValueError(f"kind must be 'delta' or 'absolute', got {kind!r}")
    data = completed_rows(trials).dropna(subset=[y])
    names = _order(data, group, baseline, order)
    info = metric_info(y)
    summ = summarize(data, group, [y], confidence=confidence).set_index(group).loc[names]
    shown = names if kind == "absolute" else names[1:]
    ax = new_axes(ax, height=0.7 + 0.28 * len(shown))
    pos = np.arange(len(shown))[::-1].astype(float)  # first name at the top
    base_vals = data[data[group] == baseline].set_index("seed")[y]
    if kind == "absolute":
        means, errs = summ["mean"].to_numpy() * info.scale, summ["std"].to_numpy() * info.scale
        colors = [BASELINE_COLOR] + [color(0)] * (len(names) - 1)
    else:
        comp = paired_comparison(data, baseline=baseline, metrics=[y], group=group, pair="seed",
                                 confidence=confidence).set_index(group).loc[shown]
        means = comp["diff_mean"].to_numpy(float) * info.scale
        errs = (comp["diff_ci_high"] - comp["diff_mean"]).to_numpy(float) * info.scale
        better = np.sign(means) == (1 if info.higher_is_better else -1)
        colors = [color(0) if b else color(1) for b in better]
    ax.barh(pos, means, color=colors, height=0.6, alpha=0.85, zorder=2)
    spread = np.isfinite(errs) & np.isfinite(means)  # a single seed has no spread: no bar, not a bar of 0
    ax.errorbar(means[spread], pos[spread], xerr=errs[spread], fmt="none", elinewidth=0.8, capsize=2,
                ecolor="0.15", zorder=3)
    for p, name in zip(pos, shown):
        vals = data[data[group] == name].set_index("seed")[y]
        if kind == "delta":
            vals = (vals - base_vals).dropna()
        offs = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(len(vals))
        ax.scatter(vals.to_numpy() * info.scale, p + offs, s=7, color="black", zorder=4, linewidths=0)
    title = axis_label(y)
    if kind == "delta":
        ax.axvline(0.0, color="0.2", linewidth=0.8, zorder=3)
        span = float(np.nanmax(np.abs(ax.get_xlim())))
        ax.set_xlim(-span * 1.05, span * 1.35)  # room on the right for the stars
        for p, name in zip(pos, shown):
            mark = stars(float(comp.loc[name, p_column]))
            if mark:
                ax.text(0.99, p, mark, transform=ax.get_yaxis_transform(), ha="right", va="center",
                        fontsize=8, fontweight="bold")
        ref = _ref_text(summ.loc[baseline], info.scale, info.decimals)
        title += f"\n{baseline}: {ref} (n={int(summ.loc[baseline, 'n'])})"
        ax.set_xlabel(f"Δ vs {baseline}" + (" (pp)" if info.percent else ""))
    else:
        ax.axvline(float(summ.loc[baseline, "mean"]) * info.scale, color="0.2", linestyle="--", linewidth=0.8)
        ax.set_xlabel("mean ± std" + (" (%)" if info.percent else ""))
    ax.set_title(title)
    ax.set_yticks(pos, [f"{n} (n={int(summ.loc[n, 'n'])})" for n in shown])
    ax.grid(axis="y", visible=False)
    return ax


def ablation_legend(kind: str, confidence: float = 0.95) -> tuple[list[Artist], list[str]]:
    """Legend handles and texts that say what bars, error bars, dots and stars mean."""
    pct = f"{round(confidence * 100):d}% CI"
    if kind == "absolute":
        return ([Patch(color=color(0)), Line2D([], [], color="0.15"), Line2D([], [], marker="o", ls="", color="k"),
                 Line2D([], [], color="0.2", ls="--", lw=0.8)],
                ["mean over seeds", "error bar: ± std", "one seed", "baseline mean"])
    return ([Patch(color=color(0)), Patch(color=color(1)), Line2D([], [], color="0.15"),
             Line2D([], [], marker="o", ls="", color="k", markersize=3)],
            ["better than baseline", "worse than baseline", f"error bar: {pct} of paired Δ",
             "one seed's Δ (paired by seed)\n* p<0.05, ** p<0.01: paired t,\n  Holm-corrected"])


@styled
def plot_ablation_panels(trials: pd.DataFrame, *, metrics: Sequence[str], baseline: str, group: str = "variant",
                         kind: Literal["delta", "absolute"] = "delta", order: Sequence[str] | None = None,
                         ncols: int = 3, confidence: float = 0.95) -> Figure:
    """One :func:`plot_ablation` panel per metric, ``ncols`` per row at page width; the legend fills an
    empty panel slot when there is one, else sits below."""
    if not metrics:
        raise ValueError("plot_ablation_panels: give at least one metric")
    n_var = completed_rows(trials)[group].nunique() - (kind == "delta")
    ncols = min(ncols, len(metrics))
    nrows = -(-len(metrics) // ncols)
    fig, axes = new_figure(PAGE_WIDTH if ncols > 1 else "column", height=nrows * (0.9 + 0.27 * n_var) + 0.5,
                           nrows=nrows, ncols=ncols)
    flat = axes.ravel()
    for i, (ax, m) in enumerate(zip(flat, metrics)):
        plot_ablation(trials, y=m, baseline=baseline, group=group, ax=ax, kind=kind, order=order,
                      confidence=confidence)
        if i % ncols:
            ax.tick_params(axis="y", labelleft=False)
    handles, labels = ablation_legend(kind, confidence)
    spare = flat[len(metrics):]
    for ax in spare:
        ax.set_axis_off()
    if len(spare):
        spare[0].legend(handles, labels, loc="center left", borderaxespad=0)
    else:
        fig.legend(handles, labels, loc="outside lower center", ncols=2)
    return fig
