"""Project-wide test setup: one intra-op thread per test process.

The suite's models are tiny, where a second BLAS/OpenMP thread costs more than it gives, and on a shared
2-core machine (CI, or Ray workers beside the test process) oversubscription makes timings erratic.
Benchmarks in bench/ choose their own thread counts.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

try:  # torch is optional for the reports tests' point of view; set it when present.
    import torch
except ImportError:  # pragma: no cover
    torch = None  # type: ignore[assignment]
else:
    torch.set_num_threads(1)
