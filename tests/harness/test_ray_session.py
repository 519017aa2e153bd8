"""``ray_session`` passes the command line's choices to ``ray.init`` (a local runtime and a joined one)."""

from __future__ import annotations

import pytest
import ray

from harness.tune import cluster
from harness.tune.cluster import RaySettings, ray_session


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("address", [None, "127.0.0.1:6379"])
def test_ray_init_gets_log_to_driver_from_the_settings(monkeypatch, verbose, address):
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    with ray_session(RaySettings(address=address, num_cpus=1, log_to_driver=verbose)) as started:
        assert started
    assert len(calls) == 1
    assert calls[0]["log_to_driver"] is verbose  # --verbose shows the trials' own output, else it is quiet
    assert calls[0]["address"] == (address or "local")
