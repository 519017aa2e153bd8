"""Running a planned study on Ray Tune: the Tuner, its scheduler and searcher, resume, and recording.

Grids and ablations hand their planned trials to Tune in plan order (``PlannedTrials``, FIFO unless the
study names a scheduler); searches use ``StudySearch`` (Optuna, persisted in
``optuna.journal``) with ASHA by default. The data go once into Ray's object store (``share_data``),
trials and driver read that one copy. Every run, first or ``--resume``, is a new Tune experiment under
``<study>/tune``: what it runs is decided from the recorded rows (``harness.tune.resume``), not restored from
Tune's saved state, so the resumed run's time budget and concurrency apply and no trial is left behind.
With ``resources.stack`` the trials a run has to run are grouped into stacks (``harness.study.stacks``),
each one Tune trial (``harness.tune.stacked``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import ray
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from ray import tune
from ray.tune.schedulers import HyperBandScheduler, TrialScheduler

import emoe
from harness.results.sink import ResultStore
from harness.study.confirm import CONFIRM, n_confirmation_configs
from harness.study.plan import Plan, data_bytes
from harness.study.samplers import make_sampler
from harness.study.stacks import Stack, plan_stacks
from harness.tune import confirmation_start
from harness.tune.cluster import RaySettings, cluster_resources
from harness.tune.interrupt import interrupted, signals_stop
from harness.tune.lean import LeanTrials
from harness.tune.order import NewestFirstASHA, NewestFirstFIFO, NewestFirstMedian
from harness.tune.planned import PlannedTrials
from harness.tune.progress import ProgressPrinter
from harness.tune.recorder import ResultRecorder, reconcile
from harness.tune.resume import EarlierTrial, StudyState, earlier_trials, study_state
from harness.tune.search import StudySearch
from harness.tune.stacked import study_trainable
from harness.tune.trainable import TrialContext, clear_scratch

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.tune import Callback, Trainable, Tuner
    from ray.tune.experiment import Trial as TuneTrial

    from emoe.data.arrays import DataSet
    from harness.study.trial import Trial

__all__ = ["ConfirmationSwitch", "RunOptions", "RunOutcome", "StudyStopper", "add_counts", "budget_deadline", "code_version",
           "data_bytes", "experiment_dir", "make_context", "make_scheduler", "run_tune", "share_data"]


@dataclass(frozen=True)
class RunOptions:
    """How to run: resume a previous run, retry its failed trials, where Ray is, how often to print."""

    resume: bool = False
    retry_failed: bool = False
    ray: RaySettings = field(default_factory=RaySettings)
    progress_interval_s: float = 10.0
    phase: str = "tune"  # "confirm": the confirmation trials, a Tune experiment of their own (tune-confirm/)
    #: when the command's time budget runs out (``budget_deadline``); None: the study's budget from now
    deadline: float | None = None


@dataclass
class RunOutcome:
    """What a run left: status counts of all recorded rows, whether every planned trial has a row, and
    what ended the run early ("time budget", "interrupted"; None when it ran to its end)."""

    counts: dict[str, int]
    complete: bool
    stopped: str | None = None
    #: seconds from the start of the Tune run until its first trial was running (None: no trial ran)
    first_trial_s: float | None = None
    #: the confirmation, when it ran in this (the tuning phase's) Tune run: its own counts, first trial
    #: and seconds (``elapsed_s``); ``counts`` and ``complete`` above are of both phases
    confirmed: RunOutcome | None = None
    #: seconds the phase took (set for a confirmation that ran in the tuning phase's Tune run)
    elapsed_s: float | None = None


def add_counts(*counts: dict[str, int]) -> dict[str, int]:
    """Status counts of several runs added up."""
    total: dict[str, int] = {}
    for c in counts:
        for status, n in c.items():
            total[status] = total.get(status, 0) + n
    return total


def code_version() -> str:
    """Package version plus the git commit of the source tree when available (``0.1.0+g1a2b3c4``)."""
    version = emoe.__version__
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{version}+g{commit}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return version


def make_context(plan: Plan, store: ResultStore, version: str) -> TrialContext:
    """The per-study context every trial receives."""
    s = plan.spec
    from harness.tune.simulated import SIMULATED_PREFIX

    return TrialContext(store=store, label_kind=plan.data.data.label_kind, objective=s.objective.metric,
                        mode=s.mode, cpus=s.resources.cpus, gpus=s.resources.gpus, code_version=version,
                        data=(SIMULATED_PREFIX if s.simulated else "") + plan.data.description,
                        checkpoint_every=s.checkpoint_every, report_epoch_metrics=s.tracking is not None,
                        # HyperBand pauses trials at its milestones and resumes them from their checkpoint
                        checkpoint_min_interval_s=0.0 if s.scheduler_name == "hyperband"
                        else s.checkpoint_min_interval_s)


def make_scheduler(plan: Plan) -> TrialScheduler:
    """The Tune scheduler the study names, on ``training_iteration`` (= epochs), budget max_epochs."""
    sch, max_t = plan.spec.scheduler, plan.max_epochs
    name = plan.spec.scheduler_name
    if name == "asha":
        return NewestFirstASHA(time_attr="training_iteration", max_t=max_t,
                                       grace_period=min(sch.grace_period, max_t),
                                       reduction_factor=sch.reduction_factor, brackets=sch.brackets)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t,
                                  reduction_factor=sch.reduction_factor)
    if name == "median":
        return NewestFirstMedian(time_attr="training_iteration", grace_period=sch.grace_period,
                                  min_samples_required=3)
    return NewestFirstFIFO()


def trial_dirname(trial: TuneTrial) -> str:
    """Short trial directory names (long ones break some file systems, ray#29586)."""
    return f"trial_{trial.trial_id}"


def _searcher(plan: Plan, store: ResultStore, *, retry: list[Trial], resume: bool) -> StudySearch:
    s = plan.spec.search
    assert s is not None and plan.space is not None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(store.journal_path)))
    search = StudySearch(plan.space, plan.factory, store, n_configs=s.n_trials, metric="objective",
                         mode=plan.spec.mode, sampler=make_sampler(s.sampler, s.sampler_options, s.seed),
                         storage=storage, study_name=plan.spec.name, retry=retry)
    if resume:
        search.reseed()  # the seeded sampler would otherwise propose again what it proposed before
    return search


