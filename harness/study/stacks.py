"""Stacked trials: which trials train together as one batched model (``resources.stack``).

Trials whose configurations differ only in scalars ``emoe.stack.check_stackable`` accepts (the seeds of
a configuration; for grids and ablations also points that differ in loss weights, temperature, learning
rate, dropout rates, fixed router weights) can train as one ``emoe.stack.fit_stacked`` model in one
process and one Ray Tune trial. Every member stays its own trial in the results. ``resources.stack``:

* ``1`` (the default): every trial alone;
* ``N``: up to N stackable trials per stack, taken in run order (seed-major, so a stack of a grid holds
  different configurations of the same seed first);
* ``auto``: each configuration's seeds, as many per stack as ``memory_cap`` allows.

Memory rule (``member_bytes``): a member costs its weights, gradients and Adam's two moments (16 bytes
per float32 parameter) plus activations, estimated as ``ACTIVATION_FLOATS`` floats per (sample, time
step, model dimension, level) of a training forward: a batch, or on a GPU with ``train.window_forward``
the accumulation window's batches (``emoe.capture.batches_per_forward``). ``auto`` fills at most ``MEMORY_SHARE`` of the
memory one trial may use: on a GPU its ``resources.gpus`` share of the smallest GPU on the driver's machine
(``trial_memory``; ``DEFAULT_GPU_BYTES`` when the driver sees none), on CPU the available memory over the trials that run
at once. Stacks are planned over the trials a run still has to run (``harness.tune.runner``), so a
resumed run stacks what is left. Searches are not stacked (``search_stack_error``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emoe.config import EMOEConfig, to_dict
from emoe.stack_rules import STACKABLE, check_stackable
from harness.study.devices import gpu_memory_bytes
from harness.study.trial import Trial

if TYPE_CHECKING:
    from harness.study.spec import ResourcesSpec

__all__ = ["ACTIVATION_FLOATS", "DEFAULT_GPU_BYTES", "MEMORY_SHARE", "Stack", "StackPlan", "describe_stacks",
           "member_bytes", "members_of", "memory_cap", "n_parameters", "plan_stacks", "search_stack_error",
           "trial_memory"]

#: Floats kept for the backward pass per (sample, time step, d_model, level), a generous count.
ACTIVATION_FLOATS = 48
#: Share of a trial's memory that ``auto`` lets a stack fill (the rest: data, allocator slack, evaluation).
MEMORY_SHARE = 0.5
#: GPU memory assumed when the driver sees no CUDA device (the trials may run on other nodes).
DEFAULT_GPU_BYTES = 16 << 30


@dataclass(frozen=True)
class Stack:
    """Trials that train as one batched model in one Tune trial; each member keeps its trial id and rows."""

    members: tuple[Trial, ...]

    @property
    def stack_id(self) -> str:
        return "stack-" + self.members[0].trial_id

    @property
    def trial_ids(self) -> list[str]:
        return [t.trial_id for t in self.members]

    def to_json(self) -> dict[str, object]:
        """Plain JSON data: the members' ``Trial.to_json`` forms (the ``trial.json`` of a stack's Tune folder)."""
        return {"stack": [t.to_json() for t in self.members]}

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Stack:
        """The stack ``to_json`` wrote; ``KeyError``/``TypeError``/``ValueError`` for anything else."""
        members = data["stack"]
        if not isinstance(members, list) or not members:
            raise TypeError("a stack's members are a non-empty list")
        return cls(tuple(Trial.from_json(m) for m in members))


def members_of(unit: object) -> tuple[Trial, ...]:
    """The study trials a Tune trial's ``config["trial"]`` runs: a trial itself, a stack's members, or none."""
    if isinstance(unit, Trial):
        return (unit,)
    if isinstance(unit, Stack):
        return unit.members
    return ()


@dataclass(frozen=True)
class StackPlan:
    """What Tune runs: single trials and stacks, in run order, and notes on trials that could not stack."""

    units: list[Trial | Stack]
    size: int | str  # the study's resources.stack
    notes: list[str]

    @property
    def stacks(self) -> list[Stack]:
        return [u for u in self.units if isinstance(u, Stack)]


def search_stack_error(stack: int | str, search: bool) -> str | None:
    """The error for ``resources.stack`` above 1 in a search study, else None."""
    if search and stack != "auto" and int(stack) > 1:
        return (f"resources.stack: {stack} is not supported for searches (Optuna proposes one configuration at a "
                "time and each of its seeds is a Tune trial of its own); use 1, or auto, which stacks only the "
                "confirmation trials (confirm:)")
    return None


def n_parameters(cfg: EMOEConfig) -> int:
    """Parameter count of the configuration's model, built on the meta device (no memory, milliseconds)."""
    import torch  # only ``auto`` sizes stacks from the model: a planner of fixed stacks never imports torch

    from emoe.model import EMOE

    with torch.device("meta"):
        model = EMOE(cfg.model, fast_path=cfg.train.fast_path)
    return sum(p.numel() for p in model.parameters())


