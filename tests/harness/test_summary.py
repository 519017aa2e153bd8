"""End-of-study summary: per configuration mean and std over seeds, best configuration first."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.results.summary import best_configuration, format_summary, summarize


def _trials() -> pd.DataFrame:
    rows = []
    for cid, variant, values, w in (("a", "dw=0", [1.0, 1.2, None], 0.0), ("b", "dw=1", [0.8, 0.9, 1.0], 1.0)):
        for seed, v in zip((1, 2, 3), values):
            rows.append({"config_id": cid, "variant": variant, "seed": seed, "loss.distill_weight": w,
                         "status": "pruned" if v is None else "completed", "objective": v,
                         "test_mae": None if v is None else v + 0.1})
    return pd.DataFrame(rows)


def test_summary_is_mean_and_std_over_seeds_best_first():
    table = summarize(_trials(), mode="min")
    assert list(table.index) == ["b", "a"]
    assert table.loc["b", "objective_mean"] == pytest.approx(0.9)
    assert table.loc["b", "objective_std"] == pytest.approx(0.1)
    assert table.loc["a", "objective_mean"] == pytest.approx(1.1)  # the pruned seed is not averaged
    assert table.loc["a", "pruned"] == 1 and table.loc["a", "completed"] == 2
    assert list(summarize(_trials(), mode="max").index) == ["a", "b"]


def test_best_configuration_and_text():
    best = best_configuration(_trials(), mode="min", varied=["loss.distill_weight"])
    assert best["variant"] == "dw=1" and best["params"] == {"loss.distill_weight": 1.0}
    text = format_summary(_trials(), objective="valid_mae", mode="min", varied=["loss.distill_weight"])
    assert text.splitlines()[0] == "best configuration (mean over seeds): dw=1 (loss.distill_weight=1.0) — valid_mae 0.9000 ± 0.1000"
    assert "1.0000 ± 0.1000" in text  # test_mae of the best
    assert format_summary(pd.DataFrame(), objective="valid_mae", mode="min", varied=[]) == "no trials recorded"


def test_the_best_is_the_configuration_the_study_confirms_diverged_trials_left_out():
    # a diverged trial's selected epoch still has an objective; the summary averaged it while the
    # confirmation (select_top) and the reports use completed trials only, so the printed best could
    # differ from the confirmed one, and a study where everything diverged still printed a "best"
    from harness.study.confirm import select_top

    trials = _trials().assign(phase="tune")
    trials.loc[(trials["config_id"] == "a") & (trials["seed"] == 3), ["status", "objective"]] = ["diverged", 0.1]
    best = best_configuration(trials, mode="min", varied=["loss.distill_weight"])
    assert best["config_id"] == select_top(trials, k=1, mode="min")[0] == "b"
    assert summarize(trials, mode="min").loc["a", "diverged"] == 1
    assert best_configuration(trials.assign(status="diverged"), mode="min", varied=[]) is None
