"""The one figure style of the reports: Okabe-Ito colours (colour-blind safe), 8 pt fonts sized for a
3.3 in paper column or a 6.9 in page, constrained layout, and PDFs with embedded TrueType fonts.

Figures are built as ``matplotlib.figure.Figure`` objects (no pyplot state, no GUI backend needed);
drawing functions run inside :func:`styled` so the rcParams apply to every artist they create.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import matplotlib as mpl
import numpy as np
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = [
    "COLUMN_WIDTH",
    "MODALITY_COLORS",
    "PAGE_WIDTH",
    "PALETTE",
    "RC",
    "band_label",
    "color",
    "new_axes",
    "new_figure",
    "style_context",
    "styled",
]

COLUMN_WIDTH = 3.3  # inches: one column of a two-column paper (CVPR)
PAGE_WIDTH = 6.9  # inches: full text width
#: Okabe & Ito (2008) colour-blind-safe palette, ordered for lines (yellow last: weak on white).
PALETTE: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
                            "#F0E442")
MODALITY_COLORS: dict[str, str] = {"l": PALETTE[0], "v": PALETTE[1], "a": PALETTE[2]}
BASELINE_COLOR = "#555555"

RC: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "pdf.fonttype": 42,  # embed TrueType, editable text, accepted by publishers
    "ps.fonttype": 42,
    "svg.fonttype": "none",
    "savefig.dpi": 300,
    "figure.dpi": 100,
    "image.cmap": "viridis",
}

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def style_context() -> Iterator[None]:
    """Apply the report style to everything drawn or saved inside the block."""
    with mpl.rc_context(RC):  # type: ignore[arg-type]  # the stubs want literal keys
        yield


def styled(func: F) -> F:
    """Decorator: run a drawing function inside :func:`style_context`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with style_context():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _width(width: Literal["column", "page"] | float) -> float:
    if width == "column":
        return COLUMN_WIDTH
    if width == "page":
        return PAGE_WIDTH
    if isinstance(width, int | float) and width > 0:
        return float(width)
    raise ValueError(f"width must be 'column', 'page' or inches > 0, got {width!r}")


def new_figure(width: Literal["column", "page"] | float = "column", height: float | None = None,
               nrows: int = 1, ncols: int = 1, **subplot_kw: Any) -> tuple[Figure, np.ndarray]:
    """A constrained-layout figure and its axes array (always 2-D: ``axes[row, col]``)."""
    w = _width(width)
    if height is None:
        height = w * 0.75 * nrows if ncols == 1 else min(w / ncols * 0.95 * nrows + 0.4, 9.0)
    with style_context():
        fig = Figure(figsize=(w, height), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def new_axes(ax: Axes | None, width: Literal["column", "page"] | float = "column",
             height: float | None = None) -> Axes:
    """``ax`` itself, or the single axes of a new figure of the given width."""
    if ax is not None:
        return ax
    return new_figure(width, height)[1][0, 0]


def color(i: int) -> str:
    """The i-th palette colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def band_label(ns: Sequence[int] | np.ndarray, *, what: str = "95% CI", unit: str = "seeds",
               qualifier: str = "") -> str:
    """Legend text saying what a band is, e.g. ``mean ± 95% CI over n=3 seeds`` (or ``n=2–3``);
    ``qualifier`` is appended to that form (e.g. "still training")."""
    arr = np.asarray(ns, dtype=int)
    arr = arr[arr > 0]
    if arr.size == 0:
        return "no data"
    lo, hi = int(arr.min()), int(arr.max())
    n = f"n={hi}" if lo == hi else f"n={lo}–{hi}"
    if hi < 2:
        return f"single value per point ({n} {unit[:-1] if unit.endswith('s') else unit}; no CI)"
    return f"mean ± {what} over {n} {unit}" + (f" {qualifier}" if qualifier else "")
