"""``python -m reports`` refuses bad paths with exit status 2, a message naming the problem, no traceback
and nothing written: an --out that is a file, lies under a file or cannot be written, and a results path
that does not exist, is a file, or holds no study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reports.__main__ import main


@pytest.fixture
def study(make_study: Callable[..., Path], tmp_path: Path) -> Path:
    return make_study("grid", tmp_path / "results" / "g", values=(0.1, 1.0), seeds=(1,))


def _listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _refused(argv: list[str], capsys: pytest.CaptureFixture[str], *, match: str, tmp_path: Path) -> None:
    before = _listing(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err
    assert _listing(tmp_path) == before  # nothing written, not even beside the results


def test_out_is_a_file(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "passwd"
    target.write_text("root:x:0:0\n")
    _refused([str(study), "--out", str(target)], capsys, match="is a file, not a directory", tmp_path=tmp_path)
    assert target.read_text() == "root:x:0:0\n"


def test_out_under_a_file(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    _refused([str(study), "--out", str(tmp_path / "afile" / "sub" / "dir")], capsys,
             match="is a file, so no directory can be made under it", tmp_path=tmp_path)


def test_out_not_writable(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:  # root writes through permission bits; /proc takes no new files even for root
        target = Path("/proc/reports-test-out")
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = locked / "out"
    try:
        _refused([str(study), "--out", str(target)], capsys, match="cannot write in", tmp_path=tmp_path)
    finally:
        if os.geteuid() != 0:
            (tmp_path / "locked").chmod(0o700)
    assert not target.exists()


def test_out_holds_a_file_where_a_directory_goes(study: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "figures").write_text("not a directory")
    _refused([str(study), "--out", str(out)], capsys, match="figures is a file", tmp_path=tmp_path)


def test_results_path_problems(study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _refused([str(tmp_path / "nope")], capsys, match="no such results directory", tmp_path=tmp_path)
    _refused([str(study / "study.json")], capsys, match="is a file, not a study result directory",
             tmp_path=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    _refused([str(empty)], capsys, match="no study.json", tmp_path=tmp_path)
    # the results root instead of one study in it: name the studies it holds
    _refused([str(tmp_path / "results")], capsys, match=f"give one of them, e.g. {study}", tmp_path=tmp_path)
    (study / "trials").rename(tmp_path / "trials_elsewhere")  # a study that has not recorded a trial yet
    _refused([str(study)], capsys, match="no trial files yet", tmp_path=tmp_path)


def test_subprocess_exit_status_and_no_traceback(study: Path, tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    res = subprocess.run([sys.executable, "-m", "reports", str(study), "--out", str(target)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "is a file" in res.stderr
    assert not (study / "figures").exists()


def test_empty_out_is_refused_not_read_as_the_current_directory(study: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _refused([str(study), "--out", ""], capsys, match="empty string", tmp_path=tmp_path)
