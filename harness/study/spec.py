"""The study file: YAML -> validated, typed ``StudySpec`` (pydantic at the boundary, every error at once).

``load_spec(path, overrides)`` reads the YAML (duplicate keys rejected), applies ``--set`` overrides,
validates the structure with pydantic (unknown keys, wrong types, empty or inverted ranges) and then the
meaning (parameter paths, value types, configuration constraints of every grid point / variant, sampler
and scheduler names, data file existence). All problems are raised together as one ``SpecError``.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emoe_schema import metric_mode
from harness.study.errors import SpecError
from harness.study.tracking import TrackingSpec

__all__ = [
    "NAME_PATTERN",
    "NAME_RULE",
    "AblationSpec",
    "CategoricalParam",
    "ConfirmSpec",
    "DataSpec",
    "FloatParam",
    "IntParam",
    "ObjectiveSpec",
    "ReportSpec",
    "ResourcesSpec",
    "SchedulerSpec",
    "SearchSpec",
    "SpecError",
    "StudySpec",
    "dump_spec",
    "is_safe_name",
    "pydantic_errors",
]

#: Study and variant names become file and directory names: letters, digits, '_', '-', '.' (not first or
#: last: a trailing dot is dropped by some file systems).
NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,62}[A-Za-z0-9_-])?$"
#: The same rule in words, for messages.
NAME_RULE = "must be 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit and not ending with '.'"


#: Bounds that keep numbers usable downstream: seeds fit 64-bit columns and torch's seeding, an Optuna
#: sampler seed fits NumPy's legacy RandomState, an integer range's width fits a 64-bit draw.
SEED_LIMIT = 2**63 - 1
SAMPLER_SEED_LIMIT = 2**32 - 1
INT_RANGE_LIMIT = 2**62 - 1


class _Strict(BaseModel):
    # no NaN/inf in any float field: they pass ``>``/``<`` checks in surprising ways
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


class SyntheticSpec(BaseModel):
    """Built-in synthetic benchmark: a preset plus any of its generator's fields (checked when loaded)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    preset: str = "small"


class DataSpec(_Strict):
    """Exactly one of ``synthetic`` (default: the "small" preset) or ``path`` (MMSA pickle / converted)."""

    synthetic: SyntheticSpec | None = None
    path: str | None = None
    #: split sizes the file must have: a data set's, or none (a subset); unset (null): those recorded at
    #: conversion, else those of a recognised MOSI/MOSEI/SIMS file (``emoe.data.mmsa.Expect``). Null by
    #: default so the fingerprints of studies started before this field existed still match.
    expect: Literal["mosi", "mosei", "sims", "none"] | None = None

    @field_validator("synthetic", mode="before")
    @classmethod
    def _preset_shorthand(cls, v: object) -> object:
        return {"preset": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.synthetic is not None and self.path is not None:
            raise ValueError("give either synthetic or path, not both (a --set of one replaces the file's other)")
        if self.synthetic is None and self.path is None:
            object.__setattr__(self, "synthetic", SyntheticSpec())
        return self

    @model_validator(mode="after")
    def _expect_with_path(self) -> DataSpec:
        if self.expect is not None and self.path is None:
            raise ValueError("expect applies to a data file (path), not to synthetic data")
        return self


def _check_step(low: float, high: float, step: float) -> None:
    """A stepped range must hold whole steps: Optuna silently draws only ``low`` when the step exceeds the
    range, and silently lowers ``high`` to the last whole step otherwise."""
    if high - low < step:
        raise ValueError(f"step {step} is larger than the range {low} to {high}: only {low} would be drawn")
    whole = all(isinstance(v, int) for v in (low, high, step))  # integers: exact, whatever their size
    steps = (high - low) // step if whole else (high - low) / step
    if (high - low) % step if whole else abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
        last = low + (steps if whole else math.floor(steps + 1e-9)) * step
        raise ValueError(f"high - low ({high} - {low}) is not a whole number of steps of {step}: the last "
                         f"value drawn would be {last:g}, not {high}; make high {last:g} or change the step")


class _Param(_Strict):
    #: only sample this parameter when the named (earlier or base) values match, e.g. {model.router: fixed}
    when: dict[str, object] | None = None


class FloatParam(_Param):
    """A real parameter: ``uniform`` or ``loguniform`` between low and high (``step`` for a uniform grid)."""

    type: Literal["uniform", "loguniform"]
    low: float
    high: float
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _range(self) -> FloatParam:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} must be below high {self.high}")
        if not math.isfinite(self.high - self.low):
            raise ValueError(f"range too wide: high - low overflows ({self.low} to {self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.type == "loguniform" and self.step is not None:
            raise ValueError("step cannot be combined with loguniform")
        if self.step is not None:
            _check_step(self.low, self.high, self.step)
        return self


class IntParam(_Param):
    """An integer parameter between low and high inclusive (``log`` for log-spaced sampling)."""

    type: Literal["int"]
    low: int = Field(ge=-INT_RANGE_LIMIT, le=INT_RANGE_LIMIT)
    high: int = Field(ge=-INT_RANGE_LIMIT, le=INT_RANGE_LIMIT)
    step: int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self) -> IntParam:
        if not self.low < self.high:
            raise ValueError(f"empty or inverted range: low {self.low} must be below high {self.high}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log needs low >= 1 and step 1")
        _check_step(self.low, self.high, self.step)
        return self


