"""The plan as text (``--dry-run``): what runs, how many trials, and what it should cost."""

from __future__ import annotations

import math

import numpy as np

from emoe.config import ConfigError, EMOEConfig
from harness.study.confirm import n_confirmation_configs
from harness.study.cost import CostEstimate, busy_note, estimate_cost, format_duration, parallel_slots
from harness.study.devices import local_gpus
from harness.study.plan import Plan
from harness.study.space import RandomTrial
from harness.study.spec import CategoricalParam, FloatParam, IntParam
from harness.study.stacks import describe_stacks, plan_stacks

__all__ = ["cost_text", "describe_plan", "plan_cost"]


def _param_text(param: FloatParam | IntParam | CategoricalParam) -> str:
    """A search parameter in one line: its distribution (or choices) and its ``when`` condition."""
    if isinstance(param, CategoricalParam):
        text = "one of " + ", ".join(repr(c) for c in param.choices)
    else:
        text = f"{param.type} [{param.low}, {param.high}]" + (f" step {param.step}" if param.step else "")
        text += " log" if isinstance(param, IntParam) and param.log else ""
    if param.when:
        text += " when " + ", ".join(f"{k}={v}" for k, v in param.when.items())
    return text


def sample_points(plan: Plan, n: int) -> list[EMOEConfig]:
    """The configurations of up to ``n`` valid random points of a search space (seeded), to time a search's
    trials."""
    assert plan.space is not None
    rng = np.random.default_rng(plan.spec.search.seed if plan.spec.search else 0)
    points: list[EMOEConfig] = []
    for _ in range(50 * n):
        try:
            points.append(plan.factory.config(plan.space(RandomTrial(rng))))
        except ConfigError:
            continue
        if len(points) == n:
            break
    return points


def machine_slots(plan: Plan, *, cpus: int | None = None, gpus: int | None = None) -> int:
    """Trials of ``plan`` that run at once on this machine, or on ``cpus`` CPUs and ``gpus`` GPUs (the
    local runtime's ``--num-cpus``/``--num-gpus``). Without ``gpus``: this machine's GPUs (``local_gpus``), or, on a
    machine without one (a dry run before going to a GPU machine), enough GPUs for one trial."""
    s = plan.spec
    if gpus is None and s.resources.gpus:
        gpus = local_gpus() or max(1, math.ceil(s.resources.gpus))
    return parallel_slots(s.resources.cpus, s.resources.gpus, cpus=cpus, gpus=gpus or 0, concurrency=s.concurrency)


def plan_cost(plan: Plan, *, measure: bool = True, cpus: int | None = None, gpus: int | None = None,
              prepare_s: float | None = None, slots: int | None = None) -> CostEstimate:
    """Cost estimate of a plan on this machine (or ``cpus`` CPUs and ``gpus`` GPUs; ``slots``: their
    ``machine_slots`` when the caller has it); ``prepare_s``: the driver's preparation as measured by the
    caller (it is paid again when the study runs)."""
    s = plan.spec
    slots = slots or machine_slots(plan, cpus=cpus, gpus=gpus)
    if plan.trials:
        configs = list({t.config_id: t.config for t in plan.trials}.values())
    else:
        configs = sample_points(plan, 3)
    return estimate_cost(configs, plan.data.data, trials=plan.n_trials, slots=slots,
                         threads=max(1, int(s.resources.cpus)), measure=measure, prepare_s=prepare_s,
                         report=s.report is not None,
                         confirm_trials=n_confirmation_configs(plan) * len(s.confirm.seeds) if s.confirm else 0,
                         gpus_per_trial=s.resources.gpus)


def cost_text(cost: CostEstimate) -> str:
    """The cost lines of ``--dry-run``: training, the fixed costs by name, and what the total covers."""
    fixed = cost.fixed_parts
    trials = f"{cost.trials}" + (f" + {cost.confirm_trials} confirmation" if cost.confirm_trials else "") + " trials"
    confirming = (f" + confirmation {format_duration(cost.parts['confirmation'])}"
                  if "confirmation" in cost.parts else "")
    fixed_text = (f"{format_duration(sum(fixed.values()))} of fixed costs ("
                  + ", ".join(f"{name} {format_duration(v)}" for name, v in fixed.items()) + ")")
    if cost.epoch_s is None:
        return (f"cost: {trials} x up to {cost.epochs} epochs (step time not measured), plus "
                f"{fixed_text}")
    note = f", {cost.note}" if cost.note else ""
    return (f"cost: {trials} x up to {cost.epochs} epochs x {cost.wave_epoch_s:.2f} s/epoch (measured "
            f"here, training and evaluation{note}) = {format_duration(cost.trial_time_s or 0)} of trial time, "
            f"{cost.slots} at a time: {format_duration(cost.parts['training'])}{confirming}; plus {fixed_text}\n"
            f"  about {format_duration(cost.wall_s)} wall-clock in all, an upper bound: every trial counted at "
            "its max_epochs (early stopping and pruning end trials sooner), fixed costs as measured on an "
            "idle 2-core machine")


