"""Ray for a study: start a local runtime, join a cluster (``--address``), or use one already running.

A local runtime (always a new one, even while another cluster runs on the machine) gets a CPU count
(all cores unless told), no dashboard, an object store sized for the data rather than 30% of RAM, and
its logs under Ray's temp dir (never the current directory). A runtime started elsewhere (tests,
notebooks) is used as is and left running.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["RaySettings", "cluster_resources", "ray_session"]

_MIN_STORE = 128 << 20


@dataclass(frozen=True)
class RaySettings:
    """How to reach Ray: ``address`` None starts a local runtime sized by the other fields."""

    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    object_store_bytes: int | None = None
    log_to_driver: bool = False


def _store_size(data_bytes: int) -> int:
    """Room for the data (shared by all trials), checkpoints in flight and Ray's own objects."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(min(max(_MIN_STORE, 2 * data_bytes + (256 << 20)), 0.3 * total))


@contextlib.contextmanager
def ray_session(settings: RaySettings, *, data_bytes: int = 0) -> Iterator[bool]:
    """Make sure Ray is initialised for the duration; yields whether this call started it."""
    import ray

    if ray.is_initialized():
        yield False
        return
    common: dict[str, Any] = {"log_to_driver": settings.log_to_driver, "logging_level": logging.WARNING,
              "configure_logging": True}
    if settings.address:
        ray.init(address=settings.address, **common)
    else:
        # "local": always a new runtime. With no address Ray joins the cluster named in
        # /tmp/ray/ray_current_cluster (any `ray start` or test cluster on the machine) and then
        # refuses num_cpus.
        ray.init(address="local", num_cpus=settings.num_cpus or os.cpu_count() or 1,
                 num_gpus=settings.num_gpus, include_dashboard=False,
                 object_store_memory=settings.object_store_bytes or _store_size(data_bytes), **common)
    try:
        yield True
    finally:
        ray.shutdown()


def cluster_resources() -> dict[str, float]:
    """CPUs and GPUs of the connected cluster (``{"CPU": ..., "GPU": ...}``)."""
    import ray

    res = ray.cluster_resources()
    return {"CPU": float(res.get("CPU", 0.0)), "GPU": float(res.get("GPU", 0.0))}
