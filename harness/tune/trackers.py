"""Ray Tune logger callbacks that show a study's trials in MLflow, TensorBoard and Weights & Biases.

Each is Ray's own integration (``MLflowLoggerCallback``, ``TBXLoggerCallback``, ``WandbLoggerCallback``)
told what a harness trial is: one run per trial, named ``<variant>-seed<seed>``, whose parameters are the
flattened EMOE configuration (the ``trials/`` table's config columns, not Tune's internal config), tagged
with study, trial, configuration, variant and seed; every epoch's metrics under their ``epochs/`` column
names at step = epoch; and when the trial settles, its selected-epoch metrics (``selected/valid_mae``, ...)
and status from its ``trials/`` row. The study is the MLflow experiment / W&B group. A stack
(``resources.stack``) is one Tune trial but each member gets its own run, fed from the member's own
metrics in the stack's reports (``tracked_runs``: the key of a member's run is a ``MemberRun``).

A tracker that fails while the study runs (server down, store unwritable) prints one warning and is off
for the rest of the run: trials go on, and the Parquet results, the study's record, lose nothing.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem, _WandbLoggingActor
from ray.tune.logger import LoggerCallback, TBXLoggerCallback

from harness.results.rows import Cell, config_columns
from harness.results.sink import ResultStore
from harness.study.stacks import Stack
from harness.study.tracking import TrackingSpec, mlflow_uri
from harness.study.trial import Trial
from harness.tune.stacked import member_metrics

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial as TuneTrial
    from tensorboardX import SummaryWriter

__all__ = [
    "MLflowTracker",
    "MemberRun",
    "TensorBoardTracker",
    "WandbTracker",
    "WrittenOutLoggingActor",
    "epoch_metrics",
    "run_name",
    "run_params",
    "run_result",
    "run_tags",
    "selected_metrics",
    "tracked_runs",
    "tracking_callbacks",
    "trial_of",
]

#: Prefixes and names of the per-epoch metrics a trial reports (the ``epochs/`` table's metric columns).
EPOCH_PREFIXES = ("train_", "valid_", "test_", "w_")
EPOCH_NAMES = ("lr", "time_s", "objective")
TAG_FIELDS = ("study", "trial_id", "config_id", "variant", "seed")
#: A Tune result: what the trainable reported plus Ray's own entries (``config``, timings...).
Result = Mapping[str, object]


def trial_of(tune_trial: TuneTrial) -> Trial | None:
    """The harness ``Trial`` a Tune trial runs (``config["trial"]``), or None for a trial that is not
    one of a harness study's (the trackers then leave it alone)."""
    config = getattr(tune_trial, "config", None) or {}
    trial = config.get("trial")
    return trial if isinstance(trial, Trial) else None


@dataclass(frozen=True)
class MemberRun:
    """The key of a stack member's run in a tracker's per-run tables: the Tune trial that trains the stack
    and the member's trial id (a single trial's run is keyed by its Tune trial itself)."""

    tune_trial: Any
    trial_id: str

    @property
    def local_path(self) -> str | None:
        """The stack's Tune folder (where W&B starts a member's logging actor)."""
        return getattr(self.tune_trial, "local_path", None)


def tracked_runs(tune_trial: TuneTrial) -> list[tuple[Hashable, Trial]]:
    """(run key, planned trial) of every run a Tune trial feeds: one for a trial, one per member of a stack,
    none for a trial that is not a harness study's."""
    unit = (getattr(tune_trial, "config", None) or {}).get("trial")
    if isinstance(unit, Trial):
        return [(tune_trial, unit)]
    if isinstance(unit, Stack):
        return [(MemberRun(tune_trial, m.trial_id), m) for m in unit.members]
    return []


def run_result(key: Hashable, result: Result) -> Result | None:
    """The part of a Tune result that belongs to the run ``key``: the result itself, or a stack member's
    own metrics in it (None when the stack reported nothing for that member this time)."""
    if isinstance(key, MemberRun):
        return member_metrics(result, key.trial_id)
    return result


def _epoch_of(key: Hashable, result: Result) -> tuple[int, dict[str, float]] | None:
    own = run_result(key, result)
    return None if own is None else epoch_metrics(own)


def run_name(trial: Trial) -> str:
    """A trial's run name in the trackers: its variant (configuration label) and seed."""
    return f"{trial.variant}-seed{trial.seed}"


