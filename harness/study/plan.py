"""The trial plan: a validated spec plus loaded data -> the trials Ray Tune will run.

Grids and ablations are expanded here into one trial description per (configuration, seed), seed-major
(every configuration gets its first seed before any gets its second, so early results already compare
configurations). Searches get a ``TrialFactory`` the searcher calls for each proposal. A trial
description is a plain dict (``TrialFactory.make``) that travels in Tune's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emoe.config import ConfigError, EMOEConfig, ModelConfig
from emoe.data.checks import DataError, check_compatible
from emoe_schema import metric_names
from harness.study.data import StudyData
from harness.study.errors import SpecError
from harness.study.params import ParamValue
from harness.study.space import Point, SearchSpace, ablation_points, grid_points
from harness.study.spec import StudySpec
from harness.study.stacks import search_stack_error
from harness.study.trial import Trial, make_trial, resolve_point
from harness.study.validation import locate, same_configuration, search_feasibility, search_space

__all__ = ["Plan", "TrialFactory", "build_plan"]


@dataclass(frozen=True)
class TrialFactory:
    """Turns a point (label + overrides) and a seed into a ``Trial``; picklable plain data."""

    study: str
    base: dict[str, object]
    data_fields: dict[str, ParamValue]
    data_key: str
    seeds: tuple[int, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def config(self, overrides: dict[str, ParamValue], seed: int | None = None) -> EMOEConfig:
        """The full configuration of a point (``ConfigError`` if invalid)."""
        return resolve_point(self.base, overrides, self.data_fields, seed)

    def trials(self, label: str, overrides: dict[str, ParamValue], *, instance: str | None = None
               ) -> tuple[list[Trial], list[str]]:
        """One ``Trial`` per study seed, each configuration resolved once; or every reason it is invalid
        (found on the first seed; the seed does not change validity)."""
        out: list[Trial] = []
        for index, seed in enumerate(self.seeds):
            try:
                cfg = self.config(overrides, seed)
            except ConfigError as exc:
                return [], list(exc.errors)
            out.append(make_trial(self.study, label, overrides, cfg, data_key=self.data_key, seed_index=index,
                                  instance=instance))
        return out, []


@dataclass
class Plan:
    """Everything needed to run a study, decided before Ray starts."""

    spec: StudySpec
    data: StudyData
    factory: TrialFactory
    points: list[Point] = field(default_factory=list)  # grid/ablation configurations
    trials: list[Trial] = field(default_factory=list)  # grid/ablation trials, run order
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
            return max(t.config.train.max_epochs for t in self.trials)
        try:
            return self.factory.config({}).train.max_epochs
        except ConfigError:
            return 100


def data_bytes(plan: Plan) -> int:
    """Bytes of the plan's data set (what a local Ray's object store is sized for)."""
    return sum(split.nbytes for split in plan.data.data.splits().values())


def build_plan(spec: StudySpec, data: StudyData) -> Plan:
    """Expand the study against its data; ``SpecError`` lists every point the data make invalid."""
    factory = TrialFactory(spec.name, dict(spec.base), dict(data.fields), data.key, tuple(spec.seeds))
    errors: list[str] = []
    plan = Plan(spec, data, factory)
    models: list[tuple[Point, ModelConfig]] = []
    if spec.search is not None:
        plan.space = search_space(spec)
        model_dims = {k: v for k, v in data.fields.items() if k.startswith("model.")}
        plan.feasible, infeasible = search_feasibility(spec, model_dims, scope="for this data")
        errors += infeasible
        try:
            models = [(Point("base", {}), factory.config({}).model)]
        except ConfigError:
            models = []
    else:
        plan.points = (ablation_points(spec.ablation.variants) if spec.ablation is not None
                       else grid_points(spec.grid))
        by_point: list[list[Trial]] = []
        for point in plan.points:
            trials, errs = factory.trials(point.label, point.overrides)
            errors.extend(f"{locate(spec, point)}: {e}" for e in errs)
            if trials:
                by_point.append(trials)
                models.append((point, trials[0].config.model))
        if not errors:
            plan.trials = [trials[i] for i in range(len(spec.seeds)) for trials in by_point]
            errors += same_configuration(spec, [(p, ts[0].config_id) for p, ts in zip(plan.points, by_point)],
                                         note="only fields that do not change results differ")
    for point, model in models[:1] + [m for m in models[1:] if m[1].text_input != models[0][1].text_input]:
        try:
            check_compatible(data.data, model)
        except DataError as exc:
            errors.append(f"{locate(spec, point)}: {exc}")
    stack_error = search_stack_error(spec.resources.stack, spec.search is not None)
    if stack_error:
        errors.append(stack_error)
    available = metric_names(data.data.label_kind)
    if spec.objective.metric.removeprefix("valid_") not in available:
        errors.append(f"objective.metric: {spec.objective.metric} is not computed on {data.data.label_kind} "
                      f"data; choose valid_ followed by one of {available}")
    if errors:
        raise SpecError(errors)  # the study file's problems: the command line names the file
    return plan
