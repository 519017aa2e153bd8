"""The confirmation phase of a study (``confirm:``): its top configurations trained again on fresh seeds.

Runs after the tuning phase has every row: ``harness.study.confirm`` picks the configurations from the
rows and builds their trials (``harness.tune.confirmation_start``). In a grid or ablation with the FIFO scheduler they
run in the tuning phase's own Tune run, on the actors its last trials leave (``harness.tune.runner``): a
Tune run of their own starts new worker processes, which on a GPU machine cost about as long as the
training. Otherwise (a search, another scheduler, a resume whose tuning phase was over) they run through
``run_tune`` like any grid, in Tune experiments of their own (``tune-confirm/``). ``--resume`` finishes an
interrupted confirmation from its rows and the checkpoints under either folder. The rows they write carry
``phase: confirm``.
"""

from __future__ import annotations

import dataclasses

from harness.results.sink import ResultStore
from harness.study.confirm import CONFIRM
from harness.study.plan import Plan
from harness.tune import confirmation_start
from harness.tune.runner import RunOptions, RunOutcome, add_counts, run_tune

__all__ = ["run_confirmation"]


def run_confirmation(plan: Plan, store: ResultStore, options: RunOptions, version: str,
                     tuned: RunOutcome) -> RunOutcome:
    """Train the study's top ``confirm.top`` configurations on ``confirm.seeds`` in a Tune run of their own
    (a resumed study whose tuning phase was over; a first run confirms in the tuning phase's Tune run,
    ``harness.tune.runner``); the outcome of both phases."""
    confirming = confirmation_start.start_confirmation(plan, store)
    if confirming is None:
        return tuned
    confirmed = run_tune(confirming, store, dataclasses.replace(options, phase=CONFIRM), version)
    return RunOutcome(add_counts(tuned.counts, confirmed.counts), tuned.complete and confirmed.complete,
                      stopped=confirmed.stopped, first_trial_s=confirmed.first_trial_s)
