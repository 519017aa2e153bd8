"""Where one run of a study spent its wall time, phase by phase.

``python -m harness.run`` times its phases (Python's start and imports, preparing the plan and data,
starting Ray (with Tune's and the report's imports meanwhile), the tuning and confirmation phases (one Tune
run for a grid, two otherwise), compaction, the summary, the report, and the wait for
Ray's shutdown, which runs in the background meanwhile), records them in ``study.json`` as ``timings`` (seconds; the latest run's, a resume replaces
them) and prints them as one ``time:`` line after the report. A phase's wait for its first running trial (Tune's start, the
trial's worker process and its imports; about none for a confirmation on the tuning phase's actors) is given beside it: on a fast device that fixed cost, not
training, decides how long a small study takes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["LABELS", "Timings"]

#: Phase names (``<name>_s`` in study.json) and how the ``time:`` line calls them, in run order.
LABELS = {
    "start": "Python start",
    "prepare": "prepare",
    "ray_start": "Ray start",
    "tuning": "tuning",
    "tuning_first_trial": "first trial running after",
    "confirm": "confirmation",
    "confirm_first_trial": "first trial running after",
    "compact": "compaction",
    "summary": "summary",
    "report": "report",
    "ray_stop": "Ray stop",  # what is left of Ray's shutdown, which runs during the summary and the report
}
#: Phases that are part of another one (shown in brackets after it, not added to the total).
PART_OF = {"tuning_first_trial": "tuning", "confirm_first_trial": "confirm"}


@dataclass
class Timings:
    """Seconds per phase of a run, measured on the monotonic clock from ``start``."""

    start: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)

    @classmethod
    def since_process_start(cls) -> Timings:
        """Timings whose clock starts with this process (phase ``start``: the interpreter and the imports
        before the call), where the system says when the process started (Linux); else from now."""
        age = process_age()
        timings = cls(start=time.monotonic() - (age or 0.0))
        timings.add("start", age)
        return timings

    def add(self, name: str, seconds: float | None) -> None:
        """Count ``seconds`` (None: nothing to count) towards phase ``name``."""
        if name not in LABELS:
            raise ValueError(f"unknown phase {name!r}; known: {', '.join(LABELS)}")
        if seconds is not None:
            self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name`` (also when it raises)."""
        t = time.monotonic()
        try:
            yield
        finally:
            self.add(name, time.monotonic() - t)

    def total(self) -> float:
        return time.monotonic() - self.start

    def record(self) -> dict[str, float]:
        """``{"<phase>_s": seconds, ..., "total_s": seconds}`` in run order, to 0.01 s (study.json)."""
        out = {f"{name}_s": round(self.phases[name], 2) for name in LABELS if name in self.phases}
        out["total_s"] = round(self.total(), 2)
        return out

    def describe(self) -> str:
        """``prepare 1.8 s, Ray start 3.3 s, tuning 18.7 s (first trial running after 2.6 s), ...``"""
        parts = []
        for name in LABELS:
            if name not in self.phases or name in PART_OF:
                continue
            inner = [f"{LABELS[p]} {self.phases[p]:.1f} s" for p, whole in PART_OF.items()
                     if whole == name and p in self.phases]
            parts.append(f"{LABELS[name]} {self.phases[name]:.1f} s" + (f" ({', '.join(inner)})" if inner else ""))
        return ", ".join(parts)

    def line(self) -> str:
        """``time: 40.2 s (prepare 1.8 s, Ray start 3.3 s, tuning 18.7 s (first trial running after 2.6 s), ...)``"""
        phases = self.describe()
        return f"time: {self.total():.1f} s" + (f" ({phases})" if phases else "")

    @classmethod
    def from_record(cls, record: dict[str, float]) -> Timings:
        """The phases of a ``record()`` (study.json ``timings``), to ``describe`` them again."""
        return cls(phases={k.removesuffix("_s"): float(v) for k, v in record.items()
                           if k != "total_s" and k.removesuffix("_s") in LABELS})


def process_age() -> float | None:
    """Seconds since this process started (``/proc/self/stat`` against the boot-time clock), or None."""
    try:
        stat = Path("/proc/self/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks after boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