def _concurrency(plan: Plan) -> int:
    """Trials (or stacks) at once: the study's ``concurrency``, else as many as the cluster's resources hold.

    Grids too, not only searches: with no limit, Tune asks for an actor for every trial it stages, and while
    actors start, a running actor that finishes a short trial takes over a staged trial whose own actor is
    still starting; that actor is then killed once started, its CPU goes to the next staged trial's actor,
    and so on (a worker process started and killed per few trials: 25-60 of them for 300 simulated trials
    on 8 CPUs). With at most as many trials as slots, every trial Tune stages runs on a slot that is free or
    on the actor of the trial that just finished.
    """
    if plan.spec.concurrency is not None:
        return plan.spec.concurrency
    res, need = cluster_resources(), plan.spec.resources
    limits = [int(res.get(kind, 0) // n) for kind, n in (("CPU", need.cpus), ("GPU", need.gpus)) if n]
    return max(1, min(limits, default=1))


def experiment_dir(store: ResultStore, phase: str) -> Path:
    """Where Tune keeps a phase's experiments: ``tune/``, or ``tune-confirm/`` for the confirmation."""
    return store.tune_dir if phase == "tune" else store.tune_dir.with_name(f"tune-{phase}")


def _slots(plan: Plan) -> int:
    """Trials of the study that run at once (``auto``'s memory rule for stacks on CPU)."""
    concurrency = _concurrency(plan)
    if concurrency is not None:
        return concurrency
    cpus = plan.spec.resources.cpus
    return max(1, int(cluster_resources()["CPU"] // cpus)) if cpus else 1


def _tuner(plan: Plan, store: ResultStore, trainable: type[Trainable], callbacks: list[Callback], tune_dir: Path, *,
           todo: list[Trial | Stack], retry: list[Trial], stopper: StudyStopper, resume: bool,
           then: ConfirmationSwitch | None = None) -> Tuner:
    """A new Tune experiment in ``tune_dir`` over ``todo`` (grids: trials and stacks) or the search's
    remaining trials plus ``retry``; then (grids) the confirmation trials ``then`` gives."""
    s = plan.spec
    search = s.search is not None
    planned = PlannedTrials(todo, then=None if then is None else then.units)
    tune_config = tune.TuneConfig(
        metric="objective", mode=s.mode, scheduler=make_scheduler(plan),
        # grids and ablations: the planned trials through a searcher too, not Tune's variant generation (O(N^2))
        search_alg=_searcher(plan, store, retry=retry, resume=resume) if search else planned,
        num_samples=(plan.n_trials + len(retry) if search
                     else len(todo) + (0 if then is None else then.most_units())),
        max_concurrent_trials=_concurrency(plan),
        trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname, reuse_actors=True)
    run_config = tune.RunConfig(
        name=tune_dir.name, storage_path=str(tune_dir.parent), stop=stopper,
        failure_config=tune.FailureConfig(max_failures=s.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2), callbacks=callbacks, verbose=0)
    return tune.Tuner(trainable, param_space={}, tune_config=tune_config, run_config=run_config)


#: Tune settings of the driver: the legacy reporter at verbosity 0 prints no status tables (the harness
#: prints its own progress); the forced experiment snapshots that come with ``CheckpointConfig(num_to_keep)``
#: are expected, not a warning; and a trial that diverges before its first epoch ends without reporting
#: the objective, which must not abort the study (its row says "diverged"). Tune's default result loggers
#: (JSON, CSV and TensorBoard files per trial under tune/) are off: the harness records every epoch in
#: Parquet, and at scale they were the driver's largest cost (bench/README.md, "Scale"): an fsync'ed
#: TensorBoard flush and two file appends per result, three files per trial. Tune's periodic experiment-state
#: snapshot (every trial's state as JSON, O(trials) each) at most every 10 minutes: the harness never
#: restores it (``harness.tune.resume`` decides from the rows), and Tune's own period ("auto", at least every
#: 10 s) spent 8% of the driver's time at 1 000 trials. Users may override them all.
_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
             "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
             "TUNE_GLOBAL_CHECKPOINT_S": "600"}


def share_data(plan: Plan) -> ObjectRef[DataSet]:
    """Put the plan's data set into Ray's object store once and return its reference.

    Every trial reads the stored copy zero-copy (read-only numpy views into shared memory). The plan's
    own arrays are replaced by such views as well, so the driver's private copy is freed: otherwise the
    driver would hold a second copy of the data for the whole study. The views stay readable after Ray
    shuts down.
    """
    ref = ray.put(plan.data.data)
    plan.data = dataclasses.replace(plan.data, data=ray.get(ref))
    return ref


def _now() -> float:
    """The clock of time budgets (``time.monotonic``)."""
    return time.monotonic()


def budget_deadline(plan: Plan) -> float | None:
    """When the study's ``time_budget_s`` runs out if it starts now (on ``_now``'s clock); None: no budget."""
    budget = plan.spec.time_budget_s
    return None if budget is None else _now() + budget


class StudyStopper(tune.Stopper):
    """Ends the whole study on the harness's terms: the time budget ran out, or a signal asked it to stop.

    Tune's own ``time_budget_s`` would be saved with its experiment state, and its SIGINT handler ends a
    run that looks like any other; this stopper says which of the two ended it (``reason``). Tune stops
    the running trials, and they get no row: a resume runs them again from their checkpoints. The budget
    is a ``deadline`` (``budget_deadline``), one per command: the confirmation phase has what the tuning
    phase left of it.
    """

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.start = time.monotonic()
        self.reason: str | None = None

    def budget_spent(self) -> bool:
        return self.deadline is not None and _now() >= self.deadline

    def __call__(self, trial_id: str, result: dict[str, object]) -> bool:
        return False

    def stop_all(self) -> bool:
        if self.reason is None:
            if interrupted():
                self.reason = "interrupted"
            elif self.budget_spent():
                self.reason = "time budget"
        return self.reason is not None


def trial_actors_take_idle_workers() -> None:
    """Let a trial's actor start in an idle worker process of the runtime (the ones a local runtime starts
    ahead, one per CPU, importing the trial code ahead where ``harness.tune.preload`` says so) instead of a
    new process. Tune gives every trial actor the runtime environment ``{"env_vars": {"PL_DISABLE_FORK":
    "1"}}`` (a PyTorch Lightning setting; EMOE does not use Lightning), and Ray gives an actor with a runtime
    environment only a worker started for that environment, so each trial actor started a process of its
    own: Python, Ray, Ray Tune and torch imported on the trial's critical path (1.6-3 s on the 2-core
    machine, about 6 s on an H200 host's CPU). Without that entry the environment is empty, as the idle
    workers' is. Variables Tune passes on from the driver (``AWS_*``, some ``RAY_*``) still make one."""
    from ray.tune.execution import class_cache

    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None)
    if isinstance(defaults, dict):
        defaults.pop("PL_DISABLE_FORK", None)


def _no_tag(callbacks: object) -> bool:
    return False


def no_callback_usage_tag() -> None:
    """Keep ``tune.run`` from importing MLflow and W&B for a study that uses neither. To record which callback
    classes a run passes (a tag of Ray's usage statistics, ``ray.air._internal.usage.tag_callbacks``), Tune
    imports Ray's MLflow, W&B, Comet and Aim integrations to name its built-in ones, and the first two import
    mlflow and wandb: 0.9 s inside ``tune.run``, before any trial starts, on the 2-core machine, and W&B makes
    temporary directories as it loads. The harness's callbacks are its own (a tracker it uses imports its
    package itself, ``harness.tune.trackers``), so the tag says nothing; Ray's other usage tags are kept."""
    from ray.air._internal import usage

    if callable(getattr(usage, "tag_callbacks", None)):
        usage.tag_callbacks = _no_tag


@contextlib.contextmanager
def _pending_trials(plan: Plan) -> Iterator[None]:
    """Let Tune stage as many planned grid trials as its own variant generation would (``max(200, 1.1 x
    CPUs)``): with a searcher it stages one at a time, so trials ending together could not take over each
    other's actors and new workers would start. Searches keep their limit (``max_concurrent_trials``)."""
    key = "TUNE_MAX_PENDING_TRIALS_PG"
    if plan.spec.search is not None or key in os.environ:
        yield
        return
    os.environ[key] = str(max(200, int(cluster_resources()["CPU"] * 1.1)))
    try:
        yield
    finally:
        os.environ.pop(key, None)


def run_tune(plan: Plan, store: ResultStore, options: RunOptions, version: str) -> RunOutcome:
    """Run the study's trials that have no row yet (and failed ones when retrying) on Ray Tune.

    Every run, first or resumed, is a new Tune experiment under ``<study>/tune``: what to run is decided
    from the recorded rows (``harness.tune.resume``), interrupted trials continue from the newest checkpoint an
    earlier run left, and a search continues its Optuna journal. Every settled trial ends with exactly one
    row. Ray must be connected already (``harness.run`` enters ``ray_session`` before creating the study,
    so an unreachable cluster creates nothing).
    """
    if not ray.is_initialized():
        raise RuntimeError("run_tune needs a Ray runtime: enter harness.tune.cluster.ray_session first")
    for key, value in _TUNE_ENV.items():
        os.environ.setdefault(key, value)
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # the harness stops the study itself (StudyStopper)
    trial_actors_take_idle_workers()
    no_callback_usage_tag()

    earlier = _earlier(store) if options.resume else {}
    state = study_state(plan, store)
    ctx = dataclasses.replace(
        make_context(plan, store, version), retry_failed=options.retry_failed,
        earlier_checkpoints={tid: tuple(d for _, d in e.checkpoints) for tid, e in earlier.items()})
    retry = [earlier[t].trial for t in state.failed if t in earlier] if options.retry_failed else []
    if plan.trials:
        todo = [t for t in plan.trials if not ctx.settled(_row_status(state, t.trial_id))]
    else:
        todo = retry
    stopper = StudyStopper(options.deadline if options.deadline is not None else budget_deadline(plan))
    if plan.trials and not todo:
        return RunOutcome(state.counts, True)
    stacked = bool(plan.trials) and not plan.spec.simulated  # simulated trials always run alone

    def units_of(trials: list[Trial]) -> list[Trial | Stack]:
        """The Tune trials that run ``trials``: stacks as ``resources.stack`` asks (the confirmation's too)."""
        return plan_stacks(trials, plan.spec.resources, slots=_slots(plan)).units if stacked else list(trials)

    units = units_of(todo)
    with signals_stop("stopping the running trials and recording what finished"):
        if stopper.stop_all():  # a signal or the deadline came before this run (between a command's phases)
            return _outcome(plan, store, options, stopper, None)
        data_ref = share_data(plan)
        trainable = tune.with_resources(tune.with_parameters(_trainable_of(plan), data=data_ref, ctx=ctx),
                                        {"cpu": plan.spec.resources.cpus, "gpu": plan.spec.resources.gpus})
        recorder = ResultRecorder(ctx)
        printer = ProgressPrinter(store, total=plan.n_trials, objective=plan.spec.objective.metric,
                                  mode=plan.spec.mode, interval_s=options.progress_interval_s,
                                  recorded={t: s for t, s in state.statuses.items() if ctx.settled({"status": s})},
                                  status_of=recorder.status_of)
        callbacks = [LeanTrials(), recorder, printer]  # LeanTrials: Tune's per-trial bookkeeping kept small
        if plan.spec.tracking is not None:  # after ResultRecorder: rows exist at trial end
            # imported only here: Ray's MLflow and W&B integrations import both packages (0.9 s of the driver's
            # imports on a 2-core machine), and W&B makes temporary directories as it loads
            from harness.tune.trackers import tracking_callbacks

            callbacks += tracking_callbacks(plan.spec.tracking, store)
        # Tune reads every trial's results at the end; trials that never started have none, which it
        # logs as a warning per trial. Expected here (pending at an interrupt or a time budget).
        logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
        switch = (ConfirmationSwitch(plan, store, ctx, stopper, printer, units_of)
                  if _confirms_in_run(plan, options) else None)
        stopper.start = time.monotonic()
        tuner = _tuner(plan, store, trainable, callbacks, experiment_dir(store, options.phase), todo=units,
                       retry=retry, stopper=stopper, resume=options.resume, then=switch)
        try:
            with _pending_trials(plan):
                results = tuner.fit()
        finally:
            clear_scratch(store)  # what attempts killed while reporting a checkpoint left in /tmp
        reconcile(ctx, results)  # type: ignore[arg-type]  # ResultGrid iterates via __getitem__
        if stopper.reason is None and interrupted():  # a signal after Tune's last look, with no trial left
            stopper.reason = "interrupted"
    if switch is not None and switch.error is not None:
        raise switch.error
    if switch is not None and switch.started is not None:
        return switch.outcome(options)
    return _outcome(plan, store, options, stopper, printer)


def _earlier(store: ResultStore) -> dict[str, EarlierTrial]:
    """The trials earlier runs started, from both phases' Tune folders: a confirmation runs in ``tune/``
    with the tuning phase, or in ``tune-confirm/`` on its own."""
    return earlier_trials(experiment_dir(store, "tune"), experiment_dir(store, CONFIRM))


def _confirms_in_run(plan: Plan, options: RunOptions) -> bool:
    """Whether the study's confirmation runs in this (its tuning phase's) Tune run: grids and ablations
    with the FIFO scheduler. A search's trials come from Optuna, and another scheduler would stop or
    pause confirmation trials, which must run to their end: those confirm in a Tune run of their own."""
    return (options.phase == "tune" and plan.spec.confirm is not None and plan.spec.search is None
            and plan.spec.scheduler_name == "fifo")


class ConfirmationSwitch:
    """The confirmation trials of a grid, handed to the tuning phase's Tune run once its last trial has
    ended (``PlannedTrials(then=...)``): they start on the actors the tuning trials leave, where a Tune
    run of their own would start new worker processes (Python, torch, Ray Tune and, on a GPU, CUDA: about
    6 s on an H200 machine, as long as the training of the main job's confirmation).

    ``units`` decides as a separate confirmation run would: nothing when the run is being stopped or the
    tuning phase is not complete, else ``start_confirmation``'s trials, less those already settled (a
    resume), stacked like the tuning phase's. An error there ends the run and is raised after it.
    """

    def __init__(self, plan: Plan, store: ResultStore, ctx: TrialContext, stopper: StudyStopper,
                 printer: ProgressPrinter, units_of: Callable[[list[Trial]], list[Trial | Stack]]):
        self.plan, self.store, self.ctx, self.stopper, self.printer = plan, store, ctx, stopper, printer
        self.units_of = units_of
        self.confirming: Plan | None = None  # the confirmation's plan, once it started in this run
        self.error: BaseException | None = None
        self.started: float | None = None  # when it was decided (and, unless there was nothing, started)
        self.tuning_first_trial_s: float | None = None

    def most_units(self) -> int:
        """At most as many Tune trials as the confirmation can have (Tune's ``num_samples``)."""
        confirm = self.plan.spec.confirm
        return 0 if confirm is None else n_confirmation_configs(self.plan) * len(confirm.seeds)

    def units(self) -> list[Trial | Stack]:
        try:
            return self._units()
        except (Exception, KeyboardInterrupt) as exc:  # raised again once Tune has ended its run
            # Tune would log an error as its own failure and go on; a KeyboardInterrupt (a second Ctrl-C)
            # raised through Tune's loop skips its clean-up, which leaves the actors it keeps for reuse
            # alive in a cluster that outlives the driver (--address). No trial runs at this point.
            self.error = exc
            return []

    def _units(self) -> list[Trial | Stack]:
        if self.stopper.stop_all():
            return []
        tuned = study_state(self.plan, self.store)
        if tuned.missing:
            return []
        if self.printer.first_running is not None:
            self.tuning_first_trial_s = self.printer.first_running - self.stopper.start
        confirming = confirmation_start.start_confirmation(self.plan, self.store)
        if confirming is None:  # nothing completed to confirm (said): the confirmation is over
            self.started = time.monotonic()
            return []
        if self.stopper.stop_all():
            return []
        state = study_state(confirming, self.store)
        todo = [t for t in confirming.trials if not self.ctx.settled(_row_status(state, t.trial_id))]
        self.printer.next_phase(total=confirming.n_trials, recorded={
            t: s for t, s in state.statuses.items() if self.ctx.settled({"status": s})})
        self.confirming, self.started = confirming, time.monotonic()
        return self.units_of(todo)

    def outcome(self, options: RunOptions) -> RunOutcome:
        """Both phases' outcome, the confirmation's own inside (``confirmed``)."""
        assert self.started is not None
        tuned = _outcome(self.plan, self.store, options, self.stopper, None)
        if self.confirming is None:  # nothing to confirm
            confirmed = RunOutcome({}, True, stopped=self.stopper.reason, elapsed_s=time.monotonic() - self.started)
        else:
            confirmed = _outcome(self.confirming, self.store, options, self.stopper, None)
            first = self.printer.first_running
            confirmed = dataclasses.replace(confirmed, first_trial_s=None if first is None else first - self.started,
                                            elapsed_s=time.monotonic() - self.started)
        return RunOutcome(add_counts(tuned.counts, confirmed.counts), tuned.complete and confirmed.complete,
                          stopped=self.stopper.reason, first_trial_s=self.tuning_first_trial_s, confirmed=confirmed)


def _outcome(plan: Plan, store: ResultStore, options: RunOptions, stopper: StudyStopper,
             printer: ProgressPrinter | None) -> RunOutcome:
    """What a run left, from the recorded rows (``printer``: its progress, None when no Tune run started)."""
    state = study_state(plan, store)
    # failed trials being retried keep their old row until they end: cut short, they are not done either
    complete = state.missing == 0 and not (stopper.reason and options.retry_failed and state.failed)
    first = None if printer is None or printer.first_running is None else printer.first_running - stopper.start
    return RunOutcome(state.counts, complete, stopped=stopper.reason, first_trial_s=first)


def _trainable_of(plan: Plan) -> Callable[..., None]:
    """The function Tune runs per trial or stack: EMOE training, or its simulation (``simulate: true``)."""
    if plan.spec.simulated:
        from harness.tune.simulated import simulated_trainable
        return simulated_trainable
    return study_trainable


def _row_status(state: StudyState, trial_id: str) -> dict[str, str] | None:
    status = state.statuses.get(trial_id)
    return None if status is None else {"status": status}
