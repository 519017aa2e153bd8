"""Confirmation on fresh seeds (``confirm:``): validation, the deterministic top-K choice, the confirmation
trials built from the rows, and, on Ray, a whole study with its confirmation, its resume and its report."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from harness.study.confirm import confirmation_trials, select_top, tuning_rows
from harness.study.data import load_study_data
from harness.study.errors import SpecError
from harness.study.load import parse_spec
from harness.study.plan import build_plan
from harness.tune.runner import RunOptions
from tests.harness.conftest import STUDIES, tiny_study


def test_confirmation_seeds_that_also_tune_are_refused_by_name() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_study(confirm={"top": 1, "seeds": [2, 7, 1]}))
    text = str(err.value)
    assert "confirm.seeds" in text and "[2, 1]" in text and "[1, 2]" in text


@pytest.mark.parametrize("confirm", [{"top": 0, "seeds": [7]}, {"top": 1, "seeds": []},
                                     {"top": 1, "seeds": [7, 7]}, {"seeds": [7], "topp": 1}])
def test_bad_confirm_blocks_are_refused(confirm: dict[str, object]) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(tiny_study(confirm=confirm))
    assert "confirm" in str(err.value)


@pytest.mark.parametrize("path", [p for p in STUDIES if "confirm" in yaml.safe_load(p.read_text())],
                         ids=lambda p: p.stem)
def test_shipped_confirmations_never_reuse_a_tuning_seed(path) -> None:
    spec = parse_spec(yaml.safe_load(path.read_text()))
    assert spec.confirm is not None and spec.confirm.top >= 1
    assert not set(spec.confirm.seeds) & set(spec.seeds)


def test_the_shipped_main_studies_confirm() -> None:
    assert {p.stem for p in STUDIES if "confirm" in yaml.safe_load(p.read_text())} >= {"hpo", "distill_weight"}


def _rows(**columns: list[object]) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_top_k_uses_completed_tuning_rows_means_over_seeds_and_breaks_ties_by_config_id() -> None:
    rows = _rows(
        config_id=["b", "b", "a", "a", "c", "c", "d", "e", "b"],
        seed=[1, 2, 1, 2, 1, 2, 1, 1, 9],
        status=["completed", "completed", "completed", "completed", "completed", "pruned", "failed",
                "completed", "completed"],
        objective=[0.5, 0.7, 0.6, 0.6, 0.1, 0.0, 0.0, np.nan, 0.0],
        phase=["tune"] * 8 + ["confirm"])
    # a and b tie at 0.6 (b's confirm row is not a tuning row); c's pruned seed is left out; d failed
    assert select_top(rows, k=3, mode="min") == ["c", "a", "b"]
    assert select_top(rows, k=1, mode="max") == ["a"]  # tie with b at 0.6, a first by id
    shuffled = rows.sample(frac=1.0, random_state=3)
    assert select_top(shuffled, k=3, mode="min") == select_top(rows, k=3, mode="min")
    old = rows.drop(columns="phase").iloc[:8]  # results written before the phase column: all tuning rows
    assert len(tuning_rows(old)) == 8 and select_top(old, k=2, mode="min") == ["c", "a"]


def test_confirmation_trials_rebuild_the_chosen_configurations_on_the_fresh_seeds_only() -> None:
    spec = parse_spec(tiny_study(grid={"loss.distill_weight": [0.0, 0.5, 1.0]}, confirm={"top": 2, "seeds": [7, 8]}))
    plan = build_plan(spec, load_study_data(spec.data))
    objective = {0.0: 0.3, 0.5: 0.1, 1.0: 0.2}
    rows = pd.DataFrame([{"trial_id": t.trial_id, "config_id": t.config_id, "variant": t.variant, "seed": t.seed,
                          "status": "completed", "phase": "tune", "loss.distill_weight": t.config.loss.distill_weight,
                          "objective": objective[t.config.loss.distill_weight]} for t in plan.trials])
    confirm = confirmation_trials(plan, rows)
    assert [t.config.loss.distill_weight for t in confirm] == [0.5, 1.0, 0.5, 1.0]  # seed-major, best first
    assert [t.seed for t in confirm] == [7, 7, 8, 8] and {t.phase for t in confirm} == {"confirm"}
    tuned = {t.config.loss.distill_weight: t for t in plan.trials}
    for t in confirm:
        assert t.config_id == tuned[t.config.loss.distill_weight].config_id and t.config.train.seed == t.seed
    assert not {t.seed for t in confirm} & set(spec.seeds)
    assert not {t.trial_id for t in confirm} & set(rows["trial_id"])


def test_a_confirmation_the_best_no_longer_needs_moves_aside(tmp_path, monkeypatch, capsys) -> None:
    """top: 1 confirmed 0.0 while the 0.5 trial of seed 2 had failed; --retry-failed then made 0.5 the best.
    The resume confirms 0.5, and 0.0's confirmation rows would have been reported as confirmed too (two
    confirmed configurations of a top-1 study): they move to quarantine/, kept."""
    import pyarrow as pa

    from harness.results.sink import ResultStore
    from harness.tune import confirmation
    from harness.tune.runner import RunOutcome

    spec = parse_spec(tiny_study(grid={"loss.distill_weight": [0.0, 0.5]}, confirm={"top": 1, "seeds": [7]}))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path / "results", spec.name)
    store.create("name: t\n", {"study": spec.name, "status": "running"})
    objective = {0.0: 0.3, 0.5: 0.1}  # after the retry, 0.5 is the best
    rows = [{"trial_id": t.trial_id, "config_id": t.config_id, "variant": t.variant, "seed": t.seed, "phase": "tune",
             "status": "completed", "objective": objective[t.config.loss.distill_weight]} for t in plan.trials]
    worst = next(t for t in plan.trials if t.config.loss.distill_weight == 0.0)
    old = dataclasses.replace(worst, trial_id="abcdefabcdef", seed=7, phase="confirm")  # the earlier confirmation
    rows.append({"trial_id": old.trial_id, "config_id": old.config_id, "variant": old.variant, "seed": 7,
                 "phase": "confirm", "status": "completed", "objective": 0.35})
    for row in rows:
        store.write_table("trials", row["trial_id"], pa.Table.from_pylist([row]))
        store.write_table("epochs", row["trial_id"], pa.table({"trial_id": [row["trial_id"]], "epoch": [1]}))
    ran: list[list[float]] = []
    monkeypatch.setattr(confirmation, "run_tune", lambda plan, *a, **k: (
        ran.append([t.config.loss.distill_weight for t in plan.trials]), RunOutcome({"completed": 1}, True))[1])
    confirmation.run_confirmation(plan, store, RunOptions(), "v", RunOutcome({"completed": 4}, True))
    assert ran == [[0.5]]
    left = store.read_trials()
    assert old.trial_id not in set(left["trial_id"]) and len(left) == 4  # the tuning rows stay
    (moved,) = (store.dir / "quarantine").iterdir()
    assert (moved / "trials" / f"{old.trial_id}.parquet").exists() and (moved / "epochs" / f"{old.trial_id}.parquet").exists()
    assert "no longer among the best 1" in (moved / "reasons.txt").read_text()
    assert "earlier confirmation trial(s) of distill_weight=0 moved to" in capsys.readouterr().out


def test_dry_run_counts_the_confirmation_trials_and_their_cost() -> None:
    from harness.study.cost import CostEstimate
    from harness.study.describe import describe_plan, plan_cost

    spec = parse_spec(tiny_study(confirm={"top": 5, "seeds": [7, 8, 9]}))  # top above the 2 points: both
    plan = build_plan(spec, load_study_data(spec.data))
    text = describe_plan(plan, measure=False)
    assert "the best 2 configuration(s)" in text and "= 6 confirmation trials" in text
    assert "4 + 6 confirmation trials" in text
    assert plan_cost(plan, measure=False).confirm_trials == 6
    cost = CostEstimate(trials=4, epochs=2, epoch_s=1.0, slots=2, confirm_trials=3)
    assert cost.waves == 2 + 2 and cost.parts["training"] == 4.0 and cost.parts["confirmation"] == 4.0
    assert cost.trial_time_s == 7 * 2 * 1.0 and "confirmation start" in cost.parts


def test_a_finished_pilot_gives_the_seeds_needed_to_tell_its_best_two_apart(tmp_path) -> None:
    from harness.pilot import pilot_seed_plan
    from tests.reports.conftest import write_grid

    pilot = write_grid(tmp_path / "pilot")
    text = pilot_seed_plan(pilot)
    assert text.startswith("seed plan from the finished pilot (3 seeds)") and "needs " in text
    assert f"python -m reports plan {pilot} --delta" in text
    assert "cannot be read" in pilot_seed_plan(tmp_path / "nothing")


@pytest.mark.slow
@pytest.mark.ray
def test_a_study_confirms_its_best_configurations_resumes_the_confirmation_and_reports_it(
        ray_cluster, write_study, tmp_path, capsys) -> None:
    from harness.run import main
    from reports.build import build_report
    from reports.load import load_study
    from reports.predictions import load_predictions

    results = tmp_path / "results"
    spec = write_study(tiny_study(name="conf", grid={"loss.distill_weight": [0.0, 0.5, 1.0]},
                                  confirm={"top": 2, "seeds": [7, 8]}))
    assert main([str(spec), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    study = results / "conf"
    trials = pd.read_parquet(study / "trials")
    tune, confirm = trials[trials["phase"] == "tune"], trials[trials["phase"] == "confirm"]
    assert len(tune) == 6 and len(confirm) == 4 and (trials["status"] == "completed").all()
    assert set(confirm["seed"]) == {7, 8} and not set(confirm["seed"]) & set(tune["seed"])
    assert set(confirm["config_id"]) == set(select_top(trials, k=2, mode="min"))
    assert "confirmation, mean ± std over the tuning seeds" in out
    info = json.loads((study / "study.json").read_text())
    assert info["status"] == "finished" and info["counts"] == {"completed": 10}
    # where the run's time went: both phases, each with the wait for its first running trial
    t = info["timings"]
    assert 0 < t["tuning_first_trial_s"] < t["tuning_s"] and 0 <= t["confirm_first_trial_s"] < t["confirm_s"]
    top = sum(v for k, v in t.items() if k not in ("total_s", "tuning_first_trial_s", "confirm_first_trial_s"))
    assert {"prepare_s", "ray_start_s", "ray_stop_s", "summary_s"} <= set(t) and top <= t["total_s"] + 0.05
    assert re.search(r"^time: [\d.]+ s \(prepare [\d.]+ s, Ray start [\d.]+ s, tuning [\d.]+ s \(first trial running "
                     r"after [\d.]+ s\), confirmation [\d.]+ s \(first trial running after [\d.]+ s\), summary", out, re.M)

    # predictions: once per trial, both phases and splits; their per-sample MAE is the row's valid/test_mae
    preds = pd.read_parquet(study / "predictions")
    assert set(preds["trial_id"].astype(str)) == set(trials["trial_id"])
    assert preds["prediction"].dtype == np.float32 and isinstance(preds["trial_id"].dtype, pd.CategoricalDtype)
    assert not preds.duplicated(["trial_id", "split", "sample"]).any()
    for split in ("valid", "test"):
        part = preds[preds["split"] == split]
        err = (part["prediction"].astype(float) - part["label"].astype(float)).abs()
        mae = err.groupby(part["trial_id"].astype(str)).mean()
        row_mae = trials.set_index("trial_id")[f"{split}_mae"]
        assert np.allclose(mae.loc[row_mae.index], row_mae, atol=1e-5), split
    assert (preds.groupby(preds["trial_id"].astype(str))["phase"].first().astype(str)
            == trials.set_index("trial_id")["phase"]).all()

    # the driver died during the confirmation: its Tune state and rows are gone; --resume finishes it with
    # the same configurations and seeds, and trains no tuning trial again
    tune_files = {p.name: p.stat().st_mtime_ns for p in (study / "trials").iterdir()
                  if p.stem in set(tune["trial_id"])}
    # the confirmation ran in the tuning phase's Tune run (tune/), on the actors its trials left
    assert not (study / "tune-confirm").exists()
    for folder in (study / "tune").glob("trial_*"):
        if any(tid in (folder / "trial.json").read_text() for tid in confirm["trial_id"]):
            shutil.rmtree(folder)
    for tid in confirm["trial_id"]:
        for table in ("trials", "epochs", "router", "predictions"):
            (study / table / f"{tid}.parquet").unlink()
    info["status"] = "running"
    (study / "study.json").write_text(json.dumps(info))
    assert main([str(spec), "--results", str(results), "--resume"]) == 0
    again = pd.read_parquet(study / "trials")
    assert set(again.loc[again["phase"] == "confirm", "trial_id"]) == set(confirm["trial_id"])
    assert {p.name: p.stat().st_mtime_ns for p in (study / "trials").iterdir()
            if p.stem in set(tune["trial_id"])} == tune_files

    # reports: tuning rows apart, confirmation quoted and compared
    loaded = load_study(study)
    assert len(loaded.trials) == 6 and len(loaded.confirm) == 4
    assert set(load_predictions(loaded)["trial_id"]) == set(tune["trial_id"])
    written = {p.name for p in build_report(study, out=tmp_path / "report", formats=("png",))}
    assert {"confirmation.png", "confirmation.md", "results.md", "results_confirmed.md"} <= written
    results_md = (tmp_path / "report" / "tables" / "results_confirmed.md").read_text()
    assert "Confirmed on fresh seeds [7, 8]" in results_md


@pytest.mark.ray
def test_a_grid_confirms_in_its_tuning_run_on_an_actor_a_tuning_trial_leaves(ray_cluster, write_study, tmp_path,
                                                                              monkeypatch) -> None:
    """The confirmation of a grid starts on a worker process the tuning phase already has (Python, torch
    and Ray Tune imported; on a GPU, CUDA up) instead of a Tune run of its own, whose new processes cost
    about 6 s on an H200 machine. Tune reports each result's process id (``pid``)."""
    from harness.run import main
    from harness.tune import runner

    pids: dict[str, set[int]] = {"tune": set(), "confirm": set()}
    reconcile = runner.reconcile

    def note_pids(ctx, results):
        results = list(results)
        for result in results:
            unit = (result.config or {}).get("trial")
            if unit is not None and (result.metrics or {}).get("pid"):
                pids[unit.phase].add(int(result.metrics["pid"]))
        return reconcile(ctx, results)

    monkeypatch.setattr(runner, "reconcile", note_pids)
    spec = write_study(tiny_study(name="reuse", grid={"loss.distill_weight": [0.0, 0.5]}, seeds=[1],
                                  confirm={"top": 1, "seeds": [7]}))
    assert main([str(spec), "--results", str(tmp_path / "results")]) == 0
    assert len(pids["tune"]) >= 1 and len(pids["confirm"]) == 1
    assert pids["confirm"] <= pids["tune"]
    assert not (tmp_path / "results" / "reuse" / "tune-confirm").exists()


