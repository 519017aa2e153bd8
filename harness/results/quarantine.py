"""Damaged result files: found before a resumed study starts, and moved aside with their trial's other files.

A trial's files (``trials/``, ``epochs/``, ``router/``, ``predictions/<trial_id>.parquet``) are one unit. When any of them
cannot be read (truncated, overwritten, bytes changed on disk: the Parquet page checksums catch those) or
holds rows of another trial, all of them move to ``quarantine/<UTC time>/<table>/<trial_id>.parquet`` with
a ``reasons.txt``: nothing is deleted, and the trial, now without a row, is run again by the resume
like any unfinished trial. ``.runs/<id>.json`` notes the quarantine until the trial starts again, so
what Tune last reported for it (from before) is never written back as its row. Tune's checkpoints stay.

In a compacted study (``harness.results.compact``) a quarantined trial's compacted rows move aside too, and a
damaged compacted file loses only the trials of its unreadable row groups (``harness.results.salvage``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from emoe_schema.layout import COMPACTED, list_table
from harness.results.salvage import (
    compacted_problem,
    extract_trials,
    known_trials,
    read_checked,
    salvage_compacted,
)
from harness.results.sink import QUARANTINE, TABLES, ResultStore
from harness.study.errors import StudyExistsError

__all__ = ["damaged_files", "quarantine_damaged", "set_aside"]


def _problem(table: str, path: Path) -> str | None:
    """Why ``path`` is damaged, or None when it reads whole and belongs to its trial."""
    data, problem = read_checked(path)
    if data is None:
        return problem
    if table == "trials" and data.num_rows != 1:
        return f"holds {data.num_rows} rows; a trial's row file holds exactly one"
    if "trial_id" in data.column_names:
        others = sorted(set(data.column("trial_id").to_pylist()) - {path.stem})
        if others:
            return f"holds rows of other trial(s) {others[:3]}"
    elif data.num_rows:
        return "has no trial_id column"
    return None


def damaged_files(store: ResultStore) -> dict[Path, str]:
    """Every damaged part and compacted file of the study, with what is wrong with it (reads each whole)."""
    found: dict[Path, str] = {}
    for table in TABLES:
        files = list_table(store.table_dir(table))
        for path in files.parts.values():
            problem = _problem(table, path)
            if problem is not None:
                found[path] = problem
        if files.compacted is not None and (problem := compacted_problem(table, files.compacted)) is not None:
            found[files.compacted] = problem
    return found


def _set_aside(store: ResultStore, found: dict[Path, str]) -> tuple[Path, int]:
    """Move the damaged files' trials aside (parts, compacted rows); returns the folder and the trial count."""
    reasons = {p.stem: f"{p.parent.name}/{p.name} is damaged: {why}" for p, why in found.items()
               if p.name != COMPACTED}
    target = store.new_quarantine_folder()
    notes: list[str] = []
    everything = False
    for path, why in found.items():
        if path.name != COMPACTED:
            continue
        name = f"{path.parent.name}/{COMPACTED}"
        lost = salvage_compacted(store, path.parent.name, target)
        if lost is None:
            everything = True
            notes.append(f"{name}: kept here ({why}); it could not be read at all: every trial of "
                         "the study runs again\n")
            continue
        notes.append(f"{name}: kept here ({why}); its readable row groups stayed in the study, the "
                     f"trials of the {len(lost)} unreadable one(s) run again\n")
        for tid in known_trials(store):
            if any(first <= tid <= last for first, last in lost):
                reasons.setdefault(tid, f"its rows in {name} were damaged: {why}")
    if everything:
        for tid in known_trials(store):
            reasons.setdefault(tid, "a compacted file of the study could not be read at all")
    if reasons and set_aside(store, reasons, target)[1]:
        notes.append("<table>/compacted-rows.parquet: the compacted rows of these trials, which run again:\n")
        notes += [f"  {tid}: {why}\n" for tid, why in sorted(reasons.items())]
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "reasons.txt", "a", encoding="utf-8") as fh:
        fh.writelines(notes)
    return target, len(reasons)


def set_aside(store: ResultStore, reasons: dict[str, str], target: Path | None = None) -> tuple[Path, int]:
    """Move the given trials' files and compacted rows to ``target`` (default: a new ``quarantine/<time>/``
    folder), kept, not deleted, with ``reasons.txt`` saying why (``reasons`` maps trial id -> why); the folder
    and the number of compacted rows moved. Call under the study's lock."""
    target = target or store.new_quarantine_folder()
    store.quarantine(reasons, target)
    return target, extract_trials(store, set(reasons), target)


def quarantine_damaged(store: ResultStore, previous: dict[str, object], *,
                       dry_run: bool = False) -> dict[str, object]:
    """Before a resume: name every damaged file, move its trial's files aside (not on a dry run), and mark
    a finished study incomplete so its quarantined trials run again. ``previous`` is the study's info
(``study.json``, as ``ResultStore.read_info`` gives it); returns it as it is now.

    Takes the study's lock while moving, so a study another driver is running is refused
    (``StudyExistsError``) rather than changed under it.
    """
    found = damaged_files(store)
    if not found:
        return previous
    for path, problem in found.items():
        print(f"warning: {path}: damaged: {problem}", file=sys.stderr, flush=True)
    if dry_run:
        print(f"warning: --resume will move the damaged files' trials to {store.dir / QUARANTINE}/ and run them "
              "again", file=sys.stderr, flush=True)
        return previous
    try:
        with store.lock():
            target, n = _set_aside(store, found)
            info = previous
            if previous.get("status") == "finished":
                info = store.update_info(status="incomplete")
    except OSError as exc:
        raise StudyExistsError(f"{store.dir}: cannot move the damaged files aside ({exc}); move them out of "
                               "trials/, epochs/ and router/ yourself, then resume") from None
    print(f"warning: moved the files of {n} damaged trial(s) to {target} (kept, not deleted); "
          "they have no row now and run again like unfinished trials", file=sys.stderr, flush=True)
    return info
