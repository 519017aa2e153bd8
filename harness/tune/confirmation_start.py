"""The start of a study's confirmation: which trials it runs, from the tuning rows as they are.

Shared by the two ways a confirmation runs (``harness.tune.confirmation``): in the tuning phase's own Tune
run (``harness.tune.runner.ConfirmationSwitch``) or in a Tune run of its own.
"""

from __future__ import annotations

import pandas as pd

from harness.results.quarantine import set_aside
from harness.results.sink import ResultStore
from harness.study.confirm import CONFIRM, confirmation_plan, confirmation_trials, n_confirmation_configs
from harness.study.plan import Plan

__all__ = ["start_confirmation"]


def start_confirmation(plan: Plan, store: ResultStore) -> Plan | None:
    """The confirmation's plan, from the tuning rows as they are now (None: no completed configuration to
    confirm); earlier confirmation trials of configurations no longer among the best are set aside."""
    rows = store.read_trials()
    trials = confirmation_trials(plan, rows)
    _set_aside_superseded(store, rows, {t.config_id for t in trials}, n_confirmation_configs(plan))
    if not trials:
        print("confirm: no completed configuration to confirm", flush=True)
        return None
    names = sorted({t.variant for t in trials})
    seeds = plan.spec.confirm.seeds if plan.spec.confirm is not None else []
    print(f"confirm: the best {n_confirmation_configs(plan)} configuration(s) ({', '.join(names)}) on fresh "
          f"seeds {list(seeds)}: {len(trials)} trials", flush=True)
    return confirmation_plan(plan, trials)


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
