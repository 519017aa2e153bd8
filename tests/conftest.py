"""Project-wide test setup: one intra-op thread per test process.

The suite's models are tiny, where a second BLAS/OpenMP thread costs more than it gives, and on a shared
2-core machine (CI, or Ray workers beside the test process) oversubscription makes timings erratic.
Benchmarks in bench/ choose their own thread counts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

# --- Ray's session directories ---------------------------------------------------------------------------
# Ray keeps each runtime's logs and sockets in <temp>/ray/session_* and never removes them; the suite starts
# dozens of runtimes (3.7 GB had gathered in /tmp/ray on this machine). They go to a directory of the run's
# own (inherited by xdist's workers and by every Ray process), removed when the run ends; a short path, as
# Ray's socket paths must stay under 107 bytes. A RAY_TMPDIR set by the user is left alone.
_OWN_RAY_TMPDIR: str | None = None
if "RAY_TMPDIR" not in os.environ:
    _OWN_RAY_TMPDIR = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="emoe-ray-", dir="/tmp")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _OWN_RAY_TMPDIR is not None:  # the process that made it: the controller, or the only process
        shutil.rmtree(_OWN_RAY_TMPDIR, ignore_errors=True)

try:  # torch is optional for the reports tests' point of view; set it when present.
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]
else:
    torch.set_num_threads(1)



# --- GPU tests and CI ---------------------------------------------------------------------------------
# Tests marked ``gpu`` skip where no CUDA device is. A test that skips because an optional package is
# missing hides a broken path: in CI (CI=true) the dev extra installs what every optional path needs, so
# such a skip fails there. Only ``gpu`` tests, and skips whose reason names the machine (no CUDA, no
# glibc), may skip in CI.
_MACHINE_REASONS = ("CUDA", "glibc")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Modules with slow or Ray tests first (each keeps its order): pytest-xdist hands whole modules to its processes
    # in this order (``--no-loadscope-reorder`` in pyproject.toml), and a long module handed out last keeps one
    # process busy after the other has finished.
    slow_modules = {item.path for item in items if "slow" in item.keywords or "ray" in item.keywords}
    items.sort(key=lambda item: item.path not in slow_modules)  # a stable sort
    if torch is not None and torch.cuda.is_available():
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and _in_ci()) or "gpu" in item.keywords:
        return
    reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if not any(word in reason for word in _MACHINE_REASONS):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI ({reason}): CI runs every test; add what it needs to the dev extra"


# --- one test module's Ray runtime does not leak into the next ---------------------------------------
@pytest.fixture(autouse=True, scope="module")
def _no_ray_runtime_from_earlier_modules() -> Iterator[None]:
    """Shut down a Ray runtime an earlier module left initialised in this process: the harness uses an
    initialised runtime as it is (and then skips this machine's device checks), so a leftover one would make
    a module's results depend on which modules ran before it."""
    ray = sys.modules.get("ray")  # only if some test imported it: no Ray import for the reports tests
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    yield


@pytest.fixture
def float64() -> Iterator[None]:
    """Default dtype float64 for the test (and torch's thread count restored after it)."""
    import torch

    previous, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
    torch.set_num_threads(threads)
