"""What varies in a study: grid points, ablation variants, and the Optuna define-by-run search space.

A *point* is a label plus dotted overrides on the base configuration. Grids and ablations are lists of
points known in advance; a search draws points from ``SearchSpace`` (a picklable define-by-run callable
that Optuna and Ray's OptunaSearch call with a trial). ``check_points`` and ``feasible_fraction`` say
which points violate the configuration's constraints (e.g. ``n_heads`` must divide ``d_model``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, Required, TypedDict, cast

import numpy as np

from emoe.config import ConfigError, EMOEConfig, to_dict
from harness.study.params import JSONValue, ParamValue, Scalar, coerce, flatten, format_value
from harness.study.trial import resolve_point

__all__ = [
    "ParamDump",
    "Point",
    "RandomTrial",
    "SearchSpace",
    "ablation_points",
    "check_point",
    "feasible_fraction",
    "grid_points",
    "short_names",
]


class ParamDump(TypedDict, total=False):
    """One ``search.params`` entry as pydantic's ``model_dump()`` gives it (``spec.FloatParam``,
    ``IntParam``, ``CategoricalParam``): plain data, so the space pickles without the spec's classes."""

    type: Required[str]  # uniform, loguniform, int or categorical
    low: float
    high: float
    step: float | None
    log: bool
    choices: list[JSONValue]
    when: dict[str, JSONValue] | None


class Suggester(Protocol):
    """What ``SearchSpace`` asks of a trial: ``optuna.Trial``'s suggest methods (or ``RandomTrial``)."""

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_categorical(self, name: str, choices: list[Scalar]) -> Scalar: ...


@dataclass(frozen=True)
class Point:
    """One configuration of a study before seeds: a label and the overrides it applies to the base."""

    label: str
    overrides: dict[str, ParamValue]


def short_names(paths: list[str]) -> dict[str, str]:
    """Last path component when unambiguous (``loss.distill_weight`` -> ``distill_weight``)."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last)}


def grid_points(grid: Mapping[str, Sequence[object]] | None) -> list[Point]:
    """Cartesian product of the grid's (coerced) values in file order; no grid gives one ``base`` point."""
    if not grid:
        return [Point("base", {})]
    paths = list(grid)
    names = short_names(paths)
    values = [[coerce(p, v) for v in grid[p]] for p in paths]
    points = []
    for combo in itertools.product(*values):
        label = ",".join(f"{names[p]}={format_value(v)}" for p, v in zip(paths, combo))
        points.append(Point(label, dict(zip(paths, combo))))
    return points


def ablation_points(variants: Mapping[str, Mapping[str, object]]) -> list[Point]:
    """One point per named variant, overrides flattened and coerced, in file order."""
    return [Point(name, {p: coerce(p, v) for p, v in flatten(ov).items()}) for name, ov in variants.items()]


def check_point(base: Mapping[str, object], point: Point, dims: Mapping[str, ParamValue] | None = None
                ) -> tuple[EMOEConfig | None, list[str]]:
    """The point's config (data shape fields from ``dims``: ``model.len_text`` or just ``len_text``),
    built by ``resolve_point``; the config or its errors."""
    dotted = {(k if "." in k else f"model.{k}"): v for k, v in (dims or {}).items()}
    try:
        return resolve_point(base, point.overrides, dotted), []
    except ConfigError as exc:
        return None, list(exc.errors)


def _encode(choice: JSONValue) -> Scalar:
    """Optuna categorical choices must be None/bool/int/float/str: lists travel as JSON text."""
    return json.dumps(choice) if isinstance(choice, list | tuple | dict) else choice


def _decode(choice: JSONValue, choices: list[JSONValue]) -> JSONValue:
    for c in choices:
        if _encode(c) == choice:
            return c
    return choice


class SearchSpace:
    """Define-by-run space over dotted parameters; ``when`` conditions make parameters conditional.

    Calling it with an Optuna trial suggests every applicable parameter (in file order, named by its
    path) and returns the overrides. Picklable, so Tune can checkpoint the searcher that holds it.
    """

    def __init__(self, params: Mapping[str, Mapping[str, object]], base: Mapping[str, object]):
        """``params``: each search parameter's ``model_dump()`` (its keys and types are ``ParamDump``'s)."""
        self.params = {p: cast(ParamDump, dict(spec)) for p, spec in params.items()}
        self.base = {**flatten(to_dict(EMOEConfig())), **flatten(base)}

    def _active(self, spec: ParamDump, chosen: Mapping[str, ParamValue]) -> bool:
        for path, want in (spec.get("when") or {}).items():
            have = chosen.get(path, self.base.get(path))
            allowed = want if isinstance(want, list) else [want]
            if have not in allowed:
                return False
        return True

    def decode(self, params: Mapping[str, JSONValue]) -> dict[str, ParamValue]:
        """The overrides of an Optuna trial's ``params`` (as ``__call__`` returned them when it ran)."""
        out: dict[str, ParamValue] = {}
        for path, spec in self.params.items():
            if path in params:
                value = params[path]
                if spec["type"] == "categorical":
                    value = _decode(value, list(spec["choices"]))
                out[path] = coerce(path, value)
        return out

    def __call__(self, trial: Suggester) -> dict[str, ParamValue]:
        chosen: dict[str, ParamValue] = {}
        for path, spec in self.params.items():
            if not self._active(spec, chosen):
                continue
            kind = spec["type"]
            if kind in ("uniform", "loguniform"):
                value: JSONValue = trial.suggest_float(path, float(spec["low"]), float(spec["high"]),
                                                 step=spec.get("step"), log=kind == "loguniform")
            elif kind == "int":
                value = trial.suggest_int(path, int(spec["low"]), int(spec["high"]),
                                          step=int(spec.get("step") or 1), log=bool(spec.get("log", False)))
            else:
                choices = list(spec["choices"])
                value = _decode(trial.suggest_categorical(path, [_encode(c) for c in choices]), choices)
            chosen[path] = coerce(path, value)
        return chosen


class RandomTrial:
    """Just enough of ``optuna.Trial`` to draw uniformly at random (feasibility checks without a study)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        if log:
            return float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        if step:
            return float(low + step * self.rng.integers(0, int((high - low) // step) + 1))
        return float(self.rng.uniform(low, high))

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        if log:
            return int(min(high, max(low, round(math.exp(self.rng.uniform(math.log(low), math.log(high)))))))
        return int(low + step * self.rng.integers(0, (high - low) // step + 1))

    def suggest_categorical(self, name: str, choices: list[Scalar]) -> Scalar:
        return choices[int(self.rng.integers(0, len(choices)))]


def feasible_fraction(space: SearchSpace, base: Mapping[str, object], dims: Mapping[str, ParamValue] | None = None,
                      *, draws: int = 256, seed: int = 0) -> tuple[float, list[str]]:
    """Fraction of random draws whose configuration is valid, and the distinct errors of the others."""
    rng = np.random.default_rng(seed)
    ok, errors = 0, list[str]()
    for _ in range(draws):
        _, errs = check_point(base, Point("draw", space(RandomTrial(rng))), dims)
        ok += not errs
        errors.extend(e for e in errs if e not in errors)
    return ok / draws, errors
