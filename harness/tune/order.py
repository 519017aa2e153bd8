"""Which pending trial Tune starts next: the newest, so a finished trial's actor goes to a trial without one.

Tune asks for an actor for every trial it stages, and it asks the scheduler which pending trial to start
each step. Tune's FIFO rule (also ASHA's and the median rule's) picks the oldest pending trial: one that
was staged earlier and whose own actor is still starting. When a running actor has just finished a trial
(and is kept for reuse), Tune gives it that oldest trial and kills the starting actor as soon as it is up:
its worker process paid for Python, torch and the harness (about 3 s of CPU) for nothing, and its CPU
goes to the next staged trial's actor, which meets the same fate while trials are shorter than an actor's
start. Measured on 300 simulated trials on 8 CPUs: 20-60 worker processes started for 8 slots, most of
them killed after starting. Picking the newest pending trial instead gives the kept actor the trial the
searcher has just proposed, which has no actor yet, and lets the starting actors keep their own trials.

The oldest-first scan also walked every trial of the study at each of Tune's steps (several per trial):
O(N^2) over a study. This one looks only at Tune's live trials (pending, running, paused).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from ray.tune.experiment import Trial as TuneTrial
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

if TYPE_CHECKING:
    from ray.tune.execution.tune_controller import TuneController

__all__ = ["NewestFirstASHA", "NewestFirstFIFO", "NewestFirstMedian"]


class _NewestPendingFirst:
    """Scheduler mixin (before a FIFO-based Tune scheduler): start the newest pending trial first; resume
    paused trials oldest first, as Tune's FIFO rule does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._added: dict[str, int] = {}
        self._next = itertools.count()

    def on_trial_add(self, tune_controller: TuneController, trial: TuneTrial) -> None:
        self._added.setdefault(trial.trial_id, next(self._next))
        super().on_trial_add(tune_controller, trial)  # type: ignore[misc]

    def _age(self, trial: TuneTrial) -> int:
        return self._added.get(trial.trial_id, -1)

    def choose_trial_to_run(self, tune_controller: TuneController) -> TuneTrial | None:
        live = tune_controller.get_live_trials()
        pending = [t for t in live if t.status == TuneTrial.PENDING]
        if pending:
            return max(pending, key=self._age)
        paused = [t for t in live if t.status == TuneTrial.PAUSED]
        return min(paused, key=self._age) if paused else None


class NewestFirstFIFO(_NewestPendingFirst, FIFOScheduler):
    """``FIFOScheduler`` that starts the newest pending trial first."""


class NewestFirstASHA(_NewestPendingFirst, AsyncHyperBandScheduler):
    """``AsyncHyperBandScheduler`` that starts the newest pending trial first."""


class NewestFirstMedian(_NewestPendingFirst, MedianStoppingRule):
    """``MedianStoppingRule`` that starts the newest pending trial first."""

