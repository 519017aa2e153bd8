"""Build small pickles in the exact MMSA layout, for the data tests and for the harness tests.

Usage: ``from tests.emoe.data.mmsa_files import write_mmsa_pickle`` (or the ``mmsa_pickle`` fixture);
``rewrite_converted`` edits a converted directory by hand, its manifest made to agree.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["make_mmsa_dict", "rewrite_converted", "write_mmsa_pickle"]


def make_mmsa_dict(*, sizes: tuple[int, int, int] = (12, 5, 7), len_text: int = 6,
                   len_audio: int | None = None, len_vision: int | None = None, d_text: int = 16,
                   d_audio: int = 4, d_vision: int = 6, sims: bool = False, neg_inf: bool = True,
                   drop: Iterable[str] = (), seed: int = 0) -> dict[str, dict[str, Any]]:
    """An MMSA-style dict. Unaligned (lengths given and different) adds audio/vision_lengths keys.

    ``sims`` gives labels in [-1, 1] plus regression_labels_T/A/V; ``neg_inf`` puts -inf into audio as
    the real files have; ``drop`` removes keys from every split. Default dims avoid the MOSI/MOSEI/SIMS
    signatures so size checks stay off unless a test asks for them.
    """
    rng = np.random.default_rng(seed)
    la, lv = len_audio or len_text, len_vision or len_text
    unaligned = la != len_text or lv != len_text
    data: dict[str, dict[str, Any]] = {}
    for split, n in zip(("train", "valid", "test"), sizes):
        bound = 1.0 if sims else 3.0
        labels = np.round(rng.uniform(-bound, bound, n) * (5 if sims else 3)) / (5 if sims else 3)
        audio = rng.standard_normal((n, la, d_audio)).astype(np.float32)
        if neg_inf and n:
            audio[0, 0, :] = -np.inf
        bert = np.stack([rng.integers(100, 30000, (n, len_text)), np.ones((n, len_text)),
                         np.zeros((n, len_text))], axis=1).astype(np.float32)  # MMSA stores floats
        d: dict[str, Any] = {
            "raw_text": np.array([f"{split} sentence number {i} ✓" for i in range(n)], dtype=object),
            "audio": audio,
            "vision": rng.standard_normal((n, lv, d_vision)).astype(np.float32),
            "id": np.array([f"vid{i:03d}$_${split}" for i in range(n)], dtype=object),
            "text": rng.standard_normal((n, len_text, d_text)).astype(np.float32),
            "text_bert": bert,
            "annotations": np.array(["Positive"] * n, dtype=object),
            "classification_labels": (labels > 0).astype(np.float32),
            "regression_labels": labels.astype(np.float32),
        }
        if unaligned:
            d["audio_lengths"] = rng.integers(1, la + 1, n).tolist()
            d["vision_lengths"] = rng.integers(1, lv + 1, n).tolist()
        if sims:
            for m in "TAV":
                d[f"regression_labels_{m}"] = np.round(rng.uniform(-1, 1, n) * 5).astype(np.float32) / 5
        for key in drop:
            d.pop(key, None)
        data[split] = d
    return data


def write_mmsa_pickle(path: str | Path, data: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    """Write ``data`` (or ``make_mmsa_dict(**kw)``) to ``path`` as the MMSA files are; returns the dict."""
    data = make_mmsa_dict(**kw) if data is None else data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(data, fh, protocol=4)
    return data


def rewrite_converted(root: Path, rel: str, array: np.ndarray) -> None:
    """Replace (or add) one array of a converted directory (``rel``: ``split/key.npy``) and make the manifest
    agree with it, checksum included: a hand-edited conversion that passes every file check."""
    np.save(root / rel, array, allow_pickle=False)
    manifest = json.loads((root / "manifest.json").read_text())
    split, name = rel.split("/")
    entry = manifest["splits"][split]["files"].setdefault(name.removesuffix(".npy"), {"file": rel})
    entry.update(shape=list(array.shape), dtype=array.dtype.str, bytes=(root / rel).stat().st_size,
                 sha256=hashlib.sha256((root / rel).read_bytes()).hexdigest())
    (root / "manifest.json").write_text(json.dumps(manifest))
