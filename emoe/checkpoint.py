"""Full training state on disk: atomic save, ``weights_only`` load, and plain-data conversions.

A state holds only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)`` can
read it without running code from the file. ``emoe.train.fit`` builds and consumes the state. torch is
imported by the functions that write or read tensors: the names (``Key``, the file names) and the checks
cost the harness's driver no torch import.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from emoe.outputs import EpochRecord, RouterRecord

__all__ = [
    "META_FILE",
    "STATE_FILE",
    "STATE_KEYS",
    "STATE_VERSION",
    "Key",
    "TrainState",
    "check_state",
    "load_state",
    "record_from_state",
    "record_to_state",
    "router_from_state",
    "router_to_state",
    "save_state",
]

STATE_VERSION = 1
#: A training state: tensors, numbers, strings, lists and dicts under the ``Key`` names.
TrainState = dict[str, Any]


class Key:
    """The keys of a training state (see ``emoe.train.fit``), named once for the trainer and the harness."""

    VERSION = "version"
    CONFIG = "config"
    EPOCH = "epoch"
    MODEL = "model"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    BEST_LOSS = "best_loss"
    BEST_EPOCH = "best_epoch"
    BEST_VALID = "best_valid"
    BEST_TEST = "best_test"
    BEST_ROUTER = "best_router"
    BEST_VALID_ROUTER = "best_valid_router"  # optional: states written before it have none
    GENERATOR = "generator"
    TORCH_RNG = "torch_rng"
    CUDA_RNG = "cuda_rng"
    HISTORY = "history"


#: Keys a training state may lack (added later; a state without them still loads and resumes).
OPTIONAL_KEYS = frozenset({Key.BEST_VALID_ROUTER})
#: Keys every training state has.
STATE_KEYS = frozenset(v for k, v in vars(Key).items() if k.isupper()) - OPTIONAL_KEYS
#: File names of a checkpoint directory: the state (``torch.save``) and the epochs' rows (JSON).
STATE_FILE = "state.pt"
META_FILE = "meta.json"


def save_state(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``state`` to ``path`` atomically: a hidden temporary file in the same folder, then rename.

    A crash mid-write never leaves a partial file under the final name.
    """
    import torch

    check_state(state)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by ``save_state`` onto the CPU with ``weights_only=True`` (no code runs)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a weights-only file
        raise ValueError(f"training state {path}: cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"training state {path}: expected a dict, got {type(state).__name__}")
    check_state(state, source=str(path))
    return state


def check_state(state: dict[str, Any], source: str = "training state") -> None:
    """Raise ``ValueError`` naming the missing keys or a version this code cannot continue from."""
    missing = sorted(STATE_KEYS - set(state))
    if missing:
        raise ValueError(f"{source}: not a training state, missing keys {missing}")
    if state[Key.VERSION] != STATE_VERSION:
        raise ValueError(f"{source}: state version {state['version']!r}, this code reads {STATE_VERSION}")


def router_to_state(rec: RouterRecord | None) -> dict[str, Any] | None:
    """A ``RouterRecord`` as tensors and a list of strings (weights_only-loadable)."""
    if rec is None:
        return None
    import torch

    return {
        "weights": torch.from_numpy(np.array(rec.weights, copy=True)),
        "preds": torch.from_numpy(np.array(rec.preds, copy=True)),
        "labels": torch.from_numpy(np.array(rec.labels, copy=True)),
        "ids": None if rec.ids is None else np.asarray(rec.ids).astype(str).tolist(),
        "reliability": None if rec.reliability is None else torch.from_numpy(np.array(rec.reliability)),
    }


def router_from_state(d: dict[str, Any] | None) -> RouterRecord | None:
    """Inverse of ``router_to_state``."""
    if d is None:
        return None
    return RouterRecord(
        weights=d["weights"].numpy(),
        preds=d["preds"].numpy(),
        labels=d["labels"].numpy(),
        ids=None if d["ids"] is None else np.asarray(d["ids"], dtype=str),
        reliability=None if d["reliability"] is None else d["reliability"].numpy(),
    )


def record_to_state(rec: EpochRecord) -> dict[str, Any]:
    """An ``EpochRecord`` as a plain dict."""
    return dataclasses.asdict(rec)


def record_from_state(d: dict[str, Any]) -> EpochRecord:
    """Inverse of ``record_to_state``."""
    return EpochRecord(**d)
