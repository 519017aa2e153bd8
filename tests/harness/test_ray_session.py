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


def test_a_runtime_stops_in_the_background_after_a_normal_end_and_at_once_after_an_error(init_calls, monkeypatch):
    """``stop_in_background``: the caller goes on (the summary, the report) while Ray's processes exit;
    an error still shuts Ray down before it propagates; and a new session waits for the old stop."""
    import threading

    from harness.tune import cluster

    entered, release, stopped_in = threading.Event(), threading.Event(), []

    def shutdown() -> None:
        stopped_in.append(threading.current_thread().name)
        entered.set()
        assert release.wait(120), "never released"

    monkeypatch.setattr(ray, "shutdown", shutdown)
    with ray_session(RaySettings(num_cpus=1), stop_in_background=True) as started:
        assert started
    assert entered.wait(120)  # the shutdown runs, in a thread of its own, while this one goes on
    assert stopped_in == ["ray-shutdown"] and cluster._stopping is not None and cluster._stopping.is_alive()
    release.set()
    assert cluster.wait_for_ray_stop() >= 0 and cluster._stopping is None

    release.clear()
    with ray_session(RaySettings(num_cpus=1), stop_in_background=True):
        pass
    alive_at_init = []
    monkeypatch.setattr(ray, "init", lambda **kwargs: alive_at_init.append(cluster._stopping is not None))
    threading.Thread(target=release.set).start()
    with pytest.raises(KeyError), ray_session(RaySettings(num_cpus=1), stop_in_background=True):
        raise KeyError("a trial")
    assert alive_at_init == [False]  # the previous stop had ended before Ray started again
    assert stopped_in[-1] == threading.current_thread().name  # after an error: at once, in this thread
    assert cluster._stopping is None


@pytest.mark.parametrize("signals", [1, 2])
def test_a_ctrl_c_while_ray_starts_lets_it_start_then_shuts_it_down(signals, init_calls, monkeypatch, capsys):
    """A start cut short left Ray's agents running (orphaned); the first Ctrl-C now waits for the start and
    then stops Ray, a second one cuts the start short, and Ray is shut down as far as it got either way."""
    import os
    import signal

    shutdowns: list[bool] = []

    def init(**kwargs: object) -> None:
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGINT)
        init_calls.append(kwargs)  # reached: Ray's start went on to its end

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    with pytest.raises(KeyboardInterrupt), ray_session(RaySettings(num_cpus=1)):
        pytest.fail("the block must not run")
    assert len(init_calls) == (1 if signals == 1 else 0) and shutdowns == [True]
    assert "interrupted: stopping once Ray has started" in capsys.readouterr().err


def test_ray_objects_nobody_refers_to_are_released_before_a_background_stop_and_none_during_it(init_calls,
                                                                                              monkeypatch):
    """Object refs and actor handles that Tune left in reference cycles call into the core worker when the
    collector frees them: during ``ray.shutdown`` that ended the process (exit 1, no summary). They are
    collected before the stop starts, and the collector is off until it has ended."""
    import gc
    import threading

    from harness.tune import cluster

    events: list[object] = []
    stopping, release = threading.Event(), threading.Event()

    class RayObject:  # in a reference cycle, like Tune's trials and the refs they hold
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            events.append("released")

    def shutdown() -> None:
        events.append(("shutdown, collector on", gc.isenabled()))
        stopping.set()
        assert release.wait(120), "never released"

    monkeypatch.setattr(ray, "shutdown", shutdown)
    assert gc.isenabled()
    with ray_session(RaySettings(num_cpus=1), stop_in_background=True):
        RayObject()
    assert stopping.wait(120)
    assert events == ["released", ("shutdown, collector on", False)] and not gc.isenabled()
    release.set()
    cluster.wait_for_ray_stop()
    assert gc.isenabled()


@pytest.mark.parametrize("auth_mode", [None, "token"])
def test_a_join_that_fails_hints_at_the_token_when_none_is_set(monkeypatch, auth_mode):
    # a token-protected cluster refused the driver with "cannot connect to Ray" and no word of the cause
    from types import SimpleNamespace

    from harness.tune import cluster

    def refuse(**kwargs: object) -> None:
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    if auth_mode is None:
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    else:
        monkeypatch.setenv("RAY_AUTH_MODE", auth_mode)
    with pytest.raises(cluster.ClusterError) as info:
        cluster._init(SimpleNamespace(init=refuse), RaySettings(address="10.0.0.1:6379"), 0)
    assert "cannot connect to Ray" in str(info.value)
    assert ("RAY_AUTH_MODE=token" in str(info.value)) is (auth_mode is None)


@pytest.mark.ray
def test_a_trials_actor_starts_in_a_worker_ray_started_ahead_and_the_driver_describes_its_own_node(tmp_path):
    """(Linux: processes are read from /proc.) A local runtime keeps the idle worker processes Ray starts ahead
    (one per CPU, Ray already imported): a trial's actor, made as Tune makes it, takes one of them instead
    of starting a process (0.56 s against 1.57 s for a bare actor on the 2-core machine; Tune's runtime
    environment for its actors kept them out until ``trial_actors_take_idle_workers``), but never one that
    has run a task, so the study's provenance describes the driver's own node in the driver, without a task."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = """
import os, pathlib, time, ray
from harness.results.study_provenance import node_machines
from harness.tune.cluster import RaySettings, ray_session

def read(proc, name):
    try:
        return (proc / name).read_bytes().decode(errors="replace")
    except OSError:  # ended meanwhile
        return ""

def workers(raylet):
    # the raylet's children: its agents, and its worker processes (named "ray::IDLE" while idle)
    return {int(p.name) for p in pathlib.Path("/proc").glob("[0-9]*")
            if read(p, "stat").rpartition(")")[2].split()[1:2] == [raylet] and "Agent" not in read(p, "cmdline")}

from ray.tune.execution.class_cache import _ActorClassCache
from harness.tune.runner import trial_actors_take_idle_workers

class Trial:
    def pid(self):
        return os.getpid()

trial_actors_take_idle_workers()
Trial = _ActorClassCache().get(Trial).options(num_cpus=1)  # as Tune makes a trial's actor class

with ray_session(RaySettings(num_cpus=2)) as started:
    assert started
    nodes = node_machines(timeout_s=60)
    session = ray._private.worker._global_node.get_session_dir_path()
    (raylet,) = [p.name for p in pathlib.Path("/proc").glob("[0-9]*")
                 if read(p, "cmdline").split("\\0")[0].endswith("/raylet") and session in read(p, "cmdline")]
    deadline = time.monotonic() + 120
    while len(workers(raylet)) < 2 and time.monotonic() < deadline:  # the event: both have started
        time.sleep(0.05)
    ahead = workers(raylet)
    print(len(nodes), bool(nodes[0]["machine"] and nodes[0]["machine"]["cpu"]), len(ahead),
          ray.get(Trial.remote().pid.remote()) in ahead)
"""
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-4:] == ["1", "True", "2", "True"]
