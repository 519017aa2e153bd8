"""Caps for large studies: tables and figures show the best ``MAX_SHOWN`` configurations, the rest stays in
a CSV next to them.

A sweep of thousands of configurations cannot be read as a table of thousands of rows or a figure with a
bar per configuration (nor drawn in reasonable time), so a researcher shows the best ones and keeps the
full data in a machine-readable file. Whenever a table or figure is capped, its caption (or the figure's
title) and report.md say so: how many of how many configurations are shown, ranked how, and which file
holds them all. Studies with at most ``MAX_SHOWN`` configurations are reported exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from emoe_schema import STATUSES
from reports.load import Study, completed
from reports.stats import summarize
from reports.tables import Table

__all__ = ["MAX_SHOWN", "cap_note", "capped_status", "is_capped", "mark_capped", "ranked", "results_frame",
           "status_frame"]

#: At most this many configurations (variants) per table or categorical figure.
MAX_SHOWN = 30


def ranked(study: Study) -> list[str]:
    """Variants by mean objective over their completed seeds, best first (those without a completed
    objective value are left out)."""
    col, mode = study.objective
    means = completed(study.trials).groupby("variant")[col].mean().dropna()
    return list(means.sort_values(ascending=mode == "min").index)  # as sections.ranked_variants


def is_capped(study: Study) -> bool:
    """True when the study has more configurations than a table or figure shows."""
    return int(study.trials["variant"].nunique()) > MAX_SHOWN


def cap_note(study: Study, shown: int, file: str) -> str:
    """The sentence a capped table or figure carries."""
    total = int(study.trials["variant"].nunique())
    col, mode = study.objective
    return (f"Showing the {shown} best of {total} configurations by mean {col} over completed seeds "
            f"({'lowest' if mode == 'min' else 'highest'} first); all {total} are in tables/{file}.csv")


def mark_capped(fig: Figure, note: str) -> Figure:
    """Put ``note`` above the figure (a small grey title; an existing title stays below it)."""
    old = getattr(fig, "_suptitle", None)
    text = note + "."
    if old is not None and old.get_text():
        text = f"{text}\n{old.get_text()}"
    fig.suptitle(text, fontsize=6, color="0.35", wrap=True)
    return fig


def status_frame(trials: pd.DataFrame, group: str = "variant") -> pd.DataFrame:
    """Trials per status and group, every group: the machine-readable form of the status table."""
    counts = trials.groupby([group, "status"]).size().unstack(fill_value=0)
    statuses = [s for s in STATUSES if s in counts.columns] + [s for s in counts.columns if s not in STATUSES]
    return counts[statuses].reset_index()


def capped_status(study: Study) -> Table:
    """The status table of a study with more than ``MAX_SHOWN`` configurations: the best ``MAX_SHOWN``
    configurations, then one row of every configuration's totals (so no failed trial goes unmentioned)."""
    frame = status_frame(study.trials)
    top = ranked(study)[:MAX_SHOWN]
    shown = frame.set_index("variant").loc[[v for v in top if v in set(frame["variant"])]]
    statuses = list(frame.columns[1:])
    rows = [[str(v), *(str(int(shown.loc[v, s])) for s in statuses)] for v in shown.index]
    rows.append([f"all {len(frame)} configurations", *(str(int(frame[s].sum())) for s in statuses)])
    note = cap_note(study, len(shown), "status_all")
    return Table(header=["variant", *statuses], rows=rows, align="l" + "r" * len(statuses),
                 caption=f"Trials per status (only completed trials enter the statistics). {note}; the last "
                         "row counts every configuration's trials.")


def results_frame(trials: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean, std and n over completed seeds of each metric, one row per group: the machine-readable form of
    a results table, every configuration."""
    long = summarize(completed(trials), list(by), list(metrics))
    wide = long.set_index([*by, "metric"])[["n", "mean", "std"]].unstack("metric")  # only groups that exist
    wide.columns = [f"{m}_{stat}" for stat, m in wide.columns]
    ordered = [f"{m}_{stat}" for m in metrics for stat in ("n", "mean", "std") if f"{m}_{stat}" in wide.columns]
    return wide[ordered].reset_index()
