"""Ray for a study: start a local runtime, join a cluster (``--address``), or use one already running.

A local runtime (always a new one, even while another cluster runs on the machine) gets a CPU count
(all cores unless told), no dashboard, an object store sized for the data rather than 30% of RAM, and
its logs under Ray's temp dir (never the current directory). A runtime started elsewhere (tests,
notebooks) is used as is and left running.

The command line connects before it creates anything, so a cluster that cannot be reached, or one on
which no node could ever host a trial, is a ``ClusterError`` (exit status 2) rather than a study left
waiting: ``check_reachable`` probes ``HOST:PORT`` for a few seconds before Ray's own, much longer,
connection retries, and ``check_fits`` compares a trial's CPUs and GPUs with the nodes.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.study.cost import parallel_slots
from harness.study.devices import local_cpus, local_gpus
from harness.study.envvars import environ
from harness.tune.interrupt import interrupted, signals_stop
from harness.tune.preload import ENV as PRELOAD_ENV

__all__ = ["PRELOAD_SPARE_CPUS", "PRELOAD_WORKERS_ENV", "ClusterError", "RaySettings", "check_fits",
           "check_reachable", "cluster_resources", "preload_override", "preload_workers", "quiet_local_auth",
           "ray_session", "runtime_in_use", "wait_for_ray_stop"]

_MIN_STORE = 128 << 20


class ClusterError(RuntimeError):
    """Ray cannot be reached at the given address, or none of its nodes can host a trial."""


@dataclass(frozen=True)
class RaySettings:
    """How to reach Ray: ``address`` None starts a local runtime sized by the other fields."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_bytes: int | None = None
    log_to_driver: bool = False
    preload_workers: int = 0  # a local runtime's workers that import the trial code ahead (harness.tune.preload)


#: What ``preload_workers`` leaves to the driver and Ray's own processes: CPUs of a local runtime that no worker
#: importing ahead may take. On the 2-core machine two workers importing ahead held the first trial back
#: (2.1-2.8 s -> 5.8-7.7 s after tuning began) and the job gained nothing; an H200 host has 16.
PRELOAD_SPARE_CPUS = 2
PRELOAD_WORKERS_ENV = "EMOE_HARNESS_PRELOAD_WORKERS"


