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

import importlib
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

__all__ = ["SAMPLERS", "StudySearch", "make_sampler", "sampler_errors"]

logger = logging.getLogger(__name__)

#: Sampler names a study may use, with the Optuna class and any extra package it needs.
SAMPLERS: dict[str, tuple[str, str | None]] = {
    "tpe": ("TPESampler", None),
    "random": ("RandomSampler", None),
    "cmaes": ("CmaEsSampler", "cmaes"),
    "gp": ("GPSampler", "scipy"),
    "qmc": ("QMCSampler", "scipy"),
    "nsgaii": ("NSGAIISampler", None),
    "bruteforce": ("BruteForceSampler", None),
}
_PLAIN = (str, int, float, bool, type(None), list, dict)


def sampler_errors(name: str, options: dict[str, Any]) -> list[str]:
    """Problems with a sampler name and its options (unknown option, missing package), as messages."""
    if name not in SAMPLERS:
        return [f"sampler: unknown sampler {name!r}, choose one of {sorted(SAMPLERS)}"]
    cls_name, package = SAMPLERS[name]
    errors = []
    if package is not None:
        try:
            importlib.import_module(package)
        except ImportError:
            errors.append(f"sampler: {name} needs the {package!r} package (pip install {package})")
    params = inspect.signature(getattr(optuna.samplers, cls_name)).parameters
    for key, value in options.items():
        if key == "seed":
            errors.append("sampler_options.seed: give the seed as search.seed")
        elif key not in params:
            errors.append(f"sampler_options.{key}: unknown option of {cls_name}; known: "
                          f"{sorted(p for p in params if p != 'seed')}")
        elif not isinstance(value, _PLAIN):
            errors.append(f"sampler_options.{key}: only plain values can be given in a study file")
        else:
            problem = _option_type_error(params[key].annotation, value)
            if problem:
                errors.append(f"sampler_options.{key}: {problem}")
    return errors


#: Plain types an option's annotation may name, and the YAML values each accepts.
_ANNOTATED: dict[str, tuple[type, ...]] = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
                                           "None": (type(None),), "list": (list,), "dict": (dict,)}


def _option_type_error(annotation: Any, value: Any) -> str | None:
    """Why ``value`` does not suit a sampler option annotated ``annotation`` (None when it does)."""
    if annotation is inspect.Parameter.empty:
        return None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    depth, parts, current = 0, [], ""
    for ch in text:  # split "A[B | C] | None" on the top-level "|" only
        depth += ch in "[("
        depth -= ch in "])"
        if ch == "|" and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    kinds = [_ANNOTATED.get(part.split("[", 1)[0].strip()) for part in parts]
    accepted = tuple(t for k in kinds if k for t in k)
    if not accepted:
        return f"takes a Python object ({text}), which a study file cannot give"
    if isinstance(value, bool) and bool not in accepted:
        return f"expected {text}, got {value!r}"
    if not isinstance(value, accepted):
        return f"expected {text}, got {type(value).__name__} {value!r}"
    return None


def make_sampler(name: str, options: dict[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """The named Optuna sampler, seeded."""
    cls = getattr(optuna.samplers, SAMPLERS[name][0])
    return cls(seed=seed, **options)


@dataclass
class _Group:
    """One Optuna trial and the Tune trials (one per seed) that evaluate it."""

    number: int
    overrides: dict[str, Any]
    members: list[str] = field(default_factory=list)  # Tune trial ids, seed order
    outcomes: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    reported: set[int] = field(default_factory=set)  # steps told to Optuna as intermediate values


class StudySearch(OptunaSearch):
    """OptunaSearch over a define-by-run ``SearchSpace`` with seeds, infeasibility and pruning handled.

    ``factory`` turns overrides into a trial description (``harness.plan.TrialFactory``); ``store`` is
    the study's ``harness.sink.ResultStore`` (its ``status`` tells finished from stopped trials).
    """

    MAX_REJECTS = 1000

    def __init__(self, space: Any, factory: Any, store: Any, *, n_configs: int, metric: str, mode: str,
                 sampler: optuna.samplers.BaseSampler, storage: Any, study_name: str,
                 retry: list[dict[str, Any]] | None = None):
        super().__init__(space=space, metric=metric, mode=mode, sampler=sampler, storage=storage,
                         study_name=study_name)
        self._factory = factory
        self._store = store
        self._n_configs = n_configs
        self._groups: dict[int, _Group] = {}
        self._member_of: dict[str, tuple[int, int]] = {}  # tune trial id -> (optuna number, seed index)
        self._filling: int | None = None
        self._retry = list(retry or [])  # failed trials to run again (``--retry-failed``), first

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
        self.reseed()

    def reseed(self) -> None:
        """Re-seed the sampler: on a resumed study its seeded state would repeat earlier proposals."""
        reseed = getattr(self._study.sampler, "reseed_rng", None)
        if callable(reseed):
            reseed()

    def _adopt_orphan(self) -> _Group | None:
        """An Optuna trial asked but never told (the driver died after asking, before Tune's state was
        saved): evaluate it now under its own number, so its seeds keep their trial ids (and rows)."""
        for frozen in self._study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number in self._groups or "infeasible" in frozen.user_attrs:
                continue
            overrides = self._space.decode(frozen.params)  # type: ignore[union-attr]
            if self._factory.check(overrides):
                continue
            group = _Group(frozen.number, overrides, reported=set(frozen.intermediate_values))
            self._groups[group.number] = group
            self._ot_trials[f"optuna:{group.number}"] = optuna.trial.Trial(self._study, frozen._trial_id)
            return group
        return None

    def _proposed(self) -> int:
        """Configurations proposed so far (in the journal, across restarts), infeasible ones excluded."""
        return sum("infeasible" not in t.user_attrs for t in self._study.get_trials(deepcopy=False))

    def _new_group(self) -> _Group | None:
        orphan = self._adopt_orphan()
        if orphan is not None:
            return orphan
        if self._proposed() >= self._n_configs:
            return None  # the study's n_trials configurations exist, even if Tune lost some in a crash
        space: Any = self._space
        for _ in range(self.MAX_REJECTS):
            ot_trial = self._study.ask()
            overrides: dict[str, Any] = space(ot_trial)
            errors = self._factory.check(overrides)
            if not errors:
                group = _Group(ot_trial.number, overrides)
                self._groups[group.number] = group
                self._ot_trials[f"optuna:{group.number}"] = ot_trial
                return group
            ot_trial.set_user_attr("infeasible", errors[0])
            self._study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        raise RuntimeError(f"the sampler proposed {self.MAX_REJECTS} infeasible configurations in a row")

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
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
        trial = self._factory.make(f"trial{group.number:03d}", group.overrides, seed_index=index,
                                   instance=f"optuna:{group.number}")
        return {"trial": trial}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        number, index = self._member_of.get(trial_id, (-1, -1))
        value = result.get(self.metric)
        if index != 0 or not isinstance(value, int | float) or not math.isfinite(value):
            return
        step = int(result.get("training_iteration", 0))
        group = self._groups[number]
        if step not in group.reported:
            group.reported.add(step)
            self._ot_trials[f"optuna:{number}"].report(float(value), step)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
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
        index = group.members.index(tune_trial_id)
        trial = self._factory.make("", group.overrides, seed_index=index, instance=f"optuna:{group.number}")
        return str(trial["trial_id"])

    def _tell(self, group: _Group) -> None:
        told = [t for t in self._study.get_trials(deepcopy=False) if t.number == group.number]
        if told and told[0].state.is_finished():
            return  # told before the driver restarted (the restored searcher state predates it)
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
