"""The result store: one atomic file per trial, one schema per study, readable without the project."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from emoe.outputs import EpochRecord, RouterRecord
from harness.results.rows import epoch_row, epochs_table, router_table, trial_schema, trial_table
from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.errors import SpecError, StudyExistsError
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from tests.harness.conftest import tiny_study


@pytest.fixture(scope="module")
def trials():
    spec = parse_spec(tiny_study())
    return build_plan(spec, load_study_data(spec.data)).trials


def _row(trial, status="completed", mae=0.8, error=None):
    return trial_table(trial, label_kind="mosi", status=status, error=error, best_epoch=2, epochs_run=3,
                       objective=mae, valid={"mae": mae, "loss": mae, "corr": float("nan")},
                       test={} if mae is None else {"mae": mae + 0.1},
                       time_total_s=3.0, time_per_epoch_s=1.0, started_at=datetime.now(UTC),
                       finished_at=datetime.now(UTC), cpus=1, gpus=0.5, node="host", node_id="n1", attempts=1,
                       code_version="0.1.0", data="synthetic:tiny(seed=0)")


def test_rows_share_one_schema_and_read_back_with_pandas_pyarrow_duckdb(tmp_path, trials):
    store = ResultStore(tmp_path, "t")
    store.create("name: t\n", {"study": "t"})
    store.write_table("trials", trials[0]["trial_id"], _row(trials[0]))
    store.write_table("trials", trials[1]["trial_id"], _row(trials[1], status="failed", mae=None,
                                                            error="RuntimeError: boom"))
    df = pd.read_parquet(store.table_dir("trials"))
    assert len(df) == 2 and set(df["status"]) == {"completed", "failed"}
    assert df.loc[df.status == "failed", "error"].item() == "RuntimeError: boom"
    assert df.loc[df.status == "completed", "valid_corr"].isna().all()  # NaN metrics are stored as null
    assert ds.dataset(store.table_dir("trials")).schema == trial_schema("mosi")
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{store.table_dir('trials')}/*.parquet')").fetchall()[0][0]
    assert n == 2
    assert sorted(df["loss.distill_weight"]) == sorted(t["emoe"]["loss"]["distill_weight"] for t in trials[:2])
    assert df["model.fixed_weights"].iloc[0] == "[0.333333, 0.333333, 0.333333]"  # tuples stored as text


def test_rewriting_a_trial_replaces_its_row_and_leaves_no_temporary_files(tmp_path, trials):
    store = ResultStore(tmp_path, "t")
    store.create("", {})
    tid = trials[0]["trial_id"]
    store.write_table("trials", tid, _row(trials[0], status="failed", mae=None, error="x"))
    store.write_table("trials", tid, _row(trials[0], status="completed"))  # the retry succeeded
    df = store.read_trials()
    assert len(df) == 1 and df["status"].item() == "completed"
    assert store.status(tid) == "completed" and store.status(trials[1]["trial_id"]) is None
    assert sorted(os.listdir(store.table_dir("trials"))) == [f"{tid}.parquet"]


def test_a_crash_mid_write_leaves_the_previous_file_intact(tmp_path, trials):
    store = ResultStore(tmp_path, "t")
    store.create("", {})
    tid = trials[0]["trial_id"]
    store.write_table("trials", tid, _row(trials[0], mae=0.5))
    code = (f"import os, harness.results.sink as s\n"
            f"s.os.replace = lambda *a: os._exit(9)\n"  # die between writing the temp file and renaming it
            f"from harness.results.sink import ResultStore\nimport pyarrow as pa\n"
            f"ResultStore({str(tmp_path)!r}, 't').write_table('trials', {tid!r}, pa.table({{'x': [1]}}))\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 9
    assert pd.read_parquet(store.table_dir("trials"))["objective"].item() == 0.5  # readers ignore .tmp files


def test_epoch_and_router_tables(tmp_path, trials):
    trial = trials[0]
    rec = EpochRecord(epoch=1, train={"loss": 1.0, "task": 0.5, "uni": 0.3, "sim": 0.1, "ent": -3.0, "ud": 0.01},
                      valid={"loss": 0.9, "mae": 0.9}, lr=1e-3, improved=True, best_epoch=1, test={"mae": 1.0},
                      router_mean={"w_l": 0.5, "w_v": 0.3, "w_a": 0.2}, time_s=0.5)
    rec2 = EpochRecord(epoch=2, train=rec.train, valid={"loss": 1.1, "mae": 1.1}, lr=1e-3, improved=False,
                       best_epoch=1)
    table = epochs_table(trial, [epoch_row(rec2), epoch_row(rec)], label_kind="mosi").to_pandas()
    assert table["epoch"].tolist() == [1, 2]
    assert table["test_mae"].tolist()[0] == 1.0 and pd.isna(table["test_mae"].tolist()[1])
    assert table["w_l"].tolist()[0] == 0.5 and table["trial_id"].nunique() == 1
    w = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]], dtype=np.float32)
    router = router_table(trial, RouterRecord(weights=w, preds=np.array([0.1, -0.2]), labels=np.array([0.0, -1.0]),
                                              reliability=np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))).to_pandas()
    assert router["sample"].tolist() == [0, 1] and router["sample_id"].isna().all()
    assert np.allclose(router[["w_l", "w_v", "w_a"]].to_numpy(), w)
    assert router["r_a"].tolist() == [0.1, 0.8]


def test_unknown_status_is_refused(trials):
    with pytest.raises(ValueError, match="status must be one of"):
        _row(trials[0], status="done")


def test_store_paths_stay_inside_the_root(tmp_path):
    with pytest.raises(SpecError):
        ResultStore(tmp_path, "../outside")
    store = ResultStore(tmp_path, "t")
    with pytest.raises(ValueError, match="12 hex"):
        store.table_path("trials", "../../etc/passwd")


def test_lock_refuses_a_second_run_of_the_same_study(tmp_path):
    store = ResultStore(tmp_path, "t")
    code = ("import time\nfrom harness.results.sink import ResultStore\n"
            f"with ResultStore({str(tmp_path)!r}, 't').lock():\n    print('locked', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StudyExistsError, match="another process"), store.lock():
            pass
    finally:
        holder.kill()
        holder.wait()
    with store.lock():  # free again once the holder is gone
        pass
