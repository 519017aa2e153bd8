"""Workers that import the trial code ahead (``harness.tune.preload``): how many a local runtime asks for,
how the workers share the slots, and a failure that leaves the worker alive. The runtime itself is tested
in ``tests/harness/test_trial_imports.py`` (the trials find torch imported) and ``test_ray_session.py``
(a trial's actor takes an idle worker)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from harness.tune import preload
from harness.tune.cluster import PRELOAD_SPARE_CPUS, PRELOAD_WORKERS_ENV, preload_workers
from tests.harness.conftest import REPO, tiny_study


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(PRELOAD_WORKERS_ENV, raising=False)


def test_as_many_workers_as_trials_start_at_once_within_the_spare_cpus():
    assert PRELOAD_SPARE_CPUS == 2
    # an H200 host: 16 CPUs, trials of a quarter GPU: 4 at once on its one GPU
    assert preload_workers(1, 0.25, None, num_cpus=16, num_gpus=1) == 4
    assert preload_workers(1, 0, None, num_cpus=16) == 14  # CPU trials: one per CPU, 2 CPUs kept
    assert preload_workers(4, 0, None, num_cpus=16) == 4
    assert preload_workers(1, 0.25, 2, num_cpus=16, num_gpus=1) == 2  # the study's concurrency
    # the 2-core machine: nothing ahead (two workers importing there held the first trial back)
    assert preload_workers(1, 0, None, num_cpus=2) == 0
    assert preload_workers(1, 0, None, num_cpus=3) == 1


def test_the_environment_variable_decides_and_a_bad_value_is_refused(monkeypatch, write_study, tmp_path):
    monkeypatch.setenv(PRELOAD_WORKERS_ENV, "3")
    assert preload_workers(1, 0, None, num_cpus=2) == 3
    monkeypatch.setenv(PRELOAD_WORKERS_ENV, "0")
    assert preload_workers(1, 0.25, None, num_cpus=16, num_gpus=1) == 0
    monkeypatch.setenv(PRELOAD_WORKERS_ENV, "some")
    with pytest.raises(ValueError, match="EMOE_HARNESS_PRELOAD_WORKERS: a number of workers"):
        preload_workers(1, 0, None, num_cpus=2)
    from harness.run import main

    results = tmp_path / "results"
    assert main([str(write_study(tiny_study())), "--results", str(results)]) == 2
    assert not results.exists()


def test_each_slot_goes_to_one_worker(tmp_path):
    """Workers start together: of 12 claims on 3 slots, exactly 3 succeed, each on its own file."""
    with ThreadPoolExecutor(12) as pool:
        won = list(pool.map(lambda _: preload.claim(str(tmp_path), 3), range(12)))
    assert won.count(True) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slot-0", "slot-1", "slot-2"]
    assert preload.claim(str(tmp_path / "gone"), 3) is False  # the run ended and removed its folder


def test_a_worker_with_a_slot_imports_the_trial_code_and_one_without_imports_nothing(tmp_path):
    """... and answers torch's ``_disable_dynamo`` wrappers (``emoe.dynamo_free``), as the trial would."""
    code = ("import sys; from harness.tune import preload as p; ok = p.preload(sys.argv[1]); "
            "print(ok, 'torch' in sys.modules, 'harness.tune.stacked' in sys.modules, "
            "bool(getattr(sys.modules.get('emoe.dynamo_free'), '_marked', None)))")
    value = f"{tmp_path}:1"
    first = subprocess.run([sys.executable, "-c", code, value], cwd=REPO, capture_output=True, text=True, timeout=300)
    second = subprocess.run([sys.executable, "-c", code, value], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.stdout.split() == ["True", "True", "True", "True"], first.stderr[-2000:]
    assert second.stdout.split() == ["False", "False", "False", "False"], second.stderr[-2000:]


def test_a_failing_import_is_printed_and_leaves_the_worker_alive(tmp_path, monkeypatch, capsys):
    """Ray ends a worker whose preload raises anything but an ImportError; the trial imports the module
    again itself and reports what fails there."""
    monkeypatch.setattr(preload, "MODULES", ("tests.harness.no_such_module_here",))
    assert preload.preload(f"{tmp_path}:1") is False
    assert "importing tests.harness.no_such_module_here failed (ModuleNotFoundError" in capsys.readouterr().err


def test_the_driver_never_preloads(monkeypatch, tmp_path):
    """The module runs ``preload`` at import in Ray's workers only: a driver that imports it while the
    variable is set (``ray.init`` starting the runtime) takes no slot."""
    env = {**os.environ, preload.ENV: f"{tmp_path}:4", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", "import sys, harness.tune.preload; print('torch' in sys.modules)"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False"] and not list(tmp_path.iterdir())


GPU_AFTER = r"""
import os, sys
from harness.tune import preload
assert preload.preload(sys.argv[1])
import torch
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # what Ray sets for an actor without GPUs, once it takes the worker
print(torch.cuda.is_initialized(), torch.cuda.device_count())
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_importing_ahead_leaves_cuda_uninitialised_so_the_actors_gpus_still_apply(tmp_path):
    """Ray sets ``CUDA_VISIBLE_DEVICES`` for an actor when it takes the worker, after the preload; CUDA reads it
    once, when it initialises. So the preload must not initialise CUDA: then a worker that imported ahead
    still sees only the GPUs Ray gives its actor."""
    out = subprocess.run([sys.executable, "-c", GPU_AFTER, f"{tmp_path}:1"], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"})
    assert out.stdout.split() == ["False", "0"], out.stderr[-2000:]
