"""Driver-side recording of trials that cannot write their own row: pruned and failed ones.

A trial writes its ``trials/`` row itself when training ends (completed, diverged, or failed inside
training). ``ResultRecorder`` is a Tune callback that fills the gaps as they happen: a trial that Tune
stopped without a finished row was stopped by the scheduler (pruned); a trial Tune gave up on after its
retries (node lost, worker killed) is failed with Tune's error text (read from the trial's ``error.txt``
when Tune has no text for the driver). ``reconcile`` does the same from
the final ``ResultGrid``, so a row missed while the driver was down is written at the end of a resume.
Tune marks a result ``done`` when the trial returned or the scheduler stopped it; a trial interrupted
with the driver or cut short by the time budget is not done and gets no row (``--resume`` runs it).
A stack (``resources.stack``) is recorded member by member (``record_unit``), each from its own metrics
in the stack's result (``harness.tune.stacked.member_metrics``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ray import tune

from emoe_schema import FINISHED
from harness.study.stacks import Stack
from harness.study.trial import Trial
from harness.tune.resume import describe_tune_trial
from harness.tune.stacked import member_metrics
from harness.tune.trainable import Metrics, TrialContext, write_row_from_metrics

if TYPE_CHECKING:
    from ray.tune import Result
    from ray.tune.experiment import Trial as TuneTrial

__all__ = ["ResultRecorder", "error_summary", "reconcile", "record_outcome", "record_unit", "trial_error"]


def error_summary(text: str | None, limit: int = 2000) -> str:
    """The useful end of an error trace: the last lines, at most ``limit`` characters."""
    if not text:
        return "failed without an error message"
    text = str(text).strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def record_outcome(ctx: TrialContext, trial: Trial, metrics: Metrics | None, error: str | None) -> str | None:
    """Write the row of a trial Tune finished with, unless the trial wrote a final one; the status."""
    if ctx.store.awaiting_rerun(trial.trial_id):
        return None  # its files were quarantined: Tune's result predates that, and the trial must run again
    status = ctx.store.status(trial.trial_id)
    if error is not None:
        if status in FINISHED or (status == "failed" and not _failed_earlier(ctx, trial.trial_id)):
            return status  # the attempt wrote its own row (failed inside training) before it raised
        write_row_from_metrics(ctx, trial, metrics, status="failed", error=error_summary(error))
        return "failed"
    if status in (*FINISHED, "pruned"):
        return status  # a failed row is replaced below when a retry of the trial was stopped early
    if not (metrics or {}).get("done"):
        return status  # not settled: interrupted, or never started (the time budget ran out first)
    write_row_from_metrics(ctx, trial, metrics, status="pruned", error=None)
    return "pruned"


def _failed_earlier(ctx: TrialContext, trial_id: str) -> bool:
    """Whether the trial's failed row is from an earlier attempt than its latest (``--retry-failed`` ran it
    again, and this attempt died without writing a row): that row's error, attempts and epochs are stale."""
    row = ctx.store.read_trial(trial_id) or {}
    return int(str(row.get("attempts") or 0)) < int(ctx.store.read_run(trial_id).get("attempts", 0))


def record_unit(ctx: TrialContext, unit: Trial | Stack, metrics: Metrics | None,
                error: str | None) -> dict[str, str]:
    """``record_outcome`` for a Tune trial's trial, or for each member of its stack (from the member's own
    metrics in the stack's result, and whether the stack is done); the settled statuses by trial id."""
    if isinstance(unit, Trial):
        status = record_outcome(ctx, unit, metrics, error)
        return {} if status is None else {unit.trial_id: status}
    done = {"done": (metrics or {}).get("done")}
    statuses = {m.trial_id: record_outcome(ctx, m, {**(member_metrics(metrics, m.trial_id) or {}), **done}, error)
                for m in unit.members}
    return {tid: s for tid, s in statuses.items() if s is not None}


class ResultRecorder(tune.Callback):
    """Tune callback: rows for pruned and failed trials, written as soon as Tune settles them."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.statuses: dict[str, str] = {}  # trial id -> the status its row has, once settled here

    def status_of(self, trial_id: str) -> str | None:
        """The status of a trial this callback settled, without reading its row again (the progress
        printer asks right after); otherwise the row's."""
        return self.statuses.get(trial_id) or self.ctx.store.status(trial_id)

    def _record(self, unit: Trial | Stack, metrics: Metrics | None, error: str | None) -> None:
        self.statuses.update(record_unit(self.ctx, unit, metrics, error))

    def on_trial_start(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        desc = trial.config.get("trial")
        if isinstance(desc, Trial | Stack) and trial.path:  # the trial's folder names it, for a later --resume
            describe_tune_trial(Path(trial.path), desc)

    def on_trial_complete(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        if "trial" in trial.config:
            self._record(trial.config["trial"], trial.last_result, None)

    def on_trial_error(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        if "trial" in trial.config:
            self._record(trial.config["trial"], trial.last_result, trial_error(trial))


def trial_error(trial: TuneTrial) -> str:
    """Tune's error text of a trial: from Tune, else from ``error.txt`` in the trial's folder (Tune keeps
    only that file when the error could not be brought back to the driver, e.g. a worker that cannot
    import or unpickle the trainable)."""
    text: object = None
    try:
        text = trial.get_error()
    except Exception:  # the error file may be unreadable: fall back below
        text = None
    if not text:
        for attr in ("local_path", "path"):
            folder = getattr(trial, attr, None)
            if folder:
                with contextlib.suppress(OSError):
                    text = (Path(folder) / "error.txt").read_text()
                    break
    return str(text) if text else f"trial errored after {trial.num_failures} failure(s); no error text was kept"


def reconcile(ctx: TrialContext, results: Iterable[Result]) -> dict[str, int]:
    """Record every settled trial of a ``ResultGrid`` that has no final row; counts of final statuses."""
    written: dict[str, int] = {}
    for result in results:
        trial = (result.config or {}).get("trial")
        if trial is None:
            continue
        error = None if result.error is None else str(result.error)
        for status in record_unit(ctx, trial, result.metrics, error).values():
            written[status] = written.get(status, 0) + 1
    return written
