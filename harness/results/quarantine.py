"""Damaged result files: found before a resumed study starts, and moved aside with their trial's other files.

A trial's files (``trials/``, ``epochs/`` and ``router/<trial_id>.parquet``) are one unit. When any of them
cannot be read (truncated, overwritten, bytes changed on disk: the Parquet page checksums catch those) or
holds rows of another trial, all of them move to ``quarantine/<UTC time>/<table>/<trial_id>.parquet`` with
a ``reasons.txt``: nothing is deleted, and the trial, now without a row, is run again by the resume
like any unfinished trial. ``.runs/<id>.json`` notes the quarantine until the trial starts again, so
what Tune last reported for it (from before) is never written back as its row. Tune's checkpoints stay.
"""

from __future__ import annotations

import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.results.sink import READ_ERRORS, TABLES, ResultStore, read_parquet
from harness.study.errors import StudyExistsError

__all__ = ["damaged_files", "quarantine_damaged", "quarantine_trials"]

QUARANTINE = "quarantine"


def _is_trial_id(stem: str) -> bool:
    return len(stem) == 12 and all(c in "0123456789abcdef" for c in stem)


def _problem(table: str, path: Path) -> str | None:
    """Why ``path`` is damaged, or None when it reads whole and belongs to its trial."""
    try:
        data = read_parquet(path)
    except FileNotFoundError:
        return None
    except READ_ERRORS as exc:
        return f"not a readable Parquet file ({exc})"
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
    """Every damaged per-trial file of the study, with what is wrong with it (reads each file whole)."""
    found: dict[Path, str] = {}
    for table in TABLES:
        folder = store.table_dir(table)
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.parquet")):
            if path.name.startswith(".") or not _is_trial_id(path.stem):
                continue
            problem = _problem(table, path)
            if problem is not None:
                found[path] = problem
    return found


def quarantine_trials(store: ResultStore, reasons: dict[str, str]) -> Path:
    """Move every file of the given trials under a new ``quarantine/<time>/`` folder; returns that folder.

    ``reasons`` maps trial id -> why (written to ``reasons.txt``). A file already gone is skipped, so two
    processes quarantining the same trial at once do no harm.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target = store.dir / QUARANTINE / f"{stamp}-{uuid.uuid4().hex[:6]}"
    lines = []
    for tid, why in sorted(reasons.items()):
        for table in TABLES:
            src = store.table_path(table, tid)
            dst = target / table / src.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(src, dst)
            except FileNotFoundError:
                continue
            lines.append(f"{table}/{src.name}: moved here because {why}\n")
        store.mark_quarantined(tid, target)
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "reasons.txt", "a", encoding="utf-8") as fh:
        fh.writelines(lines)
    return target


def quarantine_damaged(store: ResultStore, previous: dict[str, Any], *,
                       dry_run: bool = False) -> dict[str, Any]:
    """Before a resume: name every damaged file, move its trial's files aside (not on a dry run), and mark
    a finished study incomplete so its quarantined trials run again. Returns the study's info as now.

    Takes the study's lock while moving, so a study another driver is running is refused
    (``StudyExistsError``) rather than changed under it.
    """
    found = damaged_files(store)
    if not found:
        return previous
    for path, problem in found.items():
        print(f"warning: {path}: damaged: {problem}", file=sys.stderr, flush=True)
    trials = {path.stem: f"{path.parent.name}/{path.name} is damaged: {problem}" for path, problem in found.items()}
    if dry_run:
        print(f"warning: --resume will move the files of {len(trials)} trial(s) to "
              f"{store.dir / QUARANTINE}/ and run them again", file=sys.stderr, flush=True)
        return previous
    try:
        with store.lock():
            target = quarantine_trials(store, trials)
            info = previous
            if previous.get("status") == "finished":
                info = store.update_info(status="incomplete")
    except OSError as exc:
        raise StudyExistsError(f"{store.dir}: cannot move the damaged files aside ({exc}); move them out of "
                               "trials/, epochs/ and router/ yourself, then resume") from None
    print(f"warning: moved the files of {len(trials)} damaged trial(s) to {target} (kept, not deleted); "
          "they have no row now and run again like unfinished trials", file=sys.stderr, flush=True)
    return info
