"""Optuna samplers a study may name: the table of names, checks of a study's sampler options, the factory.

Part of the study layer so that validating a study (``harness.study.validation``) needs neither Ray nor the
searcher. Optuna is imported inside the functions: a grid or ablation study is validated without it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["SAMPLERS", "make_sampler", "sampler_errors"]

#: Sampler names a study may use, with the Optuna class and any extra package it needs.
SAMPLERS: dict[str, tuple[str, str | None]] = {
    "tpe": ("TPESampler", None),
    "random": ("RandomSampler", None),
    "cmaes": ("CmaEsSampler", "cmaes"),
    "gp": ("GPSampler", "scipy"),
    "qmc": ("QMCSampler", "scipy"),
    "nsgaii": ("NSGAIISampler", None),
    "bruteforce": ("BruteForceSampler", None),
}
_PLAIN = (str, int, float, bool, type(None), list, dict)


def sampler_errors(name: str, options: Mapping[str, object]) -> list[str]:
    """Problems with a sampler name and its options (unknown option, missing package), as messages."""
    import optuna  # only a search study needs Optuna (see the module docstring)

    if name not in SAMPLERS:
        return [f"sampler: unknown sampler {name!r}, choose one of {sorted(SAMPLERS)}"]
    cls_name, package = SAMPLERS[name]
    errors = []
    if package is not None:
        try:
            importlib.import_module(package)
        except ImportError:
            errors.append(f"sampler: {name} needs the {package!r} package (pip install {package})")
    params = inspect.signature(getattr(optuna.samplers, cls_name)).parameters
    for key, value in options.items():
        if key == "seed":
            errors.append("sampler_options.seed: give the seed as search.seed")
        elif key not in params:
            errors.append(f"sampler_options.{key}: unknown option of {cls_name}; known: "
                          f"{sorted(p for p in params if p != 'seed')}")
        elif not isinstance(value, _PLAIN):
            errors.append(f"sampler_options.{key}: only plain values can be given in a study file")
        else:
            problem = _option_type_error(params[key].annotation, value)
            if problem:
                errors.append(f"sampler_options.{key}: {problem}")
    return errors


#: Plain types an option's annotation may name, and the YAML values each accepts.
_ANNOTATED: dict[str, tuple[type, ...]] = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
                                           "None": (type(None),), "list": (list,), "dict": (dict,)}


def _option_type_error(annotation: object, value: object) -> str | None:
    """Why ``value`` does not suit a sampler option annotated ``annotation`` (None when it does)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    depth, parts, current = 0, [], ""
    for ch in text:  # split "A[B | C] | None" on the top-level "|" only
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    kinds = [_ANNOTATED.get(part.split("[", 1)[0].strip()) for part in parts]
    accepted = tuple(t for k in kinds if k for t in k)
    if not accepted:
        return f"takes a Python object ({text}), which a study file cannot give"
    if isinstance(value, bool) and bool not in accepted:
        return f"expected {text}, got {value!r}"
    if not isinstance(value, accepted):
        return f"expected {text}, got {type(value).__name__} {value!r}"
    return None


def make_sampler(name: str, options: Mapping[str, object], seed: int) -> optuna.samplers.BaseSampler:
    """The named Optuna sampler, seeded."""
    import optuna  # see the module docstring

    cls = getattr(optuna.samplers, SAMPLERS[name][0])
    return cls(seed=seed, **options)
