"""``DataError`` and the check that a data set fits a model configuration, shared by every loader."""

from __future__ import annotations

import numpy as np

from emoe.config import ModelConfig
from emoe.data.arrays import DataSet

__all__ = ["DataError", "check_compatible", "is_token_text"]


class DataError(ValueError):
    """Bad data: a missing, unreadable or inconsistent file, or shapes that disagree with a model.

    The message names the file (or data set) and the problem, so it can be shown to a user as is.
    """


def is_token_text(text: np.ndarray) -> bool:
    """True for BERT token triples (N, 3, L) of integers, False for precomputed features (N, L, d)."""
    return text.ndim == 3 and text.shape[1] == 3 and np.issubdtype(text.dtype, np.integer)


def check_compatible(data: DataSet, model: ModelConfig) -> None:
    """Raise ``DataError`` listing every way ``data`` disagrees with ``model`` (shapes, text input, task)."""
    errors: list[str] = []
    token_text = is_token_text(data.train.text)
    if model.text_input == "bert" and not token_text:
        errors.append(f"text: the model fine-tunes BERT (text_input='bert') and needs token triples "
                      f"(N, 3, L), but the data have features of shape {data.train.text.shape[1:]}; "
                      "load the data with text='bert'")
    if model.text_input == "features" and token_text:
        errors.append("text: the model expects precomputed features (text_input='features') but the data "
                      "hold BERT token triples; load the data with text='features'")
    dims = data.dims
    for field in ("d_text", "len_text", "d_audio", "len_audio", "d_vision", "len_vision"):
        if field == "d_text" and (token_text or model.text_input == "bert"):
            continue
        if dims[field] != getattr(model, field):
            errors.append(f"{field}: the model expects {getattr(model, field)} "
                          f"but the data have {dims[field]}")
    labels = data.train.labels
    if data.label_kind == "classification":
        n_classes = int(np.max(labels)) + 1 if len(labels) else 0
        if model.n_outputs < 2:
            errors.append("n_outputs: the data hold class labels but the model has a single "
                          "regression output")
        elif n_classes > model.n_outputs:
            errors.append(f"n_outputs: the data have class index {n_classes - 1} but the model has only "
                          f"{model.n_outputs} outputs")
    elif model.n_outputs != 1:
        errors.append(f"n_outputs: the data hold regression scores ({data.label_kind}) but the model has "
                      f"{model.n_outputs} outputs (expected 1)")
    if errors:
        raise DataError(f"{data.name}: data and model configuration disagree:\n  " + "\n  ".join(errors))
