"""The Ray Tune trainable of a stack: its members trained as one ``emoe.stack.fit_stacked`` model, one Tune trial.

Every member is written exactly as ``emoe_trainable`` writes a trial alone: its ``epochs/`` file each
epoch; its ``router/`` and ``predictions/`` files and ``trials/`` row at its last epoch (or when it
diverges, or when training returns); its run record (attempts, timings: a member's time is its share of
the stack's wall time). Once per epoch of the stack it reports to Tune the stack's objective, the mean
of the members' best-so-far validation objectives (finite ones; members that stopped keep their last
value), so a scheduler such as ASHA keeps or stops the stack as a whole; the same report carries each
member's own epoch metrics under ``members`` (``member_metrics``), from which the driver writes a
stopped member's "pruned" row and the trackers log one run per member. The checkpoint holds every member
still training as ``<trial_id>/`` (``state.pt`` + ``meta.json``, a trial's own checkpoint format). A
member with a settled row is not trained again; the others continue from their own newest checkpoint:
the stack's (a Tune retry), else one an earlier run of the study left (``TrialContext.earlier_checkpoints``,
alone or in another stack).

As in ``harness.tune.trainable``, torch and the model code are imported when a stack trains, in its trial's
process: the driver imports this module for ``member_metrics`` and the function it hands to Tune.
"""

from __future__ import annotations

import math
import shutil
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune

