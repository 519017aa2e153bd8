"""Train without importing ``torch._dynamo``: a trial process's largest fixed cost after torch itself.

Nothing in an eager or CUDA-graph run uses TorchDynamo, yet the first ``torch.optim`` optimizer imports it
(1.1-1.6 s on a 2-core CPU, 4.6 s on an H200 host's CPU): torch wraps optimizer methods, its functional
optimizers and its reference operators (which ``torch.func.vmap`` runs for a stack) in
``torch._disable_dynamo``, whose wrapper imports ``torch._dynamo`` on its first call to build a "do not
trace this" version of the function, and ``Optimizer.step`` imports it to place graph breaks. Outside a
``torch.compile`` region both are plain calls of the wrapped function.

``avoid_dynamo()`` gives every such wrapper alive in the process its answer ahead of time: the wrapped
function itself, which is what the "do not trace" version does when nothing is being compiled. Call it only
in a process that compiles nothing (the harness's trial processes, for a trial whose ``train.compile`` is
not ``default``); ``allow_dynamo()`` takes the answers back, and ``emoe.capture`` calls it before it hands a
step to ``torch.compile``, so a process that runs a compiled trial after an eager one compiles with torch's
own wrappers. ``Adam`` is ``torch.optim.Adam`` whose step sets grad mode as torch's does, without the graph
breaks (which only mean something while compiling); its updates, state and ``state_dict`` are torch's own.

If a torch version wraps differently, ``avoid_dynamo`` finds nothing to mark and the run imports
``torch._dynamo`` as before: slower to start, never different (``tests/emoe/test_dynamo_free.py`` says
which).
"""

from __future__ import annotations

import gc
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Adam", "allow_dynamo", "avoid_dynamo"]

_ATTR = "__dynamo_disable"  # where torch._disable_dynamo's wrapper keeps its "do not trace" function
_marked: list[Callable[..., Any]] = []  # the wrapped functions whose answer avoid_dynamo set
_scanned_modules = 0  # len(sys.modules) at the last scan: wrappers are made as modules load


def _wrapper_code() -> types.CodeType | None:
    try:
        from torch._compile import _disable_dynamo
    except ImportError:
        return None
    probe = _disable_dynamo(lambda: None)
    return getattr(probe, "__code__", None)


def avoid_dynamo() -> int:
    """Mark every ``torch._disable_dynamo`` wrapper alive now so that calling it runs the wrapped function
    without importing ``torch._dynamo``; returns how many were marked now (0 when already done, or when this
    torch wraps otherwise). Idempotent; import the code that will run first (its wrappers are made when
    its modules load); a process that loaded no module since the last call is not scanned again (each trial
    of a reused actor calls this)."""
    global _scanned_modules
    if _marked and len(sys.modules) == _scanned_modules:
        return 0
    code = _wrapper_code()
    if code is None or "torch._dynamo" in sys.modules:
        return 0  # already imported: nothing to save, and its own answers stay
    _scanned_modules = len(sys.modules)
    if "fn" not in code.co_freevars:
        return 0
    at = code.co_freevars.index("fn")  # the wrapped function, from the closure: __wrapped__ may have been
    n = 0                               # replaced by a functools.wraps applied over the wrapper
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__ is code and obj.__closure__:
            fn = obj.__closure__[at].cell_contents
            if getattr(fn, _ATTR, None) is None:
                try:
                    setattr(fn, _ATTR, fn)
                except (AttributeError, TypeError):  # a builtin or a slotted callable: leave it to torch
                    continue
                _marked.append(fn)
                n += 1
    return n


def allow_dynamo() -> int:
    """Take back what ``avoid_dynamo`` set, so that ``torch.compile`` sees torch's wrappers as torch made
    them; returns how many were restored."""
    n = 0
    while _marked:
        fn = _marked.pop()
        if getattr(fn, _ATTR, None) is fn:
            delattr(fn, _ATTR)
            n += 1
    return n


# torch.optim.Adam.step below its wrappers: the profiler hook Optimizer adds on first use and
# _use_grad_for_differentiable (grad mode and the graph breaks); read from the class dict, so whichever
# of them are in place now, the body is the same.
_ADAM_STEP = inspect.unwrap(vars(torch.optim.Adam)["step"])


class Adam(torch.optim.Adam):
    """``torch.optim.Adam``, update for update, whose ``step`` never imports ``torch._dynamo``: grad mode is
    set to the optimizer's ``differentiable`` flag around torch's step body, as torch does, without the
    compile-time graph breaks. Not for stepping inside ``torch.compile``."""

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        prev = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(bool(self.defaults["differentiable"]))
            return _ADAM_STEP(self, closure)
        finally:
            torch.set_grad_enabled(prev)

