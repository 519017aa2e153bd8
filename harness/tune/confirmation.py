"""The confirmation phase of a study (``confirm:``): its top configurations trained again on fresh seeds.

Runs after the tuning phase has every row: ``harness.study.confirm`` picks the configurations from the
rows and builds their trials, and they run through ``run_tune`` like any grid, in Tune experiments of
their own (``tune-confirm/``), so ``--resume`` finishes an interrupted confirmation from its rows and
checkpoints as it does the tuning phase. The rows they write carry ``phase: confirm``.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

from harness.results.quarantine import set_aside
from harness.results.sink import ResultStore
from harness.study.confirm import CONFIRM, confirmation_plan, confirmation_trials, n_confirmation_configs
from harness.study.plan import Plan
from harness.tune.runner import RunOptions, RunOutcome, run_tune

__all__ = ["run_confirmation"]


def run_confirmation(plan: Plan, store: ResultStore, options: RunOptions, version: str,
                     tuned: RunOutcome) -> RunOutcome:
    """Train the study's top ``confirm.top`` configurations on ``confirm.seeds``; the outcome of both phases."""
    rows = store.read_trials()
    trials = confirmation_trials(plan, rows)
    _set_aside_superseded(store, rows, {t.config_id for t in trials}, n_confirmation_configs(plan))
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


def _set_aside_superseded(store: ResultStore, rows: pd.DataFrame, chosen: set[str], top: int) -> None:
    """Move aside the confirmation trials of configurations no longer among the best ``top``.

    The best configurations are picked from the tuning rows as they are when the confirmation runs; a
    resume with ``--retry-failed`` can change those rows, and with them the best. The earlier confirmation
    trials then confirm a configuration the study no longer selects: left in the results they would be
    reported as confirmed too (``top: 1`` with two confirmed rows). They go to ``quarantine/`` (kept, with
    the reason), so every reader sees the confirmation of the current best only.
    """
    if rows.empty or "phase" not in rows.columns:
        return
    old = rows[(rows["phase"] == CONFIRM) & ~rows["config_id"].isin(chosen)]
    if old.empty:
        return
    why = (f"confirms a configuration no longer among the best {top} on the tuning seeds (the tuning rows changed "
           "since it ran, e.g. retried trials)")
    target, _ = set_aside(store, {str(t): why for t in old["trial_id"]})
    print(f"confirm: the best configuration(s) changed since the last confirmation; the {len(old)} earlier "
          f"confirmation trial(s) of {', '.join(sorted(map(str, old['variant'].unique())))} moved to {target} "
          "(kept, not deleted; not reported as confirmed)", flush=True)
