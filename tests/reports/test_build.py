"""End to end: build_report and ``python -m reports`` write every figure and table a study kind calls for."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reports.__main__ import main
from reports.build import PNG_DPI, build_report
from reports.load import load_study
from reports.sections import focus_variant, main_metrics, plan


def _names(paths: list[Path], root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_ablation_report(ablation_dir: Path, tmp_path: Path) -> None:
    paths = build_report(ablation_dir, out=tmp_path, formats=("png",))
    names = _names(paths, tmp_path)
    assert {"figures/ablation_delta.png", "figures/ablation_absolute.png", "figures/learning_curves.png",
            "figures/router_weights.png", "figures/router_reliability_full.png",
            "figures/router_by_label_full.png", "tables/ablation.md", "tables/ablation.tex",
            "tables/ablation_tests.md", "tables/ablation_tests.tex", "tables/ablation_tests_raw.csv",
            "tables/ablation_sample_tests.md", "tables/ablation_sample_tests.tex",
            "tables/ablation_sample_tests_raw.csv",
            "tables/status.md", "tables/status.tex", "report.md"} == names
    assert all(p.stat().st_size > 0 for p in paths)
    assert _png_size(tmp_path / "figures/ablation_delta.png")[0] == round(6.9 * PNG_DPI)  # page width
    tex = (tmp_path / "tables/ablation.tex").read_text()
    # readable as the results are (mkstemp made every report file 0600: colleagues on shared storage could
    # read the Parquet files but not the figures, tables or report.md)
    mask = os.umask(0o022)
    os.umask(mask)
    assert {p.stat().st_mode & 0o777 for p in paths} == {0o666 & ~mask}
    assert all(line.isascii() for f in (tmp_path / "tables").glob("*.tex")  # what pdflatex reads is ASCII
               for line in f.read_text().splitlines() if not line.startswith("%"))
    assert r"\toprule" in tex and r"no\_unimodal & 4 &" in tex and r"$^\dagger$" in tex  # rows tied with the best
    report = (tmp_path / "report.md").read_text()
    assert "![ablation_delta](figures/ablation_delta.png)" in report and "| Variant | n |" in report
    assert not (ablation_dir / "figures").exists()  # --out given: nothing written beside the results


def test_grid_report_defaults_to_the_study_directory(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("grid", tmp_path / "router_temperature", param="model.temperature",
                   values=(0.03, 0.1, 0.3, 1.0), seeds=(1, 2))
    paths = build_report(d, formats=["PNG", ".png"])  # normalised and de-duplicated
    names = _names(paths, d)
    assert {"figures/sensitivity_model-temperature.png", "figures/sensitivity_model-temperature_two_axis.png",
            "tables/results.md", "tables/results.tex", "figures/learning_curves.png",
            "figures/router_weights.png", "report.md"} <= names
    assert not [n for n in names if n.endswith(".pdf")]
    assert not list((d / "figures").glob(".*"))  # no temporary files left behind


def test_two_parameter_grid_draws_one_line_per_second_value(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("grid", tmp_path / "g2", values=(0.0, 0.5, 1.0), seeds=(1, 2),
                   second=("model.fusion", ("sum", "concat")))
    items = {i.name: i for i in plan(load_study(d))}
    assert "sensitivity_loss-distill_weight" in items and "configurations" in items  # fusion is categorical
    fig = items["sensitivity_loss-distill_weight"].make()
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes if ax.get_lines())
    (legend,) = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)]
    assert [t.get_text() for t in legend.get_texts()] == ["concat", "sum"]
    assert legend.get_title().get_text() == "Fusion\nmean ± 95% CI over n=2 seeds"
    table = items["results"].make()
    assert table.header[:3] == ["loss.distill_weight", "model.fusion", "n"] and len(table.rows) == 6


def test_search_report(search_dir: Path, tmp_path: Path) -> None:
    names = _names(build_report(search_dir, out=tmp_path, formats=("png",)), tmp_path)
    assert {"figures/best_so_far.png", "figures/importance.png", "figures/parallel_coordinates.png",
            "tables/importance_raw.csv", "tables/top_configurations.md", "figures/learning_curves.png"} <= names
    top = (tmp_path / "tables/top_configurations.md").read_text().splitlines()
    assert len([ln for ln in top if ln.startswith("| trial_")]) == 10


def test_pdf_embeds_truetype_fonts(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("grid", tmp_path / "g", values=(0.0, 0.5, 1.0), seeds=(1, 2))
    build_report(d, out=tmp_path / "out", formats=("pdf",))
    pdf = (tmp_path / "out/figures/sensitivity_loss-distill_weight.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and b"/Type3" not in pdf
    assert b"CreationDate" not in pdf  # reproducible files


def test_items_the_data_cannot_support_are_skipped_and_listed(make_study: Callable[..., Path],
                                                               tmp_path: Path) -> None:
    d = make_study("ablation", tmp_path / "abl", seeds=(1, 2))
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, "baseline": "ghost"}))
    paths = build_report(d, out=tmp_path / "out", formats=("png",))
    names = _names(paths, tmp_path / "out")
    assert "figures/ablation_delta.png" not in names and "tables/status.md" in names
    report = (tmp_path / "out/report.md").read_text()
    assert "## Skipped" in report and "ghost" in report


def test_plan_choices(ablation_dir: Path, grid_dir: Path) -> None:
    ablation, grid = load_study(ablation_dir), load_study(grid_dir)
    assert main_metrics(ablation) == ["test_acc2", "test_f1", "test_acc7", "test_mae", "test_corr"]
    assert focus_variant(ablation) == "full"
    curves = next(i for i in plan(ablation) if i.name == "learning_curves").make()
    assert curves.legends[0].get_texts()[0].get_text() == "full"  # the baseline is always among the curves
    best = grid.trials.groupby("variant")["valid_mae"].mean().idxmin()
    assert focus_variant(grid) == best
    assert [i.name for i in plan(grid)][:3] == ["sensitivity_loss-distill_weight",
                                                "sensitivity_loss-distill_weight_paired",
                                                "sensitivity_loss-distill_weight_two_axis"]


def test_bad_format(ablation_dir: Path) -> None:
    with pytest.raises(ValueError, match="unsupported figure format"):
        build_report(ablation_dir, formats=("jpg",))


def test_cli_in_process(make_study: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_study("grid", tmp_path / "g", values=(0.1, 1.0, 10.0), seeds=(1, 2))
    assert main([str(d), "--out", str(tmp_path / "o"), "--format", "svg"]) == 0
    out = capsys.readouterr()
    assert str(tmp_path / "o" / "figures" / "sensitivity_loss-distill_weight.svg") in out.out
    assert "wrote" in out.err
    assert main([str(tmp_path / "missing")]) == 2
    assert "no such results directory" in capsys.readouterr().err
    assert main([str(d), "--format", "gif"]) == 2


def test_python_dash_m_reports(make_study: Callable[..., Path], tmp_path: Path) -> None:
    d = make_study("grid", tmp_path / "g", values=(0.1, 0.5), seeds=(1,))
    res = subprocess.run([sys.executable, "-m", "reports", str(d), "--format", "png", "-q"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (d / "figures" / "sensitivity_loss-distill_weight.png").is_file() and (d / "report.md").is_file()
