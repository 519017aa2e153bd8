"""Environment variables set for a block of code: the one helper for it (tracking tools read settings from
the environment; a local Ray's processes inherit it as ``ray.init`` starts them)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["environ"]


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """``values`` set in ``os.environ`` for the block and put back as they were at its end (processes started
    in the block keep them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
