"""Reading result directories: schema checks, hidden temp files, null-typed columns, clear errors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reports.load import ResultsError, completed, load_study
from reports.metrics import axis_label, metric_info, metric_title, param_label


def test_load_ablation_reads_every_table(ablation_dir: Path) -> None:
    study = load_study(ablation_dir)
    assert study.kind == "ablation" and study.baseline == "full" and study.name == "ablation"
    assert len(study.trials) == 6 * 5 and study.trials["trial_id"].is_unique
    assert study.objective == ("valid_mae", "min")
    assert set(study.trials["status"]) == {"completed", "failed"}
    failed = study.trials[study.trials.status == "failed"].iloc[0]
    assert failed["error"] == "RuntimeError: boom" and pd.isna(failed["test_mae"])  # null-typed file merged
    assert len(completed(study.trials)) == 29
    assert set(completed(study.router, study.trials)["trial_id"]) == set(completed(study.trials)["trial_id"])
    assert {"epoch", "valid_mae", "w_l"} <= set(study.epochs.columns)
    assert pd.api.types.is_datetime64_any_dtype(study.trials["started_at"])


def test_hidden_temporary_files_are_ignored(grid_dir: Path) -> None:
    assert (grid_dir / "trials" / ".tmp-partial.parquet").exists()
    study = load_study(grid_dir)
    assert len(study.trials) == 15 and study.varied == ["loss.distill_weight"]


def test_completed_needs_trials_for_tables_without_status(ablation_dir: Path) -> None:
    study = load_study(ablation_dir)
    with pytest.raises(ValueError, match="trials table"):
        completed(study.router)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: (d / "study.json").unlink(), "no study.json"),
    (lambda d: (d / "study.json").write_text("{oops"), "invalid JSON"),
    (lambda d: _meta(d, schema_version=2), "schema_version 2"),
    (lambda d: _meta(d, kind="random"), "kind must be one of"),
    (lambda d: shutil.rmtree(d / "trials"), "no trial files"),
    (lambda d: _drop_column(d, "seed"), r"missing required columns \['seed'\]"),
    (lambda d: _duplicate_trial(d), "duplicated trial ids"),
])
def test_bad_result_directories_raise_clear_errors(tmp_path: Path, make_study: Callable[..., Path],
                                                    mutate: Callable[[Path], object], message: str) -> None:
    d = make_study("grid", tmp_path / "g", values=(0.1, 0.2), seeds=(1,))
    mutate(d)
    with pytest.raises(ResultsError, match=message):
        load_study(d)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match="no such results directory"):
        load_study(tmp_path / "absent")


def _meta(d: Path, **changes: object) -> None:
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, **changes}))


def _drop_column(d: Path, column: str) -> None:
    for f in (d / "trials").glob("[!.]*.parquet"):
        pq.write_table(pq.read_table(f).drop_columns([column]), f)


def _duplicate_trial(d: Path) -> None:
    f = sorted((d / "trials").glob("[!.]*.parquet"))[0]
    pq.write_table(pa.Table.from_pandas(pd.read_parquet(f)), d / "trials" / "copy.parquet")


def test_metric_labels_units_and_directions() -> None:
    assert axis_label("test_acc7") == "Test Acc-7 (%)"
    assert axis_label("test_mae") == "Test MAE (lower is better)"
    assert axis_label("valid_mae", wrap=True) == "Validation MAE\n(lower is better)"
    assert axis_label("test_corr") == "Test Corr (Pearson r)"
    assert metric_title("valid_f1_macro") == "Validation Macro-F1"
    acc, mae = metric_info("test_acc2"), metric_info("valid_mae")
    assert (acc.percent, acc.scale, acc.higher_is_better, acc.decimals) == (True, 100.0, True, 1)
    assert (mae.percent, mae.scale, mae.higher_is_better, mae.decimals) == (False, 1.0, False, 3)
    assert metric_info("objective", mode="max").higher_is_better
    with pytest.raises(ValueError, match="unknown metric column 'objective'"):
        metric_info("objective")
    assert param_label("model.temperature").startswith("Router temperature")
    assert param_label("model.something_new") == "model.something_new"


def test_the_fixture_stores_sequences_as_the_harness_does(ablation_dir: Path) -> None:
    """One representation of a sequence-valued configuration column: the schema's (harness/results/rows.py
    writes it with the same function)."""
    from emoe_schema import format_sequence

    trials = load_study(ablation_dir).trials
    assert set(trials["model.fixed_weights"]) == {format_sequence((1 / 3, 1 / 3, 1 / 3))}
