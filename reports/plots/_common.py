"""Helpers shared by the drawing modules: completed-trial filtering and the mean-line-plus-band artist."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from reports.load import completed

__all__ = ["completed_rows", "draw_mean_band", "log_axis", "require_columns"]


def require_columns(df: pd.DataFrame, columns: Sequence[str | None], what: str) -> None:
    """Raise a KeyError naming the columns a drawing function needs but the table lacks."""
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise KeyError(f"{what}: the table has no column(s) {missing}; available: {sorted(map(str, df.columns))}")


def completed_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of completed trials (tables without a status column are returned unchanged)."""
    return completed(df) if "status" in df.columns else df


def draw_mean_band(ax: Axes, x: np.ndarray, mean: np.ndarray, lo: np.ndarray, hi: np.ndarray, *,
                   color: str, marker: str | None = "o", linestyle: str = "-",
                   alpha: float = 0.22) -> tuple[Line2D, PolyCollection | None]:
    """Draw the mean as a line and the interval [lo, hi] as a shaded band (where it is defined)."""
    (line,) = ax.plot(x, mean, color=color, marker=marker, linestyle=linestyle, zorder=3)
    ok = np.isfinite(lo) & np.isfinite(hi)
    band = None
    if ok.sum() >= 1:
        band = ax.fill_between(x, np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), color=color,
                               alpha=alpha, linewidth=0, zorder=2)
    return line, band


def log_axis(ax: Axes, values: pd.Series) -> None:
    """Log-scale the x axis, ticked at the grid's own values when there are few (0.03, 0.1, 0.3, ...)."""
    ax.set_xscale("log")
    grid = np.sort(pd.to_numeric(values, errors="coerce").dropna().unique())
    if grid.size <= 8:
        ax.set_xticks(grid, [f"{v:g}" for v in grid])
        ax.xaxis.set_minor_locator(NullLocator())
