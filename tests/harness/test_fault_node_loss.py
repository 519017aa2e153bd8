"""Losing a worker node mid-study: on a ``ray.cluster_utils.Cluster`` (a head with no CPUs, two 1-CPU
workers) the worker running a trial is removed, its raylet and workers SIGKILLed, while that trial trains.
Tune retries the trial on the surviving worker from its last checkpoint (up to the study's
``max_failures``), and the study ends with every planned trial recorded exactly once. The cluster is this
module's own (``ray_cluster`` below replaces the shared one), so losing a node affects no other test."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from harness.run import main
from harness.study.data import load_study_data
from harness.study.load import load_spec
from harness.study.plan import build_plan
from tests.harness.conftest import start_test_cluster, tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_cluster():
    """A cluster of this module's own (the shared one would lose a node for every later module)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    own = start_test_cluster()
    ray.init(address=own.address, log_to_driver=False)
    yield own
    ray.shutdown()
    own.cluster.shutdown()


def _watch_and_kill(study_dir: Path, cluster: Any, seen: dict[str, Any], stop: threading.Event) -> None:
    """Remove the worker node of the first trial that has written 3 epochs (so the driver holds the
    checkpoint of epoch 1 at least), without a graceful shutdown; keep the epoch rows it had."""
    nodes = {n.node_id: n for n in cluster.worker_nodes}
    while not stop.is_set():
        for run in sorted((study_dir / ".runs").glob("*.json")) if (study_dir / ".runs").exists() else []:
            with contextlib.suppress(OSError, ValueError):
                node_id = json.loads(run.read_text()).get("node_id")
                epochs_file = study_dir / "epochs" / f"{run.stem}.parquet"
                if node_id in nodes and epochs_file.exists():
                    epochs = pd.read_parquet(epochs_file)
                    if len(epochs) >= 3:
                        cluster.remove_node(nodes[node_id], allow_graceful=False)  # SIGKILL
                        seen.update(trial_id=run.stem, node_id=node_id, epochs=epochs)
                        return
        time.sleep(0.02)


def test_a_lost_worker_node_costs_a_retry_from_checkpoint_not_a_trial(ray_cluster, write_study, tmp_path):
    study = tiny_study(name="nodeloss", grid={"loss.distill_weight": [0.0, 1.0]}, seeds=[1],
                       max_failures=2, checkpoint_every=1,
                       checkpoint_min_interval_s=0)
    # the trial must still be training when its node is gone: the kill comes after its epoch 3, and the 17
    # epochs left take seconds (about 0.15 s each, 2048 rows with each accumulation window in one forward)
    epochs = 20
    study["base"]["train"]["max_epochs"] = epochs
    study["data"]["synthetic"]["n_train"] = 2048
    spec_path = write_study(study)
    results = tmp_path / "results"
    root = results / "nodeloss"
    seen: dict[str, Any] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_and_kill, args=(root, ray_cluster.cluster, seen, stop), daemon=True)
    watcher.start()
    try:
        assert main([str(spec_path), "--results", str(results)]) == 0
    finally:
        stop.set()
        watcher.join(timeout=30)
    assert "trial_id" in seen, "no trial ran long enough to be interrupted"

    spec = load_spec(spec_path)
    planned = {t["trial_id"] for t in build_plan(spec, load_study_data(spec.data)).trials}
    trials = pd.read_parquet(root / "trials").set_index("trial_id")
    assert set(trials.index) == planned and trials.index.is_unique  # every trial, once
    assert (trials["status"] == "completed").all() and (trials["epochs_run"] == epochs).all()

    lost = trials.loc[seen["trial_id"]]
    assert lost["attempts"] == 2  # the first attempt on the lost node, one retry
    survivor = ray_cluster.worker_ids - {seen["node_id"]}
    assert {lost["node_id"]} == survivor  # finished on the surviving worker
    assert (trials.drop(index=seen["trial_id"])["attempts"] == 1).all()

    rows = pd.read_parquet(root / "epochs")
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    assert rows.groupby("trial_id")["epoch"].apply(sorted).map(list).tolist() == [list(range(1, epochs + 1))] * 2
    # continued from its checkpoint: the epochs trained before the loss were not trained again (their rows,
    # timings included, are those the first attempt wrote). With n epochs written, the driver has taken
    # the results (and checkpoints) of at least the first n - 2: the trial reports an epoch's result after
    # writing its row, and report() returns only when the driver asks for the next result.
    before = seen["epochs"].set_index("epoch")
    after = rows[rows["trial_id"] == seen["trial_id"]].set_index("epoch")
    kept = before.index[before.index <= len(before) - 2]
    assert len(kept) >= 1
    pd.testing.assert_frame_equal(after.loc[kept, ["time_s", "train_loss", "valid_mae"]],
                                  before.loc[kept, ["time_s", "train_loss", "valid_mae"]])
