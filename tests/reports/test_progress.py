"""A report of an unfinished study says so everywhere a reader looks: stdout, the top of report.md, every
figure's title and every table caption (Markdown and LaTeX); a finished study's report says nothing of it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from reports.__main__ import main
from reports.load import load_study
from reports.progress import incomplete_note
from reports.sections import plan
from reports.tables import Table

NOTE = "report of an incomplete study: 12 of 30 trials recorded (status running)"


def _set_meta(d: Path, **fields: object) -> None:
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, **fields}))


def test_incomplete_note_rules(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("ablation", tmp_path / "a", seeds=(1, 2))  # 12 trial rows
    assert incomplete_note(load_study(d)) is None  # no status, no n_trials: nothing claims it is unfinished
    _set_meta(d, status="finished", n_trials=12)
    assert incomplete_note(load_study(d)) is None
    _set_meta(d, status="running", n_trials=30)
    assert incomplete_note(load_study(d)) == NOTE
    _set_meta(d, status="incomplete", n_trials=12)  # a time budget stopped it (rows may still be missing)
    assert incomplete_note(load_study(d)) == "report of an incomplete study: 12 of 12 trials recorded (status incomplete)"
    _set_meta(d, status="finished", n_trials=13)  # says finished, but a planned trial has no row
    assert incomplete_note(load_study(d)) == "report of an incomplete study: 12 of 13 trials recorded"
    _set_meta(d, status="running", n_trials=None)
    assert incomplete_note(load_study(d)) == "report of an incomplete study: 12 trials recorded (status running)"


def test_every_figure_and_table_of_a_running_study_carries_the_note(running_dir: Path) -> None:
    figures = tables = 0
    for item in plan(load_study(running_dir)):
        obj = item.make()
        if isinstance(obj, Figure):
            figures += 1
            title = obj.get_suptitle()
            assert "Incomplete study: 12 of 30 trials recorded" in title.replace("\n", " "), item.name
        elif isinstance(obj, Table):
            tables += 1
            assert obj.caption.startswith("Incomplete study: 12 of 30 trials recorded (status running)."), item.name
    assert figures >= 5 and tables >= 3


def test_cli_report_of_a_running_study(running_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main([str(running_dir), "--out", str(out), "--format", "png", "-q"]) == 0
    assert capsys.readouterr().out.splitlines() == [NOTE]  # -q: only the note on stdout
    report = (out / "report.md").read_text().splitlines()
    assert report[0].startswith("# Report:") and NOTE in report[2]
    for name in ("ablation", "ablation_tests", "status"):
        assert "*Incomplete study: 12 of 30 trials recorded (status running)." in (out / f"tables/{name}.md").read_text()
        head = list(itertools.takewhile(lambda line: line.startswith("%"),
                                        (out / f"tables/{name}.tex").read_text().splitlines()))
        assert any(line.startswith("% Incomplete study: 12 of 30 trials recorded (status running).") for line in head)


def test_a_finished_study_gets_no_note(ablation_dir: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(ablation_dir), "--out", str(tmp_path), "--format", "png"]) == 0
    assert "incomplete" not in capsys.readouterr().out.lower()
    assert "incomplete" not in (tmp_path / "report.md").read_text().lower()
    titles = [obj.get_suptitle() for obj in (i.make() for i in plan(load_study(ablation_dir)))
              if isinstance(obj, Figure)]
    assert titles and not any("ncomplete" in t for t in titles)


def test_a_simulated_study_says_so_on_stdout_and_in_every_caption_and_a_cross_study_refuses_to_mix_it(
        make_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emoe_schema import SIMULATED_NOTE
    from reports.progress import report_notes

    sim, real = make_study("ablation", tmp_path / "sim", seeds=(1, 2)), make_study("ablation", tmp_path / "real",
                                                                                    seeds=(3, 4))
    _set_meta(sim, simulated=True)
    assert report_notes(load_study(sim)) == [SIMULATED_NOTE] and report_notes(load_study(real)) == []
    tables = [obj for item in plan(load_study(sim)) if isinstance(obj := item.make(), Table)]
    assert tables and all(t.caption.startswith(SIMULATED_NOTE) for t in tables)
    assert main([str(sim), "--format", "png", "-q"]) == 0
    assert capsys.readouterr().out.startswith(SIMULATED_NOTE)
    assert SIMULATED_NOTE in (sim / "report.md").read_text()
    assert main([str(sim), str(real), "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "simulated" in capsys.readouterr().err and not (tmp_path / "x").exists()
