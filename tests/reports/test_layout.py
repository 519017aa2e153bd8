"""Every figure a report makes is legible: no two pieces of text overlap, nothing is cut off at the figure
edge, fonts are at least 6 pt, and widths are a paper column (3.3 in) or page (6.9 in). Covered: each study
kind, a search shaped like studies/hpo.yaml (8 parameters, long names: parallel coordinates and importance),
an unfinished study (every figure carries a title note) and the importance figure of every method."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from reports.load import load_study
from reports.plots import plot_importance
from reports.search_stats import IMPORTANCE_LABELS, too_few_note
from reports.sections import plan
from reports.style import style_context


def _texts(fig: Figure) -> list[Text]:
    """Text that is actually drawn: tick labels outside the view limits (or of hidden axes) are not."""
    hidden: set[int] = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            tol = 1e-9 * max(abs(hi - lo), 1e-12)
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not ax.axison or not lo - tol <= tick.get_loc() <= hi + tol:
                    hidden |= {id(tick.label1), id(tick.label2)}
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and id(t) not in hidden
            and (t.axes is None or t.axes.get_visible())]


def _problems(fig: Figure, name: str) -> list[str]:
    with style_context():
        FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    page = fig.bbox
    boxes = []
    for t in _texts(fig):
        box = t.get_window_extent(renderer)
        if box.width > 0 and box.height > 0:
            boxes.append((t, box))
    out = []
    for t, box in boxes:
        if box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1 or box.y1 > page.y1 + 1:
            out.append(f"{name}: {t.get_text()!r} is cut off at the figure edge")
        if t.get_fontsize() < 6:
            out.append(f"{name}: {t.get_text()!r} is smaller than 6 pt")
    for (t1, b1), (t2, b2) in combinations(boxes, 2):
        if b1.overlaps(b2):
            inter_w = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
            inter_h = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
            if inter_w > 1.5 and inter_h > 1.5:  # touching edges are fine
                out.append(f"{name}: {t1.get_text()!r} overlaps {t2.get_text()!r}")
    width = fig.get_size_inches()[0]
    if round(width, 2) not in (3.3, 6.9):
        out.append(f"{name}: width {width} in is neither a column (3.3) nor a page (6.9)")
    return out


@pytest.mark.parametrize("study", ["ablation_dir", "log_grid_dir", "search_dir", "hpo_dir", "running_dir",
                                   "running_hpo_dir"])
def test_report_figures_have_no_overlapping_or_clipped_text(study: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(study)
    problems: list[str] = []
    figures = set()
    for item in plan(load_study(path)):
        obj = item.make()
        if isinstance(obj, Figure):
            figures.add(item.name)
            problems += _problems(obj, item.name)
    assert len(figures) >= 5
    if study in ("hpo_dir", "running_hpo_dir"):
        assert {"importance", "parallel_coordinates"} <= figures
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("method", sorted(IMPORTANCE_LABELS))
@pytest.mark.parametrize("n_params", [1, 2, 8])
def test_importance_figure_labels_fit(method: str, n_params: int) -> None:
    """The x label (up to three lines for η²) fits even when only one or two parameters give the height."""
    names = ["train.lr", "model.d_model", "model.n_heads", "model.router", "model.temperature",
             "model.out_dropout", "loss.distill_weight", "loss.balance_weight"][:n_params]
    judged = method != "none"
    imp = pd.DataFrame({"param": names, "importance": [0.5 / (i + 1) if judged else float("nan")
                                                       for i in range(n_params)],
                        "method": method, "note": "" if judged else too_few_note(5)})
    fig = plot_importance(imp).get_figure(root=True)
    assert isinstance(fig, Figure)
    problems = _problems(fig, f"importance[{method}, {n_params}]")
    assert not problems, "\n".join(problems)
