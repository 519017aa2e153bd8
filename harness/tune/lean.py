"""Keep Tune's per-trial bookkeeping in the driver small: what a 10 000-trial study holds for its whole run.

Tune keeps every trial of an experiment in the driver until the end, and with it, per trial, the last
result and running statistics of every numeric metric it reported (``Trial.run_metadata``): max, min,
mean and last, plus the means of the last 5 and the last 10 values, each window a ``deque`` per metric.
Measured with tracemalloc on a simulated study (bench/README.md, "Scale"), those windows were about two
thirds of what the driver allocated per trial (53 of 84 KB), and nothing in the harness reads them: its
schedulers decide on each result as it comes, its recorder and progress printer read the last result,
and it never asks Tune for a best trial by a windowed scope. Each result also carries a copy of the
trial's configuration (``config``, the whole ``Trial`` with its nested EMOE configuration, unpickled
afresh in the driver for every result), which Tune keeps as the last result's and writes, pickled, into
every experiment snapshot beside the trial's own config.

``LeanTrials`` is a Tune callback that, for each trial when it starts, turns the windows off (the
``last-5-avg``/``last-10-avg`` entries are then absent; max, min, avg and last stay), and replaces each
result's ``config`` by the trial's own (equal content, the driver's one object) before Tune stores it
(Tune lets callbacks change a result in place there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ray import tune

if TYPE_CHECKING:
    from ray.tune.experiment import Trial as TuneTrial

__all__ = ["LeanTrials", "drop_metric_windows"]


def drop_metric_windows(trial: TuneTrial) -> bool:
    """Turn off a Tune trial's windowed running means (``last-N-avg``); False when this Ray has no such
    setting (``_TrainingRunMetadata._n_steps``), which then keeps them as before."""
    metadata = getattr(trial, "run_metadata", None)
    if metadata is None or not hasattr(metadata, "_n_steps") or not hasattr(metadata, "metric_n_steps"):
        return False
    metadata._n_steps = ()
    return True


class LeanTrials(tune.Callback):
    """Tune callback: no metric windows per trial, and one config object per trial instead of one per result."""

    def on_trial_start(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial, **info: object) -> None:
        drop_metric_windows(trial)

    def on_trial_result(self, iteration: int, trials: list[TuneTrial], trial: TuneTrial,
                        result: dict[str, object], **info: object) -> None:
        if "config" in result and result["config"] == trial.config:
            result["config"] = trial.config  # the trial's own object: the unpickled copy is freed
