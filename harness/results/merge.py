"""The rows a compaction writes, streamed: a table's compacted file and its parts merged in trial-id order.

``emoe_schema.layout.read_table_files`` returns a whole table; a compaction only has to write it, so it
never holds more than a batch of parts (``READ_BATCH``), a row group of the compacted file and the rows not
yet written (under ``ROW_GROUP_ROWS``): its memory does not grow with the study (bench/README.md, "Driver
memory after Tune"). What it writes is what writing ``read_table_files``'s result would: the same rows,
columns, column types (pyarrow's "default" promotion over the compacted file's schema, then the parts' in
trial-id order) and row groups.

Both inputs are sorted by trial id (the parts by their names; the compacted file by construction), so a
two-way merge gives the order: a row is written once no row still to come from either input can sort
before it. Only the rows of the two inputs may share a trial id, and then the part wins (the precedence
rule); a trial's rows never span two batches of parts, but may span two row groups of the compacted file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from emoe_schema.layout import (
    COMPACTED,
    READ_BATCH,
    READ_ERRORS,
    TableFiles,
    read_parts,
    sort_by_trial,
    superseded_mask,
    trial_key,
)

__all__ = ["SchemaGrew", "conform", "merged_rows", "unified_schema", "write_row_groups"]


class SchemaGrew(Exception):
    """A later batch of parts has a column, or a type for an all-null column, that the rows already written
    lack: the merge has to start again with ``unified_schema`` (pyarrow "default" promotion of every file)."""


def _last(table: pa.Table) -> str:
    return str(trial_key(table)[table.num_rows - 1].as_py())


def _split(table: pa.Table, bound: str | None) -> tuple[pa.Table, pa.Table]:
    """Rows with a trial id up to ``bound`` (all when None), and the rest (``table`` is sorted)."""
    if bound is None:
        return table, table.slice(table.num_rows)
    n = pc.sum(pc.less_equal(trial_key(table), bound)).as_py() or 0
    return table.slice(0, n), table.slice(n)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema`` (a column it lacks all null, an all-null one cast, the schema's
    metadata), or ``SchemaGrew`` when ``schema`` lacks what it holds (pyarrow's errors for incompatible types)."""
    if table.schema.equals(schema, check_metadata=True):
        return table
    if not table.schema.equals(schema):
        if not pa.unify_schemas([schema, table.schema], promote_options="default").equals(schema):
            raise SchemaGrew
        names = set(table.column_names)
        columns = [table.column(f.name).cast(f.type) if f.name in names else pa.nulls(table.num_rows, f.type)
                   for f in schema]
        return pa.Table.from_arrays(columns, schema=schema)
    return table.replace_schema_metadata(schema.metadata)


def unified_schema(files: TableFiles) -> pa.Schema | None:
    """The schema of the compacted file and every readable part, unified as pyarrow's "default" promotion
    of their concatenation would (footers only: damaged or vanished files are left to the merge)."""
    schemas = []
    for path in [files.directory / COMPACTED, *files.parts.values()]:
        try:
            schemas.append(pq.read_schema(path))
        except READ_ERRORS:  # absent or damaged: the merge skips it or says so
            continue
    return pa.unify_schemas(schemas, promote_options="default") if schemas else None


def _open(path: Path, on_damaged: Callable[[Path, Exception], None]) -> pq.ParquetFile | None:
    try:
        return pq.ParquetFile(path, page_checksum_verification=True)
    except FileNotFoundError:
        return None
    except READ_ERRORS as exc:
        on_damaged(path, exc)
        return None


def _row_groups(pf: pq.ParquetFile | None, on_damaged: Callable[[Path, Exception], None],
                path: Path) -> Iterator[pa.Table]:
    """The compacted file's non-empty row groups in order, page checksums verified."""
    if pf is None:
        return
    with pf:
        for i in range(pf.metadata.num_row_groups):
            try:
                group = pf.read_row_group(i)
            except READ_ERRORS as exc:
                on_damaged(path, exc)
                return
            if group.num_rows:
                yield group


