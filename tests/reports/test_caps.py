"""Large studies: tables and figures show the best ``MAX_SHOWN`` configurations, say so, and keep all of them
in a CSV (``reports.caps``); studies at or under the cap are unchanged (the other report tests)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from reports.build import build_report
from reports.caps import MAX_SHOWN, ranked
from reports.load import load_study
from reports.sections import plan
from tests.reports.conftest import write_grid

VALUES = tuple(round(0.05 * i, 2) for i in range(1, 13))  # 12 values x 3 routers = 36 configurations > 30
ROUTERS = ("learned", "uniform", "fixed")
TOTAL = len(VALUES) * len(ROUTERS)


@pytest.fixture(scope="module")
def big_grid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert TOTAL > MAX_SHOWN
    return write_grid(tmp_path_factory.mktemp("results") / "big_grid", values=VALUES, seeds=(1, 2),
                      second=("model.router", ROUTERS))


def _table_rows(md: str) -> list[str]:
    return [ln for ln in md.splitlines() if ln.startswith("| ")][1:]  # data rows, header left out


@pytest.mark.slow  # a whole report of 72 trials: about a minute on the loaded 2-core machine
def test_tables_show_the_best_configurations_and_say_so(big_grid: Path, tmp_path: Path) -> None:
    build_report(big_grid, out=tmp_path, formats=["png"])
    report = (tmp_path / "report.md").read_text()
    note = f"Showing the {MAX_SHOWN} best of {TOTAL} configurations"
    assert note in report
    assert "all 36 are in tables/status_all.csv" in report and "tables/results_all.csv" in report
    status = _table_rows((tmp_path / "tables" / "status.md").read_text())
    assert len(status) == MAX_SHOWN + 1 and status[-1].startswith(f"| all {TOTAL} configurations")
    assert len(_table_rows((tmp_path / "tables" / "results.md").read_text())) == MAX_SHOWN
    assert note in (tmp_path / "tables" / "results.md").read_text()
    # the full data stay machine-readable: every configuration, every trial counted
    status_all = pd.read_csv(tmp_path / "tables" / "status_all.csv")
    assert len(status_all) == TOTAL and int(status_all.drop(columns="variant").to_numpy().sum()) == 2 * TOTAL
    assert len(pd.read_csv(tmp_path / "tables" / "results_all.csv")) == TOTAL
    effects_all = pd.read_csv(tmp_path / "tables" / "results_effects_all.csv")
    assert effects_all["variant"].nunique() == TOTAL - 1  # every comparison, the Holm family the table states
    effects = (tmp_path / "tables" / "results_effects.md").read_text()
    assert f"Holm-corrected over the {TOTAL - 1} variants" in effects


def test_the_configurations_figure_has_at_most_the_cap(big_grid: Path) -> None:
    study = load_study(big_grid)
    item = next(i for i in plan(study) if i.name == "configurations")
    assert item.note is not None and f"best of {TOTAL}" in item.note  # report.md prints it under the figure
    fig = item.make()
    assert isinstance(fig, Figure)
    assert f"best of {TOTAL}" in fig.get_suptitle()
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()]
        shown = {v for v in ranked(study) if any(v in text for text in labels)}
        assert len(shown) <= MAX_SHOWN
    best = ranked(study)[0]
    assert any(best in t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels())


def test_importance_of_a_large_search_is_fitted_on_a_sample_and_says_so(
        search_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("optuna")
    import reports.search_stats as search_stats

    study = load_study(search_dir)
    done = int((study.trials["status"] == "completed").sum())
    monkeypatch.setattr(search_stats, "MAX_OPTUNA_TRIALS", done - 4)
    imp = search_stats.param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min",
                                        method="ped-anova")
    assert (imp["note"] == f"fitted on a random {done - 4} of {done} completed trials").all()
    assert imp["importance"].notna().all()
    monkeypatch.setattr(search_stats, "MAX_OPTUNA_TRIALS", done)  # at the cap: every trial, no note
    assert (search_stats.param_importance(study.trials, params=study.varied, metric="valid_mae", mode="min",
                                          method="ped-anova")["note"] == "").all()
