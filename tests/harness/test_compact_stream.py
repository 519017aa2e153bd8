"""Streaming compaction and batched reads (issue 15, the driver's memory after Tune): a compaction reads a
bounded batch of parts at a time and writes row groups as it goes, yet writes exactly what writing the
whole merged table would (same rows, order, columns, types and row groups), also when the compacted file
and new parts interleave, when a later part has a column the first ones lack, and when it meets damage.
The kill points inside the stream are covered by test_compact.py's kill tests ("row group")."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import emoe_schema.layout as layout
import harness.results.compact as compact
from emoe_schema import TABLES
from emoe_schema.layout import COMPACTED, list_table, read_parts, read_table_files
from harness.results.compact import CompactionError, compact_study
from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.load import parse_spec
from harness.study.plan import Plan, build_plan
from tests.harness.conftest import tiny_study
from tests.harness.test_compact import assert_same, make_study, snapshot, write_trial


@pytest.fixture(scope="module")
def plan() -> Plan:
    """test_compact.py's study: 6 configurations x 2 seeds, 12 trials."""
    spec = parse_spec(tiny_study(name="c", grid={"loss.distill_weight": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]},
                                 seeds=[1, 2]))
    return build_plan(spec, load_study_data(spec.data))


def _plain(table: pa.Table) -> pa.Table:
    """The table with dictionary columns as their values (compares what is stored, not its encoding)."""
    return pa.table({n: (c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c)
                     for n, c in zip(table.column_names, table.columns)})


def _expected(store: ResultStore) -> dict[str, pa.Table]:
    """Every table as one read of all its files returns it (what the compacted files must hold)."""
    out = {}
    for table in TABLES:
        got = read_table_files(list_table(store.table_dir(table)), on_damaged=lambda p, e: None, batch=10_000)
        assert got is not None
        out[table] = got
    return out


