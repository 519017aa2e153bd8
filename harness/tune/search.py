"""Optuna on Ray Tune: named samplers, and ``StudySearch``, an OptunaSearch that knows studies' rules.

What ``StudySearch`` adds to Ray's ``OptunaSearch`` (see shared/RAY_OPTUNA_NOTES.md):

* seeds: each Optuna trial (one configuration) becomes one Tune trial per study seed, paired by seed;
  the Optuna value is the mean over seeds of the selected-epoch objective;
* infeasible proposals (e.g. ``n_heads`` not dividing ``d_model``) never reach Ray: they are told to
  Optuna as FAIL with the user attribute ``infeasible`` and the sampler is asked again;
* pruning: a trial that the Tune scheduler (ASHA) stopped early is told to Optuna as PRUNED, not
  COMPLETE with its partial-budget value. Optuna then records its last intermediate value (the best
  objective so far), which TPE ranks below every completed trial. Whether a trial finished is read from
  the result store (a finished trial writes its row before returning), so it survives restarts;
* intermediate values: the first seed of a configuration reports the best-so-far objective per epoch;
* restarts (``--resume``): Tune restores the searcher from its last snapshot. Optuna trials asked after
  it (still RUNNING in the journal) are evaluated again under their own numbers, so their seeds keep
  their trial ids and rows; the sampler is re-seeded so it does not repeat its post-snapshot proposals;
  a trial already told is not told again; and no more than ``n_trials`` configurations are ever
  proposed (the search then reports FINISHED to Tune).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from harness.study.params import ParamValue
from harness.study.trial import Trial

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

    from harness.results.sink import ResultStore
    from harness.study.plan import TrialFactory
    from harness.study.space import SearchSpace

#: A result Tune reports for a trial (``harness.tune.trainable.report_metrics``).
Metrics = dict[str, float | int | bool | str | None]

__all__ = ["StudySearch"]

logger = logging.getLogger(__name__)

@dataclass
class _Group:
    """One Optuna trial and the Tune trials (one per seed) that evaluate it."""

    number: int
    overrides: dict[str, ParamValue]
    trials: list[Trial]  # one per study seed, seed order
    members: list[str] = field(default_factory=list)  # Tune trial ids, seed order
    outcomes: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)  # steps told to Optuna as intermediate values


@dataclass
class _Journal:
    """What the searcher needs from the Optuna journal's history, read once after each start or restore and
    then kept up to date by the searcher itself (the only writer: one driver per study). Reading the
    journal's trial list per proposal made a search's driver quadratic in its trials."""

    proposed: int  # configurations proposed, infeasible ones excluded (``n_trials`` caps it)
    orphans: list[optuna.trial.FrozenTrial]  # asked but never told by an earlier driver, not yet adopted
    finished: set[int]  # Optuna trial numbers already told


class StudySearch(OptunaSearch):
    """OptunaSearch over a define-by-run ``SearchSpace`` with seeds, infeasibility and pruning handled.

    ``factory`` turns overrides into one ``Trial`` per seed; ``store``'s ``status`` tells finished from
    stopped trials.
    """

    MAX_REJECTS = 1000

    def __init__(self, space: SearchSpace, factory: TrialFactory, store: ResultStore, *, n_configs: int,
                 metric: str, mode: str, sampler: optuna.samplers.BaseSampler, storage: BaseStorage,
                 study_name: str, retry: list[Trial] | None = None):
        super().__init__(space=space, metric=metric, mode=mode, sampler=sampler, storage=storage,
                         study_name=study_name)
        self._study_space = space
        self._factory = factory
        self._store = store
        self._n_configs = n_configs
        self._groups: dict[int, _Group] = {}
        self._member_of: dict[str, tuple[int, int]] = {}  # tune trial id -> (optuna number, seed index)
        self._filling: int | None = None
        self._retry = list(retry or [])  # failed trials to run again (``--retry-failed``), first
        self._journal: _Journal | None = None  # read when first needed (``_history``)

    @property
    def _study(self) -> optuna.Study:
        assert self._ot_study is not None, "the Optuna study is set up in __init__"
        return self._ot_study

    def restore(self, checkpoint_path: str) -> None:
        """Restore the searcher state saved with Tune's experiment state (``--resume``).

        The sampler's random state is that of the snapshot, so it would propose again what it proposed
        after it: re-seed it. Proposals made after the snapshot are adopted again (``_adopt_orphan``).
        """
        super().restore(checkpoint_path)
        self._journal = None  # the snapshot's copy predates the journal: read it again
        self.reseed()

    def reseed(self) -> None:
        """Re-seed the sampler: on a resumed study its seeded state would repeat earlier proposals."""
        reseed = getattr(self._study.sampler, "reseed_rng", None)
        if callable(reseed):
            reseed()

    def _history(self) -> _Journal:
        """The journal's history as this searcher needs it (see ``_Journal``), read on first use."""
        if self._journal is None:
            trials = self._study.get_trials(deepcopy=False)
            running = optuna.trial.TrialState.RUNNING
            self._journal = _Journal(
                proposed=sum("infeasible" not in t.user_attrs for t in trials),
                orphans=[t for t in trials if t.state == running and t.number not in self._groups
                         and "infeasible" not in t.user_attrs],
                finished={t.number for t in trials if t.state.is_finished()})
        return self._journal

    def _adopt_orphan(self) -> _Group | None:
        """An Optuna trial asked but never told (the driver died after asking, before Tune's state was
        saved): evaluate it now under its own number, so its seeds keep their trial ids (and rows)."""
        orphans = self._history().orphans
        while orphans:
            frozen = orphans.pop(0)
            overrides = self._study_space.decode(frozen.params)
            trials, errors = self._trials(frozen.number, overrides)
            if errors:
                continue
            group = _Group(frozen.number, overrides, trials, reported=set(frozen.intermediate_values))
            self._groups[group.number] = group
            self._ot_trials[f"optuna:{group.number}"] = optuna.trial.Trial(self._study, frozen._trial_id)
            return group
        return None

    def _new_group(self) -> _Group | None:
        orphan = self._adopt_orphan()
        if orphan is not None:
            return orphan
        history = self._history()
        if history.proposed >= self._n_configs:
            return None  # the study's n_trials configurations exist, even if Tune lost some in a crash
        for _ in range(self.MAX_REJECTS):
            ot_trial = self._study.ask()
            overrides = self._study_space(ot_trial)
            trials, errors = self._trials(ot_trial.number, overrides)
            if not errors:
                group = _Group(ot_trial.number, overrides, trials)
                self._groups[group.number] = group
                self._ot_trials[f"optuna:{group.number}"] = ot_trial
                history.proposed += 1
                return group
            ot_trial.set_user_attr("infeasible", errors[0])
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        raise RuntimeError(f"the sampler proposed {self.MAX_REJECTS} infeasible configurations in a row")

    def _trials(self, number: int, overrides: dict[str, ParamValue]) -> tuple[list[Trial], list[str]]:
        """The Tune trials (one per seed) of Optuna trial ``number``, or why its configuration is invalid."""
        return self._factory.trials(f"trial{number:03d}", overrides, instance=f"optuna:{number}")

    def suggest(self, trial_id: str) -> dict[str, Trial] | None:
        if self._retry:  # a failed trial of an earlier run, evaluated again under its own id (its
            return {"trial": self._retry.pop(0)}  # configuration was told to Optuna already and stays so)
        if trial_id in self._member_of:
            number, index = self._member_of[trial_id]
            group = self._groups[number]
        else:
            new = self._groups[self._filling] if self._filling is not None else self._new_group()
            if new is None:
                return Searcher.FINISHED  # type: ignore[return-value]  # Tune's end-of-search marker
            group = new
            index = len(group.members)
            group.members.append(trial_id)
            self._member_of[trial_id] = (group.number, index)
            self._filling = group.number if len(group.members) < self._factory.n_seeds else None
        return {"trial": group.trials[index]}

    def on_trial_result(self, trial_id: str, result: Metrics) -> None:
        number, index = self._member_of.get(trial_id, (-1, -1))
        value = result.get(self.metric)
        if index != 0 or not isinstance(value, int | float) or not math.isfinite(value):
            return
        iteration = result.get("training_iteration", 0)
        step = int(iteration) if isinstance(iteration, int | float) else 0
        group = self._groups[number]
        if step not in group.reported:
            group.reported.add(step)
            self._ot_trials[f"optuna:{number}"].report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: Metrics | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._member_of or trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        number, _ = self._member_of[trial_id]
        group = self._groups[number]
        if result:  # Tune does not pass a result that made the scheduler stop the trial to on_trial_result
            self.on_trial_result(trial_id, result)
        status = "failed" if error else (self._store.status(self._trial_key(group, trial_id)) or "pruned")
        value = (result or {}).get(self.metric)
        finite = isinstance(value, int | float) and math.isfinite(value)
        group.outcomes[trial_id] = (status, float(value) if finite else None)  # type: ignore[arg-type]
        if len(group.outcomes) == self._factory.n_seeds:
            self._tell(group)

    def _trial_key(self, group: _Group, tune_trial_id: str) -> str:
        return group.trials[group.members.index(tune_trial_id)].trial_id

    def _tell(self, group: _Group) -> None:
        finished = self._history().finished
        if group.number in finished:
            return  # told before the driver restarted (the restored searcher state predates it)
        finished.add(group.number)
        ot_trial = self._ot_trials[f"optuna:{group.number}"]
        statuses = [s for s, _ in group.outcomes.values()]
        values = [v for s, v in group.outcomes.values() if s in ("completed", "diverged") and v is not None]
        state = optuna.trial.TrialState
        try:
            ot_trial.set_user_attr("statuses", statuses)
            if "pruned" in statuses:
                self._study.tell(ot_trial, state=state.PRUNED)
            elif values:
                self._study.tell(ot_trial, sum(values) / len(values))
            else:
                self._study.tell(ot_trial, state=state.FAIL)
        except (ValueError, RuntimeError) as exc:  # e.g. already finished in a resumed journal
            logger.warning("optuna trial %d: %s", group.number, exc)
