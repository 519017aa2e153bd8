"""The trial plan: a validated spec plus loaded data -> the trials Ray Tune will run.

Grids and ablations are expanded here into one trial description per (configuration, seed), seed-major
(every configuration gets its first seed before any gets its second, so early results already compare
configurations). Searches get a ``TrialFactory`` the searcher calls for each proposal. A trial
description is a plain dict (``TrialFactory.make``) that travels in Tune's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emoe.config import EMOEConfig, to_dict
from emoe.data.checks import DataError, check_compatible
from harness.results.rows import metric_names
from harness.study.data import StudyData
from harness.study.errors import SpecError
from harness.study.params import apply_overrides, build_config, config_id, flatten, trial_id
from harness.study.space import Point, SearchSpace, ablation_points, feasible_fraction, grid_points
from harness.study.spec import StudySpec

__all__ = ["Plan", "TrialFactory", "build_plan"]


@dataclass(frozen=True)
class TrialFactory:
    """Turns a point (label + overrides) and a seed into a trial description; picklable plain data."""

    study: str
    base: dict[str, Any]
    data_fields: dict[str, Any]
    data_key: str
    seeds: tuple[int, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def config(self, overrides: dict[str, Any], seed: int | None = None) -> EMOEConfig:
        """The full configuration of a point (``ConfigError`` if invalid)."""
        extra = {} if seed is None else {"train.seed": seed}
        return build_config(apply_overrides(self.base, {**overrides, **self.data_fields, **extra}))

    def check(self, overrides: dict[str, Any]) -> list[str]:
        """Every reason the point's configuration is invalid (empty list when it is valid)."""
        try:
            self.config(overrides)
        except ValueError as exc:
            return list(getattr(exc, "errors", [str(exc)]))
        return []

    def make(self, label: str, overrides: dict[str, Any], *, seed_index: int,
             instance: str | None = None) -> dict[str, Any]:
        """The trial description: ids, label, seed, the varied values and the full nested config."""
        seed = self.seeds[seed_index]
        cfg = self.config(overrides, seed)
        cid = config_id(cfg, self.data_key)
        return {
            "study": self.study, "trial_id": trial_id(cid, seed, instance), "config_id": cid,
            "variant": label, "seed": seed, "seed_index": seed_index, "params": dict(overrides),
            "emoe": to_dict(cfg),
        }


@dataclass
class Plan:
    """Everything needed to run a study, decided before Ray starts."""

    spec: StudySpec
    data: StudyData
    factory: TrialFactory
    points: list[Point] = field(default_factory=list)  # grid/ablation configurations
    trials: list[dict[str, Any]] = field(default_factory=list)  # grid/ablation trials, run order
    space: SearchSpace | None = None
    feasible: float | None = None  # search: share of random draws that satisfy the constraints

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def n_trials(self) -> int:
        """Tune trials: points x seeds, or search trials x seeds."""
        if self.spec.search is not None:
            return self.spec.search.n_trials * len(self.spec.seeds)
        return len(self.trials)

    @property
    def varied(self) -> list[str]:
        """Dotted parameters the study varies (the results' ``varied`` list)."""
        if self.spec.search is not None:
            return list(self.spec.search.params)
        seen: dict[str, None] = {}
        for p in self.points:
            seen.update(dict.fromkeys(p.overrides))
        return list(seen)

    @property
    def max_epochs(self) -> int:
        """Largest ``train.max_epochs`` of any trial (the scheduler's budget)."""
        if self.trials:
            return max(int(t["emoe"]["train"]["max_epochs"]) for t in self.trials)
        return int(self.factory.config({}).train.max_epochs) if not self.factory.check({}) else 100


def _prefix(spec: StudySpec, point: Point) -> str:
    if spec.ablation is not None:
        return f"ablation.variants.{point.label}"
    return "base" if point.label == "base" else f"grid point {point.label}"


def build_plan(spec: StudySpec, data: StudyData) -> Plan:
    """Expand the study against its data; ``SpecError`` lists every point the data make invalid."""
    factory = TrialFactory(spec.name, dict(spec.base), dict(data.fields), data.key, tuple(spec.seeds))
    errors: list[str] = []
    plan = Plan(spec, data, factory)
    models: list[tuple[Point, Any]] = []
    if spec.search is not None:
        plan.space = SearchSpace({p: v.model_dump() for p, v in spec.search.params.items()}, spec.base)
        plan.feasible, reasons = feasible_fraction(plan.space, spec.base,
                                                   {k.split(".", 1)[1]: v for k, v in data.fields.items()
                                                    if k.startswith("model.")}, seed=spec.search.seed)
        if plan.feasible == 0.0:
            errors.append(f"search.params: no valid configuration for this data, e.g. {reasons[0]}")
        cfg_errors = factory.check({})
        models = [] if cfg_errors else [(Point("base", {}), factory.config({}).model)]
    else:
        plan.points = (ablation_points(spec.ablation.variants) if spec.ablation is not None
                       else grid_points(spec.grid))
        for point in plan.points:
            errs = factory.check(point.overrides)
            errors.extend(f"{_prefix(spec, point)}: {e}" for e in errs)
            if not errs:
                models.append((point, factory.config(point.overrides).model))
        if not errors:
            plan.trials = [factory.make(p.label, p.overrides, seed_index=i)
                           for i in range(len(spec.seeds)) for p in plan.points]
            first: dict[str, str] = {}
            for t in plan.trials:
                if first.setdefault(t["trial_id"], t["variant"]) != t["variant"]:
                    errors.append(f"{t['variant']}: same trial as {first[t['trial_id']]} (only fields that "
                                  "do not change results differ)")
    for point, model in models[:1] + [m for m in models[1:] if m[1].text_input != models[0][1].text_input]:
        try:
            check_compatible(data.data, model)
        except DataError as exc:
            errors.append(f"{_prefix(spec, point)}: {exc}")
    available = metric_names(data.data.label_kind)
    if spec.objective.metric.removeprefix("valid_") not in available:
        errors.append(f"objective.metric: {spec.objective.metric} is not computed on {data.data.label_kind} "
                      f"data; choose valid_ followed by one of {available}")
    if errors:
        raise SpecError(errors, source=spec.name)
    return plan


def point_overrides(trial: dict[str, Any]) -> dict[str, Any]:
    """The flattened full configuration of a trial description (``model.d_model`` -> value)."""
    return flatten(trial["emoe"])
