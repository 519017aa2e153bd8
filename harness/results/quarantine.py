"""Damaged result files: found before a resumed study starts, and moved aside with their trial's other files.

A trial's files (``trials/``, ``epochs/``, ``router/``, ``predictions/<trial_id>.parquet``) are one unit. When any of them
cannot be read (truncated, overwritten, bytes changed on disk: the Parquet page checksums catch those) or
holds rows of another trial, all of them move to ``quarantine/<UTC time>/<table>/<trial_id>.parquet`` with
a ``reasons.txt``: nothing is deleted, and the trial, now without a row, is run again by the resume
like any unfinished trial. ``.runs/<id>.json`` notes the quarantine until the trial starts again, so
what Tune last reported for it (from before) is never written back as its row. Tune's checkpoints stay.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.results.sink import QUARANTINE, READ_ERRORS, TABLES, ResultStore, read_parquet
from harness.study.errors import StudyExistsError

__all__ = ["damaged_files", "quarantine_damaged"]


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
    trials = {path.stem: f"{path.parent.name}/{path.name} is damaged: {problem}" for path, problem in found.items()}
    if dry_run:
        print(f"warning: --resume will move the files of {len(trials)} trial(s) to "
              f"{store.dir / QUARANTINE}/ and run them again", file=sys.stderr, flush=True)
        return previous
    try:
        with store.lock():
            target = store.quarantine(trials)
            info = previous
            if previous.get("status") == "finished":
                info = store.update_info(status="incomplete")
    except OSError as exc:
        raise StudyExistsError(f"{store.dir}: cannot move the damaged files aside ({exc}); move them out of "
                               "trials/, epochs/ and router/ yourself, then resume") from None
    print(f"warning: moved the files of {len(trials)} damaged trial(s) to {target} (kept, not deleted); "
          "they have no row now and run again like unfinished trials", file=sys.stderr, flush=True)
    return info
