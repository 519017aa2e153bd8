"""Where a result table's rows live, and which copy of a trial's rows counts (docs/results.md, Compaction).

A table's folder ``results/<study>/<table>/`` holds two kinds of files:

* parts, ``<trial_id>.parquet`` (12 hex characters): one trial's rows, written by the harness as it runs;
* the compacted file, ``compacted.parquet``: the rows of many trials, sorted by ``trial_id``, written by
  compaction (``python -m harness.compact``) from the parts it then deletes.

Names starting with ``.`` or ``_`` are temporary or foreign and never read. Any other ``*.parquet`` file
(put there by hand, e.g. a copy) is read as it is, outside the rule, and never compacted, so a reader's
duplicate check still sees it.

**The precedence rule.** A trial's rows in a table come from its part when the folder has one, else from
the compacted file: rows of the compacted file whose ``trial_id`` has a part are ignored (a trial retried
after compaction writes a new part, which wins until the next compaction folds it in). Compaction writes
the new compacted file, holding every folded part's rows, under a temporary name and renames it into
place (the commit point), and deletes the folded parts only afterwards; so whatever instant a reader
looks, each trial counts once. Readers list the folder, read the parts, then the compacted file: a part
that vanished in between was folded into the compacted file that is read after it.

This module reads with pyarrow (the one library every reader of results has); ``emoe_schema`` itself
stays standard-library only and does not import it. The harness and ``reports`` both read through
``read_table_files``, so the rule has one home.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["COMPACTED", "READ_BATCH", "READ_ERRORS", "READ_THREADS", "PartBatch", "TableFiles", "is_trial_id",
           "list_table", "read_parquet", "read_parts", "read_table_files", "sort_by_trial", "superseded_mask",
           "trial_key"]

#: The compacted file's name inside a table's folder.
COMPACTED = "compacted.parquet"
#: Threads reading parts at once (pyarrow releases the GIL while it reads and decodes).
READ_THREADS = 8
#: Parts read, then concatenated into one contiguous table, at a time. A part read alone is a table of one
#: trial's rows with its own schema and column objects: about 120 KB of C++ objects for a one-row trials
#: part, outside Arrow's memory pool (bench/README.md, "Driver memory after Tune"). Concatenating each batch
#: frees them, so a reader's memory follows the rows it returns, not the number of files it opened.
READ_BATCH = 64
#: What reading a damaged Parquet file raises (ArrowInvalid is a ValueError; bad pages are OSErrors).
READ_ERRORS = (pa.ArrowException, OSError, ValueError)


def is_trial_id(stem: str) -> bool:
    """Whether ``stem`` is a trial id (12 lower-case hex characters), i.e. names a part."""
    return len(stem) == 12 and all(c in "0123456789abcdef" for c in stem)


@dataclass(frozen=True)
class TableFiles:
    """The files of one table's folder as listed at one instant."""

    directory: Path
    compacted: Path | None = None
    parts: dict[str, Path] = field(default_factory=dict)  # trial id -> part, sorted by trial id
    others: tuple[Path, ...] = ()  # other visible *.parquet files, sorted by name

    @property
    def empty(self) -> bool:
        return self.compacted is None and not self.parts and not self.others


