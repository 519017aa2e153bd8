"""A damaged compacted file, and quarantined trials' compacted rows (docs/results.md, Damaged files).

A compacted file holds many trials' rows, so damage to it must cost the rows it really lost, not the
study. Its row groups (``ROW_GROUP_ROWS`` rows each, sorted by trial id) are read one by one with their
page checksums: the readable ones become the new compacted file (written by the commit protocol of
``harness.results.compact``); the damaged file itself is kept, byte for byte, under ``quarantine/``. The
trials whose rows lay in an unreadable row group (its ``trial_id`` range, from the file's footer) are
quarantined as a whole, like a trial with a damaged part: their rows in every table move to
``quarantine/<time>/<table>/compacted-rows.parquet`` and the resume runs them again. When even the footer
cannot be read, every trial the study knows of (``.runs/``, parts, other compacted files) counts as lost.
Everything here runs under the study's lock (``quarantine.quarantine_damaged`` takes it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emoe_schema import TABLES
from emoe_schema.layout import COMPACTED, READ_ERRORS, is_trial_id, list_table, read_parquet, superseded_mask
from harness.results.compact import write_compacted
from harness.results.sink import ResultStore

__all__ = ["compacted_problem", "extract_trials", "known_trials", "read_checked", "salvage_compacted"]


def read_checked(path: Path) -> tuple[pa.Table | None, str | None]:
    """A result file's rows, or why it cannot be read (``(None, None)`` when it does not exist)."""
    try:
        return read_parquet(path), None
    except FileNotFoundError:
        return None, None
    except READ_ERRORS as exc:
        return None, f"not a readable Parquet file ({exc})"


def compacted_problem(table: str, path: Path) -> str | None:
    """Why a compacted file is damaged, or None when it reads whole and holds each trial's row once."""
    data, problem = read_checked(path)
    if data is None:
        return problem
    if data.num_rows and "trial_id" not in data.column_names:
        return "has no trial_id column"
    if table == "trials" and data.num_rows and pc.count_distinct(data.column("trial_id")).as_py() != data.num_rows:
        return "holds some trial's row more than once"
    return None


def _keep_copy(path: Path, dest: Path) -> None:
    """Put the damaged file's bytes in ``dest`` while leaving ``path`` in place (a hard link if possible)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(path, dest)
    except OSError:
        shutil.copyfile(path, dest)


def salvage_compacted(store: ResultStore, table: str, target: Path) -> list[tuple[str, str]] | None:
    """Keep the readable row groups of a damaged compacted file (the file itself goes to ``target``).

    Returns the ``(first, last)`` trial ids of each unreadable row group, or None when none of its rows can
    be trusted (footer unreadable, no statistics, a trial's row twice): then every trial counts as lost.
    """
    path = store.compacted_path(table)
    dest = target / table / COMPACTED
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        meta = pf.metadata
        col = pf.schema_arrow.get_field_index("trial_id")
    except READ_ERRORS:
        col = -1
    if col < 0 or (table == "trials" and compacted_problem(table, path) == "holds some trial's row more than once"):
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        return None
    good: list[pa.Table] = []
    lost: list[tuple[str, str]] = []
    for i in range(meta.num_row_groups):
        try:
            good.append(pf.read_row_group(i))
        except READ_ERRORS:
            stats = meta.row_group(i).column(col).statistics
            if stats is None or not stats.has_min_max:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
                return None
            lost.append((str(stats.min), str(stats.max)))
    _keep_copy(path, dest)
    write_compacted(path.parent, pa.concat_tables(good) if good else pf.schema_arrow.empty_table())
    return lost


def known_trials(store: ResultStore) -> set[str]:
    """Every trial id the study has a trace of: run records, parts and readable compacted rows."""
    runs = store.dir / ".runs"
    found = {p.stem for p in runs.glob("*.json") if is_trial_id(p.stem)} if runs.is_dir() else set()
    for table in TABLES:
        files = list_table(store.table_dir(table))
        found |= set(files.parts)
        if files.compacted is not None:
            with contextlib.suppress(*READ_ERRORS):
                found |= {str(t) for t in read_parquet(files.compacted, ["trial_id"]).column("trial_id").to_pylist()}
    return found


def extract_trials(store: ResultStore, trial_ids: set[str], target: Path) -> int:
    """Move the given trials' rows out of every compacted file into ``target/<table>/compacted-rows.parquet``;
    returns how many rows moved. The rows are written to the quarantine before the compacted file loses them."""
    moved = 0
    ids = sorted(trial_ids)
    for table in TABLES:
        path = store.compacted_path(table)
        try:
            data = read_parquet(path)
        except FileNotFoundError:
            continue
        if not data.num_rows:
            continue
        mask = superseded_mask(data, ids)
        taken = data.filter(mask)
        if not taken.num_rows:
            continue
        (target / table).mkdir(parents=True, exist_ok=True)
        pq.write_table(taken, target / table / "compacted-rows.parquet", write_page_checksum=True)
        write_compacted(path.parent, data.filter(pc.invert(mask)))
        moved += taken.num_rows
    return moved
