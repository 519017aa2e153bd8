"""The ``--dry-run`` cost estimate: the sum of named parts, the fixed costs (Ray's start, the workers,
each trial, the end, the report) included, and said for what it is. Nothing here times anything."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.run import main
from harness.study import cost as cost_module
from harness.study.cost import (
    CONFIRM_START_S,
    END_S,
    IMPORT_S,
    REPORT_S,
    SHARED_CORES,
    STARTUP_S,
    TRIAL_S,
    WARMUP_S,
    CostEstimate,
    busy_note,
    format_duration,
    sharing_factor,
)
from harness.study.describe import cost_text
from tests.harness.conftest import tiny_study


def _seconds(text: str) -> int:
    """Inverse of ``format_duration``: ``1h02m``, ``3m10s``, ``42s``."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert m and text, text
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s


def test_the_constants_are_positive_and_documented():
    for value in (IMPORT_S, STARTUP_S, WARMUP_S, TRIAL_S, END_S, REPORT_S):
        assert value > 0
    assert "bench/run_overheads.py" in Path(cost_module.__file__).read_text()


@pytest.mark.parametrize("report", [False, True])
def test_the_wall_clock_is_the_sum_of_its_parts_and_includes_the_start(report):
    est = CostEstimate(trials=12, epochs=8, epoch_s=1.2, slots=2, prepare_s=4.0, report=report)
    parts = est.parts
    assert est.wall_s >= sum(parts.values()) - 1e-9
    assert parts["training"] == pytest.approx(6 * 8 * 1.2)  # 6 waves of 2 trials, each up to 8 epochs
    assert parts["Ray and workers start"] >= STARTUP_S + WARMUP_S
    assert parts["driver start"] == pytest.approx(IMPORT_S + 4.0)
    assert parts["per-trial overhead"] == pytest.approx(6 * TRIAL_S)
    assert ("report" in parts) is report
    assert est.wall_s >= parts["training"] + STARTUP_S + END_S + (REPORT_S if report else 0)


def test_a_smoke_sized_study_is_not_estimated_at_zero():
    """The issue's case: a 22 s smoke study was estimated at '0 s' (its epochs alone)."""
    est = CostEstimate(trials=4, epochs=2, epoch_s=0.05, slots=2, prepare_s=1.0)
    assert est.wall_s >= STARTUP_S + WARMUP_S + END_S > 10


def test_an_unmeasured_estimate_still_counts_the_fixed_costs():
    est = CostEstimate(trials=4, epochs=2, epoch_s=None, slots=2)
    assert "training" not in est.parts and est.trial_time_s is None
    assert est.wall_s == pytest.approx(sum(est.fixed_parts.values())) and est.wall_s > STARTUP_S
    assert "step time not measured" in cost_text(est) and "Ray and workers start" in cost_text(est)


def test_the_printed_total_is_not_below_its_printed_parts():
    est = CostEstimate(trials=12, epochs=8, epoch_s=1.19, slots=2, prepare_s=3.2, report=True)
    text = cost_text(est)
    training = _seconds(re.search(r"2 at a time: (\S+);", text).group(1))
    fixed = _seconds(re.search(r"plus (\S+) of fixed costs", text).group(1))
    total = _seconds(re.search(r"about (\S+) wall-clock in all", text).group(1))
    assert total >= training + fixed - 1  # each figure is rounded to the second
    named = re.search(r"of fixed costs \((.*)\)", text).group(1)
    assert {"driver start", "Ray and workers start", "per-trial overhead", "end", "report"} <= {
        part.rsplit(" ", 1)[0] for part in named.split(", ")}
    assert "an upper bound: every trial counted at its max_epochs" in text
    assert format_duration(est.wall_s) in text


