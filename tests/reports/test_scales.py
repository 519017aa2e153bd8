"""Log axes for log-sampled parameters: read from spec.yaml's search space when recorded, otherwise
inferred from the values (positive, spanning at least two decades) and said so in report.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports.build import build_report
from reports.load import load_study
from reports.plots import plot_parallel_coordinates
from reports.plots.search import normalize_params
from reports.scales import Scale, inferred_note, param_scales, study_scales


def test_recorded_space_decides(hpo_dir: Path) -> None:
    study = load_study(hpo_dir)
    lr = study.trials["train.lr"]
    assert lr.max() / lr.min() < 100  # under two decades: the values alone would not ask for a log axis
    scales = study_scales(study)
    assert scales["train.lr"] == Scale(True, "spec") and scales["model.temperature"] == Scale(True, "spec")
    assert scales["model.out_dropout"] == Scale(False, "spec")
    assert scales["model.d_model"] == Scale(False, "spec")  # categorical numbers: evenly spaced categories
    assert "model.router" not in scales  # not numeric
    assert inferred_note(scales) is None


def test_inferred_without_a_recorded_space() -> None:
    t = pd.DataFrame({"a": [1e-5, 3e-4, 1e-3], "b": [0.01, 0.05, 0.5], "c": [-1.0, 10.0, 1000.0],
                      "d": [2, 8, 64]})
    spec = {"search": {"params": {"d": {"type": "int", "low": 2, "high": 64, "log": True}}}}
    s = param_scales(t, ["a", "b", "c", "d"], spec)
    assert s == {"a": Scale(True, "inferred"), "b": Scale(False, "inferred"), "c": Scale(False, "inferred"),
                 "d": Scale(True, "spec")}
    assert str(inferred_note(s)).startswith("Log axis inferred for a: the search space is not recorded")


def test_parallel_coordinates_log_axis_from_the_space(hpo_dir: Path) -> None:
    study = load_study(hpo_dir)
    params = ["train.lr", "model.out_dropout"]
    log = {p: sc.log for p, sc in study_scales(study).items()}
    ax = plot_parallel_coordinates(study.trials, params=params, metric="valid_mae", mode="min", log=log)
    (lines,) = ax.collections[:1]
    lr = np.log(study.trials["train.lr"].to_numpy())
    np.testing.assert_allclose([s[0, 1] for s in lines.get_segments()], (lr - lr.min()) / (lr.max() - lr.min()))
    names = [t.get_text() for t in ax.get_xticklabels()]
    assert names[0].endswith("\n(log)") and not names[1].endswith("(log)")
    _, ticks = normalize_params(pd.DataFrame({"lr": [1.2e-4, 5e-4, 2.9e-3]}), ["lr"], {"lr": True})
    decade = (np.log(1e-3) - np.log(1.2e-4)) / (np.log(2.9e-3) - np.log(1.2e-4))
    assert [t for _, t in ticks["lr"]] == ["0.00012", "0.0029", "0.001"]  # and the powers of ten inside
    assert ticks["lr"][2][0] == pytest.approx(decade)
    linear = plot_parallel_coordinates(study.trials, params=params, metric="valid_mae", mode="min",
                                       log={"train.lr": False})
    v = study.trials["train.lr"].to_numpy()
    np.testing.assert_allclose([s[0, 1] for s in linear.collections[0].get_segments()],
                               (v - v.min()) / (v.max() - v.min()))


def test_report_says_when_the_log_axis_is_inferred(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("search", tmp_path / "s")  # lr spans 1e-5..1e-2, no spec.yaml
    build_report(d, out=tmp_path / "out", formats=("png",))
    report = (tmp_path / "out/report.md").read_text()
    assert "Log axis inferred for Learning rate" in report
    h = make_study("hpo", tmp_path / "h", n_trials=12)  # spec.yaml records the space: nothing inferred
    build_report(h, out=tmp_path / "out2", formats=("png",))
    assert "inferred" not in (tmp_path / "out2/report.md").read_text()
