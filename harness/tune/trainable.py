"""The Ray Tune trainable: one EMOE training run per trial, reporting every epoch.

``emoe_trainable`` is wrapped with ``tune.with_parameters(data=..., ctx=...)`` so the data set travels
once through Ray's object store (each trial reads it zero-copy). Each epoch it rewrites the trial's
``epochs/`` file, then reports to Tune (with a checkpoint every ``checkpoint_every`` epochs once
``checkpoint_min_interval_s`` have passed since the last one, never after the last epoch); a retried or resumed trial continues from its last checkpoint. It writes the ``router/`` and
``predictions/`` files and the ``trials/`` row itself: on its last epoch before reporting it (a scheduler may stop the trial on
that report), and again when training returns unless that last epoch already did (diverged, early stop by
a callback, or failed if training raised). The driver treats a trial that stopped without a finished row
as stopped by the scheduler (pruned). A trial whose row already exists (a resumed study) is not trained
again, unless the row says failed (Tune retrying it, or ``--retry-failed``): its final metrics are
reported once and it returns. A resumed trial with no checkpoint from Tune continues from the newest readable checkpoint an
earlier run of the study left (``TrialContext.earlier_checkpoints``).

The driver imports this module for what it shares with the trials (``TrialContext``, the rows it writes for
trials that stopped, the function it hands to Tune); torch and the model code are imported by the
functions that train or write tensors, when a trial runs them in its own process. A driver that never
imports torch starts about a second sooner on a 2-core machine, three on an H200 host's CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import socket
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import ray
from ray import tune

from emoe.checkpoint import META_FILE, STATE_FILE, Key, TrainState, check_state, load_state, router_from_state
from emoe.outputs import EpochRecord, RouterRecord
from emoe_schema import FINISHED
from harness.results.rows import Cell, epoch_row, epochs_table, predictions_table, router_table, trial_table
from harness.results.sink import ResultStore, RunRecord
from harness.study.trial import Trial
from harness.tune.memory import release_free_heap, use_mmap_for_large_blocks

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from emoe.config import EMOEConfig
    from emoe.data.arrays import DataSet

__all__ = ["FINISHED", "SELECTED", "Metrics", "TrialContext", "clear_scratch", "emoe_trainable", "fresh_scratch",
           "load_checkpoint_dir", "prepare_trial_process", "report_finished_row", "report_metrics",
           "reported_settled", "scratch_dir", "selected_text", "start_attempt", "write_scratch_checkpoint",
           "write_trial_row"]

#: What a trial reports to Tune per epoch (``report_metrics``), and what Tune hands back as a result.
Metrics = dict[str, float | int | bool | str | None]
#: The report's entry holding the selected epoch's metrics (``report_metrics``).
SELECTED = "selected"


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a study shares besides the data (picklable, travels with the trainable)."""

    store: ResultStore
    label_kind: str
    objective: str  # "valid_<metric>"
    mode: str  # "min" | "max"
    cpus: float
    gpus: float
    code_version: str
    data: str  # description for the results' data column
    checkpoint_every: int = 1
    checkpoint_min_interval_s: float = 0.0
    #: checkpoints of earlier runs of the study (``--resume``), newest first, by trial id
    earlier_checkpoints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retry_failed: bool = False  # a trial whose row says "failed" is run again (``--retry-failed``)
    #: report the epoch's own metrics (its ``epochs/`` row) to Tune besides the selected ones, for the
    #: trackers that log them; without trackers they cost the driver memory for nothing (Tune keeps running
    #: statistics of every numeric metric of every trial for the whole study: about 250 KB per trial)
    report_epoch_metrics: bool = True

    def epoch_metrics(self, row: Mapping[str, Cell]) -> dict[str, Cell]:
        """What of an epoch's ``epochs/`` row goes into the trial's report to Tune."""
        return dict(row) if self.report_epoch_metrics else {}

    def settled(self, row: Mapping[str, Cell] | None) -> bool:
        """Whether a run leaves out a trial with this recorded row (``--resume`` decides with it)."""
        return row is not None and (row["status"] != "failed" or not self.retry_failed)

    def objective_value(self, valid: dict[str, float]) -> float:
        """The objective from selected-epoch validation metrics; the worst value when missing."""
        value = valid.get(self.objective.removeprefix("valid_"))
        if value is None or not math.isfinite(value):
            return math.inf if self.mode == "min" else -math.inf
        return float(value)