def member_bytes(cfg: EMOEConfig, *, gpu: bool = False) -> int:
    """Training memory of one stack member (see the module's memory rule); ``gpu``: trained on a GPU, where
    a window's batches share one forward (CPU windows are small by ``batches_per_forward``'s rule)."""
    import torch

    from emoe.capture import batches_per_forward

    m = cfg.model
    steps = m.len_text + m.len_audio + m.len_vision
    rows = cfg.train.batch_size * (batches_per_forward(cfg, torch.device("cuda")) if gpu else 1)
    activations = ACTIVATION_FLOATS * rows * steps * m.d_model * max(1, m.n_levels)
    return 16 * n_parameters(cfg) + 4 * activations


def _available_ram() -> int:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def trial_memory(gpus: float, slots: int) -> int:
    """Bytes one trial may use: its GPU share (of the smallest GPU here, ``gpu_memory_bytes``; else torch's
    first device, which opens a CUDA context in the driver), or the available RAM over the trials running
    at once."""
    if gpus > 0:
        total = gpu_memory_bytes()
        if total is None:
            import torch

            total = (torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available()
                     else DEFAULT_GPU_BYTES)
        return int(total * min(gpus, 1.0))
    return _available_ram() // max(1, slots)


def memory_cap(cfg: EMOEConfig, *, gpus: float, slots: int) -> int:
    """How many members of ``cfg``'s shape ``auto`` puts in one stack (at least 1)."""
    return max(1, int(MEMORY_SHARE * trial_memory(gpus, slots) // member_bytes(cfg, gpu=gpus > 0)))


def _shape_key(cfg: EMOEConfig) -> str:
    """The configuration less the fields that may differ within a stack."""
    d = to_dict(cfg)
    return repr(sorted((sec, name, repr(v)) for sec, fields in d.items() for name, v in fields.items()
                       if (sec, name) not in STACKABLE))


def plan_stacks(trials: list[Trial], resources: ResourcesSpec, *, slots: int = 1) -> StackPlan:
    """Group ``trials`` (run order) into stacks as ``resources.stack`` asks; trials that cannot stack (no
    other trial has their shapes, or ``check_stackable`` refuses them) run alone, with a note. ``slots``:
    trials that run at once (``auto``'s memory rule on CPU)."""
    size = resources.stack
    if size == 1 or not trials:
        return StackPlan(list(trials), size, [])
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.config_id if size == "auto" else _shape_key(t.config), []).append(t)
    stacked: dict[str, Stack] = {}  # first member's trial id -> its stack
    refused: dict[str, list[str]] = {}
    single = [members[0].variant for members in groups.values() if len(members) == 1]
    for members in groups.values():
        errors = check_stackable([members[0].config, members[0].config])
        if errors:
            refused[members[0].variant] = errors
            continue
        cap = memory_cap(members[0].config, gpus=resources.gpus, slots=slots) if size == "auto" else int(size)
        for i in range(0, len(members), cap):
            chunk = members[i:i + cap]
            if len(chunk) > 1:
                stacked[chunk[0].trial_id] = Stack(tuple(chunk))
    in_stack = {tid for s in stacked.values() for tid in s.trial_ids}
    units: list[Trial | Stack] = [stacked.get(t.trial_id, t) for t in trials
                                  if t.trial_id in stacked or t.trial_id not in in_stack]
    notes = [f"{variant}: runs unstacked ({'; '.join(errs)})" for variant, errs in refused.items()]
    if single:
        notes.append("no other trial to run has the same shapes as " + ", ".join(single) + ": run alone")
    return StackPlan(units, size, notes)


def describe_stacks(stack_plan: StackPlan) -> list[str]:
    """The ``--dry-run`` lines: the stack count and each stack's members (variant, seed, trial id)."""
    if stack_plan.size == 1:
        return []
    stacks = stack_plan.stacks
    n_alone = sum(isinstance(u, Trial) for u in stack_plan.units)
    lines = [f"stacks (resources.stack: {stack_plan.size}): {len(stacks)} stack(s) of "
             f"{sum(len(s.members) for s in stacks)} trials, {n_alone} trial(s) alone, "
             f"{len(stack_plan.units)} Tune trials"]
    for s in stacks:
        lines.append(f"  {s.stack_id}: " + ", ".join(f"{t.variant} seed {t.seed} ({t.trial_id})" for t in s.members))
    lines += [f"  note: {n}" for n in stack_plan.notes]
    return lines
