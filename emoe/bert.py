"""Optional fine-tuned BERT text encoder: token triples (ids, mask, segments) -> token features.

``transformers`` is an optional extra (``pip install -e ".[bert]"``), imported only when a BERT model is
loaded. Weights come from a local directory only; nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["BertTextEncoder", "load_bert"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")


class BertTextEncoder(nn.Module):
    """Wraps a ``transformers.BertModel`` as ``self.model`` (the reference's ``text_model.model``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def hidden_size(self) -> int:
        """Width of the token features (768 for BERT-base)."""
        config: Any = self.model.config
        return int(config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 3, L) integer ids / attention mask / segment ids -> last hidden states (B, L, H)."""
        if tokens.ndim != 3 or tokens.shape[1] != 3:
            raise ValueError(f"text: BERT input must be (batch, 3, length) ids/mask/segments, "
                             f"got shape {tuple(tokens.shape)}")
        ids, mask, segments = tokens[:, 0].long(), tokens[:, 1].float(), tokens[:, 2].long()
        out = self.model(input_ids=ids, attention_mask=mask, token_type_ids=segments)
        return out[0]


def load_bert(path: str | Path) -> BertTextEncoder:
    """Load a BERT model saved with ``save_pretrained`` from the local directory ``path``.

    Raises ImportError naming the extra when ``transformers`` is missing, and FileNotFoundError when the
    directory or its weights are missing. Never contacts the network (``local_files_only=True``).
    """
    try:
        from transformers import BertModel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("text_input='bert' needs the optional 'transformers' package: "
                          "pip install -e '.[bert]'") from exc
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"bert_path: {directory} is not a directory with BERT weights")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"bert_path: {directory} has no config.json (save it with save_pretrained)")
    if not any((directory / name).is_file() for name in _WEIGHT_FILES):
        raise FileNotFoundError(f"bert_path: {directory} has no weights (expected one of "
                                f"{', '.join(_WEIGHT_FILES)})")
    model = BertModel.from_pretrained(str(directory), local_files_only=True)
    return BertTextEncoder(model)
