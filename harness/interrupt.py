"""Ctrl-C (SIGINT) for a study's run.

One rule for the whole command, whatever it is doing when the signal comes:

* ``signals_stop()`` (no message): the signal raises ``KeyboardInterrupt`` at once.
* ``signals_stop(message)``: the first signal only sets a flag (``interrupted()``) and prints ``message``;
  whoever runs the work looks at the flag and ends it cleanly (``StudyStopper`` stops Tune's trials, the
  command starts no further phase); a second signal raises ``KeyboardInterrupt`` at once.

The flag is cleared only where the outermost ``signals_stop`` of a command begins, so a signal is never
lost between phases (a Ctrl-C as the confirmation phase starts still stops the study). Handlers are set on
the main thread only; elsewhere ``signals_stop`` changes nothing. Imports neither Ray nor torch.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["SIGNALS", "interrupted", "signals_stop"]

#: The signals that stop a run.
SIGNALS = (signal.SIGINT,)

#: Set by the first signal of a graceful stop (module level: Tune pickles ``StudyStopper``, which reads it).
_INTERRUPTED = threading.Event()
#: The message of each ``signals_stop`` entered (None: at once), innermost last.
_levels: list[str | None] = []


def interrupted() -> bool:
    """Whether a signal asked this command to stop (since its outermost ``signals_stop`` began)."""
    return _INTERRUPTED.is_set()


def _handler(signum: int, frame: FrameType | None) -> None:
    message = _levels[-1] if _levels else None
    if message is None or _INTERRUPTED.is_set():
        raise KeyboardInterrupt
    _INTERRUPTED.set()
    print(f"\ninterrupted: {message} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def signals_stop(message: str | None = None) -> Iterator[None]:
    """A signal stops the run for the duration: at once, or (``message``) first by the flag.

    Nested uses change the mode for their duration and set the handlers again at their end; the outermost
    one clears the flag first and puts back the previous handlers at its end, unless another was set
    meanwhile (a library's is kept).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outermost = not _levels
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    if outermost:
        _INTERRUPTED.clear()
    _levels.append(message)
    for sig in SIGNALS:
        signal.signal(sig, _handler)
    try:
        yield
    finally:
        _levels.pop()
        for sig, handler in previous.items():
            if not outermost:
                signal.signal(sig, _handler)  # the enclosing level's, in place of any set meanwhile
            elif signal.getsignal(sig) is _handler:  # one set meanwhile by another is kept
                # a handler set outside Python (None) cannot be set again: the default takes its place
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
