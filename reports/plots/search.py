"""Search figures: best-so-far against configurations and compute, parameter importance, and parallel
coordinates of the searched parameters coloured by the objective."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize

from reports.metrics import axis_label, metric_info, param_label
from reports.plots._common import completed_rows, require_columns
from reports.search_stats import IMPORTANCE_LABELS, MIN_IMPORTANCE_TRIALS, best_so_far
from reports.stats import is_log_spaced
from reports.style import PAGE_WIDTH, color, new_axes, styled

__all__ = ["normalize_params", "plot_best_so_far", "plot_importance", "plot_parallel_coordinates", "wrap_label"]

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
    """Horizontal bars of ``param_importance`` output (most important on top), labelled with its method.

    A parameter without an importance (NaN: too few trials to judge) gets no bar; when no parameter has one
    the axes say so instead of drawing bars, and per-parameter notes (e.g. "did not vary") are written
    beside their rows."""
    require_columns(importance, ["param", "importance", "method"], "plot_importance")
    method = str(importance["method"].iloc[0]) if len(importance) else "eta2"
    label = IMPORTANCE_LABELS.get(method, method)
    ax = new_axes(ax, height=max(1.6, 0.7 + 0.3 * len(importance) + 0.14 * label.count("\n")))
    values = importance["importance"].to_numpy(float)
    notes = importance["note"].fillna("").astype(str).to_numpy() if "note" in importance else [""] * len(values)
    judged = np.isfinite(values)
    pos = np.arange(len(importance))[::-1]
    ax.barh(pos[judged], values[judged], color=color(0), height=0.6)
    ax.set_yticks(pos, [param_label(p) for p in importance["param"]])
    ax.set_ylim(-0.6, len(importance) - 0.4)
    ax.set_xlabel(label)
    top = float(np.nanmax(values)) if judged.any() else 1.0
    ax.set_xlim(0, max(1e-9, top) * 1.1)
    ax.grid(axis="y", visible=False)
    if not judged.any():
        first = next((n for n in notes if n.startswith("too few")), "")
        detail = first.removeprefix("too few trials to judge").strip() or f"needs ≥ {MIN_IMPORTANCE_TRIALS} trials"
        ax.text(0.5, 0.5, f"Too few trials to judge\n{detail}", transform=ax.transAxes, ha="center",
                va="center", fontsize=7, color="0.25")
        ax.set_xticks([])
    else:
        shared = {str(n) for n, ok in zip(notes, judged) if ok}
        if len(shared) == 1 and next(iter(shared)).startswith("fitted on a random"):  # a sampled fit: say it once
            ax.set_title(shared.pop(), fontsize=6, color="0.35")
            notes = ["" if ok else n for n, ok in zip(notes, judged)]
        for y, note in zip(pos, notes):
            if note:
                ax.text(top * 0.02, y, note, va="center", ha="left", fontsize=6, color="0.35")
    return ax


_WORD = re.compile(r"\$[^$]*\$|\S+")  # a word, or a whole $...$ mathtext group (never split inside)


def wrap_label(text: str, width: int) -> str:
    """Wrap ``text`` at spaces into lines of at most ``width`` characters (a longer word stays whole);
    mathtext groups are kept intact."""
    lines: list[str] = []
    for word in _WORD.findall(text):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return "\n".join(lines)


def _tick_text(v: float) -> str:
    return f"{v:.3g}".replace("e-0", "e-").replace("e+0", "e")


def _log_axis(s: pd.Series, p: str, log: Mapping[str, bool] | None) -> bool:
    """Whether parameter ``p`` (values ``s``) gets a log axis: numeric, positive, not constant, and named
    log in ``log`` (or, when ``log`` does not name it, ratio-spaced)."""
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        return False
    v = s.to_numpy(float)
    if not (np.nanmin(v) > 0 and np.nanmax(v) > np.nanmin(v)):
        return False
    return bool(log[p]) if log is not None and p in log else is_log_spaced(v)


def _decade_ticks(lo: float, hi: float, taken: list[float]) -> list[tuple[float, str]]:
    """Powers of ten strictly inside [lo, hi] (natural logs of the values), kept clear of ``taken``."""
    out: list[tuple[float, str]] = []
    for k in range(int(np.ceil(lo / np.log(10))), int(np.floor(hi / np.log(10))) + 1):
        y = (k * np.log(10) - lo) / (hi - lo)
        if all(abs(y - t) >= 0.12 for t in [*taken, *(o[0] for o in out)]):
            out.append((float(y), _tick_text(10.0 ** k)))
    return out


def normalize_params(df: pd.DataFrame, params: Sequence[str], log: Mapping[str, bool] | None = None
                     ) -> tuple[pd.DataFrame, dict[str, list[tuple[float, str]]]]:
    """Map each parameter to [0, 1] (categories evenly spaced) and give the tick positions and labels of each
    parameter's axis. ``log`` says which numeric parameters have a log axis (e.g. sampled log-uniformly);
    one it does not name is log-scaled when its values are ratio-spaced. A log axis is ticked at its
    minimum, its maximum and the powers of ten between them."""
    out = pd.DataFrame(index=df.index)
    ticks: dict[str, list[tuple[float, str]]] = {}
    for p in params:
        s = df[p]
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            v = s.to_numpy(float)
            is_log = _log_axis(s, p, log)
            t = np.log(v) if is_log else v
            lo, hi = np.nanmin(t), np.nanmax(t)
            out[p] = (t - lo) / (hi - lo) if hi > lo else 0.5
            if hi > lo:
                ticks[p] = [(0.0, _tick_text(np.nanmin(v))), (1.0, _tick_text(np.nanmax(v)))]
                if is_log:
                    ticks[p] += _decade_ticks(lo, hi, [0.0, 1.0])
            else:
                ticks[p] = [(0.5, _tick_text(np.nanmin(v)))]
        else:
            cats = sorted(s.astype(str).unique())
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            out[p] = s.astype(str).map(pos).astype(float)
            ticks[p] = [(pos[c], c) for c in cats]
    return out, ticks


@styled
def plot_parallel_coordinates(trials: pd.DataFrame, *, params: Sequence[str], metric: str, mode: str,
                              log: Mapping[str, bool] | None = None, ax: Axes | None = None) -> Axes:
    """One polyline per completed trial across the parameter axes (each scaled to [0, 1]), coloured by
    ``metric``; the best trial is drawn thicker in black. ``log``: which parameters get a log axis (see
    :func:`normalize_params`); their names say "(log)". Names are wrapped to the space between axes."""
    require_columns(trials, [*params, metric], "plot_parallel_coordinates")
    if len(params) < 2:
        raise ValueError("plot_parallel_coordinates: needs at least two parameters")
    data = completed_rows(trials).dropna(subset=[metric, *params]).reset_index(drop=True)
    ax = new_axes(ax, width=PAGE_WIDTH, height=2.8)
    norm_df, ticks = normalize_params(data, params, log)
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
    width = max(8, int(5.4 / len(params) * 15))  # characters of 7 pt text between two axes
    names = []
    for p in params:
        name = wrap_label(param_label(p), width)
        names.append(f"{name}\n(log)" if _log_axis(data[p], p, log) else name)
    ax.set_xticks(xs, names)
    ax.set_yticks([])
    ax.grid(False)
    ax.set_ylabel("scaled value (min → max)")
    cbar = ax.figure.colorbar(lines, ax=ax, pad=0.01)
    cbar.set_label(label)
    return ax
