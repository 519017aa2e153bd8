"""What a study still has to run, read from its recorded rows: the rule behind ``--resume``.

The harness, not Tune's experiment state, decides what a resumed study runs: every planned trial ends
with exactly one row in ``trials/``, so a trial runs again when it has no row (interrupted, cut by the
time budget, never started) or, with ``--retry-failed``, when its row says "failed". Tune's saved state
is not restored: it keeps the time budget, the concurrency and the trial statuses of the run that wrote
it (a trial stopped by the budget is TERMINATED there and would never run again). What a resumed run
takes from earlier runs is each trial's newest checkpoint under ``<study>/tune`` (``earlier_trials``),
so an interrupted trial continues where it stopped, and, for searches, the Optuna journal. The Tune folder
of a stack (``resources.stack``) describes its members, and its checkpoints hold one
``<trial_id>/`` checkpoint per member still training: each member is found, with its own checkpoints, as
if it had run alone (and a resumed run may stack it differently).
"""

from __future__ import annotations

import json
import shlex
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from harness.results.sink import ResultStore, atomic_write_bytes
from harness.study.confirm import CONFIRM
from harness.study.stacks import Stack
from harness.study.trial import TRIAL_FILE, Trial

if TYPE_CHECKING:
    import argparse

    from harness.study.plan import Plan

__all__ = ["EarlierTrial", "StudyState", "describe_tune_trial", "earlier_trials", "resume_command", "study_state"]


@dataclass
class EarlierTrial:
    """A trial seen by an earlier run: its description and its checkpoints, newest first."""

    trial: Trial
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (epochs covered, directory)


def _epochs_of(checkpoint: Path) -> int | None:
    """Epochs a checkpoint directory covers, None when it is incomplete (a crash while it was copied)."""
    try:
        meta = json.loads((checkpoint / "meta.json").read_text())
        if (checkpoint / "state.pt").stat().st_size == 0:
            return None
        return len(meta["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def describe_tune_trial(folder: Path, trial: Trial | Stack) -> None:
    """Write ``trial.json`` (``Trial.to_json``, or ``Stack.to_json`` for a stack) into a Tune trial's folder;
    the driver does it when Tune starts the trial (``ResultRecorder``), so a later ``--resume`` finds the
    trial's checkpoints there."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / TRIAL_FILE, json.dumps(trial.to_json(), sort_keys=True).encode())


def earlier_trials(*tune_dirs: Path) -> dict[str, EarlierTrial]:
    """Trials of earlier runs of the study by trial id, from the ``trial.json`` the driver writes into each
    Tune trial folder when the trial starts (``describe_tune_trial``), in any of ``tune_dirs``; a trial
    found in several folders has all their checkpoints, the one with the most epochs first."""
    found: dict[str, EarlierTrial] = {}
    folders = [f for d in tune_dirs if d.is_dir() for f in sorted(d.glob("trial_*"))]
    for folder in folders:
        try:
            data = json.loads((folder / TRIAL_FILE).read_text())
            stacked = isinstance(data, dict) and "stack" in data
            members = Stack.from_json(data).members if stacked else (Trial.from_json(data),)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a folder whose trial had not started (or was cut off while describing itself)
        for trial in members:
            entry = found.setdefault(trial.trial_id, EarlierTrial(trial))
            for ckpt in folder.glob("checkpoint_*"):
                own = ckpt / trial.trial_id if stacked else ckpt
                epochs = _epochs_of(own)
                if epochs:
                    entry.checkpoints.append((epochs, str(own)))
    for entry in found.values():
        entry.checkpoints.sort(reverse=True)
    return found


@dataclass(frozen=True)
class StudyState:
    """The recorded rows of a study against its plan."""

    statuses: dict[str, str]  # trial id -> recorded status
    n_planned: int
    missing: int  # planned trials without a row

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.statuses.values()).items()))

    @property
    def failed(self) -> list[str]:
        return sorted(t for t, s in self.statuses.items() if s == "failed")

    @property
    def completed(self) -> int:
        return sum(s == "completed" for s in self.statuses.values())

    def to_run(self, retry_failed: bool) -> int:
        """Trials a run would start now: those without a row, and failed ones when retrying."""
        return self.missing + (len(self.failed) if retry_failed else 0)


def study_state(plan: Plan, store: ResultStore) -> StudyState:
    """Compare the rows in ``trials/`` with the plan (grids: by trial id; searches: by count)."""
    statuses: dict[str, str] = {}
    for tid in store.trial_ids():
        status = store.status(tid)
        if status is not None:
            statuses[tid] = status
    if plan.trials:
        planned = {t.trial_id for t in plan.trials}
        statuses = {t: s for t, s in statuses.items() if t in planned}
        missing = len(planned - set(statuses))
    else:  # a search, counted by its tuning trials (confirmation trials are planned on their own)
        statuses = {t: s for t, s in statuses.items() if (store.read_trial(t) or {}).get("phase") != CONFIRM}
        missing = max(0, plan.n_trials - len(statuses))
    return StudyState(statuses, plan.n_trials, missing)


def resume_command(args: argparse.Namespace) -> str:
    """The shell command that resumes this study: same study file, results root, overrides and cluster."""
    parts = ["python", "-m", "harness.run", str(args.spec),
             "--results", str(Path(args.results).expanduser().absolute())]
    for override in args.set:
        parts += ["--set", override]
    if args.address:
        parts += ["--address", args.address]
    if args.num_cpus is not None:
        parts += ["--num-cpus", str(args.num_cpus)]
    if args.num_gpus is not None:
        parts += ["--num-gpus", str(args.num_gpus)]
    return shlex.join([*parts, "--resume"])
