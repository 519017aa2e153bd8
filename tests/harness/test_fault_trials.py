"""Trials that go wrong inside a running study: one diverges after a good epoch, one raises on every
attempt. Each is recorded once with the right status and evidence (last good metrics; error text and
attempts = 1 + max_failures) and the rest of the study finishes. Faults come from the study itself: a
learning rate of 1e5 (a few full-size Adam steps blow the model up: the loss turns NaN after an epoch or
two) and a CUDA device index no machine has (valid for the driver: the trials ask for the logical GPUs of
``gpu_node``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from harness.run import main
from tests.harness.conftest import GPUS_PER_TRIAL, MISSING_DEVICE, tiny_study

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]


def test_diverging_and_raising_trials_are_recorded_once_and_the_study_goes_on(gpu_node, write_study, tmp_path,
                                                                               capsys):
    """No --address: the harness uses the runtime already initialised in this process (``ray_cluster``)."""
    study = tiny_study(name="faults", grid=None, seeds=[1], max_failures=1, resources={"gpus": GPUS_PER_TRIAL},
                       ablation={"baseline": "ok", "variants": {
                           "ok": {},
                           "diverges": {"train.lr": 1.0e5},  # one good epoch, then a non-finite training loss
                           "raises": {"train.device": MISSING_DEVICE, "train.lr": 2e-3},  # raises at start
                       }})
    study["base"]["train"]["max_epochs"] = 4
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    root = results / "faults"
    trials = pd.read_parquet(root / "trials")
    assert trials["variant"].is_unique and len(trials) == 3
    trials = trials.set_index("variant")
    epochs = pd.read_parquet(root / "epochs")
    assert not epochs.duplicated(["trial_id", "epoch"]).any()

    ok = trials.loc["ok"]
    assert ok["status"] == "completed" and ok["epochs_run"] == 4 and pd.isna(ok["error"])

    # diverged after k good epochs: the selection among them is kept, with the message saying what happened
    div = trials.loc["diverges"]
    good = epochs[epochs["trial_id"] == div["trial_id"]].set_index("epoch")
    k = int(div["epochs_run"])
    assert div["status"] == "diverged" and 1 <= k < 4 and div["attempts"] == 1
    assert div["error"].startswith("diverged: non-finite training loss") and f"epoch {k + 1}," in div["error"]
    assert good.index.tolist() == list(range(1, k + 1))
    best = int(div["best_epoch"])
    assert best == good.index[good["improved"]].max()
    for metric in ("mae", "corr", "acc2", "loss"):
        assert div[f"valid_{metric}"] == pytest.approx(good.loc[best, f"valid_{metric}"])
        assert div[f"test_{metric}"] == pytest.approx(good.loc[best, f"test_{metric}"])
    assert div["objective"] == pytest.approx(div["valid_mae"])
    router = pd.read_parquet(root / "router" / f"{div['trial_id']}.parquet")
    assert len(router) == 32 and router[["w_l", "w_v", "w_a"]].notna().all().all()  # tiny preset's test split

    # failed: retried max_failures times, recorded once, with the exception and the device it asked for
    bad = trials.loc["raises"]
    assert bad["status"] == "failed" and bad["attempts"] == 2
    assert "RuntimeError" in bad["error"] and MISSING_DEVICE in bad["error"]
    assert bad["epochs_run"] == 0 and pd.isna(bad["objective"])
    assert not (root / "router" / f"{bad['trial_id']}.parquet").exists()
    assert not (root / "epochs" / f"{bad['trial_id']}.parquet").exists()

    info = json.loads((root / "study.json").read_text())
    assert info["status"] == "finished"
    assert info["counts"] == {"completed": 1, "diverged": 1, "failed": 1}
    assert "1 completed, 1 diverged, 1 failed" in out
