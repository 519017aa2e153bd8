"""``python -m emoe.data``: convert and info, with exit status 2 and a named file on data problems."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emoe.data import load_converted, load_mmsa
from emoe.data.__main__ import main
from tests.emoe.data.mmsa_files import make_mmsa_dict, write_mmsa_pickle

Factory = Callable[..., tuple[Path, dict[str, Any]]]


def test_convert_then_info(tmp_path: Path, mmsa_pickle: Factory, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = mmsa_pickle(len_audio=9, len_vision=11)
    out = tmp_path / "converted"
    assert main(["convert", str(path), str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "train (n=12)" in printed
    np.testing.assert_array_equal(load_converted(out).test.audio, load_mmsa(path).test.audio)
    assert main(["info", str(out), "--verify"]) == 0
    info = capsys.readouterr().out
    assert "all SHA-256 verified" in info and "(memory-mapped)" in info
    assert "audio_lengths  <i8" in info and "d_audio=4" in info
    assert main(["info", str(path)]) == 0
    assert "unpickling runs code" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["dataset"]  # optional (null: not recognised); info's KeyError before
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert main(["info", str(out)]) == 0 and "recognised as unknown" in capsys.readouterr().out


def test_errors_exit_2_and_name_the_file(tmp_path: Path, mmsa_pickle: Factory,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "absent.pkl")]) == 2
    assert "absent.pkl: file not found" in capsys.readouterr().err
    path, _ = mmsa_pickle()
    out = tmp_path / "c"
    assert main(["convert", str(path), str(out)]) == 0
    assert main(["convert", str(path), str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["convert", str(path), str(out), "--expect", "mosi"]) == 2
    assert "1284/229/686" in capsys.readouterr().err


def test_convert_refuses_class_labels_that_are_not_class_indices(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """NaN became INT64_MIN and -1, 0.5 were written as they were (or truncated): review A #6."""
    raw = make_mmsa_dict()
    raw["train"]["classification_labels"][:3] = [np.nan, -1, 0.5]
    write_mmsa_pickle(tmp_path / "cls_bad.pkl", raw)
    out = tmp_path / "cls_bad"
    assert main(["convert", str(tmp_path / "cls_bad.pkl"), str(out), "--label-kind", "classification"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'cls_bad.pkl'} [train]: 'classification_labels' must be non-negative whole numbers" in err
    assert not (out / "manifest.json").exists()


def test_module_entry_point_describes_synthetic() -> None:
    run = subprocess.run([sys.executable, "-m", "emoe.data", "info", "synthetic:tiny"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "synthetic:tiny(seed=0)" in run.stdout and "reliability" in run.stdout


def test_a_reader_that_goes_away_ends_the_output_quietly(tmp_path: Path, mmsa_pickle: Factory) -> None:
    """``info DIR --verify | head`` ended with a BrokenPipeError traceback. Here the pipe has no reader at
    all from the start (closed before the command runs), so the first write fails without a race."""
    path, _ = mmsa_pickle()
    assert main(["convert", str(path), str(tmp_path / "c")]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        run = subprocess.run([sys.executable, "-m", "emoe.data", "info", str(tmp_path / "c"), "--verify"],
                             stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert run.returncode == 141 and run.stderr == "", run.stderr
