"""Saving a report's figures: atomically (a reader never sees half a file), reproducibly (no dates in the
files), and, for a report with many figures on a machine with several CPUs, in worker processes.

``FigurePool`` hands each figure, pickled, to a worker (``python -m reports.figsave``: a new interpreter,
never a fork, so it is safe beside the Ray and torch threads of the harness driver), which saves it with the
same :func:`save_figure` and the parent's rcParams: the files are byte for byte the serial build's (PNG and
PDF; an SVG holds random ids even serially). A worker imports matplotlib only, not pandas or seaborn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import matplotlib as mpl
from matplotlib.figure import Figure

from reports.style import style_context

__all__ = ["AUTO_MIN_CPUS", "FORMATS", "ITEMS_PER_WORKER", "PNG_DPI", "FigurePool", "atomic_target",
           "figure_paths", "report_jobs", "save_figure", "usable_cpus"]

log = logging.getLogger(__name__)
FORMATS = ("png", "pdf", "svg")
PNG_DPI = 200  # previews and slides; the PDF (vector) is the paper version
_META: dict[str, dict[str, Any]] = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}
#: Auto mode (``jobs=None``) saves in parallel from this many usable CPUs up. On 2 CPUs a worker wins only
#: while the other CPU is idle (distill_weight: 5.0-5.7 s instead of 6.5-7.8 s) and loses about 1.2 s when
#: another process holds it, as one mostly did on the shared 2-core machine measured (bench/README.md).
AUTO_MIN_CPUS = 3
#: One worker per this many report items (figures and tables): fewer items are saved here, serially.
ITEMS_PER_WORKER = 3
_HEADER = struct.Struct("!Q")


def _file_mode() -> int:
    """The mode ``open`` gives a new file under this process's umask (0644 under the usual 022). Read from
    /proc where it can be: setting the umask to read it is process-wide, and other threads may be creating
    files meanwhile (Ray's, when the harness reports)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A hidden temporary path next to ``path`` to write to; renamed to ``path`` when the block succeeds
    (removed when it fails), so readers never see half a file. The reports package's one such helper."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes it private (0600); a report is for colleagues to read too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def figure_paths(stem: Path, formats: Sequence[str]) -> list[Path]:
    """The files :func:`save_figure` writes for ``stem``, in order."""
    return [stem.with_suffix(f".{fmt}") for fmt in formats]


def save_figure(fig: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` for each format (report style, no dates); return the paths."""
    paths = figure_paths(stem, formats)
    with style_context():
        for fmt, path in zip(formats, paths, strict=True):
            with atomic_target(path) as tmp:
                dpi = PNG_DPI if fmt == "png" else 300  # rasterised layers inside PDF/SVG
                fig.savefig(tmp, format=fmt, metadata=_META[fmt], dpi=dpi)
    return paths


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def report_jobs(jobs: int | None, n_items: int) -> int:
    """Worker processes for a report of ``n_items`` items (0: serial). ``jobs`` processes save figures,
    this one included; None: one per usable CPU from ``AUTO_MIN_CPUS`` up, else 1. At most one worker
    per ``ITEMS_PER_WORKER`` items: a worker's start (an interpreter and matplotlib, ~0.4 s wall, 0.5 s
    CPU) costs about as much as saving two figures."""
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs must be a positive integer or None (auto), got {jobs!r}")
    if jobs is None:
        cpus = usable_cpus()
        jobs = cpus if cpus >= AUTO_MIN_CPUS else 1
    if os.name != "posix" or not sys.executable:  # the pool waits on pipes with select()
        return 0
    return max(0, min(jobs - 1, n_items // ITEMS_PER_WORKER))


# --- the pipe protocol: length-prefixed pickles; a worker answers each message with exactly one --------
def _send(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: IO[bytes]) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError("the pipe closed")
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the pipe closed mid-message")
    return pickle.loads(data)


@dataclass
class _Task:
    index: int  # the item's place in the report: the earliest failure is the one raised
    name: str
    fig: Figure
    stem: Path
    formats: tuple[str, ...]
    on_saved: Callable[[list[Path]], object]
    here: bool = False  # save in this process (a worker died on it, or it cannot be pickled)


class _Worker:
    """One ``python -m reports.figsave`` process: ready once it has imported matplotlib, busy with a task."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc, self.stdin, self.stdout = proc, proc.stdin, proc.stdout
        self.ready = False
        self.task: _Task | None = None


class FigurePool:
    """Saves figures in ``workers`` worker processes, and in this one while every worker is busy.

    :meth:`submit` queues a figure (with 0 workers it saves at once, as the serial build does);
    :meth:`join` saves or waits for the rest and re-raises the failure of the earliest failed figure,
    with the same exception type as a serial build (a worker's traceback is added as a note). After a
    failure nothing new is handed out, but the figures submitted before the failed one are still saved.
    Use it as a context manager: the workers are shut down however the block ends.
    """

    def __init__(self, workers: int) -> None:
        self._pending: deque[_Task] = deque()
        self._workers: list[_Worker] = []
        self._error: tuple[int, BaseException] | None = None
        self.saved_by_workers = 0
        self._sel = selectors.DefaultSelector()
        if workers <= 0:
            return
        root = str(Path(__file__).resolve().parent.parent)  # where `reports` is importable from
        env = {**os.environ, "MPLBACKEND": "Agg",
               "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        rc = {k: v for k, v in mpl.rcParams.items() if k != "backend"}
        for _ in range(workers):
            try:
                proc = subprocess.Popen([sys.executable, "-m", "reports.figsave"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env)
            except OSError as exc:
                log.warning("report: cannot start a figure worker (%s); saving here", exc)
                break
            worker = _Worker(proc)
            self._workers.append(worker)
            self._sel.register(worker.stdout, selectors.EVENT_READ, worker)
            self._write(worker, rc)

    @property
    def failed(self) -> bool:
        """Whether a figure failed to save (stop making new ones)."""
        return self._error is not None

    def submit(self, index: int, name: str, fig: Figure, stem: Path, formats: Sequence[str],
               on_saved: Callable[[list[Path]], object]) -> list[Path]:
        """Save ``fig`` as ``stem.<fmt>`` (now or later) and call ``on_saved(paths)`` once it is written;
        return the paths it will have."""
        task = _Task(index, name, fig, stem, tuple(formats), on_saved)
        if not self._workers:
            on_saved(save_figure(fig, stem, task.formats))  # errors raise here, as in the serial build
        else:
            self._pending.append(task)
            self._poll(0.0)
        return figure_paths(stem, formats)

    def join(self) -> None:
        """Save every queued figure (here too while every worker is busy; a figure no worker can take
        is saved here), wait for the workers, and raise the earliest figure's failure if any."""
        while True:
            self._poll(0.0)  # read the answers in; every free worker gets a figure
            if not self._pending and not self._busy():
                break
            here = next((t for t in self._pending if t.here), None)
            if here is None and self._pending and all(w.ready and w.task is not None for w in self._workers):
                here = self._pending[0]  # every worker is busy: help
            if here is not None:
                self._pending.remove(here)
                self._save_here(here)
            else:
                self._poll(None)
        if self._error is not None:
            raise self._error[1]

    def close(self) -> None:
        """Shut the workers down: end of input, then wait (terminate one that does not end)."""
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.stdin.close()
        for worker in self._workers:
            try:
                worker.proc.wait(timeout=30 if worker.task is None else 5)
            except subprocess.TimeoutExpired:
                worker.proc.terminate()
                worker.proc.wait()
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(worker.stdout)
            with contextlib.suppress(OSError):
                worker.stdout.close()
        self._workers.clear()
        self._sel.close()

    def __enter__(self) -> FigurePool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if isinstance(exc, Exception):  # the caller failed after these figures: save them, as serially
                with contextlib.suppress(Exception):
                    self.join()
        finally:
            self.close()

    # --- internals ---------------------------------------------------------------------------------
    def _busy(self) -> bool:
        return any(w.task is not None for w in self._workers)

    def _fail(self, task: _Task, exc: BaseException) -> None:
        if self._error is None or task.index < self._error[0]:
            self._error = (task.index, exc)
        # as serially, nothing after the failed figure is made; the figures before it are still saved
        self._pending = deque(t for t in self._pending if t.index < self._error[0])

    def _save_here(self, task: _Task) -> None:
        try:
            paths = save_figure(task.fig, task.stem, task.formats)
        except Exception as exc:
            self._fail(task, exc)
            return
        task.on_saved(paths)

    def _write(self, worker: _Worker, obj: object) -> bool:
        try:
            _send(worker.stdin, obj)
        except OSError:  # it died: its task (if any) comes back here
            self._lost(worker)
            return False
        return True

    def _dispatch(self) -> None:
        for worker in list(self._workers):  # a worker found dead leaves the list
            if not self._pending:
                return
            if not worker.ready or worker.task is not None:
                continue
            task = next((t for t in self._pending if not t.here), None)
            if task is None:
                return
            self._pending.remove(task)
            try:
                blob = pickle.dumps(task.fig, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # e.g. a lambda in a formatter: this figure is saved here
                log.debug("report: figure %s cannot be pickled (%s); saving it here", task.name, exc)
                task.here = True
                self._pending.appendleft(task)
                continue
            worker.task = task
            self._write(worker, (blob, str(task.stem), task.formats))

    def _poll(self, timeout: float | None) -> None:
        """Read the answers that have arrived (wait up to ``timeout`` for one), then hand out work."""
        for key, _ in self._sel.select(timeout):
            worker: _Worker = key.data
            try:
                answer = _recv(worker.stdout)
            except (EOFError, OSError, pickle.UnpicklingError):
                self._lost(worker)
                continue
            self._answer(worker, answer)
        self._dispatch()

    def _answer(self, worker: _Worker, answer: tuple[Any, ...]) -> None:
        kind, *rest = answer
        if kind == "ready":
            worker.ready = True
            return
        task, worker.task = worker.task, None
        if task is None:  # pragma: no cover - a worker answers only what it was sent
            return
        if kind == "ok":
            self.saved_by_workers += 1
            task.on_saved(figure_paths(task.stem, task.formats))
        elif kind == "load":  # it could not unpickle this figure (e.g. a class it cannot import)
            log.debug("report: a worker could not load figure %s (%s); saving it here", task.name, rest[0])
            task.here = True
            self._pending.appendleft(task)
        else:
            exc, text = rest
            if not isinstance(exc, BaseException):
                exc = RuntimeError(text.strip().splitlines()[-1] if text.strip() else "a figure worker failed")
            exc.add_note(f"while saving figure {task.name} in report worker pid {worker.proc.pid}:\n{text}")
            self._fail(task, exc)

    def _lost(self, worker: _Worker) -> None:
        """A worker that exited or cannot be written to: drop it; its figure is saved here."""
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(worker.stdout)
        self._workers.remove(worker)
        for stream in (worker.stdin, worker.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            worker.proc.wait(timeout=5)  # its pipes closed: it is exiting
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait()
        task, worker.task = worker.task, None
        what = f" while saving figure {task.name}; saving it here" if task is not None else ""
        log.warning("report: figure worker pid %d exited (status %s)%s", worker.proc.pid,
                    worker.proc.returncode, what)
        if task is not None:
            task.here = True
            self._pending.appendleft(task)


# --- the worker: python -m reports.figsave ----------------------------------------------------------------
def _portable(exc: BaseException) -> BaseException | None:
    """``exc`` if it survives a pickle round trip (its type is re-raised in the parent), else None."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return None
    return exc


def _serve() -> None:
    """Answer ``ready``, then save each figure sent on stdin until it closes."""
    out = os.fdopen(os.dup(1), "wb")  # the answers; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # clean up temporary files
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends or terminates the workers
    inp = sys.stdin.buffer
    try:
        rc = _recv(inp)
    except EOFError:
        return
    for key, value in rc.items():  # the parent's rcParams, where they differ from this interpreter's
        with contextlib.suppress(KeyError, ValueError, TypeError):
            if mpl.rcParams[key] != value:
                mpl.rcParams[key] = value
    _send(out, ("ready",))
    while True:
        try:
            blob, stem, formats = _recv(inp)
        except EOFError:
            return
        try:
            fig = pickle.loads(blob)
        except Exception as exc:
            _send(out, ("load", f"{type(exc).__name__}: {exc}"))
            continue
        try:
            save_figure(fig, Path(stem), formats)
        except Exception as exc:
            _send(out, ("error", _portable(exc), traceback.format_exc()))
            continue
        _send(out, ("ok",))


if __name__ == "__main__":
    _serve()