def report_metrics(ctx: TrialContext, record: EpochRecord, best_valid: dict[str, float],
                   best_test: dict[str, float]) -> Metrics:
    """What a trial reports to Tune after an epoch: the best-so-far objective and selected metrics.

    The selected epoch's metrics go as one JSON text (``selected``: ``{"valid": {...}, "test": {...}}``),
    not as a number per metric: Tune keeps running statistics of every numeric metric of every trial for
    the whole study (about 0.35 KB per metric and trial, 22 metrics here), and nothing needs them
    per metric on the way: the schedulers and the searcher use ``objective``; the driver writes a pruned
    trial's row from them (``write_row_from_metrics``).
    """
    metrics: Metrics = {
        "epoch": record.epoch, "best_epoch": record.best_epoch,
        "objective": ctx.objective_value(best_valid), "improved": record.improved,
        "train_loss": record.train.get("loss"), "valid_loss": record.valid.get("loss"), "lr": record.lr,
        SELECTED: selected_text(best_valid, best_test),
    }
    return metrics


def selected_text(valid: Mapping[str, float | None], test: Mapping[str, float | None]) -> str:
    """The ``selected`` entry of a report: the selected epoch's validation and test metrics as JSON text."""
    return json.dumps({"valid": dict(valid), "test": dict(test)})