from emoe.checkpoint import STATE_FILE, Key, TrainState, router_from_state
from emoe.outputs import EpochRecord, FitResult
from emoe_schema import FINISHED
from harness.results.rows import Cell, epoch_row, epochs_table
from harness.study.stacks import Stack
from harness.study.trial import Trial
from harness.tune.memory import release_free_heap
from harness.tune.trainable import (
    Metrics,
    TrialContext,
    emoe_trainable,
    fresh_scratch,
    load_checkpoint_dir,
    prepare_trial_process,
    report_metrics,
    start_attempt,
    write_scratch_checkpoint,
    write_selected,
    write_trial_row,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from emoe.data.arrays import DataSet

__all__ = ["MEMBERS", "member_metrics", "stack_objective", "stacked_trainable", "study_trainable"]

#: The key of a stack's report that holds each member's own metrics of the epoch, by trial id.
MEMBERS = "members"


def stack_objective(values: list[float | None], mode: str) -> float:
    """What a stack reports to Tune: the mean of its members' finite objectives (the worst value if none)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.inf if mode == "min" else -math.inf
    return sum(finite) / len(finite)


def member_metrics(result: Mapping[str, object] | None, trial_id: str) -> Metrics | None:
    """A member's own metrics in a stack's Tune result (None when the result has none for it)."""
    members = (result or {}).get(MEMBERS)
    own = members.get(trial_id) if isinstance(members, dict) else None
    return dict(own) if isinstance(own, dict) else None


class _Member:
    """The harness side of one member: its trial, epoch rows, best metrics, run record and this epoch's report."""

    def __init__(self, ctx: TrialContext, trial: Trial):
        self.ctx, self.trial = ctx, trial
        self.rows: dict[int, dict[str, Cell]] = {}
        self.best: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
        self.run = start_attempt(ctx, trial.trial_id)
        self.written = False  # its final trials/ row
        self.objective: float | None = None
        self.metrics: Metrics | None = None  # this epoch's, until the stack reports
        self.checkpoint: Callable[[], TrainState] | None = None  # this epoch's, while it trains on

    def resume_state(self, directories: list[Path]) -> TrainState | None:
        """Its state from the first readable checkpoint of ``directories`` (newest first), with its epoch rows."""
        tid = self.trial.trial_id
        for directory in directories:
            if not (directory / STATE_FILE).exists():
                continue
            try:
                state, meta = load_checkpoint_dir(directory)
            except Exception as exc:  # damaged by the crash that ended that run: try older
                print(f"trial {tid}: checkpoint {directory} unreadable ({type(exc).__name__}); trying an older one")
                continue
            self.rows = {int(str(r["epoch"])): r for r in meta["epochs"]}
            self.best = {"valid": dict(state[Key.BEST_VALID]), "test": dict(state[Key.BEST_TEST])}
            return state
        return None

    def save_time(self, elapsed: float) -> None:
        self.run["current_s"] = elapsed
        self.ctx.store.write_run(self.trial.trial_id, self.run)

    def finish(self, result: FitResult | None, *, status: str, error: str | None, elapsed: float) -> None:
        """Its per-sample files and final row, from the training result (None: training raised)."""
        self.save_time(elapsed)
        if result is None:
            best_epoch = max((e for e, r in self.rows.items() if r.get("improved")), default=0)
            write_trial_row(self.ctx, self.trial, status=status, error=error, best_epoch=best_epoch,
                            epochs_run=len(self.rows), valid=self.best["valid"], test=self.best["test"])
        else:
            if result.router is not None:
                write_selected(self.ctx, self.trial, result.router, result.valid_router)
            write_trial_row(self.ctx, self.trial, status=status, error=error, best_epoch=result.best_epoch,
                            epochs_run=result.epochs_run, valid=dict(result.valid), test=dict(result.test))
        self.written, self.checkpoint = True, None


def _plain(row: Mapping[str, Cell]) -> Metrics:
    """An ``epochs/`` row as report metrics (its cells are numbers, strings or None)."""
    return {k: v for k, v in row.items() if v is None or isinstance(v, float | int | str)}


def _settled(row: Mapping[str, Cell] | None) -> bool:
    """Whether a member's recorded row means it is not trained again (as ``emoe_trainable`` decides)."""
    return row is not None and row["status"] in (*FINISHED, "pruned")


def stacked_trainable(stack: Stack, data: DataSet, ctx: TrialContext) -> None:
    """Train the stack's members that have no settled row as one model under Ray Tune (see the module)."""
    recorded = {t.trial_id: ctx.store.read_trial(t.trial_id) for t in stack.members}
    todo = [t for t in stack.members if not _settled(recorded[t.trial_id])]
    done_before = [float(v) for r in recorded.values() if _settled(r) and r is not None
                   and isinstance(v := r.get("objective"), int | float)]
    if not todo:
        tune.report({"epoch": max(int(str(r["epochs_run"] or 0)) for r in recorded.values() if r is not None),
                     "resumed_finished": True, "objective": stack_objective(list(done_before), ctx.mode)})
        return
    from emoe.stack import fit_stacked

    prepare_trial_process(ctx, [t.config for t in todo])
    members = [_Member(ctx, t) for t in todo]
    t0 = time.monotonic()
    share = 1.0 / len(members)
    ckpt = tune.get_checkpoint()
    if ckpt is not None:  # a Tune retry of this stack: its own checkpoint first
        with ckpt.as_directory() as d:
            resume = [m.resume_state([Path(d) / m.trial.trial_id]) for m in members]
    else:
        resume = [None] * len(members)
    resume = [state if state is not None else m.resume_state(
        [Path(p) for p in ctx.earlier_checkpoints.get(m.trial.trial_id, ())]) for m, state in zip(members, resume)]
    state: dict[str, float] = {"last_checkpoint": t0}

    def elapsed() -> float:
        return (time.monotonic() - t0) * share

    def on_epoch(k: int, record: EpochRecord, checkpoint: Callable[[], TrainState]) -> None:
        m = members[k]
        tid = m.trial.trial_id
        m.rows[record.epoch] = epoch_row(record)
        if record.improved:
            m.best["valid"], m.best["test"] = dict(record.valid), dict(record.test or {})
        ctx.store.write_table("epochs", tid, epochs_table(m.trial, list(m.rows.values()), label_kind=ctx.label_kind))
        m.save_time(elapsed())
        m.metrics = {**_plain(m.rows[record.epoch]), **report_metrics(ctx, record, m.best["valid"], m.best["test"])}
        m.objective = ctx.objective_value(m.best["valid"])
        if record.last:  # written before the stack's report, as a trial alone does (a scheduler may stop it)
            full = checkpoint()
            router = router_from_state(full[Key.BEST_ROUTER])
            if router is not None:
                write_selected(ctx, m.trial, router, router_from_state(full.get(Key.BEST_VALID_ROUTER)))
            write_trial_row(ctx, m.trial, status="completed", error=None, best_epoch=record.best_epoch,
                            epochs_run=record.epoch, valid=m.best["valid"], test=m.best["test"])
            m.written, m.checkpoint = True, None
        else:
            m.checkpoint = checkpoint

    def on_stack_epoch(results: list[FitResult]) -> None:
        for m, result in zip(members, results):
            if result.status == "diverged" and not m.written:
                m.finish(result, status="diverged", error=result.error, elapsed=elapsed())
        release_free_heap()
        reported = {m.trial.trial_id: m.metrics for m in members if m.metrics is not None}
        epoch = max((int(str(x["epoch"])) for x in reported.values()), default=0)
        training = [m for m in members if m.checkpoint is not None]
        metrics: dict[str, object] = {
            "epoch": epoch, "objective": stack_objective([*(m.objective for m in members), *done_before], ctx.mode),
            "members_training": len(training), MEMBERS: reported}
        due = (training and ctx.checkpoint_every and epoch % ctx.checkpoint_every == 0
               and time.monotonic() - state["last_checkpoint"] >= ctx.checkpoint_min_interval_s)
        if due:
            state["last_checkpoint"] = time.monotonic()
            scratch = fresh_scratch(ctx.store, stack.stack_id)
            try:
                for m in training:
                    sub = scratch / m.trial.trial_id
                    sub.mkdir()
                    assert m.checkpoint is not None
                    write_scratch_checkpoint(m.checkpoint(), list(m.rows.values()), sub)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(scratch)))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            tune.report(metrics)
        for m in members:
            m.metrics, m.checkpoint = None, None

    try:
        results = fit_stacked([m.trial.config for m in members], data, on_epoch=on_epoch, resume=resume,
                              on_stack_epoch=on_stack_epoch)
    except Exception as exc:
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        for m in members:
            if not m.written:
                m.finish(None, status="failed", error=f"{type(exc).__name__}: {exc}\n{tail}", elapsed=elapsed())
        raise
    for m, result in zip(members, results):
        if not m.written:
            m.finish(result, status=result.status, error=result.error, elapsed=elapsed())


def study_trainable(config: dict[str, Trial | Stack], data: DataSet | None = None,
                    ctx: TrialContext | None = None) -> None:
    """The trainable of every study: a ``Stack`` trains stacked, a single ``Trial`` as ``emoe_trainable``."""
    assert ctx is not None and data is not None, "wrap with tune.with_parameters(data=..., ctx=...)"
    unit = config["trial"]
    if isinstance(unit, Stack):
        stacked_trainable(unit, data, ctx)
    else:
        emoe_trainable({"trial": unit}, data=data, ctx=ctx)
