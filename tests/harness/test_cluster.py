"""A study on a multi-node Ray cluster (ray.cluster_utils.Cluster on this machine): a head with no CPUs
for trials and two 1-CPU worker nodes; the trials must be spread over both workers."""

from __future__ import annotations

import pandas as pd
import pytest
import ray
from ray.cluster_utils import Cluster

from harness.run import main
from tests.harness.conftest import tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 << 20,
                                                      "include_dashboard": False})
    workers = [c.add_node(num_cpus=1, object_store_memory=80 << 20) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield c, {w.node_id for w in workers}
    ray.shutdown()
    c.shutdown()


def test_trials_run_on_both_worker_nodes(cluster, write_study, tmp_path):
    _, worker_ids = cluster
    results = tmp_path / "results"
    study = tiny_study(name="cluster", grid={"loss.distill_weight": [0.0, 0.5, 1.0]})
    assert main([str(write_study(study)), "--results", str(results)]) == 0
    trials = pd.read_parquet(results / "cluster" / "trials")
    assert len(trials) == 6 and (trials["status"] == "completed").all()
    assert set(trials["node_id"]) == worker_ids  # both workers, never the 0-CPU head
