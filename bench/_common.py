"""Helpers shared by the harness-level benchmarks: machine notes, tables, study files, process memory and
CPU time.

Memory is read from ``/proc/<pid>/smaps_rollup`` (Linux): PSS splits every shared page between the
processes that map it, so the sum over a process tree counts a shared page (Ray's object store, a
shared library) once, while private copies count in full.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = ["PYTHON", "REPO", "Memory", "TreeCPU", "format_table", "machine_note", "median", "quiet_harness",
           "rollup", "run_timed", "tree_memory", "write_study"]

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def machine_note() -> str:
    """One line about the machine and how busy it is (this kind is shared: numbers are noisy)."""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        ram = f"{total:.0f} GiB RAM"
    except (ValueError, OSError):
        ram = "RAM unknown"
    return (f"machine: {os.cpu_count()} CPU cores, {ram}, load average {load} (1/5/15 min); the machine is "
            "shared with other work, so figures are noisy: compare runs side by side, quote medians")


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence (NaN when empty)."""
    return float(statistics.median(values)) if values else float("nan")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (floats to 3 significant decimals)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in body]
    return "\n".join(lines)


def write_study(path: Path, study: dict[str, Any]) -> Path:
    """Write a study dict as YAML (the file ``python -m harness.run`` reads)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def quiet_harness(argv: Sequence[str], log: Path) -> int:
    """``harness.run.main(argv)`` in this process with its printed output sent to ``log``."""
    import contextlib

    from harness.run import main as harness_main

    with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        return harness_main(list(argv))


# --- processes: memory and CPU time ---------------------------------------------------------------

_FIELDS = ("Rss", "Pss", "Pss_Anon", "Pss_File", "Pss_Shmem")


def rollup(pid: int) -> dict[str, int]:
    """The byte counts of ``/proc/<pid>/smaps_rollup`` (empty when the process is gone)."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 3 and parts[2] == "kB":
                    out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return out


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, start time in ticks, CPU seconds user + system) from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields from "state" (field 3) on; comm may hold spaces
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / _TICK


def _procs() -> dict[int, tuple[int, int, float]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[int(entry)] = st
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _descendants(roots: Sequence[int], procs: dict[int, tuple[int, int, float]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [r for r in roots if r in procs]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class TreeCPU(threading.Thread):
    """Polls the CPU time (user + system) of every process under ``roots`` until stopped.

    Each process's last reading counts, so a process's final ``interval`` seconds may be missed; Ray's
    workers are not reaped by the driver, so ``RUSAGE_CHILDREN`` would miss them altogether.
    """

    def __init__(self, roots: Sequence[int], interval: float = 0.5):
        super().__init__(daemon=True)
        self.roots, self.interval = list(roots), interval
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self.commands: dict[tuple[int, int], str] = {}  # (pid, start time) -> command line when first seen
        self._stop_event = threading.Event()

    def poll(self) -> None:
        procs = _procs()
        for pid in _descendants(self.roots, procs):
            _, started, cpu = procs[pid]
            key = (pid, started)
            self.seen[key] = cpu
            if key not in self.commands:
                self.commands[key] = _cmdline(pid)

    def by_kind(self) -> dict[str, float]:
        """CPU seconds per kind of process: the roots, Ray's workers (trials), Ray's other processes."""
        out: dict[str, float] = {}
        for (pid, started), cpu in self.seen.items():
            cmd = self.commands.get((pid, started), "")
            kind = ("root" if pid in self.roots else "ray worker" if "default_worker.py" in cmd
                    else "ray services")
            out[kind] = out.get(kind, 0.0) + cpu
        return out

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def stop(self) -> float:
        """Stop polling; the CPU seconds seen over the whole tree."""
        self._stop_event.set()
        self.join()
        self.poll()
        return sum(self.seen.values())


def run_timed(cmd: Sequence[str], *, timeout: float, log: Path | None = None) -> tuple[float, TreeCPU, int]:
    """Run ``cmd`` from the repository root; (wall seconds, the CPU time of its process tree, exit status).
    Output goes to ``log`` (discarded when None)."""
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        cpu = TreeCPU([proc.pid])
        cpu.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        finally:
            cpu.stop()
        return time.perf_counter() - start, cpu, rc
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


@dataclass(frozen=True)
class Memory:
    """Memory of a process tree in bytes: PSS total and its anonymous, file and shared-memory parts."""

    pss: int
    anon: int
    file: int
    shmem: int
    n_procs: int


def tree_memory(root: int, *, per_process: dict[int, int] | None = None) -> Memory:
    """Sum of PSS over ``root``'s process tree: shared pages once, private pages in full.
    ``per_process``, when given, receives each process's PSS by pid."""
    totals = dict.fromkeys(_FIELDS, 0)
    pids = _descendants([root], _procs())
    for pid in pids:
        r = rollup(pid)
        for k in _FIELDS:
            totals[k] += r.get(k, 0)
        if per_process is not None:
            per_process[pid] = r.get("Pss", 0)
    return Memory(totals["Pss"], totals["Pss_Anon"], totals["Pss_File"], totals["Pss_Shmem"], len(pids))
