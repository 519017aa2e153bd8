"""Ctrl-C and SIGTERM wherever they land in a run (harness/run.py): as the tuning phase ends, between the
phases, while the study is prepared, and SIGTERM from outside. Signals are sent by the test process itself
at the moment under test (an event of the run: a phase starts or ends, a trial has started), never after a
fixed wait; the runs use the shared test cluster and tiny studies."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.harness.conftest import tiny_study


def _info(root: Path) -> dict[str, object]:
    return json.loads((root / "study.json").read_text())


def _rows(root: Path) -> pd.DataFrame:
    parts = list((root / "trials").glob("*.parquet"))
    return pd.read_parquet(root / "trials") if parts else pd.DataFrame({"status": [], "phase": []})


def _confirming_study(write_study, **fields: object) -> Path:
    return write_study(tiny_study(name="stop", confirm={"top": 1, "seeds": [7]}, **fields))


@pytest.mark.ray
def test_a_ctrl_c_as_the_tuning_phase_ends_stops_the_study_before_its_confirmation(
        ray_cluster, write_study, tmp_path, capsys, monkeypatch):
    """The Ctrl-C lands once Tune has no trial left to stop: the study still stops, exit 130, and the
    confirmation runs on --resume."""
    from ray import tune

    from harness.run import main

    fit, sent = tune.Tuner.fit, []

    def fit_then_ctrl_c(self, *args, **kwargs):
        results = fit(self, *args, **kwargs)
        if not sent:  # the tuning phase's Tuner.fit has just returned
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return results

    monkeypatch.setattr(tune.Tuner, "fit", fit_then_ctrl_c)
    args = [str(_confirming_study(write_study)), "--results", str(tmp_path / "results")]
    assert main(args) == 130
    out, err = capsys.readouterr()
    root = tmp_path / "results" / "stop"
    rows = _rows(root)
    assert "confirm:" not in out and "continue with:" in err
    assert len(rows) == 4 and set(rows["phase"]) == {"tune"}
    info = _info(root)
    assert info["status"] == "interrupted" and info["counts"] == {"completed": 4}

    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert set(_rows(root)["phase"]) == {"tune", "confirm"}
