"""A driver killed mid-study (SIGKILL: no handler runs) loses nothing and duplicates nothing.

1. The file writes themselves: a process rewriting a trial's Parquet file is killed at random moments;
   the file is always a complete version (old or new), and the hidden temporary files a kill can leave
   behind are skipped by pandas, pyarrow.dataset and DuckDB.
2. A real study: ``python -m harness.run --address`` on the test cluster is killed (its pid only, as the
   OOM killer would) while trials run; ``--resume`` finishes it. Trials finished before the crash are not
   run again (their files untouched), interrupted ones continue from their checkpoints, and every planned
   trial and epoch is recorded exactly once.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from harness.run import main
from harness.study.data import load_study_data
from harness.study.load import load_spec
from harness.study.plan import build_plan
from tests.harness.conftest import REPO, sigkill_when, tiny_study

TRIAL = "0123456789ab"

#: Imports the store once, then per round forks a writer that rewrites one trial file forever (version v
#: has rows(v) rows, all holding v), SIGKILLs it after a random delay and copies what the kill left.
KILLER = textwrap.dedent("""
    import os, random, shutil, signal, sys, time
    import pyarrow as pa
    from harness.results.sink import ResultStore

    root, trial, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = ResultStore(root, "s")
    final = store.table_path("trials", trial)
    rng = random.Random(0)
    for r in range(rounds):
        pid = os.fork()
        if pid == 0:
            v = 0
            while True:
                v += 1
                n = 2_000 + (v % 7) * 500
                store.write_table("trials", trial, pa.table({"version": [v] * n, "x": range(n)}))
        while not final.exists():
            time.sleep(0.001)
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        shutil.copyfile(final, os.path.join(root, f"after_kill_{r}.parquet"))
        final.unlink()
