"""A grid's or an ablation's planned trials, handed to Tune one by one by a searcher, in plan order.

Tune's own variant generation (``tune.grid_search`` over the trials) does not scale to thousands of
trials: Tune replaces every non-primitive value of the search space by a placeholder, in a new list of N
entries, and then deep-copies the whole unresolved space, that list included, once per variant: O(N^2)
copies, about 4 ms per trial at 1 000 trials and 40 ms at 10 000, where the driver spent minutes before
the first trial started (bench/README.md, "Scale"). ``PlannedTrials`` gives Tune each planned ``Trial``
as the trial's whole configuration instead, the way ``StudySearch`` gives a search's trials: nothing is
copied or resolved, and every trial is suggested exactly once.

A study's confirmation (``confirm:``) can follow in the same Tune run (``then``): once every suggested
trial has ended, ``then`` is asked for the next phase's trials, which Tune starts on the actors the ended
trials leave (``reuse_actors``) instead of new worker processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from ray.tune.search import Searcher

from harness.study.stacks import Stack
from harness.study.trial import Trial

__all__ = ["PlannedTrials"]


class PlannedTrials(Searcher):
    """Suggests the given trials (or stacks of them) in order, each once, then reports the search finished.

    ``then``: called once, when every trial suggested so far has ended (completed, stopped, or failed for
    good), for the trials to suggest next (none: the search is finished). Until then Tune hears "nothing
    yet" and waits.
    """

    def __init__(self, trials: Iterable[Trial | Stack], *, then: Callable[[], list[Trial | Stack]] | None = None,
                 metric: str | None = None, mode: str | None = None):
        super().__init__(metric=metric, mode=mode)
        self._todo = deque(trials)
        self._then = then
        self._open: set[str] = set()  # Tune trial ids suggested and not ended

    def __len__(self) -> int:
        """Trials not suggested yet."""
        return len(self._todo)

    def suggest(self, trial_id: str) -> dict[str, Trial | Stack] | None:
        if not self._todo and self._then is not None:
            if self._open:
                return None  # the next trials depend on how these end
            then, self._then = self._then, None
            self._todo.extend(then())
        if not self._todo:
            return Searcher.FINISHED  # type: ignore[return-value]  # Tune's end-of-search marker
        self._open.add(trial_id)
        return {"trial": self._todo.popleft()}

    def on_trial_complete(self, trial_id: str, result: dict[str, object] | None = None,
                          error: bool = False) -> None:
        """Nothing to learn (the plan is fixed); the trial has ended."""
        self._open.discard(trial_id)

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: a resume plans its trials from the study's rows, not from Tune's searcher state.
        (Tune's default logged "save not implemented for Searcher" in every grid and ablation run.)"""
