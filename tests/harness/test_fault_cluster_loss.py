"""Losing the whole cluster mid-study: the head node's control store (GCS) is killed while trials train.

Ray's driver would retry for 60 s and then end itself with exit status 1, ``study.json`` still ``running``.
The harness's watch (``harness.tune.watchdog``) ends the run sooner, with ``EXIT_CLUSTER_LOST``, a line
saying what happened and how to continue, ``study.json`` ``interrupted``, and every row recorded so far
kept. The cluster is this test's own; the test process never connects to it (it would die with it). The
drivers here count a cluster lost after ``AFTER_S`` instead of the default 20 s (``LOST_AFTER_ENV``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from harness.tune.watchdog import EXIT_CLUSTER_LOST, LOST_AFTER_ENV
from tests.harness.conftest import REPO, start_test_cluster, tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow]

AFTER_S = 6
ENV = {**os.environ, LOST_AFTER_ENV: str(AFTER_S)}


def _long_study(name: str) -> dict[str, object]:
    """A tiny study whose trials are still training when the test strikes."""
    study = tiny_study(name=name, seeds=[1, 2, 3])
    study["base"]["train"]["max_epochs"] = 200
    study["data"]["synthetic"]["n_train"] = 1024
    return study


def _wait_for_an_epoch(proc: subprocess.Popen[str], root: Path) -> None:
    """Until a trial of the study in ``root`` has recorded an epoch (the event); fails if the driver ended."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not list(root.glob("epochs/*.parquet")):
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before the test could strike"


def test_a_lost_cluster_ends_the_run_with_its_own_status_and_keeps_the_rows(write_study, tmp_path):
    study = _long_study("lost")
    results = tmp_path / "results"
    root = results / "lost"
    own = start_test_cluster()
    try:
        cmd = [sys.executable, "-m", "harness.run", str(write_study(study)), "--results", str(results),
               "--address", own.address]
        with tempfile.TemporaryFile("w+") as err_f:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err_f, text=True, env=ENV)
            _wait_for_an_epoch(proc, root)
            own.cluster.head_node.kill_gcs_server()
            lost_at = time.monotonic()
            code = proc.wait(timeout=120)
            took = time.monotonic() - lost_at
            err_f.seek(0)
            err = err_f.read()
    finally:
        own.cluster.shutdown()
    assert code == EXIT_CLUSTER_LOST, err[-3000:]
    assert AFTER_S - 2 <= took < 60, took  # before Ray would have ended the driver itself (status 1)
    assert "the Ray cluster is gone" in err and "--resume" in err and "with the new cluster's --address" in err
    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "interrupted"
    assert list(root.glob("epochs/*.parquet"))  # what was recorded stays


def test_sigterm_to_the_whole_job_exits_143_without_waiting_for_ray(write_study, tmp_path):
    """``timeout`` or a scheduler's walltime signals every process of the job: the driver and its local Ray's
    processes (they share its process group). The driver asks its trials to stop, but Ray is gone with them;
    the run still ends as interrupted (143, study.json ``interrupted``, the command that continues it), once
    the watch counts the runtime lost, instead of Ray ending the driver after 60 s with status 1."""
    import signal

    study = _long_study("job")
    results = tmp_path / "results"
    root = results / "job"
    cmd = [sys.executable, "-m", "harness.run", str(write_study(study)), "--results", str(results), "--num-cpus", "2"]
    with tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err_f, text=True, env=ENV,
                                start_new_session=True)  # its own process group, as under `timeout`
        try:
            _wait_for_an_epoch(proc, root)
            os.killpg(proc.pid, signal.SIGTERM)
            sent = time.monotonic()
            code = proc.wait(timeout=120)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):  # anything of Ray's left in the group
                os.killpg(proc.pid, signal.SIGKILL)
        err_f.seek(0)
        err = err_f.read()
    assert code == 143, err[-3000:]
    assert took < 60, took
    assert "--resume" in err
    assert json.loads((root / "study.json").read_text())["status"] == "interrupted"


def test_the_lost_cluster_delay_is_checked_before_anything_starts(monkeypatch, capsys, write_study, tmp_path):
    from harness.run import main

    monkeypatch.setenv(LOST_AFTER_ENV, "soon")
    results = tmp_path / "results"
    assert main([str(write_study(tiny_study())), "--results", str(results)]) == 2
    assert f"{LOST_AFTER_ENV}='soon': expected seconds above 0" in capsys.readouterr().err
    assert not results.exists()
