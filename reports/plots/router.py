"""Router figures: per-sample weight distributions per modality, weights against the true reliabilities of
synthetic data (with Pearson r), and mean weights per label bin (95% CI over seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import patheffects
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from reports.metrics import param_label
from reports.plots._common import draw_mean_band, log_axis, require_columns
from reports.router_stats import (
    MODALITIES,
    MODALITY_NAMES,
    has_reliability,
    reliability_correlation,
    weights_by_label,
)
from reports.stats import is_log_spaced, summarize
from reports.style import MODALITY_COLORS, PAGE_WIDTH, band_label, color, new_axes, new_figure, styled

__all__ = ["plot_router_by_label", "plot_router_correlation", "plot_router_reliability", "plot_router_weights"]

_W = ["w_l", "w_v", "w_a"]
_MEDIAN_OUTLINE: list[patheffects.AbstractPathEffect] = [patheffects.withStroke(linewidth=2.6, foreground="0.1")]


def _single(router: pd.DataFrame, group: str, what: str) -> None:
    if group in router.columns and router[group].nunique() > 1:
        raise ValueError(f"{what}: the table holds several {group}s {sorted(router[group].unique())}; "
                         f"filter it to one (e.g. router[router.{group} == 'full'])")


@styled
def plot_router_weights(router: pd.DataFrame, *, hue: str | None = "variant", ax: Axes | None = None,
                        order: Sequence[str] | None = None, max_levels: int = 8) -> Axes:
    """Violins of the per-sample weights w_l, w_v, w_a (test split, all seeds pooled), one per ``hue`` level.

    A constant weight (e.g. a uniform router) is drawn as a horizontal bar instead of a violin.
    """
    require_columns(router, [*_W, hue], "plot_router_weights")
    levels = [None] if hue is None else list(order) if order is not None else list(pd.unique(router[hue]))
    if len(levels) > max_levels:
        raise ValueError(f"plot_router_weights: {len(levels)} {hue} levels; filter to at most {max_levels}")
    ax = new_axes(ax, width="column" if len(levels) <= 2 else PAGE_WIDTH, height=2.4)
    width = 0.8 / len(levels)
    handles: list[Artist] = []
    labels: list[str] = []
    for j, level in enumerate(levels):
        part = router if level is None else router[router[hue] == level]
        c = color(j) if hue is not None else "0.5"
        for i, w in enumerate(_W):
            vals = part[w].dropna().to_numpy(float)
            pos = i - 0.4 + width * (j + 0.5)
            if vals.size == 0:
                continue
            if np.ptp(vals) < 1e-9:
                ax.hlines(vals[0], pos - width * 0.4, pos + width * 0.4, color=c, linewidth=2)
                continue
            body = ax.violinplot(vals, positions=[pos], widths=width * 0.9, showmedians=True, showextrema=False)
            for poly in list(body["bodies"]):  # type: ignore[call-overload]
                poly.set_facecolor(MODALITY_COLORS[w[-1]] if hue is None else c)
                poly.set_edgecolor("0.2")
                poly.set_linewidth(0.4)
                poly.set_alpha(0.75)
            body["cmedians"].set_color("white")  # white with a dark outline: visible on any fill
            body["cmedians"].set_path_effects(_MEDIAN_OUTLINE)
        if hue is not None:
            handles.append(Patch(color=c, alpha=0.75))
            labels.append(str(level))
    ax.set_xticks(range(3), [MODALITY_NAMES[m] for m in MODALITIES])
    ax.set_ylabel("Router weight (per test sample)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="x", visible=False)
    seeds = router["seed"].nunique() if "seed" in router.columns else 1
    note = f"white line: median\n(pooled over {seeds} seed(s))"
    handles.append(Line2D([], [], color="white", path_effects=_MEDIAN_OUTLINE))
    labels.append(note)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), title=hue)
    return ax


@styled
def plot_router_reliability(router: pd.DataFrame, *, group: str = "variant", max_points: int = 1500,
                            seed: int = 0, fig: Figure | None = None) -> Figure:
    """Three panels (l, v, a): router weight against the true reliability, Pearson r in each title.

    r is computed on all samples of all seeds; at most ``max_points`` (a fixed random subset) are drawn.
    """
    require_columns(router, [*_W, "r_l", "r_v", "r_a"], "plot_router_reliability")
    _single(router, group, "plot_router_reliability")
    if not has_reliability(router):
        raise ValueError("plot_router_reliability: no true reliabilities (r_l, r_v, r_a are null: real data?)")
    if fig is None:
        fig, axes = new_figure(PAGE_WIDTH, height=2.5, ncols=3, sharey=True)
    else:
        axes = np.asarray(fig.subplots(1, 3, squeeze=False, sharey=True))
    keyed = router.assign(**{group: router[group] if group in router.columns else "all"})
    corr = reliability_correlation(keyed, group).set_index("modality")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(router), size=min(max_points, len(router)), replace=False))
    for ax, m in zip(axes[0], MODALITIES):
        x, y = router[f"r_{m}"].to_numpy(float)[idx], router[f"w_{m}"].to_numpy(float)[idx]
        ax.scatter(x, y, s=3, alpha=0.35, color=MODALITY_COLORS[m], linewidths=0, rasterized=True)
        r = corr.loc[m, "r_pooled"]
        text = f"r = {r:.2f}".replace("-", "−") if np.isfinite(r) else "r undefined (constant)"
        ax.set_title(f"{MODALITY_NAMES[m]}: {text}")
        ax.set_xlabel(f"True reliability $r_{m}$")
    axes[0, 0].set_ylabel("Router weight $w_m$")
    n_seeds = router["seed"].nunique() if "seed" in router.columns else 1
    fig.suptitle(f"Pearson r over {len(router)} test samples × modality ({n_seeds} seed(s) pooled); "
                 f"{len(idx)} points drawn", fontsize=7)
    return fig


@styled
def plot_router_by_label(router: pd.DataFrame, *, group: str = "variant", ax: Axes | None = None,
                         confidence: float = 0.95) -> Axes:
    """Grouped bars: mean weight of each modality per label bin, error bars = CI over seeds."""
    require_columns(router, [*_W, "label", "trial_id"], "plot_router_by_label")
    _single(router, group, "plot_router_by_label")
    keyed = router.assign(**{group: router[group] if group in router.columns else "all"})
    summ = weights_by_label(keyed, group)
    present = set(summ["label_bin"].astype(str))
    bins = [b for b in summ["label_bin"].cat.categories if b in present]
    ax = new_axes(ax, height=2.4)
    width = 0.27
    for i, m in enumerate(MODALITIES):
        part = summ[summ["modality"] == m].set_index("label_bin").reindex(bins)
        mean = part["mean"].to_numpy(float)
        # weights live in [0, 1]: the t interval of few seeds can exceed it, so the bars are clipped there
        lo = np.clip(part["ci_low"].to_numpy(float), 0.0, 1.0)
        hi = np.clip(part["ci_high"].to_numpy(float), 0.0, 1.0)
        x = np.arange(len(bins)) + (i - 1) * width
        ax.bar(x, mean, width=width, color=MODALITY_COLORS[m], label=MODALITY_NAMES[m])
        spread = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(mean)  # one seed: no bar, not a bar of 0
        err = np.maximum(np.vstack([mean - lo, hi - mean])[:, spread], 0.0)
        ax.errorbar(x[spread], mean[spread], yerr=err, fmt="none", elinewidth=0.7, capsize=1.5, ecolor="0.2")
    counts = summ[summ["modality"] == "l"].set_index("label_bin").reindex(bins)["n_samples"]
    ax.set_xticks(np.arange(len(bins)), [f"{b}\n({int(c)})" for b, c in zip(bins, counts)])
    ax.set_xlabel("Label bin (samples, all seeds)")
    ax.set_ylabel("Mean router weight")
    ax.axhline(1 / 3, color="0.4", linestyle=":", linewidth=0.8)
    ax.grid(axis="x", visible=False)
    ns = summ["n"].to_numpy()
    ax.set_ylim(0.0, 1.0)
    ns = ns[ns > 0]
    bars = (f"error bars: {band_label(ns).replace('mean ± ', '')}, within [0, 1]" if ns.size and ns.max() >= 2
            else "one seed: no error bars")
    ax.legend(title=f"{bars}\ndotted line: equal weights (1/3)", ncols=3, loc="lower center",
              bbox_to_anchor=(0.5, 1.01))
    return ax


@styled
def plot_router_correlation(router: pd.DataFrame, trials: pd.DataFrame, *, x: str, ax: Axes | None = None,
                            confidence: float = 0.95) -> Axes:
    """Per-seed Pearson r between each modality's weight and its true reliability against a numeric
    parameter ``x`` (e.g. the router temperature), one line per modality. Seeds are averaged on Fisher's
    z = atanh(r) scale and the t interval is mapped back with tanh, so the band stays within [-1, 1]."""
    require_columns(trials, ["trial_id", x], "plot_router_correlation")
    if not has_reliability(router):
        raise ValueError("plot_router_correlation: no true reliabilities (r_l, r_v, r_a are null: real data?)")
    per_trial = reliability_correlation(router, "trial_id")[["trial_id", "modality", "r_pooled"]]
    data = per_trial.merge(trials[["trial_id", x]], on="trial_id").dropna(subset=["r_pooled"])
    data["z"] = np.arctanh(data["r_pooled"].clip(-0.999999, 0.999999))
    ax = new_axes(ax)
    summ = summarize(data, [x, "modality"], ["z"], confidence=confidence)
    summ[["mean", "ci_low", "ci_high"]] = np.tanh(summ[["mean", "ci_low", "ci_high"]])
    handles: list[Any] = []
    for m in MODALITIES:
        s = summ[(summ["modality"] == m) & (summ["n"] > 0)].sort_values(x)
        if s.empty:
            continue
        line, band = draw_mean_band(ax, s[x].to_numpy(float), s["mean"].to_numpy(float),
                                    s["ci_low"].to_numpy(float), s["ci_high"].to_numpy(float),
                                    color=MODALITY_COLORS[m])
        line.set_label(MODALITY_NAMES[m])
        handles.append((line, band) if band is not None else line)
    if is_log_spaced(data[x]):
        log_axis(ax, data[x])
    ax.axhline(0.0, color="0.4", linewidth=0.7, linestyle=":")
    ax.set_xlabel(param_label(x))
    ax.set_ylabel("Pearson r (router weight,\ntrue reliability)")
    pct = f"{round(confidence * 100):d}% CI"
    ax.legend(handles, [h[0].get_label() if isinstance(h, tuple) else h.get_label() for h in handles],
              title=band_label(summ["n"].to_numpy(), what=pct) + " (Fisher z)", loc="lower center",
              bbox_to_anchor=(0.5, 1.01), ncols=3)
    return ax