def _selected(metrics: Metrics, split: str) -> dict[str, float]:
    """A split's selected metrics from a report (``selected``; numbers only, NaN kept as NaN)."""
    text = metrics.get(SELECTED)
    try:
        values = json.loads(text).get(split, {}) if isinstance(text, str) else {}
    except (ValueError, AttributeError):
        values = {}
    return {str(k): float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def write_trial_row(ctx: TrialContext, trial: Trial, *, status: str, error: str | None,
                    best_epoch: int, epochs_run: int, valid: dict[str, float], test: dict[str, float]) -> None:
    """Write the trial's ``trials/`` row, with timings and attempts from its run record."""
    run = ctx.store.read_run(trial.trial_id)
    total = run.get("prior_s", 0.0) + run.get("current_s", 0.0) if run else None
    started = datetime.fromisoformat(run["started_at"]) if run.get("started_at") else None
    table = trial_table(
        trial, label_kind=ctx.label_kind, status=status, error=error, best_epoch=best_epoch,
        epochs_run=epochs_run, objective=ctx.objective_value(valid) if valid else None, valid=valid,
        test=test, time_total_s=total, time_per_epoch_s=(total / epochs_run) if total and epochs_run else None,
        started_at=started, finished_at=datetime.now(UTC), cpus=ctx.cpus, gpus=ctx.gpus,
        node=run.get("node"), node_id=run.get("node_id"), attempts=int(run.get("attempts", 0)),
        code_version=ctx.code_version, data=ctx.data)
    ctx.store.sync_progress(trial.trial_id)  # the row is the commit point: what it summarises is on disk first
    ctx.store.write_table("trials", trial.trial_id, table)


def write_selected(ctx: TrialContext, trial: Trial, test: RouterRecord, valid: RouterRecord | None) -> None:
    """The per-sample files of the selected epoch: ``router/`` (test split) and ``predictions/`` (validation
    and test), each written once, atomically, before the trial's finished row."""
    ctx.store.write_table("router", trial.trial_id, router_table(trial, test))
    splits = {"valid": valid, "test": test} if valid is not None else {"test": test}
    ctx.store.write_table("predictions", trial.trial_id, predictions_table(trial, splits))


def write_row_from_metrics(ctx: TrialContext, trial: Trial, metrics: Metrics | None, *,
                           status: str, error: str | None) -> None:
    """Driver side: a row for a trial that cannot write its own (pruned, or failed outside training)."""
    m = metrics or {}
    write_trial_row(ctx, trial, status=status, error=error, best_epoch=int(m.get("best_epoch") or 0),
                    epochs_run=int(m.get("epoch") or 0), valid=_selected(m, "valid"), test=_selected(m, "test"))


def write_scratch_checkpoint(state: TrainState, epochs: list[dict[str, Cell]], directory: Path) -> None:
    """Write a trial checkpoint (``state.pt`` + ``meta.json``) into a scratch directory for ``tune.report``.

    Tune copies the directory into the study's storage and the scratch copy is deleted right after, so
    it is written without ``save_state``'s fsync and rename (for a faithful-size model, gigabytes of
    synchronous writes per epoch that nothing reads). ``load_state`` reads it back.
    """
    import torch

    check_state(state)
    torch.save(state, directory / STATE_FILE)
    (directory / META_FILE).write_text(json.dumps({"epochs": epochs}))


def scratch_dir(store: ResultStore, trial_id: str) -> Path:
    """The one folder where a trial's checkpoint is written for ``tune.report`` (in the system's temp dir).

    Fixed per study and trial, not a fresh random name: an attempt killed while reporting cannot remove
    its scratch copy (a faithful model's is gigabytes), and random names let such copies pile up in
    ``/tmp`` run after run. With a fixed name the trial's next attempt reuses the folder, and the end of
    each run removes whatever its killed attempts left on the driver's node (``clear_scratch``).
    """
    key = hashlib.sha256(str(store.dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"emoe-ckpt-{key}-{trial_id}"


def fresh_scratch(store: ResultStore, trial_id: str) -> Path:
    """``scratch_dir``, emptied of what an earlier, killed attempt left there."""
    path = scratch_dir(store, trial_id)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def clear_scratch(store: ResultStore) -> int:
    """Remove this study's scratch checkpoints left on this node by killed attempts; how many there were."""
    stem = scratch_dir(store, "0" * 12).name[: -len("0" * 12)]
    left = list(Path(tempfile.gettempdir()).glob(f"{stem}*"))
    for path in left:
        shutil.rmtree(path, ignore_errors=True)
    return len(left)


def _node() -> tuple[str, str | None]:
    node_id: str | None = None
    if ray.is_initialized():  # asking the runtime context outside Ray would start a local runtime
        with contextlib.suppress(Exception):
            node_id = ray.get_runtime_context().get_node_id()
    return socket.gethostname(), node_id


def start_attempt(ctx: TrialContext, trial_id: str) -> RunRecord:
    run = ctx.store.read_run(trial_id)
    host, node_id = _node()
    run = {
        "attempts": int(run.get("attempts", 0)) + 1,
        "started_at": run.get("started_at") or datetime.now(UTC).isoformat(),
        "prior_s": float(run.get("prior_s", 0.0)) + float(run.get("current_s", 0.0)),
        "current_s": 0.0, "node": host, "node_id": node_id,
    }
    ctx.store.write_run(trial_id, run)
    return run


def report_finished_row(row: dict[str, Cell]) -> None:
    valid = {k.removeprefix("valid_"): v for k, v in row.items() if k.startswith("valid_") and v is not None}
    test = {k.removeprefix("test_"): v for k, v in row.items() if k.startswith("test_") and v is not None}
    metrics = {"epoch": row["epochs_run"], "best_epoch": row["best_epoch"], "resumed_finished": True,
               SELECTED: selected_text(valid, test)}  # type: ignore[arg-type]  # the row's metric cells are floats
    if row.get("objective") is not None:
        tune.report({**metrics, "objective": row["objective"]})


def load_checkpoint_dir(directory: Path) -> tuple[TrainState, dict[str, list[dict[str, Cell]]]]:
    """The training state and the epoch rows of a checkpoint directory."""
    return load_state(directory / STATE_FILE), json.loads((directory / META_FILE).read_text())


def reported_settled(ctx: TrialContext, trial_id: str) -> bool:
    """Whether the trial already has a finished or pruned row (a retried or resumed Tune trial): then its
    row is reported to Tune again and the trial is not run."""
    row = ctx.store.read_trial(trial_id)
    if row is not None and row["status"] in (*FINISHED, "pruned"):
        report_finished_row(row)
        return True
    return False


def prepare_trial_process(ctx: TrialContext, configs: list[EMOEConfig]) -> None:
    """Before this process trains ``configs`` (the model code imported): torch's threads to the trial's
    CPUs, batch copies of a large data set in mappings of their own (back to the OS when freed), and no
    ``torch._dynamo`` import unless a configuration compiles (``emoe.dynamo_free``: 1-5 s of every fresh
    trial process; a compiled step takes the answers back itself, in ``emoe.capture``)."""
    import torch

    from emoe.dynamo_free import avoid_dynamo

    torch.set_num_threads(max(1, int(ctx.cpus)))
    use_mmap_for_large_blocks()
    if not any(c.train.compile == "default" for c in configs):
        avoid_dynamo()


def emoe_trainable(config: dict[str, Trial], data: DataSet | None = None, ctx: TrialContext | None = None) -> None:
    """Train one trial (``config["trial"]``, a ``Trial`` of the plan or the searcher) under Ray Tune.

    The trial carries its resolved configuration: the worker trains it as planned, building nothing."""
    assert ctx is not None and data is not None, "wrap with tune.with_parameters(data=..., ctx=...)"
    trial = config["trial"]
    tid = trial.trial_id
    if reported_settled(ctx, tid):
        return
    from emoe.train import train_emoe

    cfg = trial.config
    prepare_trial_process(ctx, [cfg])
    run = start_attempt(ctx, tid)
    t0 = time.monotonic()
    rows: dict[int, dict[str, Cell]] = {}
    best: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
    resume = None
    ckpt = tune.get_checkpoint()
    loaded = None
    if ckpt is not None:
        with ckpt.as_directory() as d:
            loaded = load_checkpoint_dir(Path(d))
    else:  # a resumed study: continue from the newest readable checkpoint an earlier run left
        for directory in ctx.earlier_checkpoints.get(tid, ()):
            try:
                loaded = load_checkpoint_dir(Path(directory))
                break
            except Exception as exc:  # damaged by the crash that ended that run: try older
                print(f"trial {tid}: checkpoint {directory} unreadable ({type(exc).__name__}); trying an older one")
    if loaded is not None:
        resume, meta = loaded
        rows = {int(str(r["epoch"])): r for r in meta["epochs"]}
        best = {"valid": dict(resume[Key.BEST_VALID]), "test": dict(resume[Key.BEST_TEST])}

    final_epoch = 0  # set once the last epoch has written the router file and the finished row
    last_checkpoint = t0  # monotonic time of this attempt's start or its last checkpoint

    def on_epoch(record: EpochRecord, checkpoint: Callable[[], TrainState]) -> None:
        nonlocal final_epoch, last_checkpoint
        rows[record.epoch] = epoch_row(record)
        if record.improved:
            best["valid"], best["test"] = dict(record.valid), dict(record.test or {})
        # progress before the last epoch is written again next epoch (or by a resumed trial): atomic, not fsync'ed
        ctx.store.write_table("epochs", tid, epochs_table(trial, list(rows.values()), label_kind=ctx.label_kind),
                              durable=record.last)
        run["current_s"] = time.monotonic() - t0
        ctx.store.write_run(tid, run, durable=record.last)
        release_free_heap()
        last = record.last
        if last:
            # Written before the last report: a scheduler may stop the trial as soon as it sees that
            # result (ASHA does at max_t), and a trial without a finished row is taken as pruned.
            state = checkpoint()
            router = router_from_state(state[Key.BEST_ROUTER])
            if router is not None:
                write_selected(ctx, trial, router, router_from_state(state.get(Key.BEST_VALID_ROUTER)))
            write_trial_row(ctx, trial, status="completed", error=None, best_epoch=record.best_epoch,
                            epochs_run=record.epoch, valid=best["valid"], test=best["test"])
            final_epoch = record.epoch
        # the epoch's own metrics (its epochs/ row) too, for trackers; the report's keys take precedence
        metrics = {**ctx.epoch_metrics(rows[record.epoch]), **report_metrics(ctx, record, best["valid"], best["test"])}
        # No checkpoint after the last epoch: the finished row is written, so a retried or resumed trial
        # only reports it again (and a checkpoint of a faithful-size model is gigabytes).
        due = (not last and ctx.checkpoint_every and record.epoch % ctx.checkpoint_every == 0
               and time.monotonic() - last_checkpoint >= ctx.checkpoint_min_interval_s)
        if due:
            last_checkpoint = time.monotonic()
            scratch = fresh_scratch(ctx.store, tid)
            try:
                write_scratch_checkpoint(checkpoint(), list(rows.values()), scratch)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(scratch)))
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        else:
            tune.report(metrics)

    try:
        result = train_emoe(cfg, data, on_epoch=on_epoch, resume=resume)
    except Exception as exc:
        run["current_s"] = time.monotonic() - t0
        ctx.store.write_run(tid, run)
        tail = "".join(traceback.format_exception(exc)[-3:]).strip()
        write_trial_row(ctx, trial, status="failed", error=f"{type(exc).__name__}: {exc}\n{tail}",
                        best_epoch=max((e for e, r in rows.items() if r.get("improved")), default=0),
                        epochs_run=len(rows), valid=best["valid"], test=best["test"])
        raise
    if result.status == "completed" and final_epoch and result.epochs_run == final_epoch:
        return  # the last epoch wrote the router file and the finished row (same content)
    run["current_s"] = time.monotonic() - t0
    ctx.store.write_run(tid, run)
    if result.router is not None:
        write_selected(ctx, trial, result.router, result.valid_router)
    write_trial_row(ctx, trial, status=result.status, error=result.error, best_epoch=result.best_epoch,
                    epochs_run=result.epochs_run, valid=dict(result.valid), test=dict(result.test))
