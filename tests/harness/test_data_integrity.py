"""A study's data against their manifest (issue 10, rows 13 and 14): flipped bytes in a converted
directory stop the study before it starts; the checksums are hashed once and remembered without changing
the trials' identity; ``data.expect: none`` lets a study use a subset of MOSI/MOSEI/SIMS."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

import emoe.data.verify as verify
from emoe.data.__main__ import main as data_main
from emoe.data.convert import convert_mmsa
from harness.run import main
from harness.study.data import load_study_data
from harness.study.spec import DataSpec
from tests.emoe.data.mmsa_files import write_mmsa_pickle
from tests.harness.conftest import tiny_study

MOSI_SHAPED = {"d_audio": 5, "d_vision": 20}  # a MOSI-shaped file with 12/5/7 samples


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray must not be started")

    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(verify, "RECENT_NS", 0)


def run_on(data: dict[str, Any], tmp_path: Path, *extra: str) -> tuple[int, str]:
    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="integrity", data=data)))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(spec), "--results", str(tmp_path / "results"), "--dry-run", "--no-measure", *extra])
    return code, err.getvalue()


@pytest.fixture
def converted(tmp_path: Path) -> Path:
    write_mmsa_pickle(tmp_path / "src.pkl")
    convert_mmsa(tmp_path / "src.pkl", tmp_path / "conv")
    return tmp_path / "conv"


def test_flipped_bytes_in_a_converted_array_stop_the_study(converted: Path, tmp_path: Path) -> None:
    assert run_on({"path": str(converted)}, tmp_path)[0] == 0  # the control
    vision = converted / "test" / "vision.npy"
    raw = bytearray(vision.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # inside the array data: the size is unchanged
    vision.write_bytes(bytes(raw))
    code, err = run_on({"path": str(converted)}, tmp_path)
    assert code == 2, err
    assert f"{vision}: SHA-256 differs from the manifest" in err and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_the_checksums_are_hashed_once_and_the_cache_leaves_trial_ids_alone(
        converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[Path] = []
    real = verify.sha256_file
    monkeypatch.setattr(verify, "sha256_file", lambda p: hashed.append(p) or real(p))
    spec = DataSpec(path=str(converted))
    first = load_study_data(spec)
    assert hashed and (converted / verify.CACHE_NAME).is_file()
    n = len(hashed)
    second = load_study_data(spec)
    assert len(hashed) == n  # a second study reads no file again
    assert first.key == second.key  # the cache file is not part of the data's identity


def test_a_subset_of_mosi_needs_data_expect_none(tmp_path: Path) -> None:
    subset = tmp_path / "mosi_subset.pkl"
    write_mmsa_pickle(subset, **MOSI_SHAPED)
    code, err = run_on({"path": str(subset)}, tmp_path)
    assert code == 2 and "1284/229/686" in err, err
    code, err = run_on({"path": str(subset), "expect": "none"}, tmp_path)
    assert code == 0, err
    code, err = run_on({"path": str(subset)}, tmp_path, "--set", "data.expect=none")
    assert code == 0, err


def test_a_subset_converted_with_expect_none_needs_nothing_more(tmp_path: Path) -> None:
    subset = tmp_path / "mosi_subset.pkl"
    write_mmsa_pickle(subset, **MOSI_SHAPED)
    out = tmp_path / "mosi_subset"
    with contextlib.redirect_stdout(io.StringIO()):
        assert data_main(["convert", str(subset), str(out), "--expect", "none"]) == 0
    code, err = run_on({"path": str(out)}, tmp_path)
    assert code == 0, err
    copy = tmp_path / "copy_mosi"
    shutil.copytree(out, copy)
    code, err = run_on({"path": str(copy), "expect": "mosi"}, tmp_path)  # an explicit expectation wins
    assert code == 2 and "1284/229/686" in err, err


def test_data_expect_applies_to_files_only(tmp_path: Path) -> None:
    code, err = run_on({"synthetic": "tiny", "expect": "none"}, tmp_path)
    assert code == 2 and "expect applies to a data file" in err, err
    code, err = run_on({"synthetic": "tiny"}, tmp_path, "--set", "data.expect=bogus")
    assert code == 2 and "data.expect" in err, err
