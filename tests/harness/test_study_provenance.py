"""A study's provenance: the data checksum (converted manifest, cached pickle hash, synthetic fingerprint)
and each Ray node's machine, probed by a pinned task when it is on another machine than the driver's."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from emoe.data import verify
from harness.results import study_provenance as study_provenance_module
from harness.results.study_provenance import data_checksum, node_machines, resume_record, study_provenance

REPO = Path(__file__).resolve().parents[2]


def _age(path: Path, seconds: float = 3600) -> None:
    """Set a file's times back (its ctime cannot be, so the stamp's recent-change rule is tested separately)."""
    past = time.time_ns() - int(seconds * 1e9)
    os.utime(path, ns=(past, past))


def test_a_pickle_is_hashed_once_and_again_only_when_it_changes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(verify, "RECENT_NS", 0)  # the test's file is seconds old; remember it anyway
    calls: list[Path] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: calls.append(p) or real(p))
    pkl = tmp_path / "data" / "mosi.pkl"
    pkl.parent.mkdir()
    pkl.write_bytes(b"a" * 1000)
    _age(pkl)
    first = data_checksum(str(pkl), "file:mosi.pkl")
    assert first == {"kind": "file", "sha256": hashlib.sha256(b"a" * 1000).hexdigest(), "bytes": 1000}
    assert data_checksum(str(pkl), "k") == first and len(calls) == 1  # the second start reads the cache
    assert list(pkl.parent.iterdir()) == [pkl]  # nothing is written beside the user's file
    pkl.write_bytes(b"b" * 1000)  # same size, new content
    _age(pkl)  # and even the same (old) modification time: the ctime and inode still tell
    assert data_checksum(str(pkl), "k")["sha256"] == hashlib.sha256(b"b" * 1000).hexdigest()
    assert len(calls) == 2


def test_a_just_written_pickle_is_hashed_but_not_remembered(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pkl = tmp_path / "mosi.pkl"
    pkl.write_bytes(b"c" * 10)  # a write in the same clock tick could hide behind this stamp
    assert data_checksum(str(pkl), "k")["sha256"] == hashlib.sha256(b"c" * 10).hexdigest()
    assert not (tmp_path / "cache").exists()


def test_converted_directories_and_synthetic_data(tmp_path: Path) -> None:
    conv = tmp_path / "conv"
    conv.mkdir()
    (conv / "manifest.json").write_text(json.dumps({"source_sha256": "abc"}))
    found = data_checksum(str(conv), "file:conv")
    assert found == {"kind": "converted", "source_sha256": "abc",
                     "sha256": hashlib.sha256((conv / "manifest.json").read_bytes()).hexdigest()}
    key = 'synthetic:{"preset": "tiny", "seed": 0}'
    syn = data_checksum(None, key)
    assert syn["sha256"] == hashlib.sha256(key.encode()).hexdigest() and syn["spec"]["seed"] == 0
    assert data_checksum(None, key.replace("0", "1"))["sha256"] != syn["sha256"]


@pytest.mark.ray
def test_a_node_on_another_machine_is_probed_and_one_on_the_drivers_is_described_here(ray_cluster,
                                                                                       monkeypatch) -> None:
    """The test cluster's nodes all listen at this machine's address; a node added at 127.0.0.1 stands for
    another machine. Only that one gets a probe task (a worker process to start: about 1.2 s of CPU, paid
    per node and per study when every node was probed); every node is described."""
    from ray.util import scheduling_strategies

    cluster = ray_cluster.cluster
    other = cluster.add_node(num_cpus=0, num_gpus=0, object_store_memory=80 << 20, node_ip_address="127.0.0.1")
    cluster.wait_for_nodes()
    pinned: list[str] = []  # the nodes a probe task is pinned to

    class Recorded(scheduling_strategies.NodeAffinitySchedulingStrategy):
        def __init__(self, node_id: str, *args, **kwargs) -> None:
            pinned.append(node_id)
            super().__init__(node_id, *args, **kwargs)

    monkeypatch.setattr(scheduling_strategies, "NodeAffinitySchedulingStrategy", Recorded)
    try:
        nodes = node_machines(timeout_s=60)
        record = study_provenance(None, 'synthetic:{"preset": "tiny"}', ["-m", "harness.run", "x.yaml"])
    finally:
        monkeypatch.undo()
        cluster.remove_node(other)
        cluster.wait_for_nodes()
    assert pinned == [other.node_id] * 2  # node_machines, then study_provenance
    assert {n["node_id"] for n in nodes} >= ray_cluster.worker_ids | {other.node_id}
    assert all(n["machine"] and n["machine"]["cpu"] for n in nodes)
    here = next(n["machine"] for n in nodes if n["node_id"] in ray_cluster.worker_ids)
    assert next(n["machine"] for n in nodes if n["node_id"] == other.node_id) == here  # the same machine, probed
    assert record["data"]["kind"] == "synthetic" and len(record["nodes"]) == len(nodes)
    assert record["packages"]["ray"] and record["project"]["version"] is not None
    json.dumps(record)


def test_a_node_probe_imports_neither_torch_nor_the_rest_of_the_harness() -> None:
    """Each node's probe runs in a fresh Ray worker, which imports the probe's module by name: when that
    module (or the ``harness`` package) imported torch, every study start paid about 1.2 s of CPU per node
    for it (measured: 3.1 s of a 14 s test study on the test cluster, 1.0 s after)."""
    probe = study_provenance_module.node_machine  # what node_machines sends to every node
    code = (f"import sys, {probe.__module__} as m; info = m.{probe.__name__}(); assert info['cpu'] or info['os']; "
            "print(sorted(n for n in ('torch', 'ray', 'pydantic', 'numpy', 'pandas', 'pyarrow', 'emoe', "
            "'harness.study') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_each_resume_adds_its_own_provenance() -> None:
    first = resume_record({"status": "incomplete"}, None, 'synthetic:{"seed": 1}', "2026-01-01T00:00:00+00:00")
    second = resume_record({"resumes": first}, None, 'synthetic:{"seed": 1}', "2026-01-02T00:00:00+00:00")
    assert [r["at"][:10] for r in second] == ["2026-01-01", "2026-01-02"]
    assert second[1]["provenance"]["data"]["kind"] == "synthetic" and "packages" in second[1]["provenance"]
