"""Rows of the result tables (docs/results.md) as typed Arrow tables, one function per table.

Every trial of a study gets the same columns with the same types (metric columns follow the data's
label kind, config columns every EMOE field), so pandas, pyarrow.dataset and DuckDB can read a study's
files as one table. These are pure functions: the trainable and the driver both use them.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from emoe.config import MODALITIES
from emoe.metrics import METRIC_NAMES
from emoe.outputs import EpochRecord, RouterRecord
from harness.study.params import FIELDS, flatten

__all__ = [
    "EPOCH_LOSSES",
    "STATUSES",
    "config_arrow_type",
    "epoch_row",
    "epochs_table",
    "metric_names",
    "router_table",
    "trial_schema",
    "trial_table",
]

STATUSES = ("completed", "pruned", "failed", "diverged")
EPOCH_LOSSES = ("loss", "task", "uni", "sim", "ent", "ud")
_ID_FIELDS = [("study", pa.string()), ("trial_id", pa.string()), ("config_id", pa.string()),
              ("variant", pa.string()), ("seed", pa.int64())]
_TS = pa.timestamp("us", tz="UTC")


def metric_names(label_kind: str) -> list[str]:
    """Metric names of a label kind, ``loss`` first (see docs/results.md)."""
    return ["loss", *METRIC_NAMES.get(label_kind, METRIC_NAMES["mosi"])]


def config_arrow_type(path: str) -> pa.DataType:
    """Arrow type of a flattened config column; tuples are stored as strings."""
    hint = FIELDS[path]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    if base is bool:
        return pa.bool_()
    if base is int:
        return pa.int64()
    if base is float:
        return pa.float64()
    return pa.string()


def _config_value(path: str, value: Any) -> Any:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in value) + "]"
    return value


def trial_schema(label_kind: str) -> pa.Schema:
    """Column order and types of ``trials/`` for a study on data of ``label_kind``."""
    metrics = metric_names(label_kind)
    fields = [*_ID_FIELDS, ("status", pa.string()), ("error", pa.string())]
    fields += [(p, config_arrow_type(p)) for p in FIELDS]
    fields += [("best_epoch", pa.int64()), ("epochs_run", pa.int64()), ("objective", pa.float64())]
    fields += [(f"{s}_{m}", pa.float64()) for s in ("valid", "test") for m in metrics]
    fields += [("time_total_s", pa.float64()), ("time_per_epoch_s", pa.float64()),
               ("started_at", _TS), ("finished_at", _TS), ("cpus", pa.float64()), ("gpus", pa.float64()),
               ("node", pa.string()), ("node_id", pa.string()), ("attempts", pa.int64()),
               ("code_version", pa.string()), ("data", pa.string())]
    return pa.schema(fields)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def trial_table(trial: dict[str, Any], *, label_kind: str, status: str, error: str | None,
                best_epoch: int, epochs_run: int, objective: float | None, valid: dict[str, float],
                test: dict[str, float], time_total_s: float | None, time_per_epoch_s: float | None,
                started_at: datetime | None, finished_at: datetime | None, cpus: float, gpus: float,
                node: str | None, node_id: str | None, attempts: int, code_version: str,
                data: str) -> pa.Table:
    """One ``trials/`` row for a trial description (``harness.study.plan.TrialFactory.make``)."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    row: dict[str, Any] = {k: trial[k] for k, _ in _ID_FIELDS}
    row.update(status=status, error=error)
    row.update({p: _config_value(p, v) for p, v in flatten(trial["emoe"]).items()})
    row.update(best_epoch=int(best_epoch), epochs_run=int(epochs_run), objective=_finite(objective))
    for split, values in (("valid", valid), ("test", test)):
        for m in metric_names(label_kind):
            row[f"{split}_{m}"] = _finite(values.get(m))
    row.update(time_total_s=time_total_s, time_per_epoch_s=time_per_epoch_s, started_at=started_at,
               finished_at=finished_at, cpus=float(cpus), gpus=float(gpus), node=node, node_id=node_id,
               attempts=int(attempts), code_version=code_version, data=data)
    schema = trial_schema(label_kind)
    return pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema}], schema=schema)


def epoch_row(record: EpochRecord) -> dict[str, Any]:
    """An ``EpochRecord`` as the plain, JSON-safe part of an ``epochs/`` row."""
    row: dict[str, Any] = {"epoch": int(record.epoch)}
    row.update({f"train_{k}": _finite(record.train.get(k)) for k in EPOCH_LOSSES})
    row.update({f"valid_{k}": _finite(v) for k, v in record.valid.items()})
    row.update({f"test_{k}": _finite(v) for k, v in (record.test or {}).items()})
    row.update(improved=bool(record.improved), lr=_finite(record.lr), time_s=_finite(record.time_s))
    row.update({f"w_{m}": _finite(record.router_mean.get(f"w_{m}")) for m in MODALITIES})
    return row


def _epochs_schema(label_kind: str) -> pa.Schema:
    metrics = metric_names(label_kind)
    fields = [*_ID_FIELDS, ("epoch", pa.int64())]
    fields += [(f"train_{k}", pa.float64()) for k in EPOCH_LOSSES]
    fields += [(f"{s}_{m}", pa.float64()) for s in ("valid", "test") for m in metrics]
    fields += [("improved", pa.bool_()), ("lr", pa.float64())]
    fields += [(f"w_{m}", pa.float64()) for m in MODALITIES] + [("time_s", pa.float64())]
    return pa.schema(fields)


def epochs_table(trial: dict[str, Any], rows: list[dict[str, Any]], *, label_kind: str) -> pa.Table:
    """``epochs/`` rows of one trial from ``epoch_row`` dicts (sorted by epoch)."""
    schema = _epochs_schema(label_kind)
    ids = {k: trial[k] for k, _ in _ID_FIELDS}
    data = [{f.name: {**ids, **r}.get(f.name) for f in schema} for r in sorted(rows, key=lambda r: r["epoch"])]
    return pa.Table.from_pylist(data, schema=schema)


def router_table(trial: dict[str, Any], rec: RouterRecord) -> pa.Table:
    """``router/`` rows: per test sample, router weights, prediction, label and true reliabilities."""
    n = len(rec.labels)
    w = np.asarray(rec.weights, dtype=np.float64).reshape(n, 3)
    cols: dict[str, Any] = {
        "study": pa.array([trial["study"]] * n, pa.string()),
        "trial_id": pa.array([trial["trial_id"]] * n, pa.string()),
        "config_id": pa.array([trial["config_id"]] * n, pa.string()),
        "variant": pa.array([trial["variant"]] * n, pa.string()),
        "seed": pa.array(np.full(n, trial["seed"], dtype=np.int64)),
        "sample": pa.array(np.arange(n, dtype=np.int64)),
        "sample_id": (pa.nulls(n, pa.string()) if rec.ids is None
                      else pa.array([str(i) for i in rec.ids], pa.string())),
        "label": pa.array(np.asarray(rec.labels, dtype=np.float64)),
        "pred": pa.array(np.asarray(rec.preds, dtype=np.float64).reshape(n)),
    }
    for j, m in enumerate(MODALITIES):
        cols[f"w_{m}"] = pa.array(w[:, j])
    r = None if rec.reliability is None else np.asarray(rec.reliability, dtype=np.float64).reshape(n, 3)
    for j, m in enumerate(MODALITIES):
        cols[f"r_{m}"] = pa.nulls(n, pa.float64()) if r is None else pa.array(r[:, j])
    return pa.table(cols)