def list_table(directory: Path) -> TableFiles:
    """The compacted file and the parts of ``directory`` (none when it does not exist)."""
    try:
        names = sorted(p.name for p in directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return TableFiles(directory)
    visible = [n for n in names if n.endswith(".parquet") and not n.startswith((".", "_"))]
    parts = {n[:-8]: directory / n for n in visible if is_trial_id(n[:-8])}
    others = tuple(directory / n for n in visible if n != COMPACTED and n[:-8] not in parts)
    return TableFiles(directory, directory / COMPACTED if COMPACTED in names else None, parts, others)


def read_parquet(path: Path, columns: list[str] | None = None) -> pa.Table:
    """Read a whole Parquet file, verifying its page checksums (``FileNotFoundError`` when absent; any
    other of ``READ_ERRORS`` means the file is damaged). ``ParquetFile`` rather than ``pq.read_table``:
    a third less time per small file, which is what thousands of parts cost."""
    with pq.ParquetFile(path, page_checksum_verification=True) as pf:
        return pf.read(columns=columns)


def _read_or_error(path: Path, columns: list[str] | None) -> pa.Table | Exception:
    try:
        return read_parquet(path, columns)
    except READ_ERRORS as exc:  # FileNotFoundError is an OSError: told apart by the caller
        return exc


def trial_key(table: pa.Table) -> pa.ChunkedArray:
    """The ``trial_id`` column as plain strings (dictionary-encoded in some files)."""
    key = table.column("trial_id")
    return key.cast(key.type.value_type) if pa.types.is_dictionary(key.type) else key


def sort_by_trial(table: pa.Table) -> pa.Table:
    """Rows stably sorted by ``trial_id`` (the order of the parts read by name, each file's rows in order)."""
    return table.take(pc.sort_indices(trial_key(table)))


def superseded_mask(table: pa.Table, trial_ids: list[str]) -> pa.ChunkedArray:
    """True for the rows of ``table`` whose trial has a part (the precedence rule)."""
    return pc.fill_null(pc.is_in(trial_key(table), value_set=pa.array(trial_ids, pa.string())), False)


@dataclass(frozen=True)
class PartBatch:
    """Up to ``READ_BATCH`` consecutive parts (by trial id), read."""

    table: pa.Table | None  # their readable rows as one contiguous table, in trial-id order; None when none
    superseding: list[str]  # the trial ids of these parts that exist (read or damaged): they hide compacted rows


def read_parts(files: TableFiles, *, on_damaged: Callable[[Path, Exception], None],
               columns: list[str] | None = None, promote: Literal["none", "default", "permissive"] = "default",
               batch: int = READ_BATCH) -> Iterator[PartBatch]:
    """The table's parts in trial-id order, ``batch`` of them at a time (see ``READ_BATCH``).

    A damaged part is passed to ``on_damaged`` and left out of its batch's rows but still supersedes its
    trial's compacted rows; a part gone since the listing (folded into the compacted file meanwhile, or
    quarantined) is neither."""
    items = list(files.parts.items())
    with ThreadPoolExecutor(READ_THREADS) as pool:  # small files: waiting on the file system dominates
        for start in range(0, len(items), batch):
            chunk = items[start:start + batch]
            read = list(pool.map(lambda p: _read_or_error(p, columns), (path for _, path in chunk)))
            tables: list[pa.Table] = []
            superseding: list[str] = []
            for (tid, path), got in zip(chunk, read):
                if isinstance(got, FileNotFoundError):
                    continue
                if isinstance(got, Exception):
                    on_damaged(path, got)
                else:
                    tables.append(got)
                superseding.append(tid)
            del read
            merged = pa.concat_tables(tables, promote_options=promote).combine_chunks() if tables else None
            del tables  # the batch's per-file tables go before the next batch is read
            yield PartBatch(merged, superseding)


def read_table_files(files: TableFiles, *, on_damaged: Callable[[Path, Exception], None],
                     columns: list[str] | None = None,
                     promote: Literal["none", "default", "permissive"] = "default",
                     batch: int = READ_BATCH) -> pa.Table | None:
    """The table's rows under the precedence rule, sorted by trial id as the per-trial files read by name
    would be; None when it has no rows file.

    A damaged file is passed to ``on_damaged`` (which may raise) and left out; a damaged part still
    supersedes its trial's compacted rows, as a damaged file of a never-compacted study hides its rows.
    ``promote`` is pyarrow's ``promote_options`` for parts whose columns differ (e.g. an all-null one).
    Every part is read before the compacted file (see the module docstring), ``READ_BATCH`` at a time.
    """
    cols = None if columns is None else list(dict.fromkeys(["trial_id", *columns]))
    tables: list[pa.Table] = []
    superseding: list[str] = []
    for part_batch in read_parts(files, on_damaged=on_damaged, columns=cols, promote=promote, batch=batch):
        if part_batch.table is not None:
            tables.append(part_batch.table)
        superseding += part_batch.superseding
    for path in files.others:
        try:
            tables.append(read_parquet(path, cols))
        except FileNotFoundError:
            continue
        except READ_ERRORS as exc:
            on_damaged(path, exc)
    compacted = None
    try:  # looked for even when the listing had none: a compaction may have committed since
        compacted = read_parquet(files.directory / COMPACTED, cols)
    except FileNotFoundError:
        compacted = None
    except READ_ERRORS as exc:
        on_damaged(files.directory / COMPACTED, exc)
    if compacted is not None and superseding and compacted.num_rows:
        compacted = compacted.filter(pc.invert(superseded_mask(compacted, superseding)))
    if compacted is None and not tables:
        return None
    merged = pa.concat_tables([*([compacted] if compacted is not None else []), *tables],
                              promote_options=promote)
    if compacted is not None and tables:  # both layouts: back into trial order
        merged = sort_by_trial(merged)
    if columns is not None:
        merged = merged.select(columns)
    return merged