def test_a_resume_finds_confirmation_checkpoints_under_either_tune_folder(tmp_path) -> None:
    """A grid confirms in its tuning phase's Tune run (``tune/``); a search, or a resume whose tuning phase
    was over, in ``tune-confirm/``. A resume looks in both, and a trial found in both keeps every checkpoint,
    the one with the most epochs first."""
    from harness.results.sink import ResultStore
    from harness.tune.resume import describe_tune_trial
    from harness.tune.runner import _earlier

    spec = parse_spec(tiny_study(grid={"loss.distill_weight": [0.0, 0.5]}, seeds=[1], confirm={"top": 1, "seeds": [7]}))
    plan = build_plan(spec, load_study_data(spec.data))
    store = ResultStore(tmp_path / "results", spec.name)
    a, b = (dataclasses.replace(t, phase="confirm") for t in plan.trials)
    layout = {("tune", "trial_a"): (a, 3), ("tune-confirm", "trial_b"): (b, 2), ("tune-confirm", "trial_a2"): (a, 5)}
    for (where, name), (trial, epochs) in layout.items():
        folder = store.dir / where / name
        describe_tune_trial(folder, trial)
        own = folder / "checkpoint_000001"
        own.mkdir()
        (own / "state.pt").write_bytes(b"x")
        (own / "meta.json").write_text(json.dumps({"epochs": [{}] * epochs}))
    found = _earlier(store)
    assert set(found) == {a.trial_id, b.trial_id}
    assert [e for e, _ in found[a.trial_id].checkpoints] == [5, 3]
    assert [e for e, _ in found[b.trial_id].checkpoints] == [2]


@pytest.mark.ray
def test_a_grid_with_nothing_completed_says_so_once_and_confirms_nothing(ray_cluster, write_study, tmp_path,
                                                                        capsys) -> None:
    """Every tuning trial diverges (simulated, learning rate past the curves' divergence): the confirmation,
    decided in the tuning phase's Tune run, has nothing to confirm, says it once and runs no Tune run of
    its own."""
    from harness.run import EXIT_NONE_COMPLETED, main
    from harness.tune.curves import DIVERGE_LR

    study = tiny_study(name="none", simulate=True, seeds=[1], confirm={"top": 1, "seeds": [7]})
    study["base"]["train"].update(lr=DIVERGE_LR * 10, max_epochs=4)  # each diverges by its 3rd epoch
    assert main([str(write_study(study)), "--results", str(tmp_path / "results")]) == EXIT_NONE_COMPLETED
    out = capsys.readouterr().out
    assert out.count("confirm: no completed configuration to confirm") == 1
    trials = pd.read_parquet(tmp_path / "results" / "none" / "trials")
    assert set(trials["status"]) == {"diverged"} and set(trials["phase"]) == {"tune"}
    assert not (tmp_path / "results" / "none" / "tune-confirm").exists()
