"""Read a study's result directory (docs/results.md, schema version 1) into pandas, checking the schema.

A table is one Parquet file per trial (a part), a compacted file, or both: ``emoe_schema.layout`` reads
them with its precedence rule (a trial's part wins over its compacted rows), concatenating with permissive
type promotion so a column that is all-null in one trial's file (e.g. ``error``) does not break the read. A
damaged part is named in a warning and left out; a damaged compacted file stops the load with an error
naming it (it holds many trials: leaving it out would quietly drop most of the study).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from emoe_schema import COMPLETED, PHASES, REQUIRED, SCHEMA_VERSION, STUDY_KINDS
from emoe_schema.layout import COMPACTED, list_table, read_table_files

__all__ = [
    "SCHEMA_VERSION",
    "ResultsError",
    "Study",
    "completed",
    "load_study",
    "read_table",
    "split_phases",
]

log = logging.getLogger(__name__)
_KINDS = STUDY_KINDS
_REQUIRED = REQUIRED


class ResultsError(ValueError):
    """A result directory that is missing, incomplete or does not follow docs/results.md."""


@dataclass
class Study:
    """One study's results: its description (study.json), the spec as run (spec.yaml, empty when absent or
    unreadable) and the trials, epochs and router tables."""

    path: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    epochs: pd.DataFrame = field(default_factory=pd.DataFrame)
    router: pd.DataFrame = field(default_factory=pd.DataFrame)
    spec: dict[str, Any] = field(default_factory=dict)
    #: Confirmation trials (``phase: confirm``): the top configurations trained again on fresh seeds. They are
    #: kept out of ``trials``/``epochs``/``router`` (which hold the tuning trials every analysis compares).
    confirm: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def name(self) -> str:
        return str(self.meta.get("study") or self.path.name)

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def varied(self) -> list[str]:
        """Parameter columns the study varies (only those present in the trials table)."""
        return [c for c in self.meta.get("varied") or [] if c in self.trials.columns]

    @property
    def baseline(self) -> str | None:
        return self.meta.get("baseline")

    @property
    def objective(self) -> tuple[str, str]:
        """(metric column, mode): e.g. ``("valid_mae", "min")``; the column is ``objective`` if unknown."""
        obj = self.meta.get("objective") or {}
        metric, mode = str(obj.get("metric", "objective")), str(obj.get("mode", "min"))
        column = metric if metric in self.trials.columns else "objective"
        return column, mode

    @property
    def task(self) -> str:
        return str(self.meta.get("task") or "regression")


def _on_damaged(path: Path, exc: Exception) -> None:
    if path.name == COMPACTED:
        raise ResultsError(f"{path}: damaged ({exc}); `python -m harness.run <study file> --resume` keeps its "
                           "readable rows, moves the file to quarantine/ and runs the trials it lost again")
    log.warning("%s: not a readable Parquet file (%s); left out of the report (`python -m harness.run ... "
                "--resume` moves it to quarantine/ and runs its trial again)", path, exc)


def read_table(directory: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """One table of a study (its parts and compacted file, sorted by trial id) as one frame."""
    try:
        table = read_table_files(list_table(directory), on_damaged=_on_damaged, promote="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ResultsError(f"{directory}: trial files have incompatible columns ({exc})") from exc
    if table is None:
        return pd.DataFrame(columns=list(required))
    df = table.to_pandas()
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ResultsError(f"{directory}: missing required columns {missing} (see docs/results.md)")
    return df


def _read_meta(path: Path) -> dict[str, Any]:
    meta_file = path / "study.json"
    if not meta_file.is_file():
        raise ResultsError(f"{path}: no study.json; is this a study result directory (results/<study>)?")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{meta_file}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ResultsError(f"{meta_file}: expected a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{meta_file}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    if meta.get("kind") not in _KINDS:
        raise ResultsError(f"{meta_file}: kind must be one of {list(_KINDS)}, got {meta.get('kind')!r}")
    return meta


def _read_spec(path: Path) -> dict[str, Any]:
    """spec.yaml as a dict; only optional facts come from it (e.g. log-sampled parameters), so a missing or
    unreadable file (or no PyYAML) gives {} with a warning instead of stopping the report."""
    spec_file = path / "spec.yaml"
    if not spec_file.is_file():
        return {}
    try:
        import yaml

        spec = yaml.safe_load(spec_file.read_text())
    except Exception as exc:  # ImportError, OSError, yaml.YAMLError: all only cost the optional facts
        log.warning("%s: not read (%s: %s); search-space facts are inferred from the values",
                    spec_file, type(exc).__name__, exc)
        return {}
    return spec if isinstance(spec, dict) else {}


def _study_dirs(path: Path) -> list[str]:
    try:
        return sorted(p.name for p in path.iterdir() if (p / "study.json").is_file())
    except OSError:
        return []


def load_study(path: str | Path) -> Study:
    """Load ``results/<study>``: study.json plus the trials (required), epochs and router tables."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ResultsError(f"{path}: is a file, not a study result directory (results/<study>)")
    if not path.is_dir():
        raise ResultsError(f"{path}: no such results directory")
    if not (path / "study.json").exists() and (inside := _study_dirs(path)):
        shown = ", ".join(inside[:5]) + (", ..." if len(inside) > 5 else "")
        raise ResultsError(f"{path}: holds no study.json but the studies {shown}; give one of them, "
                           f"e.g. {path / inside[0]}")
    try:
        meta = _read_meta(path)
    except OSError as exc:
        raise ResultsError(f"{path / 'study.json'}: cannot be read ({exc.strerror or exc})") from exc
    trials = read_table(path / "trials", _REQUIRED["trials"])
    if trials.empty:
        raise ResultsError(f"{path / 'trials'}: no trial files yet; nothing to report")
    dup = trials["trial_id"].duplicated()
    if dup.any():
        raise ResultsError(f"{path / 'trials'}: duplicated trial ids {sorted(trials['trial_id'][dup].unique())}")
    epochs = read_table(path / "epochs", _REQUIRED["epochs"]) if (path / "epochs").is_dir() else pd.DataFrame()
    router = read_table(path / "router", _REQUIRED["router"]) if (path / "router").is_dir() else pd.DataFrame()
    trials, confirm = split_phases(trials)
    tuning = set(trials["trial_id"])
    epochs, router = (df[df["trial_id"].isin(tuning)] if "trial_id" in df.columns else df for df in (epochs, router))
    return Study(path=path, meta=meta, trials=trials, epochs=epochs, router=router, spec=_read_spec(path),
                 confirm=confirm)


def split_phases(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tuning rows and confirmation rows of a trials table (rows without a ``phase`` are tuning rows)."""
    tune, confirm = PHASES
    phase = trials["phase"].fillna(tune) if "phase" in trials.columns else pd.Series(tune, index=trials.index)
    unknown = sorted(set(phase) - set(PHASES))
    if unknown:
        raise ResultsError(f"trials: unknown phase values {unknown}, expected one of {list(PHASES)}")
    return trials[phase == tune].reset_index(drop=True), trials[phase == confirm].reset_index(drop=True)


def completed(df: pd.DataFrame, trials: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of completed trials only; for epochs/router tables pass the trials table to look statuses up."""
    if "status" in df.columns:
        return df[df["status"] == COMPLETED]
    if trials is None:
        raise ValueError("a table without a status column needs the trials table to find completed trials")
    done = set(trials.loc[trials["status"] == COMPLETED, "trial_id"])
    return df[df["trial_id"].isin(done)]
