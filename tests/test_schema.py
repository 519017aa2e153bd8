"""emoe_schema, the one home of the results schema: its restated names agree with emoe, which computes them;
the harness writes exactly its columns and types; and a real study's files build a report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import emoe_schema as schema
from emoe.config import MODALITIES
from emoe.losses import EPOCH_LOSSES, LOSS_NAMES, LOSS_TERMS
from emoe.metrics import METRIC_NAMES, metric_mode
from harness.results.rows import _ARROW, config_dtype_of, trial_schema
from harness.study.params import FIELDS

ROOT = Path(__file__).resolve().parent.parent


def test_names_restated_in_the_schema_match_emoe() -> None:
    assert schema.LOSS_TERMS == LOSS_TERMS and schema.EPOCH_LOSSES == EPOCH_LOSSES
    assert (*LOSS_TERMS, "total") == LOSS_NAMES
    assert schema.METRIC_NAMES == METRIC_NAMES
    assert schema.MODALITIES == MODALITIES
    assert metric_mode is schema.metric_mode  # one home for directions


@pytest.mark.parametrize(("column", "mode"), [("valid_mae", "min"), ("test_acc7", "max"), ("loss", "min"),
                                              ("train_ud", "min"), ("valid_corr", "max"), ("f1_macro", "max")])
def test_metric_directions(column: str, mode: str) -> None:
    assert schema.metric_mode(column) == mode


def test_the_harness_writes_the_schema_columns_and_types() -> None:
    config = [(p, config_dtype_of(p)) for p in FIELDS]
    for kind in schema.METRIC_NAMES:
        expected = [(name, _ARROW[dtype]) for name, dtype in schema.trials_columns(kind, config)]
        assert [(f.name, f.type) for f in trial_schema(kind)] == expected
    assert config_dtype_of("model.fixed_weights") == "string"
    assert config_dtype_of("train.lr") == "float64" and config_dtype_of("model.d_model") == "int64"


def test_sequences_have_one_representation() -> None:
    assert schema.format_sequence((1 / 3, 1 / 3, 1 / 3)) == "[0.333333, 0.333333, 0.333333]"
    assert schema.format_sequence([1, 2]) == "[1, 2]"


def test_only_the_schema_names_column_types() -> None:
    """Arrow types appear in harness and reports only in the dtype-name -> Arrow-type table of rows.py."""
    offenders = []
    for path in [*(ROOT / "harness").rglob("*.py"), *(ROOT / "reports").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if any(t in line for t in ("pa.string()", "pa.int64()", "pa.float64()", "pa.bool_()", "pa.timestamp(")):
                offenders.append(f"{path.relative_to(ROOT)}:{n}")
    assert len(offenders) == 2 and all(o.startswith("harness/results/rows.py:") for o in offenders), offenders


@pytest.mark.slow
@pytest.mark.ray
def test_a_real_study_builds_its_report(tmp_path: Path) -> None:
    """The contract between the packages: studies/smoke.yaml run by the harness, reported by reports."""
    from reports.build import build_report
    from reports.load import load_study

    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "harness.run", str(ROOT / "studies" / "smoke.yaml"), "--results", str(results),
           "--num-cpus", "2", "--set", "base.train.max_epochs=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study_dir = results / "smoke"
    trials = pq.read_table(study_dir / "trials")
    written = {f.name: f.type for f in trials.schema}
    config = [(p, config_dtype_of(p)) for p in FIELDS]
    for name, dtype in schema.trials_columns("mosi", config):
        assert written[name] == _ARROW[dtype], name
    study = load_study(study_dir)
    assert len(study.trials) == 4 and set(study.trials["status"]) <= set(schema.STATUSES)
    assert list(study.epochs.columns) == [c for c, _ in schema.epochs_columns("mosi")]
    out = build_report(study_dir, out=tmp_path / "report", formats=("png",))
    names = {p.name for p in out}
    assert "report.md" in names and any(p.suffix == ".png" for p in out)
