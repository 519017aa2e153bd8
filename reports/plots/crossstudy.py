"""Critical-difference figure (Demšar 2006, Fig. 1 style): configurations on an average-rank axis (1 = best,
on the left), joined by a bar when their ranks differ by less than the Nemenyi critical difference."""

from __future__ import annotations

import pandas as pd
from matplotlib.axes import Axes

from reports.crossstudy import cliques
from reports.style import BASELINE_COLOR, COLUMN_WIDTH, PAGE_WIDTH, new_axes, styled

__all__ = ["plot_critical_difference"]


@styled
def plot_critical_difference(avg_ranks: pd.Series, cd: float, *, title: str = "", baseline: str | None = None,
                             ax: Axes | None = None) -> Axes:
    """Draw ``avg_ranks`` (configuration -> average rank) with the CD scale and the non-significant groups.

    The baseline's label is drawn in bold; the title is the place to name the metric, the data sets and the
    omnibus test's p-value.
    """
    r = avg_ranks.sort_values(kind="stable")
    k = len(r)
    if k < 2:
        raise ValueError("a critical-difference figure needs at least 2 configurations")
    groups = cliques(r, cd)
    left = (k + 1) // 2
    n_side = max(left, k - left)
    label_in = max(len(str(n)) for n in r.index) * 0.058 + 0.55  # "name (1.23)" at 7 pt, elbow included
    width = COLUMN_WIDTH if 2 * label_in < 0.6 * COLUMN_WIDTH else PAGE_WIDTH
    ax = new_axes(ax, width, height=0.9 + 0.16 * (n_side + len(groups)))
    lo, hi = 1.0, float(max(k, 2))
    span = hi - lo
    fig = ax.get_figure(root=True)
    axes_in = ax.get_position().width * (fig.get_figwidth() if fig is not None else width)
    pad = label_in * span / max(axes_in - 2 * label_in, 0.2 * axes_in)  # labels fit inside the axes
    ax.set_xlim(lo - pad, hi + pad)
    clique_zone = 0.12 * (len(groups) + 1)
    step = 0.16
    bottom = -(clique_zone + step * (n_side + 0.6))
    ax.set_ylim(bottom, 0.55)
    ax.set_axis_off()
    ax.plot([lo, hi], [0, 0], color="black", lw=0.9)
    for t in range(1, k + 1):
        ax.plot([t, t], [0, 0.05], color="black", lw=0.8)
        ax.text(t, 0.08, str(t), ha="center", va="bottom", fontsize=7)
    ax.plot([lo, lo + cd], [0.38, 0.38], color="black", lw=1.0)  # the CD scale
    for x in (lo, lo + cd):
        ax.plot([x, x], [0.34, 0.42], color="black", lw=0.8)
    ax.text(lo + cd / 2, 0.44, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=7)
    for c, (i, j) in enumerate(groups):
        y = -0.1 - 0.12 * c
        ax.plot([r.iloc[i] - 0.03, r.iloc[j] + 0.03], [y, y], color=BASELINE_COLOR, lw=2.2,
                solid_capstyle="round")
    for pos, (name, rank) in enumerate(r.items()):
        on_left = pos < left
        level = pos if on_left else k - 1 - pos
        y = -(clique_zone + step * (level + 0.6))
        x_end = lo - 0.08 * span if on_left else hi + 0.08 * span
        ax.plot([rank, rank, x_end], [0, y, y], color="black", lw=0.7)
        weight = "bold" if baseline is not None and str(name) == str(baseline) else "normal"
        ax.text(x_end + (-0.02 if on_left else 0.02) * span, y, f"{name} ({rank:.2f})" if on_left
                else f"({rank:.2f}) {name}", ha="right" if on_left else "left", va="center", fontsize=7,
                fontweight=weight)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_gid("critical_difference")
    return ax
