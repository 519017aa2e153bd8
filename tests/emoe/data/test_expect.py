"""``--expect none`` for a subset of a known data set (issue 10, row 14): recorded in the manifest at
conversion and honoured by ``info``, ``load_data`` and ``info --verify``; ``info --expect`` for the rest."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from emoe.data import DataError, convert_mmsa, load_data
from emoe.data.__main__ import main

Factory = Callable[..., tuple[Path, dict[str, Any]]]
MOSI_SHAPED = {"d_audio": 5, "d_vision": 20, "sizes": (12, 5, 7)}  # recognised as MOSI by shape and name


@pytest.fixture(autouse=True)
def user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def test_convert_expect_none_writes_a_directory_that_every_reader_accepts(
        tmp_path: Path, mmsa_pickle: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = mmsa_pickle("mosi_subset.pkl", **MOSI_SHAPED)
    out = tmp_path / "mosi_subset"
    assert main(["convert", str(path), str(out)]) == 2  # the control: MOSI's sizes are expected
    assert "1284/229/686" in capsys.readouterr().err and not out.exists()

    assert main(["convert", str(path), str(out), "--expect", "none"]) == 0, capsys.readouterr().err
    assert "train (n=12)" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["expect"] == "none" and manifest["dataset"] == "mosi"
    assert main(["info", str(out), "--verify"]) == 0
    assert "converted with expect=none" in capsys.readouterr().out
    assert len(load_data(out, verify_hash=True).train) == 12
    # an explicit expectation still overrides the recorded one
    assert main(["info", str(out), "--expect", "mosi"]) == 2
    assert "1284/229/686" in capsys.readouterr().err
    with pytest.raises(DataError, match="1284/229/686"):
        load_data(out, expect="mosi")


def test_info_expect_none_reads_a_subset_pickle(mmsa_pickle: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = mmsa_pickle("mosi_subset.pkl", **MOSI_SHAPED)
    assert main(["info", str(path)]) == 2
    assert "pass expect=False" in capsys.readouterr().err
    assert main(["info", str(path), "--expect", "none"]) == 0
    assert "train (n=12)" in capsys.readouterr().out


@pytest.mark.parametrize(("expect", "recorded"), [("mosi", "mosi"), ((12, 5, 7), [12, 5, 7]), (None, None)])
def test_the_manifest_records_the_expectation_it_was_checked_with(
        tmp_path: Path, mmsa_pickle: Factory, expect: Any, recorded: Any) -> None:
    sizes = (1284, 229, 686) if expect == "mosi" else (12, 5, 7)
    path, _ = mmsa_pickle("data.pkl", sizes=sizes, len_text=2, d_text=4, d_audio=2, d_vision=2)
    convert_mmsa(path, tmp_path / "out", expect=expect)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest.get("expect") == recorded
    assert len(load_data(tmp_path / "out").train) == sizes[0]
