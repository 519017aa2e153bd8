"""Compaction: each table's per-trial parts become one ``<table>/compacted.parquet`` (docs/results.md).

Thousands of one-row files are slow to list and read (on a cluster's shared file system above all); one
file per table with row groups of ``ROW_GROUP_ROWS`` rows reads in one call. Exactly once, even when the
process is killed at any instant, by the commit protocol of ``emoe_schema.layout``:

1. read the parts (each one's ``stat`` taken first) and the current compacted file; the parts win;
2. write the merged rows, sorted by trial id, to a hidden temporary file and fsync it (steps 1 and 2 are
   one stream, ``harness.results.merge``: a batch of parts and a row group at a time, so memory does not
   grow with the study);
3. rename it over ``compacted.parquet`` and fsync the folder: the commit point. From here the compacted
   file holds every folded part's rows, and a part still present only repeats its trial's rows, which the
   precedence rule counts once;
4. delete each folded part whose ``stat`` is unchanged (a part rewritten meanwhile is newer: it stays).

A compaction killed before step 3 leaves a hidden temporary file that readers ignore and the next
compaction deletes; one killed after it leaves parts the next compaction folds in again. The study's lock
is held throughout, so a running study is never compacted under its driver.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emoe_schema import TABLES
from emoe_schema.layout import COMPACTED, READ_BATCH, list_table
from harness.results.merge import SchemaGrew, merged_rows, unified_schema, write_row_groups
from harness.results.sink import ResultStore, fsync_dir

__all__ = ["AUTO_COMPACT_TRIALS", "ROW_GROUP_ROWS", "CompactionError", "CompactionReport", "TableCompaction", "compact_study",
           "compact_table", "part_count", "remove_stale"]

#: Rows per row group of a compacted file: large enough for fast scans, small enough to skip by trial id.
ROW_GROUP_ROWS = 100_000
#: ``harness.run`` compacts a study when a run ends with at least this many trials' rows in parts: below,
#: one file per trial reads in well under a second and is easier to inspect.
AUTO_COMPACT_TRIALS = 100


class CompactionError(RuntimeError):
    """A table that cannot be compacted as it is (a damaged compacted file, incompatible parts)."""


@dataclass(frozen=True)
class TableCompaction:
    """What compacting one table did."""

    table: str
    parts: int  # parts folded in (and deleted)
    rows: int  # rows of the compacted file now
    bytes: int  # its size
    kept: int = 0  # parts left in place (damaged, or rewritten while compacting)


@dataclass(frozen=True)
class CompactionReport:
    """What ``compact_study`` did, table by table."""

    study: str
    tables: tuple[TableCompaction, ...]
    seconds: float

    @property
    def parts(self) -> int:
        return sum(t.parts for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables)

    def __str__(self) -> str:
        lines = [f"compacted {self.study}: {self.parts} part files folded in {self.seconds:.2f} s"]
        lines += [f"  {t.table}: {t.parts} parts -> {t.rows} rows, {t.bytes / 1e6:.2f} MB"
                  + (f" ({t.kept} parts kept: damaged or rewritten meanwhile)" if t.kept else "")
                  for t in self.tables]
        return "\n".join(lines)


def _step(name: str) -> None:
    """A point between two steps of the protocol (tests make the process fail here)."""


def remove_stale(directory: Path) -> int:
    """Delete temporary files of compactions that were killed (only call under the study's lock)."""
    n = 0
    for tmp in directory.glob(f".{COMPACTED}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            n += 1
    return n


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def write_compacted(directory: Path, rows: pa.Table | Callable[[], Iterable[pa.Table]],
                    row_group_rows: int = ROW_GROUP_ROWS) -> Path | None:
    """Write the folder's compacted file: temporary file, fsync, rename (steps 2 and 3). ``rows`` is the
    table, or makes the pieces to stream, one schema (``merge.SchemaGrew`` from it starts them again,
    once, with every file's schema unified). Returns the file; None (nothing written or changed) when
    ``rows`` makes no piece."""
    tmp = directory / f".{COMPACTED}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    make = (lambda: [rows]) if isinstance(rows, pa.Table) else rows
    try:
        if write_row_groups(tmp, iter(make()), row_group_rows, after_group=lambda: _step("row group")) is None:
            return None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        _step("written")
        os.replace(tmp, directory / COMPACTED)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(directory)
    _step("committed")
    return directory / COMPACTED


def compact_table(store: ResultStore, table: str, row_group_rows: int = ROW_GROUP_ROWS,
                  batch: int = READ_BATCH) -> TableCompaction:
    """Fold the parts of one table into its compacted file (the caller holds the study's lock), reading
    ``batch`` parts at a time."""
    directory = store.table_dir(table)
    remove_stale(directory)
    files = list_table(directory)
    before = {tid: _signature(p) for tid, p in files.parts.items()}
    damaged: list[Path] = []

    def on_damaged(path: Path, exc: Exception) -> None:
        if path.name == COMPACTED:
            raise CompactionError(f"{path}: damaged ({exc}); nothing was changed. `python -m harness.run "
                                  "<study file> --resume` moves its unreadable rows to quarantine/ and runs "
                                  "their trials again") from exc
        damaged.append(path)

    if not files.parts:
        rows = pq.ParquetFile(files.compacted).metadata.num_rows if files.compacted is not None else 0
        return TableCompaction(table, 0, rows, _size(files.compacted))
    for other in files.others:
        print(f"warning: {other}: not a trial's file (names are <trial_id>.parquet); left as it is and "
              "not compacted", file=sys.stderr, flush=True)
    files = replace(files, others=())
    schema: pa.Schema | None = None

    def pieces() -> Iterator[pa.Table]:
        damaged.clear()  # a second pass (the schema grew) finds them again
        return merged_rows(files, on_damaged=on_damaged, schema=schema, batch=batch)

    try:
        try:
            path = write_compacted(directory, pieces, row_group_rows)
        except SchemaGrew:  # a later part has a column the first ones lack: once more, every schema known
            schema = unified_schema(files)
            path = write_compacted(directory, pieces, row_group_rows)
    except SchemaGrew as exc:
        raise CompactionError(f"{directory}: the parts changed while being compacted; nothing was changed "
                              "(run the compaction again)") from exc
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise CompactionError(f"{directory}: the parts have incompatible columns ({exc})") from exc
    bad = {p.stem for p in damaged}
    if path is None:  # every part damaged or gone, and no compacted file
        return TableCompaction(table, 0, 0, 0, kept=len(bad))
    folded = kept = 0
    for tid, part in files.parts.items():
        if before[tid] is None:  # gone before it was read
            continue
        if tid in bad or _signature(part) != before[tid]:  # damaged, or rewritten since it was read: newer
            kept += 1
            continue
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
            folded += 1
        _step("deleted")
    fsync_dir(directory)
    for path_ in damaged:
        print(f"warning: {path_}: damaged; left as it is (`--resume` moves it to quarantine/ and runs its trial "
              "again)", file=sys.stderr, flush=True)
    return TableCompaction(table, folded, pq.ParquetFile(path).metadata.num_rows, _size(path), kept=kept)


def part_count(store: ResultStore, table: str) -> int:
    """How many trials' parts the table's folder holds now."""
    return len(list_table(store.table_dir(table)).parts)


def _size(path: Path | None) -> int:
    return path.stat().st_size if path is not None and path.exists() else 0


@contextlib.contextmanager
def _maybe_lock(store: ResultStore, locked: bool) -> Iterator[None]:
    if locked:
        yield
    else:
        with store.lock():
            yield


def compact_study(store: ResultStore, *, row_group_rows: int = ROW_GROUP_ROWS,
                  locked: bool = False, batch: int = READ_BATCH) -> CompactionReport:
    """Compact every table of the study; safe to run again at any time (a finished compaction does
    nothing, a killed one is completed). Takes the study's lock (``StudyExistsError`` while a driver runs
    it) unless ``locked`` says the caller holds it. Raises ``CompactionError`` for a damaged compacted
    file or parts that do not share columns, before changing that table."""
    t0 = time.perf_counter()
    with _maybe_lock(store, locked):
        done = tuple(compact_table(store, table, row_group_rows, batch) for table in TABLES
                     if store.table_dir(table).is_dir())
    return CompactionReport(store.study, done, time.perf_counter() - t0)

