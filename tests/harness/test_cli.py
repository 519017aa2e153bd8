"""The command line: bad studies exit with status 2 and create nothing; --dry-run plans without Ray."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.run import main
from tests.harness.conftest import REPO, tiny_study

pytestmark = pytest.mark.usefixtures("ray_init_calls")  # tests/harness/conftest.py: Ray refused

BAD = {
    "unknown key": (tiny_study(colour="blue"), "colour: unknown key"),
    "wrong type": (tiny_study(seeds="many"), "seeds:"),
    "inverted range": (tiny_study(grid=None, search={"n_trials": 2, "params": {
        "train.lr": {"type": "loguniform", "low": 1e-2, "high": 1e-4}}}), "empty or inverted range"),
    "constraint": (tiny_study(grid={"model.n_heads": [3]}), "must divide d_model"),
    "missing data file": (tiny_study(data={"path": "/nonexistent/mosi.pkl"}), "file not found"),
    "unsafe name": (tiny_study(name="../../etc"), "name: must be"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_study_exits_2_and_creates_nothing(case, write_study, tmp_path, capsys, ray_init_calls):
    study, message = BAD[case]
    results = tmp_path / "results"
    assert main([str(write_study(study)), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not results.exists()
    assert ray_init_calls == []


def test_bad_data_file_exits_2_naming_the_file(write_study, tmp_path, capsys):
    bad = tmp_path / "mosi.pkl"
    bad.write_bytes(b"not a pickle at all")
    results = tmp_path / "results"
    assert main([str(write_study(tiny_study(data={"path": str(bad)}))), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "data" in err
    assert not results.exists()


def test_bad_override_exits_2(write_study, tmp_path, capsys):
    results = tmp_path / "results"
    code = main([str(write_study(tiny_study())), "--results", str(results), "--set", "base.model.n_heads=3"])
    assert code == 2
    assert "must divide d_model" in capsys.readouterr().err
    assert not results.exists()


def test_study_name_cannot_escape_the_results_root(write_study, tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (results / "t").symlink_to(outside)  # results/t points outside the root
    assert main([str(write_study(tiny_study(name="t"))), "--results", str(results)]) == 2
    assert "outside the results root" in capsys.readouterr().err
    assert list(outside.iterdir()) == []


def test_dry_run_prints_the_plan_and_starts_nothing(write_study, tmp_path, capsys, ray_init_calls):
    results = tmp_path / "results"
    assert main([str(write_study(tiny_study())), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "configurations: 2 x seeds [1, 2] = 4 trials" in out
    assert "distill_weight=0" in out and "distill_weight=1" in out
    assert "s/epoch (measured here, training and evaluation" in out and "wall-clock" in out
    assert "Ray and workers start" in out
    assert not results.exists()
    assert ray_init_calls == []


def test_dry_run_of_a_search_lists_its_space(write_study, tmp_path, capsys):
    study = tiny_study(grid=None, search={"n_trials": 3, "params": {
        "model.n_heads": {"type": "categorical", "choices": [2, 3, 4]},
        "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        "loss.distill_weight": {"type": "uniform", "low": 0, "high": 1, "step": 0.5, "when": {"model.n_heads": 2}},
        "train.batch_size": {"type": "int", "low": 8, "high": 64, "log": True}}})
    assert main([str(write_study(study)), "--results", str(tmp_path / "r"), "--dry-run", "--no-measure"]) == 0
    out = capsys.readouterr().out
    assert "3 configurations x 2 seed(s) [1, 2] = 6 trials" in out
    assert "model.n_heads: one of 2, 3, 4" in out
    assert "train.lr: loguniform [0.0001, 0.01]\n" in out  # every kind of parameter, each in its own words
    assert "loss.distill_weight: uniform [0.0, 1.0] step 0.5 when model.n_heads=2\n" in out
    assert "train.batch_size: int [8, 64] step 1 log\n" in out
    assert "violates a constraint" in out  # 3 heads do not divide d_model 8


def test_exit_status_of_the_module(write_study, tmp_path):
    path = write_study(tiny_study(colour="blue"))
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(path), "--results", str(tmp_path / "r")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "colour: unknown key" in proc.stderr
    assert not (tmp_path / "r").exists()
    assert not (Path(REPO) / "results" / "t").exists()


_EXIT_NOW = """
import atexit, sys, threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from harness.run import exit_now

out, ready = Path(sys.argv[1]), threading.Event()

def late_writer():  # a thread still working when the process is told to exit
    ready.wait()
    with out.open("w") as f:
        for i in range(20000):
            f.write(f"{i}\\n")

threading.Thread(target=late_writer).start()
pool = ThreadPoolExecutor(1)  # an idle worker thread, stopped by threading's exit hook, not by a join
pool.submit(int).result()
atexit.register(print, "atexit ran")
print("buffered, no newline yet", end=" ")
ready.set()
exit_now(3)
"""


def test_the_command_line_exits_without_teardown_yet_joins_threads_runs_atexit_and_flushes(tmp_path):
    """``exit_now`` (the end of ``python -m harness.run``) skips the interpreter's teardown, not what a
    normal exit promises: the status, waiting for non-daemon threads (an idle thread pool stopped first,
    else its join would hang), atexit handlers, flushed output."""
    out = tmp_path / "late.txt"
    proc = subprocess.run([sys.executable, "-c", _EXIT_NOW, str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline yet atexit ran\n"
    assert out.read_text().splitlines()[-1] == "19999"  # the thread finished its file before the exit


@pytest.mark.parametrize(("address", "message"), [
    ("127.0.0.1:1", "no Ray cluster answers there"),
    ("ray://127.0.0.1:1", "no Ray cluster answers there"),
    ("headnode", "expected auto, HOST:PORT or ray://HOST:PORT"),
    ("10.0.0.5:port", "expected auto, HOST:PORT or ray://HOST:PORT"),
])
def test_unreachable_or_malformed_address_exits_2_at_once_and_creates_nothing(
        address, message, write_study, tmp_path, capsys, ray_init_calls):
    results = tmp_path / "results"
    assert main([str(write_study(tiny_study())), "--results", str(results), "--address", address]) == 2
    err = capsys.readouterr().err
    assert f"--address {address}" in err.replace("'", "") and message in err, err
    assert "Traceback" not in err
    assert not results.exists()
    assert ray_init_calls == []  # refused before Ray's own minutes-long connection retries


def test_a_ray_that_cannot_start_is_named_as_such_and_creates_nothing(write_study, tmp_path, capsys, monkeypatch):
    """Seen on a GPU machine whose Ray was unpacked without its files' modes: ``ray.init`` raised
    PermissionError on gcs_server, and the command blamed the study's results directory."""
    import ray

    def not_executable(**kwargs):
        raise PermissionError(13, "Permission denied", "/tmp/site/ray/core/src/ray/gcs/gcs_server")

    monkeypatch.setattr(ray, "init", not_executable)
    results = tmp_path / "results"
    assert main([str(write_study(tiny_study())), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "cannot start a local Ray runtime" in err and "gcs_server" in err
    assert "results directory" not in err
    assert not list(results.glob("*/study.json"))
