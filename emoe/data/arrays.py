"""In-memory data containers shared by every loader: plain numpy arrays, no torch.

Arrays may be read-only (memory-mapped files, Ray's object store): consumers must not write to them.
Batches (torch tensors on a device) are cut from them by ``emoe.data.batches``; this module does not
import torch, so whatever only reads, checks or describes data (the harness's driver, the loaders, the
converter) does not pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DataSet", "Split"]


@dataclass(frozen=True)
class Split:
    """One split of a multimodal data set (N samples).

    text:        (N, L_t, d_t) float32 features, or (N, 3, L_t) int64 BERT ids/mask/segments
    audio:       (N, L_a, d_a) float32 (-inf already replaced by 0)
    vision:      (N, L_v, d_v) float32
    labels:      (N,) float32 regression score, or int64 class index
    ids:         (N,) str sample identifiers, or None
    reliability: (N, 3) float32 true per-sample modality reliabilities (l, v, a) — synthetic data only
    audio_lengths, vision_lengths: (N,) int64 valid steps per sample (unaligned MMSA files), or None
    uni_labels:  (N, 3) float32 unimodal labels (l, v, a) — CH-SIMS's regression_labels_T/V/A, or None
    """

    text: np.ndarray
    audio: np.ndarray
    vision: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    reliability: np.ndarray | None = None
    audio_lengths: np.ndarray | None = None
    vision_lengths: np.ndarray | None = None
    uni_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name in ("text", "audio", "vision", "ids", "reliability", "audio_lengths", "vision_lengths",
                     "uni_labels"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name}: {len(arr)} samples but labels has {n}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.text, self.audio, self.vision, self.labels) if a is not None)


@dataclass(frozen=True)
class DataSet:
    """The three splits plus a short description (name, e.g. 'synthetic' or a file path)."""

    train: Split
    valid: Split
    test: Split
    name: str = "data"
    #: which metric family fits the labels: "mosi" (MOSI/MOSEI scores in [-3, 3]), "sims" ([-1, 1]),
    #: or "classification" (integer class labels)
    label_kind: str = "mosi"

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "valid": self.valid, "test": self.test}

    @property
    def dims(self) -> dict[str, int]:
        """Shape fields for ``ModelConfig`` (d_text, d_audio, d_vision, len_text, len_audio, len_vision)."""
        t, a, v = self.train.text, self.train.audio, self.train.vision
        bert = t.ndim == 3 and t.shape[1] == 3 and np.issubdtype(t.dtype, np.integer)
        return {
            "d_text": 768 if bert else int(t.shape[2]),
            "len_text": int(t.shape[2] if bert else t.shape[1]),
            "d_audio": int(a.shape[2]),
            "len_audio": int(a.shape[1]),
            "d_vision": int(v.shape[2]),
            "len_vision": int(v.shape[1]),
        }
