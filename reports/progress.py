"""Whether a study is still incomplete or simulated, and the note every artefact of its report carries then.

A report of a running or interrupted study is legitimate (to look at a search while it runs), but a reader
must never take it for the final result: the note names how many of the planned trials have a row, and goes
into figure titles, table captions (LaTeX and Markdown), the top of report.md and the CLI's stdout. A
simulated study (``simulate: true``: curves drawn from a model, nothing trained) is marked the same way, so
its figures can never pass for measured ones.
"""

from __future__ import annotations

import textwrap
from typing import Any, TypeVar

from matplotlib.figure import Figure

from emoe_schema import SIMULATED_NOTE
from reports.load import Study
from reports.tables import Table

__all__ = ["INCOMPLETE_STATUSES", "figure_note", "incomplete_note", "mark_incomplete", "report_notes", "simulated_note"]

T = TypeVar("T")

#: study.json statuses the harness writes while a study runs or after it stopped before its last trial
INCOMPLETE_STATUSES = ("running", "incomplete")


def _counts(study: Study) -> tuple[int, int | None, str]:
    planned = study.meta.get("n_trials")
    planned = planned if isinstance(planned, int) and not isinstance(planned, bool) and planned > 0 else None
    return len(study.trials), planned, str(study.meta.get("status") or "")


def incomplete_note(study: Study) -> str | None:
    """``"report of an incomplete study: 2 of 9 trials recorded (status running)"``, or None when the study
    is finished: study.json's status is neither running nor incomplete and no planned trial lacks a row."""
    recorded, planned, status = _counts(study)
    short = planned is not None and recorded < planned
    if status not in INCOMPLETE_STATUSES and not short:
        return None
    of = f"{recorded} of {planned}" if planned is not None else f"{recorded}"
    state = f" (status {status})" if status in INCOMPLETE_STATUSES else ""
    return f"report of an incomplete study: {of} trials recorded{state}"


def simulated_note(study: Study) -> str | None:
    """``SIMULATED_NOTE`` for a simulated study (``"simulated": true`` in study.json), else None."""
    return SIMULATED_NOTE if study.meta.get("simulated") is True else None


def report_notes(study: Study) -> list[str]:
    """The notes every artefact of the study's report carries: simulated, incomplete (those that apply)."""
    return [n for n in (simulated_note(study), incomplete_note(study)) if n is not None]


def figure_note(note: str) -> str:
    """The note as a figure title: capitalised, without the "report of" preamble."""
    text = note.removeprefix("report of an ")
    return text[:1].upper() + text[1:]


def _mark_figure(fig: Figure, note: str) -> None:
    width_in = float(fig.get_size_inches()[0])
    text = textwrap.fill(figure_note(note), width=max(30, int(width_in * 15)))  # ~15 chars per inch at 7 pt
    old: Any = getattr(fig, "_suptitle", None)
    if old is not None and old.get_text():
        fig.suptitle(f"{text}\n{old.get_text()}", fontsize=old.get_fontsize())
    else:
        fig.suptitle(text, fontsize=7, color="#B00000")


def mark_incomplete(obj: T, note: str) -> T:
    """Put ``note`` on a Figure (as its title) or a Table (at the start of its caption); raw CSV data is
    left as it is (report.md says the whole report is incomplete). Returns ``obj``, changed in place."""
    if isinstance(obj, Figure):
        _mark_figure(obj, note)
    elif isinstance(obj, Table):
        lead = figure_note(note) + "."
        obj.caption = f"{lead} {obj.caption}" if obj.caption else lead
    return obj
