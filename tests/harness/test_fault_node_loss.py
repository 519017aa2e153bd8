"""Losing a worker node mid-study: a third worker joins the test cluster the way a real one would
(``ray start --address``), takes a trial, and is killed (SIGKILL to its raylet and workers) while that
trial trains. Tune retries the trial on a surviving node from its last checkpoint (up to the study's
``max_failures``), and the study ends with every planned trial recorded exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray

from harness.data import load_study_data
from harness.plan import build_plan
from harness.run import main
from harness.spec import load_spec
from tests.harness.conftest import tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY_CLI = str(Path(sys.executable).with_name("ray"))


def _alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


@pytest.fixture
def doomed_node(ray_cluster):
    """A 1-CPU worker started with ``ray start --address`` in its own process group; yields its node id and
    a function that kills the whole node (raylet, object store, workers) with SIGKILL."""
    before = _alive_nodes()
    proc = subprocess.Popen([RAY_CLI, "start", "--address", ray_cluster.address, "--num-cpus", "1",
                             "--object-store-memory", str(80 << 20), "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    new: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while not (_alive_nodes() - before) and time.monotonic() < deadline:
            assert proc.poll() is None, "ray start --address exited"
            time.sleep(0.2)
        new = _alive_nodes() - before
        assert len(new) == 1, "the extra worker node did not join"
        yield next(iter(new)), kill
    finally:
        kill()
        # later tests share the cluster: wait until its head has marked the node dead (health checks)
        deadline = time.monotonic() + 90
        while new & _alive_nodes() and time.monotonic() < deadline:
            time.sleep(0.5)


def _watch_and_kill(study_dir: Path, node_id: str, kill: Any, seen: dict[str, Any], stop: threading.Event) -> None:
    """Kill the node once a trial on it has written 3 epochs (so the driver holds the checkpoint of epoch 1
    at least); keep the epoch rows it had."""
    while not stop.is_set():
        for run in (study_dir / ".runs").glob("*.json") if (study_dir / ".runs").exists() else []:
            with contextlib.suppress(OSError, ValueError):
                info = json.loads(run.read_text())
                epochs_file = study_dir / "epochs" / f"{run.stem}.parquet"
                if info.get("node_id") == node_id and epochs_file.exists():
                    epochs = pd.read_parquet(epochs_file)
                    if len(epochs) >= 3:
                        kill()
                        seen.update(trial_id=run.stem, epochs=epochs)
                        return
        time.sleep(0.02)


def test_a_lost_worker_node_costs_a_retry_from_checkpoint_not_a_trial(ray_cluster, doomed_node, write_study,
                                                                      tmp_path):
    node_id, kill = doomed_node
    study = tiny_study(name="nodeloss", grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, seeds=[1],
                       max_failures=2, checkpoint_every=1)
    study["base"]["train"]["max_epochs"] = 8
    study["data"]["synthetic"]["n_train"] = 256  # a few tenths of a second per epoch: time to act
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "nodeloss"
    seen: dict[str, Any] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_and_kill, args=(root, node_id, kill, seen, stop), daemon=True)
    watcher.start()
    try:
        assert main([str(spec_path), "--results", str(results)]) == 0
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert "trial_id" in seen, "no trial ran on the extra node long enough to be interrupted"

    spec = load_spec(spec_path)
    planned = {t["trial_id"] for t in build_plan(spec, load_study_data(spec.data)).trials}
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    assert set(trials.index) == planned and trials.index.is_unique  # every trial, once
    assert (trials["status"] == "completed").all() and (trials["epochs_run"] == 8).all()

    lost = trials.loc[seen["trial_id"]]
    assert lost["attempts"] == 2  # the first attempt on the lost node, one retry
    assert lost["node_id"] in ray_cluster.worker_ids and lost["node_id"] != node_id  # on a surviving worker
    assert (trials.drop(index=seen["trial_id"])["attempts"] == 1).all()

    epochs = pd.read_parquet(root / "epochs")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert epochs.groupby("trial_id")["epoch"].apply(sorted).map(list).tolist() == [list(range(1, 9))] * 3
    # continued from its checkpoint: the epochs trained before the loss were not trained again (their rows,
    # timings included, are those the first attempt wrote). With n epochs written, the driver has taken
    # the results (and checkpoints) of at least the first n - 2: the trial reports an epoch's result after
    # writing its row, and report() returns only when the driver asks for the next result.
    before = seen["epochs"].set_index("epoch")
    after = epochs[epochs["trial_id"] == seen["trial_id"]].set_index("epoch")
    kept = before.index[before.index <= len(before) - 2]
    assert len(kept) >= 1
    pd.testing.assert_frame_equal(after.loc[kept, ["time_s", "train_loss", "valid_mae"]],
                                  before.loc[kept, ["time_s", "train_loss", "valid_mae"]])
