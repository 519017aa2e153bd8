"""Shared helpers for the harness tests: small valid study dicts and a way to write them to YAML."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def sigkill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout_s: float = 300) -> None:
    """SIGKILL ``proc`` (a driver) as soon as ``ready()`` holds: polled under a deadline, an event rather
    than a fixed wait. Fails if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, "the study ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def signal_when_a_trial_starts(cmd: list[str], root: Path, sig: int, *, env: dict[str, str] | None = None,
                               timeout_s: float = 300) -> tuple[subprocess.Popen[str], str, str]:
    """Run the driver ``cmd`` and send it ``sig`` once a trial of the study in ``root`` has started (its
    ``.runs`` record appears: an event, not a fixed wait); returns the ended process and its output.
    The output goes to files, not pipes: a pipe nobody reads while the test waits could fill and stall it."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out_f, stderr=err_f, text=True, env=env)
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and proc.poll() is None and not list((root / ".runs").glob("*.json")):
                time.sleep(0.05)  # polls for the event: a trial has started
            started = proc.poll() is None
            if started:
                proc.send_signal(sig)
                proc.wait(timeout=timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    assert started, (out, err)  # the driver ended before any trial started
    return proc, out, err


TINY_BASE: dict[str, Any] = {
    "model": {"d_model": 8, "n_heads": 2, "n_levels": 1, "kernel_l": 3, "kernel_v": 3, "kernel_a": 3,
              "router_input": "mean"},
    "train": {"lr": 1.0e-3, "batch_size": 16, "max_epochs": 2},
}


def tiny_study(name: str = "t", **fields: Any) -> dict[str, Any]:
    """A valid grid study on the tiny synthetic preset; ``fields`` replace top-level entries.

    One trial at a time unless a test asks otherwise (``concurrency=None``: as the cluster allows): the suite
    is CPU-bound on two cores, and each concurrent trial is one more worker process importing ray.tune, torch
    and pandas (about 3.5 s of CPU each) for the same wall time."""
    study: dict[str, Any] = {
        "name": name,
        "data": {"synthetic": {"preset": "tiny", "seed": 0}},
        "base": copy.deepcopy(TINY_BASE),
        "grid": {"loss.distill_weight": [0.0, 1.0]},
        "seeds": [1, 2],
        "objective": {"metric": "valid_mae"},
        "concurrency": 1,
    }
    study.update(fields)
    return {k: v for k, v in study.items() if v is not None}


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study dict (or raw text) to a YAML file and return its path."""
    def write(study: dict[str, Any] | str, name: str = "study.yaml") -> Path:
        path = tmp_path / name
        path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
        return path

    return write


def start_test_cluster() -> SimpleNamespace:
    """A multi-node ``ray.cluster_utils.Cluster`` on this machine: a head with no CPUs for trials, two 1-CPU
    worker nodes, small object stores. Returns its address, the worker node ids and the ``Cluster``."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 0, "object_store_memory": 80 << 20,
                                                            "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1, num_gpus=0, object_store_memory=80 << 20) for _ in range(2)]
    cluster.wait_for_nodes()
    return SimpleNamespace(address=cluster.address, worker_ids={w.node_id for w in workers}, cluster=cluster)


@pytest.fixture(scope="session")
def _shared_test_cluster():
    """``start_test_cluster``, started once per test process (per xdist worker) when a module first asks
    for ``ray_cluster``: starting and stopping a cluster per module cost about 5 s each time."""
    found = start_test_cluster()
    yield found
    found.cluster.shutdown()


@pytest.fixture(scope="module")
def ray_cluster(_shared_test_cluster):
    """One Ray cluster shared by the in-process Ray tests (``start_test_cluster``), this test process's
    driver connected to it for the module. The harness uses an initialised runtime as it is. The driver
    disconnects at the module's end (its job's actors and placement groups go with it), so modules that
    start Ray their own way see no runtime. A test that changes the cluster must put it back (``gpu_node``
    does); one that breaks it (losing a node) uses a cluster of its own, like test_fault_node_loss.py."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address=_shared_test_cluster.address, log_to_driver=False)
    yield _shared_test_cluster
    ray.shutdown()


#: GPUs a trial on ``gpu_node`` asks for: ``cuda:99`` is then a valid index for the driver's checks.
GPUS_PER_TRIAL = 100
#: The device those trials name: a valid index, yet no real machine has it, so the trial raises at its start.
MISSING_DEVICE = f"cuda:{GPUS_PER_TRIAL - 1}"


@pytest.fixture
def gpu_node(ray_cluster):
    """A worker node added to ``ray_cluster`` for one test, declaring GPUs it does not have (Ray only counts
    them), two trials' worth at 1 CPU each. A study with ``resources.gpus: GPUS_PER_TRIAL`` and device
    ``MISSING_DEVICE`` passes the driver's device checks (harness/study/devices.py) and runs on this node,
    where the trial fails when it starts: torch sees no CUDA (a CPU machine, or the ids Ray assigned name no
    real device), or fewer devices than the index (a GPU machine). Removed afterwards, so the module's other
    tests see the cluster as it was. Yields the node id."""
    cluster = ray_cluster.cluster
    node = cluster.add_node(num_cpus=2, num_gpus=2 * GPUS_PER_TRIAL, object_store_memory=80 << 20)
    cluster.wait_for_nodes()
    yield node.node_id
    cluster.remove_node(node)
    cluster.wait_for_nodes()


@pytest.fixture
def ray_init_calls(monkeypatch):
    """Records (and refuses) any attempt to start or join Ray: for tests of what happens before Ray starts."""
    import ray

    calls: list[object] = []

    def refuse(*args, **kwargs):
        calls.append((args, kwargs))
        raise AssertionError("Ray must not be started")

    monkeypatch.setattr(ray, "init", refuse)
    return calls
