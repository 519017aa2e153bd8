"""How the harness starts or joins Ray (harness/tune/cluster.py ``ray_session``), with ``ray.init`` recorded
instead of run: the trials' output and Ray's info logs reach the terminal only with ``--verbose``."""

from __future__ import annotations

import logging

import pytest
import ray

from harness.tune.cluster import RaySettings, ray_session


@pytest.fixture
def init_calls(monkeypatch) -> list[dict[str, object]]:
    calls: list[dict[str, object]] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the user's choice: left as it is
    return calls


@pytest.mark.parametrize("address", [None, "auto"])
def test_ray_is_quiet_unless_verbose(address, init_calls):
    for verbose in (False, True):
        with ray_session(RaySettings(address=address, num_cpus=1, log_to_driver=verbose)) as started:
            assert started
    assert [c["log_to_driver"] for c in init_calls] == [False, True]
    assert all(c["logging_level"] == logging.WARNING for c in init_calls)
    assert [c["address"] for c in init_calls] == [address or "local"] * 2


def test_a_runtime_already_initialised_is_used_as_it_is(init_calls, monkeypatch):
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with ray_session(RaySettings(num_cpus=1)) as started:
        assert not started
    assert init_calls == []
