"""The confirmation phase of a study (``confirm:``): its top configurations trained again on fresh seeds.

Runs after the tuning phase has every row: ``harness.study.confirm`` picks the configurations from the
rows and builds their trials, and they run through ``run_tune`` like any grid, in Tune experiments of
their own (``tune-confirm/``), so ``--resume`` finishes an interrupted confirmation from its rows and
checkpoints as it does the tuning phase. The rows they write carry ``phase: confirm``.
"""

from __future__ import annotations

import dataclasses

from harness.results.sink import ResultStore
from harness.study.confirm import CONFIRM, confirmation_plan, confirmation_trials, n_confirmation_configs
from harness.study.plan import Plan
from harness.tune.runner import RunOptions, RunOutcome, run_tune

__all__ = ["run_confirmation"]


def run_confirmation(plan: Plan, store: ResultStore, options: RunOptions, version: str,
                     tuned: RunOutcome) -> RunOutcome:
    """Train the study's top ``confirm.top`` configurations on ``confirm.seeds``; the outcome of both phases."""
    trials = confirmation_trials(plan, store.read_trials())
    if not trials:
        print("confirm: no completed configuration to confirm", flush=True)
        return tuned
    names = sorted({t.variant for t in trials})
    seeds = plan.spec.confirm.seeds if plan.spec.confirm is not None else []
    print(f"confirm: the best {n_confirmation_configs(plan)} configuration(s) ({', '.join(names)}) on fresh "
          f"seeds {list(seeds)}: {len(trials)} trials", flush=True)
    confirmed = run_tune(confirmation_plan(plan, trials), store,
                         dataclasses.replace(options, phase=CONFIRM), version)
    counts = dict(tuned.counts)
    for status, n in confirmed.counts.items():
        counts[status] = counts.get(status, 0) + n
    return RunOutcome(counts, tuned.complete and confirmed.complete, stopped=confirmed.stopped,
                      first_trial_s=confirmed.first_trial_s)
