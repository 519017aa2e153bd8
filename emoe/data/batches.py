"""Mini-batches of a ``Split`` as torch tensors on a device: the training and evaluation loops' input.

Batching copies the selected rows into fresh tensors (or cuts them from one copy of the split kept on the
accelerator), so sharing one copy of the arrays between trials is safe.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from emoe.data.arrays import Split

__all__ = ["RESIDENT_BYTES", "Batch", "iter_batches", "resident_arrays"]

#: On an accelerator a split of at most this many bytes (text, audio, vision, labels), and at most an eighth
#: of a CUDA device's memory (trials sharing a GPU each hold their own copy), is copied there once, and its
#: batches are cut there: gathering rows on the host and copying them over, every batch and for a stack
#: every member's batch, kept an H200 waiting on the host (a stack of 8 small models: a fifth of a second
#: per window).
RESIDENT_BYTES = 4 * 2**30
_FIELDS = ("text", "audio", "vision", "labels")
_resident: dict[tuple[int, str], tuple[torch.Tensor, ...]] = {}




@dataclass(frozen=True)
class Batch:
    """A mini-batch of tensors on one device; shapes as in ``Split`` with N -> B."""

    text: torch.Tensor
    audio: torch.Tensor
    vision: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor  # (B,) positions of the rows in their split


def keeps_on_device(device: torch.device) -> bool:
    """Whether splits used on ``device`` stay there between batches (accelerators; on CPU there is no copy)."""
    return device.type != "cpu"


def device_memory(device: torch.device) -> int:
    """The memory of a CUDA device in bytes (unbounded for other devices)."""
    if device.type != "cuda":
        return 2**63
    return int(torch.cuda.get_device_properties(device).total_memory)


def resident_arrays(split: Split, device: torch.device | str) -> tuple[torch.Tensor, ...] | None:
    """``split``'s text, audio, vision and labels on ``device``, copied at the first call and kept while the
    split lives; None on CPU or for a split above ``RESIDENT_BYTES`` or an eighth of the device's memory."""
    device = torch.device(device)
    if not keeps_on_device(device) or split.nbytes > min(RESIDENT_BYTES, device_memory(device) // 8):
        return None
    key = (id(split), str(device))
    if key not in _resident:
        with warnings.catch_warnings():  # read-only arrays (Ray's shared views) are only read, to copy them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            _resident[key] = tuple(torch.from_numpy(np.ascontiguousarray(getattr(split, f))).to(device)
                                   for f in _FIELDS)
        weakref.finalize(split, _resident.pop, key, None)
    return _resident[key]


def iter_batches(split: Split, batch_size: int, *, device: torch.device | str = "cpu",
                 generator: torch.Generator | None = None, shuffle: bool = False) -> Iterator[Batch]:
    """Yield batches in order (or shuffled with ``generator``); copies rows, never writes to ``split``."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    resident = resident_arrays(split, device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if resident is not None:
            rows = idx.to(resident[0].device, non_blocking=True)
            text, audio, vision, labels = (a.index_select(0, rows) for a in resident)
            yield Batch(text=text, audio=audio, vision=vision, labels=labels, index=idx)
            continue
        np_idx = idx.numpy()
        yield Batch(
            text=torch.from_numpy(np.ascontiguousarray(split.text[np_idx])).to(device, non_blocking=True),
            audio=torch.from_numpy(np.ascontiguousarray(split.audio[np_idx])).to(device, non_blocking=True),
            vision=torch.from_numpy(np.ascontiguousarray(split.vision[np_idx])).to(device, non_blocking=True),
            labels=torch.from_numpy(np.ascontiguousarray(split.labels[np_idx])).to(device, non_blocking=True),
            index=idx,
        )
