"""A study's provenance for ``study.json``: ``harness.results.provenance`` plus its data's checksum and its nodes.

The data checksum identifies exactly what was trained on: a converted directory's ``manifest.json`` (which
holds every array's SHA-256), an MMSA pickle's SHA-256 (hashed again only when the file changed, with
``emoe.data.verify``'s cache, since hashing gigabytes at every start is slow), or the synthetic generator's
fingerprint (preset, seed and every field). The nodes are the driver plus each alive Ray node: one on another
machine is probed by one tiny task pinned to it, bounded in time; one at the driver's node's address is this
machine, described here. Nothing here may stop a study: a probe that fails records ``None``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import TypedDict

from emoe.data.verify import cached_sha256, sha256_file
from harness.results.provenance import Scalar, node_machine, provenance
from harness.study.params import JSONValue

__all__ = ["Machine", "NodeInfo", "data_change", "data_checksum", "node_machines", "resume_record", "study_provenance"]

#: Seconds the node probes may take together (a node that does not answer is recorded without details).
NODE_PROBE_TIMEOUT_S = 15.0


#: One machine's facts (``harness.results.provenance.machine``): CPU, memory, GPU models...
Machine = dict[str, Scalar | list[str]]


class NodeInfo(TypedDict):
    """A Ray node in ``study.json``'s ``provenance.nodes``: ``machine`` is None when its probe did not answer."""

    node_id: str
    address: str | None
    resources: dict[str, float]
    machine: Machine | None


def data_checksum(path: str | None, key: str) -> dict[str, JSONValue]:
    """What identifies a study's data: ``{"kind", "sha256", ...}`` (``key``: ``StudyData.key``)."""
    if path is None:
        return {"kind": "synthetic", "sha256": hashlib.sha256(key.encode()).hexdigest(),
                "spec": json.loads(key.removeprefix("synthetic:"))}
    p = Path(path)
    try:
        if p.is_dir():
            manifest = p / "manifest.json"
            source = json.loads(manifest.read_text()).get("source_sha256")
            return {"kind": "converted", "sha256": sha256_file(manifest), "source_sha256": source}
        return {"kind": "file", "sha256": cached_sha256(p), "bytes": p.stat().st_size}
    except (OSError, ValueError) as exc:
        return {"kind": "file", "sha256": None, "error": str(exc)}


def node_machines(timeout_s: float = NODE_PROBE_TIMEOUT_S) -> list[NodeInfo]:
    """Each alive Ray node: id, address, resources and (when its probe answers in time) its machine."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not ray.is_initialized():
        return []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    # The driver's machine is described here, without a task (a worker process to start, about 1.2 s of CPU):
    # its own node, and any other node at the same address (raylets sharing one host share its hardware).
    own = ray.get_runtime_context().get_node_id()
    here = {n.get("NodeManagerAddress") for n in nodes if n["NodeID"] == own} - {None}
    local = {n["NodeID"] for n in nodes if n["NodeID"] == own or n.get("NodeManagerAddress") in here}
    probe = ray.remote(num_cpus=0, max_retries=0)(node_machine)
    refs = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote() for n in nodes if n["NodeID"] not in local}
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
    this_machine = node_machine() if local else None
    out: list[NodeInfo] = []
    for n in nodes:
        ref = refs.get(n["NodeID"])
        found: Machine | None = None
        if ref is None:
            found = dict(this_machine or {})
        elif ref in ready:
            with contextlib.suppress(Exception):
                found = ray.get(ref, timeout=1)
        else:
            ray.cancel(ref, force=True)
        resources = {k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")}
        out.append(NodeInfo(node_id=n["NodeID"], address=n.get("NodeManagerAddress"), resources=resources,
                            machine=found))
    return out


def study_provenance(data_path: str | None, data_key: str, argv: list[str] | None = None) -> dict[str, object]:
    """``harness.results.provenance.provenance`` plus the data checksum and the Ray nodes (when Ray is up)."""
    info = provenance(argv)  # its driver's GPUs as a node probe's: nvidia-smi's when torch names none
    info["data"] = data_checksum(data_path, data_key)
    try:
        info["nodes"] = node_machines()
    except Exception as exc:  # probing is best effort
        info["nodes"] = {"error": f"{type(exc).__name__}: {exc}"}
    return info


def data_change(previous: dict[str, object], now: dict[str, JSONValue]) -> str | None:
    """Why the data a study is resumed on are not the data it started on (None when they are, or when either
    checksum is unknown): the first trials were trained on the recorded data, so mixing in others would
    make one study of two data sets."""
    prov = previous.get("provenance")
    then = prov.get("data") if isinstance(prov, dict) else None
    if not isinstance(then, dict):
        return None
    old, new = then.get("sha256"), now.get("sha256")
    if not old or not new:
        return None
    # a converted directory records the pickle it was made from: a pickle and its conversion are the same data
    ids_then = {old, then.get("source_sha256")} - {None}
    ids_now = {new, now.get("source_sha256")} - {None}
    if ids_then & ids_now:
        return None
    return (f"data: the study started on data with SHA-256 {old} ({then.get('kind')}), these data have {new} "
            f"({now.get('kind')}): its finished trials were trained on the other data; restore those data, or "
            "start a new study")


def resume_record(previous: dict[str, object], data_path: str | None, data_key: str,
                  at: str) -> list[dict[str, object]]:
    """``study.json``'s ``resumes`` with this resume added: when, and its provenance (a study may be resumed
    with other code, packages or machines than it started with)."""
    earlier = previous.get("resumes")
    return [*(earlier if isinstance(earlier, list) else []),
            {"at": at, "provenance": study_provenance(data_path, data_key)}]