class _Input:
    """One sorted input of the merge: the rows read and not yet written, and whether more may come."""

    def __init__(self, chunks: Iterator[pa.Table]):
        self.chunks = chunks
        self.pending: pa.Table | None = None
        self.left = True

    def fill(self) -> None:
        if self.pending is None and self.left:
            self.pending = next(self.chunks, None)
            self.left = self.pending is not None

    def last(self) -> str | None:
        """The largest trial id read, when more rows may come (none of them sorts before it)."""
        return _last(self.pending) if self.left and self.pending is not None else None

    def take(self, bound: str | None) -> pa.Table | None:
        """The pending rows up to ``bound``."""
        if self.pending is None:
            return None
        rows, rest = _split(self.pending, bound)
        self.pending = rest if rest.num_rows else None
        return rows


def merged_rows(files: TableFiles, *, on_damaged: Callable[[Path, Exception], None],
                schema: pa.Schema | None = None, batch: int = READ_BATCH) -> Iterator[pa.Table]:
    """The rows of ``read_table_files(files)`` (its parts and compacted file; no other file), in order and in
    pieces, all with one schema: ``schema``, else the compacted file's and the first parts' unified
    (``SchemaGrew`` when a later part needs more). Yields nothing when there is no file to read."""
    superseding: list[str] = []
    first_parts: list[pa.Schema] = []

    def part_tables() -> Iterator[pa.Table]:
        for part_batch in read_parts(files, on_damaged=on_damaged, batch=batch):
            superseding.extend(part_batch.superseding)
            if part_batch.table is not None:
                first_parts[:] = first_parts or [part_batch.table.schema]
                if part_batch.table.num_rows:
                    yield part_batch.table

    path = files.directory / COMPACTED
    pf = _open(path, on_damaged) if files.compacted is not None else None
    parts, compacted = _Input(part_tables()), _Input(_row_groups(pf, on_damaged, path))
    written = False
    while True:
        parts.fill()
        compacted.fill()
        if schema is None:  # the first rows of each input decide, as concatenating them would
            found = [pf.schema_arrow] if pf is not None else []
            found += first_parts
            if not found:
                return
            schema = pa.unify_schemas(found, promote_options="default")
        if parts.pending is None and compacted.pending is None:
            if not written and (pf is not None or first_parts):  # files without rows: an empty table
                yield schema.empty_table()
            return
        # no row still to come from either input sorts before the smaller of their largest ids read
        bounds = [b for b in (parts.last(), compacted.last()) if b is not None]
        bound = min(bounds) if bounds else None
        p_rows, c_rows = parts.take(bound), compacted.take(bound)
        if c_rows is not None and superseding and c_rows.num_rows:  # every part up to the bound is read
            c_rows = c_rows.filter(pc.invert(superseded_mask(c_rows, superseding)))
        out = pa.concat_tables([conform(t, schema) for t in (c_rows, p_rows) if t is not None])
        if c_rows is not None and p_rows is not None and c_rows.num_rows and p_rows.num_rows:
            out = sort_by_trial(out)
        written = True
        yield out


def write_row_groups(path: Path, pieces: Iterator[pa.Table], row_group_rows: int,
                     after_group: Callable[[], None] = lambda: None) -> int | None:
    """Write ``pieces`` (one schema) to ``path`` as row groups of ``row_group_rows`` rows, the last one
    shorter, as ``pq.write_table`` of their concatenation would; returns the rows written, None (and no
    file) when ``pieces`` is empty. ``after_group`` is called after each full row group."""
    writer: pq.ParquetWriter | None = None
    buffered: list[pa.Table] = []
    n_buffered = rows = 0
    try:
        for piece in pieces:
            if writer is None:
                writer = pq.ParquetWriter(path, piece.schema, write_page_checksum=True)
            buffered.append(piece)
            n_buffered += piece.num_rows
            while n_buffered >= row_group_rows:
                block = pa.concat_tables(buffered)
                writer.write_table(block.slice(0, row_group_rows), row_group_size=row_group_rows)
                rows += row_group_rows
                rest = block.slice(row_group_rows)  # zero-copy: a whole table passed in is not copied again
                buffered, n_buffered = ([rest] if rest.num_rows else []), rest.num_rows
                after_group()
        if writer is None:
            return None
        if n_buffered or not rows:
            writer.write_table(pa.concat_tables(buffered), row_group_size=row_group_rows)
            rows += n_buffered
    finally:
        if writer is not None:
            writer.close()
    return rows
