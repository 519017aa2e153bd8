"""Confirmation on fresh seeds: the study's best configurations trained again on seeds that did not pick them.

The best configuration of a grid, an ablation or a search is reported optimistically on the seeds that
selected it (the winner's curse). A study with ``confirm: {top: K, seeds: [...]}`` therefore trains its K
best configurations once more on ``confirm.seeds`` (validated to share no seed with the tuning seeds), as
trials of the same study marked ``phase: confirm``. The K are ranked by the objective on validation, as
the mean over the tuning seeds of the completed tuning trials, ties broken by ``config_id``: a function of
the rows alone, so a resumed driver picks the very same configurations. The confirmation ``Trial``s are
rebuilt from the plan (grid/ablation points) or, for a search, from the varied parameters stored in the
rows, and their ``config_id`` must come out as the row's, so a confirmation trains exactly what was tuned.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from harness.study.errors import SpecError
from harness.study.params import ParamValue
from harness.study.plan import Plan
from harness.study.spec import SchedulerSpec
from harness.study.trial import Trial

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CONFIRM", "TUNE", "confirmation_plan", "confirmation_trials", "n_confirmation_configs", "select_top",
           "tuning_rows"]

#: Values of the results' ``phase`` column (emoe_schema.PHASES).
TUNE = "tune"
CONFIRM = "confirm"


def tuning_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """The tuning trials' rows (results written before the ``phase`` column are all tuning rows)."""
    if "phase" not in trials.columns:
        return trials
    return trials[trials["phase"].fillna(TUNE) == TUNE]


def select_top(trials: pd.DataFrame, *, k: int, mode: str) -> list[str]:
    """``config_id``s of the ``k`` best configurations: mean objective (validation) over their completed
    tuning trials, best first; ties by ``config_id``, so the choice depends on the rows only."""
    rows = tuning_rows(trials)
    if rows.empty or "objective" not in rows.columns:
        return []
    done = rows[(rows["status"] == "completed") & rows["objective"].notna()]
    means: dict[str, float] = {}
    for cid, group in done.groupby("config_id", sort=True):
        value = float(group["objective"].astype(float).mean())
        if math.isfinite(value):
            means[str(cid)] = value
    sign = 1.0 if mode == "min" else -1.0
    return sorted(means, key=lambda c: (sign * means[c], c))[:k]


def n_confirmation_configs(plan: Plan) -> int:
    """How many configurations the study confirms: ``confirm.top``, at most the configurations it tries."""
    confirm = plan.spec.confirm
    if confirm is None:
        return 0
    available = plan.spec.search.n_trials if plan.spec.search is not None else max(1, len(plan.points))
    return min(confirm.top, available)


def _plain(value: object) -> ParamValue:
    item = getattr(value, "item", None)  # numpy scalars from pandas rows
    return item() if callable(item) else value  # type: ignore[return-value]


def _overrides_of(plan: Plan, config_id: str, row: Mapping[str, object]) -> dict[str, ParamValue]:
    for trial in plan.trials:  # grid/ablation: the planned point itself
        if trial.config_id == config_id:
            return dict(trial.overrides)
    return {p: _plain(row[p]) for p in plan.varied if p in row}  # search: the stored sampled values


def confirmation_trials(plan: Plan, trials: pd.DataFrame) -> list[Trial]:
    """The confirmation trials (seed-major, ``phase="confirm"``) of the top configurations in ``trials``."""
    confirm = plan.spec.confirm
    if confirm is None:
        return []
    chosen = select_top(trials, k=n_confirmation_configs(plan), mode=plan.spec.mode)
    factory = dataclasses.replace(plan.factory, seeds=tuple(confirm.seeds))
    rows = tuning_rows(trials).sort_values("trial_id")
    by_config: list[list[Trial]] = []
    for cid in chosen:
        row = rows[rows["config_id"] == cid].iloc[0].to_dict()
        made, errors = factory.trials(str(row["variant"]), _overrides_of(plan, cid, row))
        if errors or made[0].config_id != cid:
            raise SpecError([f"confirm: cannot rebuild configuration {cid} ({row['variant']}) from its row"
                             + (f": {'; '.join(errors)}" if errors else f": it gives {made[0].config_id}")])
        offset = len(plan.spec.seeds)
        by_config.append([dataclasses.replace(t, phase=CONFIRM, seed_index=offset + t.seed_index) for t in made])
    return [ts[i] for i in range(len(confirm.seeds)) for ts in by_config]


def confirmation_plan(plan: Plan, trials: list[Trial]) -> Plan:
    """A plan that runs ``trials`` as a grid does: no searcher, every trial to its end (FIFO)."""
    spec = plan.spec.model_copy(update={"search": None, "scheduler": SchedulerSpec(name="fifo")})
    return dataclasses.replace(plan, spec=spec, trials=list(trials), space=None, points=[])