def preload_override() -> int | None:
    """``EMOE_HARNESS_PRELOAD_WORKERS`` as a count, None when unset; a ValueError names a bad value."""
    raw = os.environ.get(PRELOAD_WORKERS_ENV, "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise ValueError(f"{PRELOAD_WORKERS_ENV}: a number of workers (0 for none), got {raw!r}")
    return int(raw)


def preload_workers(cpus: float, gpus: float, concurrency: int | None, *, num_cpus: float | None = None,
                    num_gpus: float | None = None) -> int:
    """How many workers of a local runtime import the trial code ahead, for trials asking ``cpus`` and
    ``gpus`` each (``concurrency`` of them at most): as many as trials start at once, within the CPUs beyond
    ``PRELOAD_SPARE_CPUS`` (``--num-cpus``/``--num-gpus``, else this machine's); ``EMOE_HARNESS_PRELOAD_WORKERS``
    (a count, 0 for none) decides instead when set. A ValueError names a bad value."""
    override = preload_override()
    if override is not None:
        return override
    total = int(local_cpus(num_cpus))
    gpus_here = 0 if not gpus else int(num_gpus if num_gpus is not None else local_gpus())
    at_once = parallel_slots(cpus, gpus, cpus=total, gpus=gpus_here, concurrency=concurrency)
    return max(0, min(at_once, total - PRELOAD_SPARE_CPUS))


def _store_size(data_bytes: int) -> int:
    """Room for the data (shared by all trials), checkpoints in flight and Ray's own objects."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(max(_MIN_STORE, 2 * data_bytes + (256 << 20)), 0.3 * total))


def runtime_in_use() -> bool:
    """Whether Ray is already initialised in this process (by a test or a notebook): ``ray_session`` then
    uses that runtime, wherever its nodes are, instead of starting one here. Never imports Ray."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


#: A runtime's shutdown still under way in the background (``ray_session(stop_in_background=True)``).
_stopping: threading.Thread | None = None


def wait_for_ray_stop() -> float:
    """Wait until a shutdown ``ray_session`` left running in the background has ended; the seconds waited."""
    global _stopping
    start = time.monotonic()
    if _stopping is not None:
        _stopping.join()
        _stopping = None
    return time.monotonic() - start


@contextlib.contextmanager
def ray_session(settings: RaySettings, *, data_bytes: int = 0, stop_in_background: bool = False) -> Iterator[bool]:
    """Make sure Ray is initialised for the duration; yields whether this call started it.

    A Ctrl-C while Ray starts does not cut its start short (processes it had started would be left
    running, agents orphaned): Ray starts, is shut down at once, and ``KeyboardInterrupt`` is raised; a
    second Ctrl-C cuts the start short all the same, then Ray is shut down as far as it got. (``ray.init``
    sets a SIGTERM handler of its own as it begins: a SIGTERM in those seconds is Ray's to handle.)

    ``stop_in_background``: when the block ends normally, a runtime this call started is shut down in a
    thread while the caller goes on (most of a shutdown is waiting for Ray's processes to exit, about 1.4 s
    of a run on a 2-core machine); ``wait_for_ray_stop`` waits for it, as does the interpreter's exit and
    the next ``ray_session``. After an exception Ray is shut down before it propagates.
    """
    import ray

    wait_for_ray_stop()
    if runtime_in_use():
        yield False
        return
    slots = tempfile.mkdtemp(prefix="emoe-preload-") if settings.preload_workers and not settings.address else None
    try:
        with signals_stop("stopping once Ray has started"):
            _init(ray, settings, data_bytes, preload=None if slots is None else f"{slots}:{settings.preload_workers}")
            if interrupted():
                raise KeyboardInterrupt
    except BaseException:
        ray.shutdown()  # what started of Ray (nothing when it could not connect)
        _remove(slots)
        raise
    try:
        yield True
    except BaseException:
        ray.shutdown()
        raise
    finally:
        _remove(slots)  # a worker that looks for a slot later finds none, and imports nothing ahead
    if stop_in_background:
        global _stopping
        collecting = _release_ray_objects()
        _stopping = threading.Thread(target=_stop_collected, args=(ray, collecting), name="ray-shutdown")
        _stopping.start()
    else:
        ray.shutdown()


# A local runtime keeps Ray's idle worker processes started ahead (one per CPU, each with Ray imported): a
# trial's actor takes one of them instead of starting a process (a bare actor: 0.56 s against 1.57 s on the
# 2-core machine), since ``harness.tune.runner.trial_actors_take_idle_workers`` (before it, Tune's runtime
# environment for its actors sent every trial to a new process), and where CPUs are to spare some of them
# import the trial code ahead (``preload_workers``). A worker that ran a task is not given to an actor, so
# the driver describes its own node without a task (``harness.results.study_provenance``). They cost
# ``ray.init`` time: 6.2-6.4 s with them and 4.7-5.0 s without on an H200 machine.


def _remove(directory: str | None) -> None:
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def _init(ray: Any, settings: RaySettings, data_bytes: int, preload: str | None = None) -> None:
    """``ray.init`` for the settings: join ``settings.address``, or start a new local runtime; ``preload``
    (``<directory>:<count>``) has that many of its workers import the trial code ahead: Ray's processes
    inherit the variable from this one as ``ray.init`` starts them, and each worker imports
    ``harness.tune.preload`` (Ray's ``preload_python_modules``) before it takes work."""
    common: dict[str, Any] = {  # keyword arguments of ray.init (mixed types)
        "log_to_driver": settings.log_to_driver, "logging_level": logging.WARNING, "configure_logging": True}
    if settings.address:
        check_reachable(settings.address)
        try:
            ray.init(address=settings.address, **common)
        except (ConnectionError, TimeoutError) as exc:
            hint = ("; if the cluster asks for a token (Ray's 'InvalidAuthToken' lines above), set "
                    "RAY_AUTH_MODE=token where the driver runs (docs/cluster.md, Authentication)"
                    if "RAY_AUTH_MODE" not in os.environ else "")
            raise ClusterError(f"--address {settings.address}: cannot connect to Ray ({exc}){hint}") from exc
    else:
        # "local": always a new runtime. With no address Ray joins the cluster named in
        # /tmp/ray/ray_current_cluster (any `ray start` or test cluster on the machine) and then
        # refuses num_cpus.
        quiet_local_auth()
        if preload is not None:
            common["_system_config"] = {"preload_python_modules": ["harness.tune.preload"]}
        try:
            with environ(**({} if preload is None else {PRELOAD_ENV: preload})):
                ray.init(address="local", num_cpus=local_cpus(settings.num_cpus),
                         num_gpus=settings.num_gpus, include_dashboard=False,
                         object_store_memory=settings.object_store_bytes or _store_size(data_bytes), **common)
        except OSError as exc:  # e.g. Ray's own programs not executable (an install unpacked without modes)
            raise ClusterError(f"cannot start a local Ray runtime: {exc}; check the Ray installation "
                               f"({Path(ray.__file__).parent})") from exc


def _release_ray_objects() -> bool:
    """Before a shutdown in the background: release the Ray objects nothing refers to any more, and keep the
    cyclic garbage collector from running until the shutdown has ended (``_stop_collected``).

    Tune leaves object refs and actor handles in reference cycles (its trials, their futures); the
    collector frees them whenever it runs, on whichever thread allocates. Freeing one calls into the core
    worker, and while ``ray.shutdown`` is stopping it that call ends the process at once ("The core worker
    has already been shutdown ... The process will exit", exit status 1, seen once in three Ctrl-C's of a
    simulated search: a collection on the main thread as the summary was being read). Returns whether
    the collector was on (it is turned on again only then).
    """
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()
    return collecting


def _stop_collected(ray: Any, collecting: bool) -> None:
    """``ray.shutdown``, then the garbage collector runs again if it did before (``_release_ray_objects``)."""
    try:
        ray.shutdown()
    finally:
        if collecting:
            gc.enable()


def quiet_local_auth() -> None:
    """Choose token authentication for a local runtime explicitly, unless the user chose a mode.

    Ray 2.60 turns token authentication on for every new local runtime whose ``RAY_AUTH_MODE`` is unset,
    and says so with a warning each time (``ray._private.authentication.authentication_token_setup``).
    Setting the mode it would pick anyway keeps the same protection (a token, created once under
    ``~/.ray``) without the warning. Only for the runtime the harness starts itself: joining a cluster
    keeps the user's settings (docs/cluster.md).
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    # this process read its Ray config when Ray was imported: refresh it, as Ray does when it picks the mode
    from ray._raylet import Config  # type: ignore[attr-defined]  # compiled module, no stubs

    Config.initialize("")


def cluster_resources() -> dict[str, float]:
    """CPUs and GPUs of the connected cluster (``{"CPU": ..., "GPU": ...}``)."""
    import ray

    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0.0)), "GPU": float(res.get("GPU", 0.0))}


def _split_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto``/``local``."""
    if address in ("auto", "local"):
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT "
                           "(e.g. 10.0.0.5:6379, the head node's GCS address printed by `ray start --head`)")
    return host, int(port)


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (``ClusterError``) when nothing listens at ``address``; Ray itself retries for minutes."""
    target = _split_address(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(f"--address {address}: no Ray cluster answers there ({reason}). Start one with "
                           "`ray start --head` on that machine, or check the host and the port (the head's "
                           "GCS port, 6379 unless changed; ray:// addresses use the client port, 10001)") from None


def check_fits(cpus: float, gpus: float, *, strict: bool) -> str | None:
    """Whether some live node has ``cpus`` CPUs and ``gpus`` GPUs for one trial.

    When none has: raises ``ClusterError`` if ``strict`` (a local runtime cannot grow), otherwise
    returns a warning (a cluster with an autoscaler may still add such a node). None when a node fits.
    """
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0.0) >= cpus and r.get("GPU", 0.0) >= gpus for r in nodes):
        return None
    most_cpu = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    most_gpu = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    msg = (f"resources: a trial asks for {cpus:g} CPU and {gpus:g} GPU, but no node of this Ray cluster has "
           f"that many (largest: {most_cpu:g} CPU, {most_gpu:g} GPU on {len(nodes)} node(s)); trials would wait "
           "forever. Lower resources.cpus / resources.gpus (e.g. --set resources.gpus=0)")
    if strict:
        raise ClusterError(msg + ", or give the local runtime more with --num-cpus / --num-gpus")
    return msg + ", or add such a node to the cluster"