def run_params(trial: Trial) -> dict[str, Cell]:
    """The trial's resolved EMOE configuration as the ``trials/`` table's config columns hold it."""
    return config_columns(trial)


def run_tags(trial: Trial) -> dict[str, str]:
    """Tags that find a trial's run again: study, trial id, configuration id, variant and seed."""
    return {k: str(getattr(trial, k)) for k in TAG_FIELDS}


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v) if math.isfinite(v) else None


def epoch_metrics(result: Result) -> tuple[int, dict[str, float]] | None:
    """(epoch, metrics) of one reported epoch, or None for a result that is not an epoch's."""
    epoch = result.get("epoch")
    if result.get("resumed_finished") or not isinstance(epoch, int):
        return None
    metrics = {k: x for k, v in result.items()
               if (k.startswith(EPOCH_PREFIXES) or k in EPOCH_NAMES) and (x := _number(v)) is not None}
    return epoch, metrics


def selected_metrics(row: Mapping[str, Cell] | None) -> dict[str, float]:
    """A settled trial's selected-epoch metrics from its ``trials/`` row, as ``selected/<column>``."""
    if not row:
        return {}
    keys = [k for k in row if k.startswith(("valid_", "test_"))] + ["objective", "best_epoch", "epochs_run"]
    return {f"selected/{k}": x for k in keys if (x := _number(row.get(k))) is not None}


class _Guarded:
    """Mixin: a tracker that raises warns once and turns itself off; the study never fails for it."""

    name = "tracker"
    store: ResultStore

    def _guard(self, hook: str, *args: object, **kwargs: object) -> None:
        self._safely(getattr(super(), hook), *args, **kwargs)

    def _safely(self, fn: Callable[..., object], *args: object, **kwargs: object) -> None:
        if getattr(self, "_broken", False):
            return
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            self._broken = True
            print(f"warning: tracking: {self.name} failed ({type(exc).__name__}: {exc}); it is off for the "
                  f"rest of this run; trials go on and their results are in {self.store.dir}",
                  file=sys.stderr, flush=True)

    def setup(self, *args: object, **kwargs: object) -> None:
        self._guard("setup", *args, **kwargs)

    def on_trial_start(self, *args: object, **kwargs: object) -> None:
        self._guard("on_trial_start", *args, **kwargs)

    def on_trial_result(self, *args: object, **kwargs: object) -> None:
        self._guard("on_trial_result", *args, **kwargs)

    def on_trial_complete(self, *args: object, **kwargs: object) -> None:
        self._guard("on_trial_complete", *args, **kwargs)

    def on_trial_error(self, *args: object, **kwargs: object) -> None:
        self._guard("on_trial_error", *args, **kwargs)

    def on_experiment_end(self, *args: object, **kwargs: object) -> None:
        self._safely(self._end_open_runs, args[0] if args else kwargs.get("trials"))
        self._guard("on_experiment_end", *args, **kwargs)

    def _end_open_runs(self, trials: object) -> None:
        """End the runs still open as the study ends (``open_runs``), with their rows, else as interrupted."""
        for key, planned in open_runs(trials, self._is_open):
            self._end_run(key, planned, False, missing=OPEN_AT_END)

    def _is_open(self, key: Hashable) -> bool:
        """Whether this tracker holds an open run for ``key`` (none by default)."""
        return False

    def _end_run(self, key: Hashable, planned: Trial, failed: bool, missing: str = "unknown") -> None:
        """End the run of ``key`` with its trial's status and selected metrics (the trackers that own runs)."""

    def _row(self, trial: Trial) -> dict[str, Cell] | None:
        return self.store.read_trial(trial.trial_id)

    def _ending(self, planned: Trial, failed: bool, missing: str = "unknown") -> tuple[dict[str, float], str]:
        """What a run ends with: its trial's selected metrics and status, from the trial's row."""
        row = self._row(planned)
        return selected_metrics(row), _status(row, failed, missing)


class _RunsPerTrial(_Guarded):
    """Mixin of the trackers that end a trial's runs themselves (``_end_run``) when Tune ends the trial."""

    def log_trial_end(self, trial: TuneTrial, failed: bool = False) -> None:
        for key, planned in tracked_runs(trial):
            self._end_run(key, planned, failed)