""")


def _rows(v: int) -> int:
    return 2_000 + (v % 7) * 500


def test_a_killed_writer_leaves_a_complete_file_and_readers_skip_its_temporary_files(tmp_path):
    rounds = 6
    proc = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path), TRIAL, str(rounds)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(rounds):  # never half-written: what each kill left is a whole version
        table = pq.read_table(tmp_path / f"after_kill_{r}.parquet")
        versions = set(table.column("version").to_pylist())
        assert len(versions) == 1 and table.num_rows == _rows(versions.pop())
    # what a kill mid-write leaves besides: hidden temporary files (partial ones included) in the folder
    folder = tmp_path / "s" / "trials"
    leftovers = list(folder.glob(".*.tmp"))
    final = folder / f"{TRIAL}.parquet"
    (tmp_path / "after_kill_0.parquet").rename(final)
    partial = final.read_bytes()[: final.stat().st_size // 2]
    (folder / f".{TRIAL}.parquet.999.deadbeef.tmp").write_bytes(partial)
    assert len(list(folder.glob(".*.tmp"))) == len(leftovers) + 1
    expected = pq.read_table(final).num_rows
    assert len(pd.read_parquet(folder)) == expected
    assert ds.dataset(folder, format="parquet").count_rows() == expected
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchall()[0][0] == expected


# --- a real study ----------------------------------------------------------------------------------------
def _stat(path: Path) -> tuple[int, int]:
    s = path.stat()
    return s.st_mtime_ns, s.st_size


def _files(root: Path, table: str, ids: set[str]) -> dict[str, tuple[int, int]]:
    return {p.name: _stat(p) for p in (root / table).glob("*.parquet") if p.stem in ids}


def _wait_actors_gone(timeout_s: float = 300.0) -> None:
    """Wait for the event that ends all writing: Ray has ended the dead driver's trial actors, so every
    CPU of the (test-owned) cluster is free again. A trial the dead driver had released may still finish
    writing its files until then. (The timeout only turns a hang into a failure.)"""
    import ray

    deadline = time.monotonic() + timeout_s
    total = ray.cluster_resources().get("CPU", 0.0)
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0.0) >= total > 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the killed driver's trials still hold CPUs after {timeout_s:.0f} s")


def _done(root: Path) -> set[str]:
    return {p.stem for p in (root / "trials").glob("*.parquet")}


def _in_flight(root: Path, done: set[str]) -> dict[str, pd.DataFrame]:
    """Epoch rows of the trials that are not in ``done`` (running), by trial id."""
    out = {}
    for p in (root / "epochs").glob("*.parquet"):
        if p.stem not in done:
            with contextlib.suppress(OSError, ValueError):
                out[p.stem] = pd.read_parquet(p)
    return out


def _kill_driver_when(proc: subprocess.Popen[bytes], root: Path,
                      ready: Callable[[set[str], dict[str, int]], bool]) -> tuple[set[str], dict[str, int]]:
    """SIGKILL the driver ``proc`` as soon as ``ready(recorded trials, epochs written by trials in flight)``
    holds (``sigkill_when``); what was seen at the kill."""
    done: set[str] = set()
    flying: dict[str, int] = {}

    def look() -> bool:
        nonlocal done, flying
        done = _done(root)
        flying = {tid: len(e) for tid, e in _in_flight(root, done).items()}
        return ready(done, flying)

    try:
        sigkill_when(proc, look)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
    return done, flying


@pytest.mark.ray
@pytest.mark.slow
def test_a_killed_driver_is_resumed_without_rerunning_or_duplicating_anything(ray_cluster, write_study, tmp_path,
                                                                               capsys):
    study = tiny_study(name="crash", grid={"loss.distill_weight": [0.0, 0.3, 0.6, 1.0]}, seeds=[1],
                       max_failures=0, checkpoint_every=1,
                       checkpoint_min_interval_s=0)
    study["base"]["train"]["max_epochs"] = 8
    study["data"]["synthetic"]["n_train"] = 2048  # epochs of a tenth of a second or more: 4-6 of 8 gets caught
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "crash"
    cmd = [sys.executable, "-m", "harness.run", str(spec_path), "--results", str(results),
           "--address", ray_cluster.address]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # kill once a trial is recorded and another has written 4 to 6 of its 8 epochs
    done, flying = _kill_driver_when(proc, root, lambda done, flying: bool(done) and any(
        4 <= n <= 6 for n in flying.values()))
    # With n epochs written when the driver died, the trial's folder holds a checkpoint of epoch n - 3 or
    # later (one per epoch; a report() returns only when the driver asks for the next result, so at most
    # the newest ones can be missing or cut short by the kill), and --resume continues from the newest
    # readable one.
    _wait_actors_gone()
    # (A trial with at most 6 of 8 epochs cannot finish once the driver is gone.)
    safe = {tid: n - 3 for tid, n in flying.items() if 4 <= n <= 6}
    # every trial that had started by the kill, read once nothing writes any more: under load one may
    # start between the last poll and the kill, before writing an epoch (then it is not in ``flying``)
    started = {p.stem for p in (root / ".runs").glob("*.json")}
    snapshot = _in_flight(root, done)
    finished = pd.read_parquet(root / "trials").set_index("trial_id")  # readable right after the crash
    assert 1 <= len(finished) < 4 and finished.index.is_unique and not set(safe) & set(finished.index)
    ids = done  # recorded before the crash
    kept = {t: _files(root, t, ids) for t in ("trials", "epochs", "router")}
    assert len(kept["trials"]) == len(kept["router"]) == len(ids) >= 1
    assert json.loads((root / "study.json").read_text())["status"] == "running"

    # without --resume the study is refused and left as it is
    assert main([str(spec_path), "--results", str(results)]) == 2
    assert "add --resume" in capsys.readouterr().err

    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    spec = load_spec(spec_path)
    planned = {t["trial_id"] for t in build_plan(spec, load_study_data(spec.data)).trials}
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    assert set(trials.index) == planned and trials.index.is_unique  # none lost, none duplicated
    assert (trials["status"] == "completed").all() and (trials["epochs_run"] == 8).all()
    # finished before the crash: not run again
    assert {t: _files(root, t, ids) for t in kept} == kept
    for tid in ids:
        assert trials.loc[tid, "started_at"] == finished.loc[tid, "started_at"] and trials.loc[tid, "attempts"] == 1
    # interrupted: resumed from its checkpoint (earlier epochs not trained again), one more attempt
    epochs = pd.read_parquet(root / "epochs")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).map(list).tolist() == [list(range(1, 9))] * 4
    for tid, last_safe in safe.items():
        assert trials.loc[tid, "attempts"] == 2
        after = epochs[epochs["trial_id"] == tid].set_index("epoch")
        first = snapshot[tid].set_index("epoch").loc[:last_safe, ["time_s", "train_loss", "valid_mae"]]
        assert len(first) == last_safe >= 1
        pd.testing.assert_frame_equal(after.loc[first.index, first.columns], first)
    assert set(flying) <= started and set(trials.index[trials["attempts"] == 2]) <= started - done
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] == {"completed": 4} and "resumed_at" in info
    assert duckdb.sql(f"SELECT count(DISTINCT trial_id), count(*) FROM read_parquet('{root}/trials/*.parquet')"
                      ).fetchall() == [(4, 4)]
