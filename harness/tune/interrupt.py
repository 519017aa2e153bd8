"""Ctrl-C (SIGINT) and SIGTERM (``timeout``, a scheduler's walltime, ``docker stop``) for a study's run.

One rule for the whole command, whatever it is doing when the signal comes:

* ``signals_stop()`` (no message): the signal raises ``KeyboardInterrupt`` at once: while the study is
  prepared, and while it is summed up after it ended. Nothing is half written there.
* ``signals_stop(message)``: the first signal only sets a flag (``interrupted()``) and prints ``message``;
  whoever runs the work looks at the flag and ends it cleanly (``StudyStopper`` stops Tune's trials, the
  command starts no further phase, ``ray_session`` stops the Ray it was starting); a second signal raises
  ``KeyboardInterrupt`` at once.

The flag is cleared only where the outermost ``signals_stop`` of a command begins, so a signal is never
lost between phases (a Ctrl-C as the tuning phase ends still stops the study before its confirmation).
The exit status of a stopped run is ``exit_code()``: 128 + the number of the first signal, as a shell
reports a process that signal ended: 130 after Ctrl-C, 143 after SIGTERM. Handlers are set on the main
thread only; elsewhere ``signals_stop`` changes nothing. Imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType

__all__ = ["SIGNALS", "exit_code", "interrupted", "signal_name", "signals_stop", "stopped_by"]

#: The signals that stop a run.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: Set by the first signal of a graceful stop (module level: Tune pickles ``StudyStopper``, which reads it).
_INTERRUPTED = threading.Event()
#: The first signal's number since the outermost ``signals_stop`` began.
_first: int | None = None
#: Each ``signals_stop`` entered, innermost last: its message (None: at once) and its ``on_stop``.
_levels: list[tuple[str | None, Callable[[], object] | None]] = []


def interrupted() -> bool:
    """Whether a signal asked this command to stop (since its outermost ``signals_stop`` began)."""
    return _INTERRUPTED.is_set()


def exit_code() -> int:
    """The exit status of a run a signal stopped: 128 + the first signal's number (130 when none came)."""
    return 128 + (signal.SIGINT if _first is None else _first)


def signal_name() -> str:
    """The first signal's name ("SIGINT" when none came)."""
    return signal.Signals(signal.SIGINT if _first is None else _first).name


def stopped_by() -> str:
    """How messages name the stop: "interrupted" (Ctrl-C), or with the signal's name ("interrupted (SIGTERM)")."""
    return _word(signal.SIGINT if _first is None else _first)


def _word(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"interrupted ({signal.Signals(signum).name})"


def _handler(signum: int, frame: FrameType | None) -> None:
    global _first
    if _first is None:
        _first = signum
    message = _levels[-1][0] if _levels else None
    if message is None or _INTERRUPTED.is_set():
        raise KeyboardInterrupt
    _INTERRUPTED.set()  # the levels' watchers run their on_stop: no thread is started in here
    again = "Ctrl-C again" if signum == signal.SIGINT else "send it again"
    text = f"\n{_word(signum)}: {message} ({again} to stop at once)\n"
    try:
        print(text, end="", file=sys.stderr, flush=True)
    except RuntimeError:  # the main thread was inside a write to stderr: a reentrant call is refused
        os.write(2, text.encode())


#: Seconds a level waits, as it ends, for an ``on_stop`` that a signal started.
_ON_STOP_JOIN_S = 30.0


def _watch(on_stop: Callable[[], object], done: threading.Event) -> None:
    """Run ``on_stop`` once a first signal sets the flag, unless its level ends first. A thread started
    when the level begins: a signal handler must not start threads (it may interrupt the main thread
    inside ``Thread.start``, holding the lock that start needs)."""
    while not done.is_set():
        if _INTERRUPTED.wait(0.1):
            if not done.is_set():
                on_stop()
            return


@contextlib.contextmanager
def signals_stop(message: str | None = None, on_stop: Callable[[], object] | None = None) -> Iterator[None]:
    """SIGINT and SIGTERM stop the run for the duration: at once, or (``message``) first by the flag.

    ``on_stop`` runs, in a daemon thread started with the level, when a first signal sets the flag within
    it; the level's end waits for an ``on_stop`` under way.

    Nested uses change the mode for their duration and set the handlers again at their end (``ray.init``
    sets a SIGTERM handler of its own); the outermost one clears the flag first and puts back the previous
    handlers at its end, unless another was set meanwhile (a library's, e.g. ``ray.init``'s, is kept).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _first
    outermost = not _levels
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if outermost:
        _INTERRUPTED.clear()
        _first = None
    _levels.append((message, on_stop))
    done = threading.Event()
    watcher = None
    if on_stop is not None and not _INTERRUPTED.is_set():
        watcher = threading.Thread(target=_watch, args=(on_stop, done), name="on-stop", daemon=True)
        watcher.start()
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        done.set()
        if watcher is not None:  # an on_stop under way ends before the level does (the caller's lock with it)
            watcher.join(timeout=_ON_STOP_JOIN_S)
        _levels.pop()
        for sig, handler in previous.items():
            if not outermost:
                signal.signal(sig, _handler)  # the enclosing level's, in place of any set meanwhile (ray.init's)
            elif signal.getsignal(sig) is _handler:  # one set meanwhile by another (ray.init's) is kept
                # a handler set outside Python (None) cannot be set again: the default takes its place
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
