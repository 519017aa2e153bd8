"""The trial code imported ahead, in Ray's worker processes, while the driver is still starting the study.

A local runtime starts an idle worker process per CPU as ``ray.init`` begins, and a trial's actor takes one
of them; the actor then imports Ray Tune and the trainables, and the trial imports torch and the model:
2.7 s and 3.2 s on an H200 host's CPU, on the first trial's critical path. Ray imports the modules named in
its ``preload_python_modules`` setting in each worker it starts, before the worker takes work: the harness
names this module there (``harness.tune.cluster``), and it imports the trial code in the first workers that
get here, as many as the driver's ``EMOE_HARNESS_PRELOAD_SLOTS`` says (``<directory>:<count>``; each worker
claims a slot file in the directory), so the idle CPUs do it while ``ray.init`` and Tune's setup run; it
also answers torch's ``_disable_dynamo`` wrappers there (``emoe.dynamo_free``), which the trial would do
first. A worker beyond the count, or one started without the variable (a cluster's), imports nothing more.
Nothing here initialises CUDA: Ray sets ``CUDA_VISIBLE_DEVICES`` for an actor when it takes the worker, and
CUDA reads it once, as it initialises (``tests/harness/test_preload.py`` checks this where there is a GPU).
A failure is printed and left for the trial, which imports the same modules and reports it properly.

Only the standard library at module level: every worker of the runtime imports this module.
"""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["ENV", "MODULES", "claim", "preload"]

ENV = "EMOE_HARNESS_PRELOAD_SLOTS"
#: What a trial process imports before it trains (``study_trainable`` and the model; torch with it).
MODULES = ("harness.tune.stacked", "emoe.stack", "emoe.train")


def claim(directory: str, count: int) -> bool:
    """Take one of the ``count`` slots in ``directory`` (a file made exclusively); False when all are taken."""
    for i in range(count):
        try:
            fd = os.open(os.path.join(directory, f"slot-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            continue
        except OSError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def preload(value: str | None) -> bool:
    """Import ``MODULES`` when ``value`` (``<directory>:<count>``) leaves this process a slot; whether it did."""
    directory, _, count = (value or "").rpartition(":")
    if not directory or not count.isdigit() or not claim(directory, int(count)):
        return False
    for name in MODULES:
        try:
            importlib.import_module(name)
        except Exception as exc:  # Ray ends a worker whose preload raises anything but an ImportError
            print(f"harness preload: importing {name} failed ({type(exc).__name__}: {exc}); "
                  "the trial imports it itself", file=sys.stderr)
            return False
    try:  # the process has compiled nothing yet: its torch._disable_dynamo wrappers can be answered now
        from emoe.dynamo_free import avoid_dynamo

        avoid_dynamo()  # (a step that compiles takes the answers back: emoe.capture)
    except Exception as exc:
        print(f"harness preload: {type(exc).__name__}: {exc}", file=sys.stderr)
    return True


def _in_ray_worker() -> bool:
    return os.path.basename(sys.argv[0] if sys.argv else "") == "default_worker.py"


if _in_ray_worker():  # never in the driver, which imports this module for ENV
    preload(os.environ.get(ENV))
