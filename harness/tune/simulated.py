"""The simulated trainable (``simulate: true``): the real trial's reporting and files, no training.

``simulated_trainable`` has ``emoe_trainable``'s signature and does what it does around training: it
starts an attempt (``.runs``), rewrites the trial's ``epochs/`` file and reports to Tune every epoch (with a
checkpoint on the same schedule), applies EMOE's selection and early-stopping rule (an epoch improves when
its validation loss drops by ``train.min_delta``; training ends after ``train.max_epochs`` or
``train.early_stop`` epochs without improvement), writes the ``router/`` and ``predictions/`` files of
the selected epoch and the ``trials/`` row before its last report, and records a diverged trial as such.
The epochs come from ``harness.tune.curves.SimulatedCurve`` instead of ``emoe.train``: milliseconds per
trial, so the driver, the schedulers, the searchers and the result files can be exercised at thousands
of trials. A checkpoint holds the epoch rows; a restored trial replays its deterministic curve up to
them and continues. Its rows have the same columns and types as a trained trial's; the ``data`` column
starts with ``simulated`` (``make_context``), so a row copied elsewhere still says what it is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ray import tune

from emoe.checkpoint import META_FILE, STATE_FILE
from emoe.outputs import EpochRecord, RouterRecord
from harness.results.rows import Cell, epoch_row, epochs_table
from harness.tune.curves import SimulatedCurve
from harness.tune.trainable import (
    TrialContext,
    fresh_scratch,
    report_metrics,
    reported_settled,
    start_attempt,
    write_selected,
    write_trial_row,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from emoe.data.arrays import DataSet, Split
    from harness.study.trial import Trial

__all__ = ["SIMULATED_PREFIX", "simulated_trainable"]

#: The start of the ``data`` column of a simulated trial's rows (``simulated: <data description>``).
SIMULATED_PREFIX = "simulated: "


def _n_classes(data: DataSet) -> int:
    if data.label_kind != "classification":
        return 2
    return int(max(int(np.max(s.labels)) for s in data.splits().values() if len(s))) + 1


def _per_sample(curve: SimulatedCurve, split: Split, epoch: int, name: str) -> RouterRecord:
    return curve.per_sample(np.asarray(split.labels), split.reliability, epoch, name, ids=split.ids)


def _restored(ctx: TrialContext, trial: Trial) -> list[dict[str, Cell]]:
    """The epoch rows of the checkpoint Tune restores (a retry), or of an earlier run's newest readable one."""
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            return list(json.loads((Path(d) / META_FILE).read_text())["epochs"])
    for directory in ctx.earlier_checkpoints.get(trial.trial_id, ()):
        try:
            return list(json.loads((Path(directory) / META_FILE).read_text())["epochs"])
        except (OSError, ValueError, KeyError):
            continue
    return []


def _checkpoint(ctx: TrialContext, trial_id: str, rows: list[dict[str, Cell]], metrics: Mapping[str, object]) -> None:
    import torch  # in the trial's process only: the driver of a simulated study never imports it

    d = fresh_scratch(ctx.store, trial_id)
    try:
        torch.save({"simulated_epochs": len(rows)}, d / STATE_FILE)  # resume.py reads its size
        (d / META_FILE).write_text(json.dumps({"epochs": rows}))
        tune.report(dict(metrics), checkpoint=tune.Checkpoint.from_directory(str(d)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def simulated_trainable(config: dict[str, Trial], data: DataSet | None = None,
                        ctx: TrialContext | None = None) -> None:
    """Simulate one trial (``config["trial"]``) under Ray Tune, recording it as ``emoe_trainable`` would."""
    assert ctx is not None and data is not None, "wrap with tune.with_parameters(data=..., ctx=...)"
    trial = config["trial"]
    tid = trial.trial_id
    if reported_settled(ctx, tid):
        return
    run = start_attempt(ctx, tid)
    t0 = time.monotonic()
    train = trial.config.train
    curve = SimulatedCurve(trial, data.label_kind, _n_classes(data))
    rows: dict[int, dict[str, Cell]] = {}
    best_loss, best_epoch = float("inf"), 0
    best: dict[str, dict[str, float]] = {"valid": {}, "test": {}}
    restored = {int(str(r["epoch"])): r for r in _restored(ctx, trial)}
    epoch, last_checkpoint = 0, t0
    status, error = "completed", None
    while epoch < train.max_epochs and epoch - best_epoch < train.early_stop:
        start = time.perf_counter()
        draw = curve.epoch(epoch + 1)
        if draw.diverged:
            status = "diverged"
            error = f"diverged: non-finite training loss (simulated, lr {train.lr:g}) at epoch {epoch + 1}"
            break
        epoch += 1
        improved = draw.valid["loss"] <= best_loss - train.min_delta
        if improved:
            best_loss, best_epoch = draw.valid["loss"], epoch
            best = {"valid": dict(draw.valid), "test": dict(draw.test)}
        last = not (epoch < train.max_epochs and epoch - best_epoch < train.early_stop)
        record = EpochRecord(epoch=epoch, train=draw.train, valid=draw.valid, lr=draw.lr, improved=improved,
                             best_epoch=best_epoch, test=draw.test if improved else None,
                             router_mean=draw.router_mean, time_s=time.perf_counter() - start, last=last)
        if epoch in restored and not last:
            rows[epoch] = restored[epoch]  # replayed up to the checkpoint: written and reported before
            continue
        rows[epoch] = epoch_row(record)
        # progress before the last epoch is written again next epoch (or by a resumed trial): atomic, not fsync'ed
        ctx.store.write_table("epochs", tid, epochs_table(trial, list(rows.values()), label_kind=ctx.label_kind),
                              durable=last)
        run["current_s"] = time.monotonic() - t0
        ctx.store.write_run(tid, run, durable=last)
        if last:
            _write_final(ctx, trial, data, curve, best_epoch, epoch, best, status="completed", error=None)
        metrics = {**ctx.epoch_metrics(rows[epoch]), **report_metrics(ctx, record, best["valid"], best["test"])}
        due = (not last and ctx.checkpoint_every and epoch % ctx.checkpoint_every == 0
               and time.monotonic() - last_checkpoint >= ctx.checkpoint_min_interval_s)
        if due:
            last_checkpoint = time.monotonic()
            _checkpoint(ctx, tid, list(rows.values()), metrics)
        else:
            tune.report(metrics)
        if last:
            return
    run["current_s"] = time.monotonic() - t0
    ctx.store.write_run(tid, run)
    _write_final(ctx, trial, data, curve, best_epoch, epoch, best, status=status, error=error)


def _write_final(ctx: TrialContext, trial: Trial, data: DataSet, curve: SimulatedCurve, best_epoch: int,
                 epochs_run: int, best: dict[str, dict[str, float]], *, status: str, error: str | None) -> None:
    """The selected epoch's per-sample files (when an epoch was selected), then the ``trials/`` row."""
    if best_epoch:
        write_selected(ctx, trial, _per_sample(curve, data.test, best_epoch, "test"),
                       _per_sample(curve, data.valid, best_epoch, "valid"))
    write_trial_row(ctx, trial, status=status, error=error, best_epoch=best_epoch, epochs_run=epochs_run,
                    valid=best["valid"], test=best["test"])