class CategoricalParam(_Param):
    """A choice among listed values (numbers, strings, booleans, null or lists)."""

    type: Literal["categorical"]
    choices: list[object] = Field(min_length=1)

    @field_validator("choices")
    @classmethod
    def _unique(cls, v: list[object]) -> list[object]:
        seen = [repr(c) for c in v]
        dup = sorted({s for s in seen if seen.count(s) > 1})
        if dup:
            raise ValueError(f"duplicate choices {', '.join(dup)}")
        return v


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SearchSpec(_Strict):
    """Optuna search: ``n_trials`` configurations proposed by a named, seeded sampler."""

    sampler: str = "tpe"
    sampler_options: dict[str, object] = Field(default_factory=dict)
    seed: int = Field(default=0, ge=0, le=SAMPLER_SEED_LIMIT)
    n_trials: int = Field(ge=1)
    params: dict[str, ParamSpec] = Field(min_length=1)


class AblationSpec(_Strict):
    """Named variants, each a set of overrides on the base configuration; one is the baseline."""

    baseline: str
    variants: dict[str, dict[str, object]] = Field(min_length=2)

    @field_validator("variants", mode="before")
    @classmethod
    def _empty_variant(cls, v: object) -> object:
        return {k: ({} if o is None else o) for k, o in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _baseline_listed(self) -> AblationSpec:
        if self.baseline not in self.variants:
            raise ValueError(f"baseline {self.baseline!r} is not one of the variants {list(self.variants)}")
        return self


class ObjectiveSpec(_Strict):
    """The metric trials are compared by, measured on validation at the selected epoch."""

    metric: str = "valid_mae"
    mode: Literal["min", "max"] | None = None  # default: min for loss/mae, else max


class SchedulerSpec(_Strict):
    """Tune trial scheduler: ``fifo`` (every trial runs to its end), ``asha``, ``hyperband``, ``median``."""

    name: Literal["fifo", "asha", "hyperband", "median"] | None = None  # default: fifo, asha for search
    grace_period: int = Field(default=1, ge=1)
    reduction_factor: float = Field(default=2.0, gt=1)
    brackets: int = Field(default=1, ge=1, le=16)  # ASHA builds one object per bracket


class ResourcesSpec(_Strict):
    """Resources per trial; fractional GPUs share a device (Ray does not cap their memory)."""

    cpus: float = Field(default=1.0, gt=0)
    gpus: float = Field(default=0.0, ge=0)
    # trials trained as one batched model (harness/study/stacks.py): 1 = alone, N, or auto (memory rule)
    stack: Literal["auto"] | Annotated[int, Field(ge=1)] = 1

    @field_validator("stack", mode="before")
    @classmethod
    def _stack(cls, v: object) -> object:  # one message, not one per member of the union
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"must be auto or a whole number of trials >= 1, got {v!r}")
        return v

    @model_validator(mode="after")
    def _whole_gpus(self) -> ResourcesSpec:
        if self.gpus > 1 and self.gpus != int(self.gpus):
            raise ValueError(f"gpus above 1 must be a whole number, got {self.gpus}")
        return self


