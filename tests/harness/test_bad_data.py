"""Bad data stop a study before any trial starts: a truncated, corrupt or wrongly shaped MMSA pickle or
converted directory gives exit status 2 and a message naming the file and the problem; no results
directory is created, Ray is never started, and a resumed study's results are left as they were."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
import yaml

from emoe.data.convert import convert_mmsa
from harness.run import main
from tests.emoe.data.mmsa_files import make_mmsa_dict, rewrite_converted, write_mmsa_pickle
from tests.harness.conftest import REPO, tiny_study


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray must not be started when the data are bad")

    monkeypatch.setattr(ray, "init", refuse)


def run_on(data_path: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="bad", data={"path": str(data_path)})))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(spec), "--results", str(tmp_path / "results"), *extra])
    return code, err.getvalue()


# --- MMSA pickles: each case writes a bad file and names (file, phrase in the message) --------------------
def _truncated(path: Path) -> None:
    write_mmsa_pickle(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _corrupt_header(path: Path) -> None:
    write_mmsa_pickle(path)
    raw = bytearray(path.read_bytes())
    raw[0] ^= 0xFF  # the protocol opcode
    path.write_bytes(bytes(raw))


def _with(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        data = make_mmsa_dict()
        edit(data)
        write_mmsa_pickle(path, data)
    return write


def _set(split: str, key: str, fn: Callable[[Any], Any]) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        d[split][key] = fn(d[split][key])
    return edit


PICKLES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncated, "truncated"),
    "empty file": (_empty, "truncated pickle"),
    "random bytes": (_garbage, "not a readable MMSA pickle"),
    "corrupt header": (_corrupt_header, "not a readable MMSA pickle"),
    "not a dict": (lambda p: p.write_bytes(pickle.dumps([1, 2, 3])), "expected a dict"),
    "text features 2-D": (_with(_set("train", "text", lambda a: a[:, :, 0])), "'text' must have 3 dimensions"),
    "audio count differs": (_with(_set("train", "audio", lambda a: a[:-2])), "sample counts disagree"),
    "vision width differs by split": (_with(_set("valid", "vision", lambda a: a[:, :, :3])),
                                      "'vision' shapes disagree between splits"),
    "labels not finite": (_with(_set("test", "regression_labels", lambda a: np.full_like(a, np.nan))),
                          "non-finite"),
    "audio missing": (_with(lambda d: d["train"].pop("audio")), "missing key(s) audio"),
    "text as strings": (_with(_set("train", "text", lambda a: np.array(["x"] * len(a), dtype=object))),
                        "'text' is not numeric"),
    "class labels not class indices": (_with(_set("valid", "classification_labels", lambda a: a - 0.5)),
                                       "[valid]: 'classification_labels' must be non-negative whole numbers"),
    # the model's sizes come from the data: an empty axis is the file's problem, not each grid point's
    "audio with no time steps": (_with(lambda d: [d[s].update(audio=d[s]["audio"][:, :0]) for s in d]),
                                 "[train]: 'audio' has shape (12, 0, 4): a modality needs at least one time step"),
    "vision with no features": (_with(lambda d: [d[s].update(vision=d[s]["vision"][:, :, :0]) for s in d]),
                                "[train]: 'vision' has shape (12, 6, 0)"),
    "empty training split": (lambda p: write_mmsa_pickle(p, sizes=(0, 5, 7)), "the train split has no samples"),
}


@pytest.mark.parametrize("case", list(PICKLES))
def test_a_bad_mmsa_pickle_stops_the_study_before_it_starts(case, tmp_path):
    write, phrase = PICKLES[case]
    bad = tmp_path / "mosi.pkl"
    write(bad)
    code, err = run_on(bad, tmp_path)
    assert code == 2, err
    assert str(bad) in err and phrase in err, err
    assert "Traceback" not in err and "grid point" not in err
    assert not (tmp_path / "results").exists()


# --- converted directories ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("converted")
    write_mmsa_pickle(root / "src.pkl")
    convert_mmsa(root / "src.pkl", root / "good")
    return root / "good"


def _edit_manifest(root: Path, edit: Callable[[dict[str, Any]], object]) -> None:
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def _truncate(root: Path, rel: str) -> None:
    raw = (root / rel).read_bytes()
    (root / rel).write_bytes(raw[: len(raw) // 2])


def _zero_header(root: Path, rel: str) -> None:
    raw = bytearray((root / rel).read_bytes())
    raw[:16] = bytes(16)
    (root / rel).write_bytes(bytes(raw))


CONVERTED: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # case: (damage, file the message must name, phrase)
    "manifest missing": (lambda r: (r / "manifest.json").unlink(), "", "no manifest.json"),
    "manifest corrupt": (lambda r: (r / "manifest.json").write_text('{"format": '), "manifest.json",
                         "unreadable manifest"),
    "array truncated": (lambda r: _truncate(r, "train/audio.npy"), "train/audio.npy", "truncated or modified"),
    "array header corrupt": (lambda r: _zero_header(r, "train/audio.npy"), "train/audio.npy",
                             "unreadable .npy file"),
    "array missing": (lambda r: (r / "valid/vision.npy").unlink(), "valid/vision.npy", "missing"),
    "array of another shape": (lambda r: np.save(r / "train/text.npy", np.load(r / "train/text.npy")[:, :, :8]),
                               "train/text.npy", "truncated or modified"),
    "feature width differs by split": (
        lambda r: rewrite_converted(r, "train/text.npy", np.load(r / "train/text.npy")[:, :, :8].copy()), "",
        "'text' shapes disagree between splits"),
    "labels shorter than features": (
        lambda r: rewrite_converted(r, "train/labels.npy", np.load(r / "train/labels.npy")[:-3].copy()), "",
        "[train]: sample counts disagree: labels has 9"),
    "manifest without label_kind": (lambda r: _edit_manifest(r, lambda m: m.pop("label_kind")), "manifest.json",
                                    "missing key 'label_kind'"),
    "manifest entry outside the directory": (
        lambda r: _edit_manifest(r, lambda m: m["splits"]["train"]["files"]["text"].update(file="../../x.npy")),
        "manifest.json", "splits.train.files.text.file: must be a relative path inside the directory"),
    # a manifest made to agree (sizes, checksums) with arrays a pickle would be refused for
    "labels not finite": (lambda r: rewrite_converted(r, "train/labels.npy", np.full(12, np.nan, np.float32)), "",
                          "[train]: 'labels' contain non-finite values"),
    "text not finite": (
        lambda r: rewrite_converted(r, "valid/text.npy", np.full_like(np.load(r / "valid/text.npy"), np.nan)), "",
        "[valid]: 'text' contain non-finite values"),
    "labels 2-D": (lambda r: rewrite_converted(r, "train/labels.npy", np.zeros((12, 2), np.float32)), "",
                   "[train]: 'labels' must have 1 dimension, got shape (12, 2)"),
}


@pytest.mark.parametrize("case", list(CONVERTED))
def test_a_damaged_converted_directory_stops_the_study_before_it_starts(case, converted, tmp_path):
    damage, file, phrase = CONVERTED[case]
    root = tmp_path / "mosi_converted"
    shutil.copytree(converted, root)
    damage(root)
    code, err = run_on(root, tmp_path)
    assert code == 2, err
    assert str(root / file).rstrip("/") in err and phrase in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_a_good_converted_directory_passes_the_same_checks(converted, tmp_path):
    """The control: undamaged data plan fine (a dry run needs neither Ray nor a results directory)."""
    code, err = run_on(converted, tmp_path, "--dry-run", "--no-measure")
    assert code == 0, err
    assert not (tmp_path / "results").exists()


def test_data_damaged_before_a_resume_stop_it_and_leave_the_results_alone(tmp_path):
    """An overnight study, its data file truncated before ``--resume``: refused, nothing touched."""
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data)
    study = tmp_path / "results" / "bad"
    for sub in ("trials", "epochs", ".runs"):
        (study / sub).mkdir(parents=True)
    (study / "study.json").write_text(json.dumps({"study": "bad", "status": "running", "results_dir": str(study)}))
    (study / "trials" / "0123456789ab.parquet").write_bytes(b"a finished trial's row")
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    _truncated(data)
    code, err = run_on(data, tmp_path, "--resume")
    assert code == 2 and str(data) in err and "truncated" in err, err
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before


def test_a_resume_on_other_data_than_the_study_started_on_is_refused(tmp_path):
    """The data file was regenerated between a run and its --resume: the finished trials were trained on the
    old data, so training the rest on the new data would make one study of two data sets (the checksums
    were both recorded in study.json, and the resume went ahead)."""
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data, seed=0)
    started_on = hashlib.sha256(data.read_bytes()).hexdigest()
    study = tmp_path / "results" / "bad"
    (study / "trials").mkdir(parents=True)
    info = {"study": "bad", "status": "interrupted", "results_dir": str(study),
            "provenance": {"data": {"kind": "file", "sha256": started_on}}}
    (study / "study.json").write_text(json.dumps(info))
    (study / "trials" / "0123456789ab.parquet").write_bytes(b"a finished trial's row")
    code, err = run_on(data, tmp_path, "--resume", "--dry-run", "--no-measure")
    assert code == 0, err  # the same data: resumable
    write_mmsa_pickle(data, seed=1)
    before = {p: p.stat().st_mtime_ns for p in study.rglob("*")}
    for extra in (("--resume", "--dry-run", "--no-measure"), ("--resume",)):
        code, err = run_on(data, tmp_path, *extra)
        assert code == 2 and f"the study started on data with SHA-256 {started_on}" in err, err
        assert hashlib.sha256(data.read_bytes()).hexdigest() in err
    assert {p: p.stat().st_mtime_ns for p in study.rglob("*")} == before


def test_a_pickle_and_its_conversion_are_the_same_data_for_a_resume():
    # the CLI recommends converting a pickle once: a study started on the pickle and resumed on its
    # converted directory (whose manifest records the pickle's SHA-256) was refused as other data
    from harness.results.study_provenance import data_change

    pickle_ = {"kind": "file", "sha256": "a" * 64}
    converted = {"kind": "converted", "sha256": "b" * 64, "source_sha256": "a" * 64}
    assert data_change({"provenance": {"data": pickle_}}, converted) is None
    assert data_change({"provenance": {"data": converted}}, pickle_) is None
    other = {"kind": "converted", "sha256": "c" * 64, "source_sha256": "d" * 64}
    assert "these data have " + "c" * 64 in str(data_change({"provenance": {"data": pickle_}}, other))


def test_results_without_their_study_json_are_not_overwritten(tmp_path):
    """study.json deleted or lost: a plain run used to start over in the folder and mix its rows with the
    old study's (another seed list, counts that no longer matched the rows)."""
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data)
    study = tmp_path / "results" / "bad"
    (study / "trials").mkdir(parents=True)
    (study / "trials" / "0123456789ab.parquet").write_bytes(b"a finished trial's row")
    for extra in ((), ("--dry-run", "--no-measure"), ("--resume",)):
        code, err = run_on(data, tmp_path, *extra)
        assert code == 2 and "holds results (1 file(s) in trials/) but no study.json" in err, err
    assert sorted(p.name for p in study.rglob("*")) == ["0123456789ab.parquet", "trials"]


def test_the_module_exits_2_on_a_truncated_pickle(tmp_path):
    bad = tmp_path / "mosi.pkl"
    _truncated(bad)
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="bad", data={"path": str(bad)})))
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(spec), "--results", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(bad) in proc.stderr and "truncated" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