def test_a_busy_machine_is_named(monkeypatch):
    monkeypatch.setattr(cost_module.os, "getloadavg", lambda: (9.5, 9.0, 8.0))
    monkeypatch.setattr(cost_module.os, "cpu_count", lambda: 2)
    assert "load 9.5 on 2 cores" in busy_note()
    monkeypatch.setattr(cost_module.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    assert busy_note() is None


def test_the_dry_run_prints_the_fixed_costs(write_study, tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not be started"))
    study = tiny_study(report=True)
    assert main([str(write_study(study)), "--results", str(tmp_path / "r"), "--dry-run", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "Ray and workers start" in out and "report" in out and "driver start" in out
    fixed = _seconds(re.search(r"plus (\S+) of fixed costs", out).group(1))
    assert fixed >= STARTUP_S + WARMUP_S + END_S + REPORT_S - 1


def test_the_epoch_is_fitted_from_two_slices_training_and_evaluation_apart(monkeypatch):
    """Evaluation is not a fixed share of training: studies/distill_weight.yaml's epoch was estimated at
    0.50 s against 0.67 s measured when evaluation counted a third of training per sample (it costs
    about a thirteenth there). The per-sample training cost comes from two slices' difference."""
    def epoch(cfg, data, n_train, n_eval, threads, device="cpu"):  # a linear epoch: training, evaluation, per-epoch work
        return 0.002 * n_train + 0.0001 * 2 * n_eval + 0.01

    monkeypatch.setattr(cost_module, "_timed_epoch", epoch)
    cfg = SimpleNamespace(train=SimpleNamespace(batch_size=16, eval_batch_size=256))
    data = SimpleNamespace(train=range(1200), valid=range(300), test=range(300))
    expected = 0.002 * 1200 + (0.0001 * 512 + 0.01) * 600 / 512
    assert cost_module.measure_epoch_s(cfg, data) == pytest.approx(expected)  # type: ignore[arg-type]
    tiny = SimpleNamespace(train=range(16), valid=range(8), test=range(8))  # one batch: one slice
    assert cost_module.measure_epoch_s(cfg, tiny) == pytest.approx(epoch(cfg, tiny, 16, 8, 1))  # type: ignore[arg-type]


def test_trials_sharing_cores_or_a_gpu_are_counted_slower_and_a_confirmation_has_its_own_start():
    assert sharing_factor(1, 0) == (1.0, "")
    assert sharing_factor(2, 0) == (SHARED_CORES, f"x {SHARED_CORES:g} for trials sharing the cores")
    assert sharing_factor(8, 0.25)[0] == 4 and "4 trials taking turns on one GPU" in sharing_factor(8, 0.25)[1]
    assert sharing_factor(2, 0.25)[0] == 2 and sharing_factor(4, 1)[0] == 1 and sharing_factor(4, 2)[0] == 1
    shared = CostEstimate(trials=4, epochs=2, epoch_s=1.0, slots=2, sharing=SHARED_CORES, note="x 1.15 ...")
    assert shared.wave_epoch_s == pytest.approx(SHARED_CORES) and shared.trial_time_s == pytest.approx(8 * SHARED_CORES)
    assert "training and evaluation, x 1.15 ...)" in cost_text(shared)
    confirmed = CostEstimate(trials=4, epochs=2, epoch_s=1.0, slots=2, confirm_trials=2)
    assert confirmed.parts["confirmation start"] == CONFIRM_START_S and "confirmation start" not in shared.parts


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_trials_are_measured_on_the_gpu_when_the_driver_has_one(monkeypatch, cuda):
    """A GPU study's epochs timed on the CPU overstate them by one or two orders of magnitude: measure on
    the GPU where the dry run has one, and say so where it has none."""
    import torch

    devices = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))
    monkeypatch.setattr(cost_module, "measure_epoch_s", lambda cfg, data, **k: devices.append(k["device"]) or 1.0)
    cfg = SimpleNamespace(model=1, train=SimpleNamespace(batch_size=16, update_epochs=1, fast_path=True, window_forward=True, bf16=False,
                                                          max_epochs=3), loss=SimpleNamespace(task="regression"))
    est = cost_module.estimate_cost([cfg], None, trials=8, slots=4, threads=1, gpus_per_trial=0.25)  # type: ignore[arg-type]
    assert devices == ["cuda" if cuda else "cpu"] and est.sharing == 4
    assert ("on this machine's GPU" in est.note) is cuda
    assert ("GPU trials measured on this machine's CPU: they will be faster" in est.note) is not cuda
    cpu = cost_module.estimate_cost([cfg], None, trials=8, slots=2, threads=1)  # type: ignore[arg-type]
    assert devices[-1] == "cpu" and cpu.sharing == SHARED_CORES


@pytest.mark.parametrize("gpus_per_trial", [1.0, 0.5])
def test_the_dry_run_counts_the_machines_gpus_or_the_runtimes(monkeypatch, gpus_per_trial):
    """Parallel GPU trials: ``--num-gpus``, else this machine's GPUs (as Ray detects them), else (a dry run on
    a machine without a GPU) enough for one trial; before, a 1-GPU trial was assumed to run alone on any machine."""
    import harness.study.describe as describe
    from harness.study.data import load_study_data
    from harness.study.describe import plan_cost
    from harness.study.load import parse_spec
    from harness.study.plan import build_plan

    spec = parse_spec(tiny_study(resources={"cpus": 1, "gpus": gpus_per_trial}, concurrency=None))
    plan = build_plan(spec, load_study_data(spec.data))
    per_gpu = round(1 / gpus_per_trial)
    assert plan_cost(plan, measure=False, cpus=16, gpus=2).slots == 2 * per_gpu
    monkeypatch.setattr(describe, "local_gpus", lambda: 0)
    assert plan_cost(plan, measure=False, cpus=16).slots == per_gpu
    monkeypatch.setattr(describe, "local_gpus", lambda: 3)
    assert plan_cost(plan, measure=False, cpus=16).slots == 3 * per_gpu
    assert plan_cost(plan, measure=False, cpus=2).slots == 2  # the CPUs bound it


def test_a_step_that_fails_while_timed_is_a_warning_not_a_note(write_study, tmp_path, capsys, monkeypatch):
    """It read "(could not time a training step here: ...)", an aside easy to overlook although every trial
    may fail the same way. Still exit 0 (the data were checked before; the cause may be this machine)."""
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray must not be started"))

    def fail(cfg, data, **kwargs):
        raise IndexError("Target 5 is out of bounds.")

    monkeypatch.setattr(cost_module, "measure_epoch_s", fail)
    assert main([str(write_study(tiny_study())), "--results", str(tmp_path / "r"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("WARNING: a training step failed while being timed here (IndexError: Target 5 is out of bounds.); "
            "trials that fail the same way are recorded as failed") in out
    assert "cost: 4 trials x up to" in out and "(step time not measured)" in out