class ReportSpec(_Strict):
    """Figures and tables made by the reports package when the study ends (``report: true`` = defaults)."""

    formats: list[Literal["png", "pdf", "svg"]] = Field(default=["png", "pdf"], min_length=1)


class ConfirmSpec(_Strict):
    """Confirmation on fresh seeds: the ``top`` best configurations, trained again on ``seeds``."""

    top: int = Field(default=1, ge=1)
    seeds: Annotated[list[Annotated[int, Field(ge=-SEED_LIMIT, le=SEED_LIMIT)]], Field(min_length=1)]

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"confirmation seeds must be distinct, got {v}")
        return v


class StudySpec(_Strict):
    """A whole study. At most one of ``grid``, ``ablation``, ``search`` (none: the base config alone)."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    data: DataSpec = Field(default_factory=DataSpec)
    base: dict[str, object] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[object], Field(min_length=1)]] | None = None
    ablation: AblationSpec | None = None
    search: SearchSpec | None = None
    seeds: Annotated[list[Annotated[int, Field(ge=-SEED_LIMIT, le=SEED_LIMIT)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1111])
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    concurrency: int | None = Field(default=None, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)
    max_failures: int = Field(default=2, ge=0)
    checkpoint_every: int = Field(default=1, ge=0)  # epochs between checkpoints; 0 = never
    # and at least this long since the trial's last checkpoint (or start): short epochs are not each
    # paid for with a checkpoint (a crash repeats at most this much work plus an epoch); 0 = every due epoch
    checkpoint_min_interval_s: float = Field(default=60.0, ge=0)
    report: ReportSpec | None = None
    tracking: TrackingSpec | None = None  # MLflow / TensorBoard / W&B (harness.study.tracking)
    confirm: ConfirmSpec | None = None  # retrain the top configurations on fresh seeds (harness.study.confirm)
    #: ``true``: every trial draws a learning curve from a cheap model of EMOE's curves instead of training
    #: (``harness.tune.simulated``), to try schedulers, search spaces and the harness at scale without
    #: GPU hours. Part of the fingerprint, so a study never resumes across the flag; false is stored as null
    #: so the fingerprints of studies started before this field existed still match.
    simulate: bool | None = None

    @field_validator("report", mode="before")
    @classmethod
    def _report_flag(cls, v: object) -> object:
        if v is True:
            return {}
        return None if v is False else v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("simulate")
    @classmethod
    def _simulate_flag(cls, v: bool | None) -> bool | None:
        return True if v else None  # false and null both mean real training

    @model_validator(mode="after")
    def _one_kind(self) -> StudySpec:
        given = [k for k in ("grid", "ablation", "search") if getattr(self, k) is not None]
        if len(given) > 1:
            drop = " or ".join(f"--set {g}=null" for g in given)
            raise ValueError(f"give at most one of grid, ablation, search (got {' and '.join(given)}); to change "
                             f"the kind on the command line, remove the file's one: {drop}")
        return self

    @property
    def kind(self) -> Literal["grid", "ablation", "search"]:
        """What varies: a grid (also a single configuration), named ablation variants or a search."""
        if self.search is not None:
            return "search"
        return "ablation" if self.ablation is not None else "grid"

    @property
    def mode(self) -> Literal["min", "max"]:
        return self.objective.mode or metric_mode(self.objective.metric)

    @property
    def simulated(self) -> bool:
        """Whether the trials are simulated (``simulate: true``), not trained."""
        return bool(self.simulate)

    @property
    def scheduler_name(self) -> str:
        return self.scheduler.name or ("asha" if self.kind == "search" else "fifo")


def _unwrap(hint: object) -> list[object]:
    """The alternatives of ``hint`` without ``Annotated`` and ``None``."""
    if typing.get_origin(hint) is Annotated:
        return _unwrap(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(hint) if arg is not type(None) for a in _unwrap(arg)]
    return [hint]


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the study-file section at ``loc`` (``()`` is the top level), for did-you-mean."""
    options: list[object] = [StudySpec]
    for part in loc:
        models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
        tagged = [m for m in models if "type" in m.model_fields
                  and part in typing.get_args(m.model_fields["type"].annotation)]
        if tagged:  # the tag pydantic puts in the location of a discriminated union's member
            options = [*tagged]
        elif len(models) == 1 and part in models[0].model_fields:
            options = _unwrap(models[0].model_fields[part].annotation)
        elif len(options) == 1 and typing.get_origin(options[0]) in (dict, list):
            options = _unwrap(typing.get_args(options[0])[-1])
        else:
            return []
    models = [o for o in options if isinstance(o, type) and issubclass(o, BaseModel)]
    return list(models[0].model_fields) if len(models) == 1 else []


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1, cutoff=0.6)
    return "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")


