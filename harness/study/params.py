"""Dotted parameter paths into the EMOE configuration ("model.d_model", "loss.distill_weight").

Studies name what varies by these paths. This module knows every valid path, coerces YAML values to the
field's type (``"1e-3"`` is a string in YAML 1.1), merges overrides onto a base configuration and hashes
the result into the identities of ``docs/results.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping
from typing import Literal, cast

from emoe.config import ConfigError, EMOEConfig, LossConfig, ModelConfig, TrainConfig, from_dict, to_dict

__all__ = [
    "DATA_FIELDS",
    "FIELDS",
    "INT_LIMIT",
    "NOT_IDENTITY",
    "SEED_PATH",
    "JSONValue",
    "ParamValue",
    "Scalar",
    "apply_overrides",
    "build_config",
    "check_path",
    "coerce",
    "config_id",
    "field_type",
    "flatten",
    "format_value",
    "trial_id",
]

#: A scalar a study file gives a field (after YAML parsing).
Scalar = str | int | float | bool | None
#: A parameter value: a scalar or a sequence of them (``model.fixed_weights``).
ParamValue = Scalar | list["ParamValue"] | tuple["ParamValue", ...]
#: A YAML/JSON document or any part of it.
JSONValue = Scalar | list["JSONValue"] | dict[str, "JSONValue"]

_SECTIONS: dict[str, type] = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig}

#: Every settable path and its resolved type annotation.
FIELDS: dict[str, object] = {
    f"{sec}.{name}": hint
    for sec, cls in _SECTIONS.items()
    for name, hint in typing.get_type_hints(cls).items()
    if name in {f.name for f in dataclasses.fields(cls)}
}

#: Largest magnitude of an integer field: what a 64-bit column (and torch's seeding) can hold.
INT_LIMIT = 2**63 - 1

#: Shape fields that come from the data set, not from the study.
DATA_FIELDS: tuple[str, ...] = ("model.d_text", "model.d_audio", "model.d_vision", "model.len_text",
                                "model.len_audio", "model.len_vision")

#: The training seed is set from the study's ``seeds`` list, never by a parameter.
SEED_PATH = "train.seed"

#: Fields that do not change a trial's result (device placement, evaluation batch size, verbosity of
#: speed): excluded from ``config_id``.
NOT_IDENTITY: frozenset[str] = frozenset({"train.seed", "train.device", "train.eval_batch_size",
                                          "train.fast_path", "train.compile", "train.window_forward",
                                          "model.bert_path"})


def check_path(path: str) -> str | None:
    """``None`` when ``path`` names a configuration field, else an error message with a suggestion."""
    if path in FIELDS:
        return None
    close = difflib.get_close_matches(path, list(FIELDS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    sec = path.split(".", 1)[0]
    if sec not in _SECTIONS:
        return f"unknown parameter {path!r}: paths start with model., loss. or train.{hint}"
    return f"unknown parameter {path!r}{hint}"


_PLAIN_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_name(hint: object) -> str:
    """The type of a field as a message says it: "an integer", "one of 'learned', 'uniform'", ..."""
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, type) and hint in _PLAIN_NAMES:
        return _PLAIN_NAMES[hint]
    return getattr(hint, "__name__", str(hint))


def field_type(path: str) -> str:
    """The type of the field at ``path`` in words (for messages)."""
    return _type_name(FIELDS[path])


def _coerce_one(hint: object, value: object) -> ParamValue:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce_one(arg, value)
            except (TypeError, ValueError) as exc:
                errors.append(str(exc))
        raise TypeError(errors[0] if errors else f"expected {_type_name(hint)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ValueError(f"must be {_type_name(hint)}, got {value!r}")
        return cast(Scalar, value)  # one of the Literal's own values
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise TypeError(f"expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce_one(a, v) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or (isinstance(value, float) and not math.isfinite(value)) or int(value) != value):
            raise TypeError(f"expected an integer, got {value!r}")
        if not -INT_LIMIT <= int(value) <= INT_LIMIT:
            raise ValueError(f"out of range: integers here are at most {INT_LIMIT} in magnitude")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"expected a number, got {value!r}")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise TypeError(f"expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"must be a finite number, got {value!r}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"expected a string, got {value!r}")
        return value
    return cast(ParamValue, value)  # a field type without a rule (none today): kept as given


def coerce(path: str, value: object) -> ParamValue:
    """Convert a YAML value to the type of the field at ``path``; raises ``ValueError`` naming the path."""
    err = check_path(path)
    if err:
        raise ValueError(err)
    try:
        return _coerce_one(FIELDS[path], value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def flatten(tree: Mapping[str, object], prefix: str = "") -> dict[str, ParamValue]:
    """Nested mappings to dotted keys; dotted keys pass through (``{"model": {"d_model": 8}}`` and
    ``{"model.d_model": 8}`` both give ``{"model.d_model": 8}``). Lists are values, not nesting.

    A path given both ways in one tree (``{"loss.distill_weight": 0, "loss": {"distill_weight": 0.5}}``) is
    a ``ValueError``: keeping either one silently could run a "no distillation" variant with distillation."""
    out: dict[str, ParamValue] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        leaves = flatten(value, path + ".") if isinstance(value, Mapping) else {path: cast(ParamValue, value)}
        for leaf, v in leaves.items():  # a leaf: a YAML scalar or list, coerced where it is used
            if leaf in out:
                raise ValueError(f"{leaf} is given twice (dotted and nested): give it once")
            out[leaf] = v
    return out


def apply_overrides(base: Mapping[str, object], overrides: Mapping[str, object]) -> dict[str, dict[str, ParamValue]]:
    """A nested ``{"model": {...}, "loss": {...}, "train": {...}}`` with dotted ``overrides`` applied."""
    nested: dict[str, dict[str, ParamValue]] = {sec: {} for sec in _SECTIONS}
    for path, value in {**flatten(base), **flatten(overrides)}.items():
        sec, _, name = path.partition(".")
        nested.setdefault(sec, {})[name] = value
    return nested


def build_config(nested: Mapping[str, Mapping[str, object]]) -> EMOEConfig:
    """Coerce every value and build the frozen config; raises ``ConfigError`` with every problem."""
    errors: list[str] = []
    clean: dict[str, dict[str, ParamValue]] = {}
    for sec, fields in nested.items():
        for name, value in fields.items():
            try:
                clean.setdefault(sec, {})[name] = coerce(f"{sec}.{name}", value)
            except ValueError as exc:
                errors.append(str(exc))
    if errors:
        raise ConfigError(errors)
    return from_dict(clean)


def _canonical(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_id(cfg: EMOEConfig, data_key: str) -> str:
    """12 hex characters identifying what changes a result: the config less ``NOT_IDENTITY``, the data."""
    flat = {k: v for k, v in flatten(to_dict(cfg)).items() if k not in NOT_IDENTITY}
    return hashlib.sha256(_canonical({"config": flat, "data": data_key}).encode()).hexdigest()[:12]


def trial_id(cfg_id: str, seed: int, instance: str | None = None) -> str:
    """12 hex characters from the config id and the seed (plus a search instance, see docs/results.md)."""
    parts: list[str | int] = [cfg_id, int(seed), *([instance] if instance is not None else [])]
    return hashlib.sha256(_canonical(parts).encode()).hexdigest()[:12]


def format_value(value: object) -> str:
    """Short, stable text for labels: ``0.1``, ``learned``, ``[0.5,0.25,0.25]``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)