def describe_plan(plan: Plan, *, measure: bool = True, cpus: int | None = None, gpus: int | None = None,
                  prepare_s: float | None = None) -> str:
    """Multi-line description: study, data, objective, scheduler, configurations, trial count, cost."""
    s, d = plan.spec, plan.data
    sizes = d.sizes
    lines = [f"study {s.name} ({plan.kind})" + (f": {s.description.strip()}" if s.description.strip() else ""),
             f"data: {d.description} — train {sizes['train']} / valid {sizes['valid']} / test {sizes['test']}, "
             f"task {d.task}",
             f"objective: {s.objective.metric} ({s.mode}) at the epoch selected on validation loss",
             f"scheduler: {s.scheduler_name}; per trial {s.resources.cpus:g} CPU, {s.resources.gpus:g} GPU; "
             f"concurrency {s.concurrency or 'as resources allow'}; max_failures {s.max_failures}"
             + (f"; time budget {format_duration(s.time_budget_s)}" if s.time_budget_s else "")]
    if s.search is not None:
        lines.append(f"search: {s.search.sampler} sampler (seed {s.search.seed}), {s.search.n_trials} "
                     f"configurations x {len(s.seeds)} seed(s) {s.seeds} = {plan.n_trials} trials")
        for path, param in s.search.params.items():
            lines.append(f"  {path}: {_param_text(param)}")
        if plan.feasible is not None and plan.feasible < 1:
            lines.append(f"  {100 * (1 - plan.feasible):.0f}% of the space violates a constraint; such "
                         "proposals are rejected (told to Optuna as infeasible) and never run")
    else:
        base = f" (baseline: {s.ablation.baseline})" if s.ablation is not None else ""
        lines.append(f"configurations: {len(plan.points)}{base} x seeds {s.seeds} = {plan.n_trials} trials")
        ids = {t.variant: t.config_id for t in plan.trials}
        width = max(len(p.label) for p in plan.points)
        for p in plan.points:
            values = ", ".join(f"{k}={v!r}" for k, v in p.overrides.items())
            lines.append(f"  {p.label:<{width}}  config {ids.get(p.label, '?')}" + (f"  {values}" if values else ""))
    if s.confirm is not None:
        k = n_confirmation_configs(plan)
        lines.append(f"confirm: the best {k} configuration(s) by {s.objective.metric} (mean over the tuning seeds, "
                     f"completed trials) trained again on fresh seeds {s.confirm.seeds} = "
                     f"{k * len(s.confirm.seeds)} confirmation trials, after the tuning trials"
                     + (f"; they stack as resources.stack {s.resources.stack} says"
                        if s.resources.stack != 1 and not s.simulated else ""))
    if s.simulated:  # no training step to time: the trials draw their curves (harness.tune.curves)
        lines.append(f"SIMULATED (simulate: true): {plan.n_trials} trials draw learning curves from a model, "
                     "no training, each trial alone (no stacks); milliseconds per trial plus the harness's own "
                     "cost (bench/README.md, Scale)")
        return "\n".join(lines)
    slots = machine_slots(plan, cpus=cpus, gpus=gpus)
    if plan.trials:
        lines += describe_stacks(plan_stacks(plan.trials, s.resources, slots=slots))
    elif s.resources.stack != 1:
        lines.append(f"stacks (resources.stack: {s.resources.stack}): none in a search (each seed of a proposed "
                     "configuration is its own Tune trial)")
    try:
        cost = plan_cost(plan, measure=measure, prepare_s=prepare_s, slots=slots)
    except Exception as exc:
        # A warning, not an error (exit 0): the data passed their checks before this (a data problem stops a
        # dry run with exit 2), and a step can fail here for reasons of this machine only (a GPU setting
        # timed on a CPU). Where it is the configuration, the trials fail the same way.
        cost = plan_cost(plan, measure=False, prepare_s=prepare_s, slots=slots)
        lines.append(f"WARNING: a training step failed while being timed here ({type(exc).__name__}: "
                     f"{str(exc)[:200]}); trials that fail the same way are recorded as failed. Check the "
                     "configuration, unless the cause is this machine (e.g. a GPU setting timed on a CPU)")
    lines.append(cost_text(cost))
    if s.resources.stack != 1 and plan.trials:
        lines.append("  (the cost counts each stacked member as a trial alone: on CPU a stack takes about as long "
                     "as its members one after another (bench/README.md, bench/stacked_study.py); on a GPU it is meant "
                     "to take less)")
    note = busy_note(cpus)
    if note:
        lines.append(f"  ({note})")
    return "\n".join(lines)