def _status(row: Mapping[str, Cell] | None, failed: bool, missing: str = "unknown") -> str:
    """A run's status: its trial's row's, else failed, else ``missing`` ("interrupted" for a run still open
    when the study ends: Tune stopped its trial without completing it)."""
    return str(row["status"]) if row else ("failed" if failed else missing)


#: The status a run still open at the end of a study gets when its trial has no row.
OPEN_AT_END = "interrupted"


def open_runs(trials: object, is_open: Callable[[Hashable], bool]) -> list[tuple[Hashable, Trial]]:
    """(run key, planned trial) of the runs still open when a study ends: trials Tune stopped without
    completing (Ctrl-C, the time budget), or whose completion it had not processed yet (their row may say
    completed). Each tracker ends them from the row, so no run stays open forever."""
    return [(key, planned) for t in (trials if isinstance(trials, list) else []) for key, planned in tracked_runs(t)
            if is_open(key)]


class MLflowTracker(_RunsPerTrial, MLflowLoggerCallback):
    """One MLflow run per trial in the study's experiment (Ray's callback, logging in batches)."""

    name = "mlflow"

    def __init__(self, store: ResultStore, *, tracking_uri: str | None, experiment_name: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name)
        self.store = store

    def _client(self) -> MlflowClient:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def log_trial_start(self, trial: TuneTrial) -> None:
        for key, planned in tracked_runs(trial):
            if key not in self._trial_runs:  # a retried trial goes on logging to its run
                self._start_run(key, planned)

    def _start_run(self, key: Hashable, planned: Trial) -> None:
        from mlflow.entities import Param

        client = self._client()
        # the study's start time tells this study from an earlier one of the same name and folder (deleted
        # and run again: trial ids are the same), whose runs must not be continued
        tags = {**run_tags(planned), "results_dir": str(self.store.dir), "study_created_at": self._created_at()}
        previous = self._previous_run(client, tags)
        if previous is not None:  # the trial of a resumed study (or a retried failed one) continues its run
            client.update_run(previous, status="RUNNING")
            self._trial_runs[key] = previous
            return
        run = client.create_run(self._experiment_id(), run_name=run_name(planned), tags=tags)
        params = [Param(k, str(v)) for k, v in run_params(planned).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            client.log_batch(run.info.run_id, params=params[i:i + 100])
        self._trial_runs[key] = run.info.run_id

    def _created_at(self) -> str:
        """When the study (this instance of its folder) was created: study.json's ``created_at``, read once
        (it does not change while the study runs; not once per trial)."""
        if getattr(self, "_created", None) is None:
            try:
                self._created = str(self.store.read_info().get("created_at", ""))
            except (OSError, ValueError):
                return ""
        return str(self._created)

    def _experiment_id(self) -> str:
        """The study's experiment, which ``setup`` found or created."""
        experiment_id = self.mlflow_util.experiment_id
        if experiment_id is None:
            raise RuntimeError("the MLflow experiment was not set up")
        return str(experiment_id)

    def _previous_run(self, client: MlflowClient, tags: dict[str, str]) -> str | None:
        """The run this trial logged to in an earlier run (a resume) of this very study, if any."""
        keys = ("trial_id", "results_dir", "study_created_at")
        if any("'" in tags[k] for k in keys):
            return None  # not expressible in a filter string; start a new run
        query = " and ".join(f"tags.{k} = '{tags[k]}'" for k in keys)
        try:
            runs = client.search_runs([self._experiment_id()], filter_string=query, max_results=1)
        except Exception:  # a store that cannot search: a new run is still right
            return None
        return str(runs[0].info.run_id) if runs else None

    def _log(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._client().log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_trial_result(self, iteration: int, trial: TuneTrial, result: dict[str, object]) -> None:
        for key, _ in tracked_runs(trial):
            found = _epoch_of(key, result)
            if found is not None and key in self._trial_runs:
                self._log(self._trial_runs[key], found[1], found[0])

    def _is_open(self, key: Hashable) -> bool:
        return key in self._trial_runs

    def _end_run(self, key: Hashable, planned: Trial, failed: bool, missing: str = "unknown") -> None:
        run_id = self._trial_runs.pop(key, None)
        if run_id is None:
            return
        selected, status = self._ending(planned, failed, missing)
        if selected:
            self._log(run_id, selected, int(selected.get("selected/best_epoch", 0)))
        client = self._client()
        client.set_tag(run_id, "status", status)
        client.set_terminated(run_id, {"failed": "FAILED", OPEN_AT_END: "KILLED"}.get(status, "FINISHED"))


def _hparam(v: Cell) -> str | bool | int | float:
    return v if isinstance(v, str | bool | int | float) else str(v)


class TensorBoardTracker(_RunsPerTrial, TBXLoggerCallback):
    """TensorBoard event files per trial in ``<logdir>/<trial_id>/``: scalars per epoch, hparams at the end."""

    name = "tensorboard"

    def __init__(self, store: ResultStore, logdir: str | Path):
        super().__init__()
        self.store = store
        self.logdir = Path(logdir)
        self._writers: dict[Hashable, SummaryWriter] = {}  # by run key (a stack has one per member)

    def log_trial_start(self, trial: TuneTrial) -> None:
        for key, planned in tracked_runs(trial):
            if key not in self._writers:
                self._writers[key] = self._summary_writer_cls(str(self.logdir / planned.trial_id), flush_secs=30)

    def log_trial_result(self, iteration: int, trial: TuneTrial, result: dict[str, object]) -> None:
        for run, _ in tracked_runs(trial):
            found = _epoch_of(run, result)
            writer = self._writers.get(run)
            if found is None or writer is None:
                continue
            step, metrics = found
            for key, value in metrics.items():
                writer.add_scalar(key, value, global_step=step)
            writer.flush()

    def _is_open(self, key: Hashable) -> bool:
        return key in self._writers

    def _end_run(self, key: Hashable, planned: Trial, failed: bool, missing: str = "unknown") -> None:
        writer = self._writers.pop(key, None)
        if writer is None:
            return
        from tensorboardX.summary import hparams

        selected, status = self._ending(planned, failed, missing)
        step = int(selected.get("selected/best_epoch", 0))
        for key, value in selected.items():
            writer.add_scalar(key, value, global_step=step)
        params = {k: _hparam(v) for k, v in {**run_params(planned), **run_tags(planned)}.items()}
        params["status"] = status
        for summary in hparams(hparam_dict=params, metric_dict=selected):
            writer.file_writer.add_summary(summary)
        writer.close()


#: Temporary directories W&B makes as its modules are imported (module, attribute path), to be removed by a
#: finalizer at the interpreter's exit.
_WANDB_TEMP_DIRS = (("wandb.sdk.data_types._private", "MEDIA_TMP"), ("wandb.sdk.artifacts.artifact", "Artifact._TMP_DIR"))


def remove_wandb_temp_dirs() -> None:
    """Remove the temporary directories W&B made in this process (media and artifact staging). Its finalizer
    removes them only at a normal interpreter exit, which a killed Ray actor never reaches: each trial's
    logging actor left two empty directories in the system's temporary directory, 20 000 for a sweep of
    10 000 trials. Call it when the process has no W&B run left to write."""
    for module_name, path in _WANDB_TEMP_DIRS:
        obj: object = sys.modules.get(module_name)
        for attr in path.split("."):
            obj = getattr(obj, attr, None)
        if isinstance(obj, tempfile.TemporaryDirectory):
            with contextlib.suppress(OSError):
                obj.cleanup()


class WrittenOutLoggingActor(_WandbLoggingActor):
    """Ray's W&B logging actor, whose ``run`` returns only once the run is written out.

    ``wandb.finish()`` returns while W&B's service process may still be writing the run (an offline run's
    file, an upload); the service is torn down, and waited for, only by an ``atexit`` hook of the actor's
    process, which Ray's kill skips and which may still be running when a graceful exit is reported. Here
    ``run`` tears the service down itself, so when its result arrives the run is complete on disk (or
    uploaded) and the actor can be killed at once; W&B's temporary directories go with it
    (``remove_wandb_temp_dirs``).
    """

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._wandb.teardown()
            remove_wandb_temp_dirs()


class WandbTracker(_Guarded, WandbLoggerCallback):
    """One W&B run per trial, grouped by study (Ray's callback: a logging actor per trial on the driver)."""

    name = "wandb"
    _logger_actor_cls = WrittenOutLoggingActor

    #: Seconds the end of a study waits for the trials' W&B runs to be written out or uploaded (then their
    #: actors are killed, and what they had not written is lost; the study's own results are complete).
    EXIT_TIMEOUT_S = 600

    def __init__(self, store: ResultStore, *, project: str, group: str, mode: str, entity: str | None = None,
                 dir: str | None = None):
        """``mode``, ``entity`` and ``dir`` go to ``wandb.init`` (None: W&B's default, e.g. ``$WANDB_DIR``)."""
        super().__init__(project=project, group=group, mode=mode, entity=entity, dir=dir,
                         upload_timeout=self.EXIT_TIMEOUT_S)
        self.kwargs = {k: v for k, v in self.kwargs.items() if v is not None}  # unset: wandb.init's default
        self.store = store
        self._last_step: dict[Hashable, int] = {}

    def _end_open_runs(self, trials: object) -> None:
        """Tell every run still open to end before the wait for the runs to be written: Tune stops the running
        trials of an interrupted study (Ctrl-C, the time budget) without completing them, so their runs
        never got END; their actors would wait out ``EXIT_TIMEOUT_S`` and be killed with the run unwritten.
        Each gets its status (interrupted, or its row's) and selected metrics first."""
        queues: dict[Any, Any] = self._trial_queues  # keyed by run (a stack member's too)
        for key, planned in open_runs(trials, lambda k: k in queues):
            with contextlib.suppress(Exception):  # a queue whose actor is gone: nothing to end
                queues[key].put((_QueueItem.RESULT, self._final(key, planned, False, OPEN_AT_END)))
        for run in list(queues):
            with contextlib.suppress(Exception):
                self._signal_logging_actor_stop(run)

    def setup(self, *args: object, **kwargs: object) -> None:
        if self.kwargs.get("mode") == "offline":
            return  # no API key needed, nothing to look up
        super().setup(*args, **kwargs)

    def log_trial_start(self, trial: TuneTrial) -> None:
        runs = [(key, planned) for key, planned in tracked_runs(trial) if key not in self._trial_logging_futures]
        if runs:
            trial.init_local_path()  # the logging actors start in the trial's directory
        for key, planned in runs:
            config = {**run_tags(planned), **run_params(planned)}
            tags = [f"variant:{planned.variant}"[:64], f"seed:{planned.seed}"[:64], f"config:{planned.config_id}"]
            init = {"name": run_name(planned), "group": self.group, "project": self.project, "config": config,
                    "tags": tags, "allow_val_change": True, **self.kwargs}
            self._start_logging_actor(key, [], **init)  # type: ignore[arg-type]  # a MemberRun has local_path

    def log_trial_result(self, iteration: int, trial: TuneTrial, result: dict[str, object]) -> None:
        for key, _ in tracked_runs(trial):
            found = _epoch_of(key, result)
            if found is None or key not in self._trial_queues:
                continue
            step, metrics = found
            self._last_step[key] = step
            self._trial_queues[key].put((_QueueItem.RESULT, {**metrics, "training_iteration": step}))

    def log_trial_end(self, trial: TuneTrial, failed: bool = False) -> None:
        for key, planned in tracked_runs(trial):
            if key not in self._trial_queues:
                continue
            self._trial_queues[key].put((_QueueItem.RESULT, self._final(key, planned, failed)))
            super().log_trial_end(key, failed)

    def _final(self, key: Hashable, planned: Trial, failed: bool, missing: str = "unknown") -> dict[str, object]:
        """A run's last record: the selected metrics and the status, from its trial's row."""
        selected, status = self._ending(planned, failed, missing)
        return {**selected, "training_iteration": self._last_step.pop(key, 0), "config": {"status": status}}


def tracking_callbacks(tracking: TrackingSpec | None, store: ResultStore) -> list[LoggerCallback]:
    """The Ray Tune callbacks that log the study's trials to its trackers (none without ``tracking``)."""
    if tracking is None:
        return []
    study = store.study
    callbacks: list[LoggerCallback] = []
    if tracking.mlflow is not None:
        callbacks.append(MLflowTracker(store, tracking_uri=mlflow_uri(tracking.mlflow),
                                       experiment_name=tracking.mlflow.experiment or study))
    if tracking.tensorboard:
        callbacks.append(TensorBoardTracker(store, store.dir / "tensorboard"))
    if tracking.wandb is not None:
        w = tracking.wandb
        run_dir = None if os.environ.get("WANDB_DIR") else str(store.dir)  # offline runs: results/<study>/wandb/
        callbacks.append(WandbTracker(store, project=w.project, group=study, mode=w.mode, entity=w.entity or None,
                                      dir=run_dir))
    return callbacks