def _loc(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("uniform", "loguniform", "int", "categorical")
             and not str(p).startswith("function-")]
    return ".".join(parts) or "(top level)"


def flatten_keys(tree: object, prefix: str = "", *, stop: str | None = None) -> list[str]:
    """Dotted paths of the leaves of nested mappings (a mapping holding key ``stop`` is a leaf)."""
    if not isinstance(tree, dict) or not tree or (stop is not None and stop in tree):
        return [prefix.rstrip(".")]
    return [p for k, v in tree.items() for p in flatten_keys(v, f"{prefix}{k}.", stop=stop)]


def pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = _unknown_key(e["loc"])
        elif e["loc"][:1] == ("grid",) and len(e["loc"]) == 2 and isinstance(e["input"], dict):
            path = next(iter(flatten_keys(e["input"], f"{e['loc'][1]}.")), f"{e['loc'][1]}.FIELD")
            msg = (f"grid keys are dotted parameter paths, not nested mappings: write `{path}: [...]` under "
                   f"grid (on the command line: --set grid.{path}=[...])")
        elif e["loc"][:2] == ("search", "params") and e["type"] == "union_tag_not_found" and len(e["loc"]) == 3:
            msg = "a search parameter needs a type: uniform, loguniform, int or categorical"
            if isinstance(e["input"], dict) and e["input"] and all(isinstance(v, dict) for v in e["input"].values()):
                path = flatten_keys(e["input"], f"{e['loc'][2]}.", stop="type")[0]
                msg += (f"; parameter keys are dotted paths, not nested mappings: write `{path}: {{type: ...}}` "
                        "under search.params")
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        elif e["type"] == "string_pattern_mismatch":
            msg = f"{NAME_RULE}, got {e['input']!r}"
        elif e["type"] == "union_tag_invalid":
            msg = "type must be one of uniform, loguniform, int, categorical"
        out.append(f"{_loc(e['loc'])}: {msg}")
    return out


def dump_spec(spec: StudySpec) -> str:
    """The spec as run, as YAML (defaults filled in, overrides applied)."""
    return yaml.safe_dump(spec.model_dump(mode="json", exclude_none=False), sort_keys=False)


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is usable as a study or variant directory/file name."""
    return re.fullmatch(NAME_PATTERN, name) is not None
