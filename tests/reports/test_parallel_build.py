"""The report's figures saved in worker processes (``reports.figsave``): the same files, byte for byte, as
the serial build; a figure that fails in a worker fails the build as it does serially; a worker that dies
costs nothing but its start; ``jobs=1`` (``--jobs 1``) starts no process."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from matplotlib.figure import Figure

import reports.build
import reports.figsave
from reports.__main__ import main
from reports.build import build_report
from reports.figsave import FigurePool, report_jobs
from reports.sections import Item, plan

FORMATS = ("png", "pdf")  # an SVG holds random ids (matplotlib's svg.hashsalt), even serially


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rel(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.fixture(scope="module")
def small_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.reports.conftest import write_grid

    return write_grid(tmp_path_factory.mktemp("results") / "distill_weight", values=(0.0, 0.3, 1.0), seeds=(1, 2))


@pytest.fixture(scope="module")
def serial(small_grid: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("serial")
    return out, build_report(small_grid, out=out, formats=FORMATS, jobs=1)


class _ExitOnLoad:
    """Unpickling it ends the process: a worker that dies on a figure."""

    def __reduce__(self) -> tuple[Callable[[int], None], tuple[int]]:
        return os._exit, (3,)


def _broken_figure() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.text(0.5, 0.5, r"$\frac{$")  # unbalanced mathtext: ValueError when drawn, not when made
    return fig


def _with_first(monkeypatch: pytest.MonkeyPatch, item: Item, rest: list[Item] | None = None) -> None:
    """Make every report plan ``item`` followed by ``rest`` (default: the study's own plan). The first
    figure goes to a worker: this process saves figures only while every worker is busy."""
    monkeypatch.setattr(reports.build, "plan", lambda study: [item, *(plan(study) if rest is None else rest)])


def test_parallel_build_is_byte_identical_to_serial(small_grid: Path, serial: tuple[Path, list[Path]],
                                                     tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out, paths = serial
    with caplog.at_level(logging.DEBUG, logger="reports.build"):
        parallel = build_report(small_grid, out=tmp_path, formats=FORMATS, jobs=3)
    assert _rel(parallel, tmp_path) == _rel(paths, out)  # the same list, in the same order
    assert _files(tmp_path) == _files(out)  # every figure, table, sidecar and report.md
    assert any("saved by worker processes" in r.getMessage() for r in caplog.records)
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left


def test_a_figure_failing_in_a_worker_fails_the_build_as_serially(small_grid: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _with_first(monkeypatch, Item("Figures", "broken", _broken_figure))
    with pytest.raises(ValueError) as serial:
        build_report(small_grid, out=tmp_path / "serial", formats=("png",), jobs=1)
    with pytest.raises(ValueError) as parallel:
        build_report(small_grid, out=tmp_path / "parallel", formats=("png",), jobs=3)
    assert str(parallel.value) == str(serial.value)
    assert any("while saving figure broken in report worker pid" in n for n in parallel.value.__notes__)
    assert not (tmp_path / "parallel/report.md").exists()  # as serially: no index of a failed report
    assert not list((tmp_path / "parallel").rglob(".*"))


def test_figures_before_a_failed_one_are_still_saved(tmp_path: Path) -> None:
    saved: list[str] = []
    good = Figure(figsize=(2, 2))
    with pytest.raises(ValueError), FigurePool(2) as pool:
        pool.submit(0, "good", good, tmp_path / "good", ("png",), on_saved=lambda p: saved.append(p[0].name))
        pool.submit(1, "broken", _broken_figure(), tmp_path / "broken", ("png",), on_saved=lambda p: saved.append(p[0].name))
        pool.submit(2, "later", Figure(), tmp_path / "later", ("png",), on_saved=lambda p: saved.append(p[0].name))
        pool.join()
    assert "good.png" in saved and (tmp_path / "good.png").is_file() and not (tmp_path / "broken.png").exists()


def test_a_worker_that_dies_costs_only_its_start(small_grid: Path, serial: tuple[Path, list[Path]],
                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    first, *rest = plan(reports.build.load_study(small_grid))

    def deadly() -> Figure:
        fig = first.make()
        assert isinstance(fig, Figure)
        fig.__dict__["_exit_on_load"] = _ExitOnLoad()  # pickled with the figure; harmless here
        return fig

    _with_first(monkeypatch, Item(first.section, first.name, deadly, first.note), rest)
    with caplog.at_level(logging.WARNING, logger="reports.figsave"):
        paths = build_report(small_grid, out=tmp_path, formats=("png",), jobs=3)
    assert any(f"exited (status 3) while saving figure {first.name}" in r.getMessage() for r in caplog.records)
    out, serial_paths = serial  # that figure was saved here instead: the same report (its PNG half)
    assert _rel(paths, tmp_path) == [p for p in _rel(serial_paths, out) if not p.endswith(".pdf")]
    assert _files(tmp_path) == {k: v for k, v in _files(out).items() if ".pdf" not in k}


def test_report_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert report_jobs(1, 100) == 0 and report_jobs(4, 100) == 3
    assert report_jobs(8, 7) == 2  # one worker per 3 items
    assert report_jobs(8, 2) == 0  # too few items for a worker
    for cpus, workers in ((1, 0), (2, 0), (3, 2), (16, 5)):  # auto: serial on 2 CPUs (AUTO_MIN_CPUS)
        monkeypatch.setattr(reports.figsave, "usable_cpus", lambda n=cpus: n)
        assert report_jobs(None, 15) == workers
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="jobs"):
            report_jobs(bad, 10)  # type: ignore[arg-type]


def test_jobs_1_starts_no_process(small_grid: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("jobs=1 started a process")

    monkeypatch.setattr(reports.figsave.subprocess, "Popen", no_process)
    assert main([str(small_grid), "--out", str(tmp_path), "--format", "png", "--jobs", "1", "-q"]) == 0
    assert (tmp_path / "figures/sensitivity_loss-distill_weight.png").is_file()
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_:
            main([str(small_grid), "--jobs", bad])
        assert exit_.value.code == 2
    assert "positive integer or 'auto'" in capsys.readouterr().err
