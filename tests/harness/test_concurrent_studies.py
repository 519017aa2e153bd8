"""Several drivers, one results root: two studies running at once each get exactly their own trials; a
second driver for a study that is running, finished, or was created while it was still preparing is
refused (exit 2) and changes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import ray
import yaml

from harness.results.sink import ResultStore
from harness.run import main
from tests.emoe.data.mmsa_files import make_mmsa_dict
from tests.harness.conftest import REPO, tiny_study


def _run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _snapshot(study: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(study)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in study.rglob("*") if p.is_file() and p.name != ".lock" and "tune" not in p.parts}


@pytest.mark.ray
@pytest.mark.slow
def test_two_studies_share_a_results_root_and_a_running_study_cannot_be_started_twice(ray_cluster, tmp_path):
    results = tmp_path / "results"
    alpha = tiny_study(name="alpha", grid={"loss.distill_weight": [0.0, 1.0]}, seeds=[1])
    alpha["base"]["train"]["max_epochs"] = 8
    alpha["data"]["synthetic"]["n_train"] = 2048  # long enough to be caught running (seconds of epochs)
    beta = tiny_study(name="beta", grid={"train.lr": [1e-3, 3e-3]}, seeds=[1])
    specs = {}
    for study in (alpha, beta):
        specs[study["name"]] = tmp_path / f"{study['name']}.yaml"
        specs[study["name"]].write_text(yaml.safe_dump(study))
    procs = {name: subprocess.Popen([sys.executable, "-m", "harness.run", str(path), "--results", str(results),
                                     "--address", ray_cluster.address], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, path in specs.items()}
    try:
        # while alpha runs (its study.json written, its lock held) a second driver for it is refused
        deadline = time.monotonic() + 300
        while not (results / "alpha" / "study.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        code_new, err_new = _run([str(specs["alpha"]), "--results", str(results)])
        code_resume, err_resume = _run([str(specs["alpha"]), "--results", str(results), "--resume"])
        assert procs["alpha"].poll() is None, "alpha ended before the second driver was tried"
        assert code_new == 2 and "add --resume" in err_new
        assert code_resume == 2 and "another process is running this study" in err_resume
        outputs = {name: p.communicate(timeout=600) for name, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=60)
    for name, p in procs.items():
        assert p.returncode == 0, outputs[name][1][-3000:]

    assert sorted(p.name for p in results.iterdir()) == ["alpha", "beta"]
    for name, n, epochs_per_trial in (("alpha", 2, 8), ("beta", 2, 2)):
        root = results / name
        trials = pd.read_parquet(root / "trials")
        assert len(trials) == n and trials["trial_id"].is_unique and (trials["study"] == name).all()
        assert (trials["status"] == "completed").all()
        epochs = pd.read_parquet(root / "epochs")
        assert (epochs["study"] == name).all() and len(epochs) == n * epochs_per_trial
        assert not epochs.duplicated(["trial_id", "epoch"]).any()
        assert set(pd.read_parquet(root / "router")["study"]) == {name}
        info = json.loads((root / "study.json").read_text())
        assert info["study"] == name and info["status"] == "finished" and info["n_trials"] == n
        assert yaml.safe_load((root / "spec.yaml").read_text())["name"] == name

    # finished: running it again without --resume refuses and rewrites nothing
    before = _snapshot(results / "alpha")
    code, err = _run([str(specs["alpha"]), "--results", str(results)])
    assert code == 2 and "already holds study 'alpha' (finished)" in err
    assert _snapshot(results / "alpha") == before


def test_a_study_created_by_another_driver_while_this_one_prepared_is_not_overwritten(tmp_path, monkeypatch):
    """The race between checking that a study is new and creating it: this driver is held while it reads
    its data (a FIFO the test feeds), another driver creates the study meanwhile; this one must refuse."""
    started: list[Any] = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(a) or (_ for _ in ()).throw(
        AssertionError("Ray must not start")))
    fifo = tmp_path / "mosi.pkl"
    os.mkfifo(fifo)
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="raced", data={"path": str(fifo)})))
    results = tmp_path / "results"
    outcome: dict[str, Any] = {}

    def driver() -> None:
        try:
            outcome["result"] = _run([str(spec), "--results", str(results)])
        except BaseException as exc:  # reported by the assertions below
            outcome["error"] = exc

    thread = threading.Thread(target=driver, daemon=True)
    thread.start()
    with open(fifo, "wb") as feed:  # blocks until the driver opens its data file: past its existence check
        other = ResultStore(results, "raced")
        other.create("name: raced\n# the other driver's spec\n", {"study": "raced", "status": "finished",
                                                                   "results_dir": str(other.dir)})
        before = _snapshot(other.dir)
        pickle.dump(make_mmsa_dict(), feed, protocol=4)
    thread.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    code, err = outcome["result"]
    assert code == 2 and "already holds study 'raced'" in err, err
    assert _snapshot(other.dir) == before and started == []
