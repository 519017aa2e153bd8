"""The driver of a study does not import torch: trials train in their own processes, and torch's import is
the largest part of the driver's start (about a second on a 2-core machine, three on an H200 host's CPU,
before the study's data were even checked). Each case runs the command line's ``main`` in a fresh
interpreter and looks at what it imported. (A whole stacked grid with its confirmation and report:
``tests/harness/test_trial_imports.py``, which also watches the trials' processes.)"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.harness.conftest import REPO, tiny_study

DRIVER = """
import json, sys
from harness.run import main
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "torch": "torch" in sys.modules,
                  "trackers": sorted(m for m in ("mlflow", "wandb", "tensorboardX") if m in sys.modules)}))
"""


def _driver(args: list[str]) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]) | {"err": proc.stderr}


def test_a_gpu_study_is_checked_against_this_machine_without_torch(write_study, tmp_path):
    """Whether the local runtime will have the GPUs a trial asks for is Ray's own count (what ``ray.init``
    will detect), not torch's: the check still refuses the study before Ray starts, without importing torch."""
    results = tmp_path / "results"
    out = _driver([str(write_study(tiny_study())), "--results", str(results), "--set", "resources.gpus=1"])
    assert out["rc"] == 2 and "resources.gpus: a trial asks for 1 GPU, but the local runtime will have 0" in out["err"]
    assert not results.exists() and out["torch"] is False


def test_local_gpus_counts_what_ray_will_detect(monkeypatch):
    """Ray's count within ``CUDA_VISIBLE_DEVICES``, as ``ray.init`` gives a local runtime without num_gpus."""
    from ray._private import accelerators

    from harness.study.devices import local_gpus

    visible: list[str] | None = None

    class Manager:
        @staticmethod
        def get_current_node_num_accelerators() -> int:
            return 4

        @staticmethod
        def get_current_process_visible_accelerator_ids() -> list[str] | None:
            return visible

    monkeypatch.setattr(accelerators, "get_accelerator_manager_for_resource", lambda name: Manager)
    assert local_gpus() == 4
    visible = ["1", "3"]
    assert local_gpus() == 2
