"""A driver whose Ray cluster is gone says so and ends itself, before Ray ends it without a word.

When the head node of a cluster dies (or a local runtime's control store, the GCS, is killed), Ray's
driver retries its connection for 60 s and then ends the process itself: exit status 1, no Python
clean-up, ``study.json`` still ``running``, and nothing saying what to do. ``ClusterWatch`` probes the
GCS's TCP port from a thread once a second; when no probe has connected for ``LOST_AFTER_S`` (a port that
refuses connections, or a host that no longer answers) it calls ``on_lost`` (the driver marks the study
``interrupted`` with the counts of the rows recorded so far and prints how to continue on a new cluster)
and ends the process with the status it returns: ``EXIT_CLUSTER_LOST``, or the signal's status when a
signal sent to the whole job (``timeout``, a scheduler's walltime) ended Ray's processes with the
driver's. Every row written before is kept: trials write their files themselves, atomically, and a
resumed study continues the interrupted ones from their checkpoints.

``EMOE_HARNESS_CLUSTER_LOST_S`` sets the 20 s: on a cluster whose GCS restarts by itself (Ray's GCS fault
tolerance) make it as long as that takes, at most Ray's own reconnection timeout
(``RAY_gcs_rpc_server_reconnect_timeout_s``, 60 s), after which Ray ends the driver anyway.

The watch stops before the driver shuts Ray down, so a normal end never looks like a lost cluster. A busy
machine still accepts TCP connections on a live port (the kernel answers them), so load alone does not
trip it; a probe that times out counts as failed.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["EXIT_CLUSTER_LOST", "LOST_AFTER_ENV", "LOST_AFTER_S", "ClusterWatch", "gcs_reachable", "lost_after_s"]

#: The driver's exit status when its Ray cluster was lost (docs/studies.md, "Exit status").
EXIT_CLUSTER_LOST = 5
#: Seconds without a connection to the GCS after which the cluster counts as lost (Ray gives up at 60).
LOST_AFTER_S = 20.0
#: The environment variable that replaces ``LOST_AFTER_S`` (seconds, above 0).
LOST_AFTER_ENV = "EMOE_HARNESS_CLUSTER_LOST_S"
_PROBE_EVERY_S = 1.0
_PROBE_TIMEOUT_S = 2.0


def gcs_reachable(address: str, timeout_s: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``HOST:PORT`` (the GCS) succeeds within ``timeout_s``."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def lost_after_s() -> float:
    """``LOST_AFTER_S``, or ``EMOE_HARNESS_CLUSTER_LOST_S`` when set to a number above 0 (else a ValueError
    that names it)."""
    raw = os.environ.get(LOST_AFTER_ENV, "").strip()
    if not raw:
        return LOST_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{LOST_AFTER_ENV}={raw!r}: expected seconds above 0 (default {LOST_AFTER_S:g})")
    return value


class ClusterWatch:
    """Context manager: while inside, a thread ends the process once the GCS at ``address`` has been
    unreachable for ``lost_after_s()``, with the exit status ``on_lost(seconds_unreachable)`` returns
    (which must not call Ray: it would wait on the lost cluster; ``EXIT_CLUSTER_LOST`` if it raises)."""

    def __init__(self, address: str, on_lost: Callable[[float], int]):
        self.address, self.on_lost = address, on_lost
        self.lost_after_s = lost_after_s()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cluster-watch", daemon=True)

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        last_seen = time.monotonic()
        while not self._stop.wait(_PROBE_EVERY_S):
            if gcs_reachable(self.address, min(_PROBE_TIMEOUT_S, self.lost_after_s)):
                last_seen = time.monotonic()
                continue
            gone = time.monotonic() - last_seen
            if gone >= self.lost_after_s and not self._stop.is_set():
                status = EXIT_CLUSTER_LOST
                try:
                    status = self.on_lost(gone)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(status)  # Ray's threads wait on the lost cluster: no clean exit