def _groups(path: Path) -> list[int]:
    meta = pq.ParquetFile(path).metadata
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _assert_compacted_as(store: ResultStore, expected: dict[str, pa.Table], row_group_rows: int) -> None:
    for table, rows in expected.items():
        path = store.compacted_path(table)
        got = pq.read_table(path)
        assert got.schema.equals(rows.schema, check_metadata=True), table
        assert _plain(got).equals(_plain(rows)), table  # same rows in the same order
        n = rows.num_rows
        assert _groups(path) == [row_group_rows] * (n // row_group_rows) + ([n % row_group_rows] if n % row_group_rows else [])


def test_a_stream_of_small_batches_writes_what_one_read_of_everything_would(tmp_path, plan):
    store = make_study(tmp_path, plan)
    expected = _expected(store)
    report = compact_study(store, row_group_rows=7, batch=5)  # 12 trials: batches of 5, 5, 2
    assert report.parts == 42 and report.rows == sum(t.num_rows for t in expected.values())
    _assert_compacted_as(store, expected, 7)
    assert_same(snapshot(store), snapshot(store))


def test_new_parts_between_compacted_rows_are_merged_in_trial_order_and_win(tmp_path, plan):
    store = make_study(tmp_path, plan)
    compact_study(store, row_group_rows=7)  # epochs: 2 rows per trial, so trials span row groups
    ids = sorted(t.trial_id for t in plan.trials)
    by_id = {t.trial_id: t for t in plan.trials}
    for tid in (ids[0], ids[5], ids[6], ids[11]):  # retried: first, middle and last of the compacted rows
        write_trial(store, by_id[tid], status="completed", attempts=2, mae=0.1)
    before = snapshot(store)
    expected = _expected(store)
    assert compact_study(store, row_group_rows=7, batch=2).parts == 4 * 4  # ids[0] failed before: now 4 files
    _assert_compacted_as(store, expected, 7)
    assert_same(before, snapshot(store))
    rows = before["trials"].set_index("trial_id")
    assert (rows.loc[[ids[0], ids[5], ids[6], ids[11]], "attempts"] == 2).all()


def test_parts_are_read_a_batch_at_a_time_and_written_before_the_last_is_read(tmp_path, plan, monkeypatch):
    store = make_study(tmp_path, plan)
    reads: list[str] = []
    read = layout._read_or_error
    monkeypatch.setattr(layout, "_read_or_error", lambda path, cols: (reads.append(path.name), read(path, cols))[1])
    batches = read_parts(list_table(store.table_dir("trials")), on_damaged=lambda p, e: None, batch=5)
    first = next(batches)
    assert len(reads) == 5 and len(first.superseding) == 5 and first.table.num_rows == 5
    assert first.table.column("trial_id").num_chunks == 1  # one contiguous table, not five
    assert [len(b.superseding) for b in batches] == [5, 2]
    reads.clear()
    at_first_group: list[int] = []
    monkeypatch.setattr(compact, "_step", lambda name: at_first_group.append(len(reads)) if name == "row group" else None)
    compact_study(store, row_group_rows=3, batch=4)
    assert at_first_group[0] <= 2 * 4 < len(plan.trials)  # a row group written with at most two batches read


def test_a_later_part_with_a_new_column_or_a_typed_null_column_gives_the_schema_of_one_read(tmp_path):
    store = ResultStore(tmp_path, "s")
    store.create("name: s\n", {"schema_version": 1, "study": "s"})
    for i in range(7):
        cols: dict[str, pa.Array] = {"trial_id": pa.array([f"{i:012x}"] * 2), "v": pa.array([i, i], pa.int64()),
                                     "note": pa.nulls(2)}
        if i == 5:  # typed where the earlier parts are all-null, and a column they lack
            cols["note"] = pa.array(["a", None])
            cols["extra"] = pa.array([1.5, 2.5])
        store.write_table("router", f"{i:012x}", pa.table(cols))
    expected = read_table_files(list_table(store.table_dir("router")), on_damaged=lambda p, e: None)
    assert expected.schema.field("note").type == pa.string() and "extra" in expected.column_names
    assert compact_study(store, row_group_rows=4, batch=2).parts == 7
    _assert_compacted_as(store, {"router": expected}, 4)
    assert not list(store.table_dir("router").glob(".*.tmp"))


def test_incompatible_parts_or_a_damaged_row_group_mid_stream_change_nothing(tmp_path, plan):
    store = make_study(tmp_path, plan, failed=0)
    compact_study(store, row_group_rows=4)  # trials: three row groups
    for trial in plan.trials[:3]:
        write_trial(store, trial, attempts=2)
    listing = {p: p.read_bytes() for p in sorted(store.dir.rglob("*.parquet"))}
    path = store.compacted_path("trials")
    good = path.read_bytes()
    col = pq.ParquetFile(path).metadata.row_group(2).column(0)  # the last row group: found mid-stream
    raw = bytearray(good)
    at = col.data_page_offset + col.total_compressed_size - 4
    raw[at:at + 2] = bytes(b ^ 0xFF for b in raw[at:at + 2])
    path.write_bytes(bytes(raw))
    listing[path] = bytes(raw)
    with pytest.raises(CompactionError, match=r"compacted\.parquet: damaged .*nothing was changed"):
        compact.compact_table(store, "trials", row_group_rows=4, batch=1)
    assert {p: p.read_bytes() for p in sorted(store.dir.rglob("*.parquet"))} == listing
    assert not list(store.table_dir("trials").glob(".*"))  # no temporary file left

    path.write_bytes(good)
    tid = plan.trials[7].trial_id  # a part whose column has another type than the compacted rows'
    bad = pq.read_table(store.table_path("epochs", plan.trials[0].trial_id)).to_pandas()
    bad["trial_id"] = tid
    bad["lr"] = "fast"
    store.write_table("epochs", tid, pa.Table.from_pandas(bad, preserve_index=False))
    epochs = {p: p.read_bytes() for p in sorted(store.table_dir("epochs").iterdir())}
    with pytest.raises(CompactionError, match="incompatible columns"):
        compact.compact_table(store, "epochs", row_group_rows=4, batch=1)
    assert {p: p.read_bytes() for p in sorted(store.table_dir("epochs").iterdir())} == epochs


def test_a_damaged_part_mid_stream_is_kept_and_named_and_the_others_are_folded(tmp_path, plan):
    store = make_study(tmp_path, plan)
    tid = sorted(t.trial_id for t in plan.trials)[6]
    store.table_path("epochs", tid).write_bytes(b"not parquet" * 20)
    expected = _expected(store)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        report = compact_study(store, row_group_rows=5, batch=3)
    assert f"{tid}.parquet: damaged; left as it is" in err.getvalue()
    (epochs,) = [t for t in report.tables if t.table == "epochs"]
    assert epochs.kept == 1 and epochs.parts == 11 and epochs.rows == 22
    assert set(list_table(store.table_dir("epochs")).parts) == {tid}
    assert _plain(pq.read_table(store.compacted_path("epochs"))).equals(_plain(expected["epochs"]))
    assert COMPACTED in {p.name for p in store.table_dir("epochs").iterdir()}
