"""Rows of the result tables (docs/results.md) as typed Arrow tables, one function per table.

Every trial of a study gets the same columns with the same types (metric columns follow the data's
label kind, config columns every EMOE field), so pandas, pyarrow.dataset and DuckDB can read a study's
files as one table. These are pure functions: the trainable and the driver both use them.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
import pyarrow as pa

from emoe.outputs import EpochRecord, RouterRecord
from emoe_schema import (
    EPOCH_LOSSES,
    MODALITIES,
    STATUSES,
    Column,
    Dtype,
    config_dtype,
    epochs_columns,
    format_sequence,
    metric_names,
    predictions_columns,
    router_columns,
    trials_columns,
)
from harness.study.params import FIELDS, flatten
from harness.study.trial import Trial

__all__ = [
    "EPOCH_LOSSES",
    "STATUSES",
    "Cell",
    "config_arrow_type",
    "config_columns",
    "config_dtype_of",
    "epoch_row",
    "epochs_table",
    "predictions_table",
    "router_table",
    "trial_schema",
    "trial_table",
]

#: Arrow type of each schema dtype name (the schema module names every column's dtype).
_ARROW: dict[Dtype, pa.DataType] = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
                                    "bool": pa.bool_(), "timestamp[us, tz=UTC]": pa.timestamp("us", tz="UTC"),
                                    "int32": pa.int32(), "float32": pa.float32()}
_ARROW["dictionary<int32, string>"] = pa.dictionary(pa.int32(), _ARROW["string"])
_ARROW["dictionary<int8, string>"] = pa.dictionary(pa.int8(), _ARROW["string"])
#: A row value before Arrow: what the columns of emoe_schema hold.
Cell = str | int | float | bool | datetime | None


def _arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([(name, _ARROW[dtype]) for name, dtype in columns])


def config_dtype_of(path: str) -> Dtype:
    """Schema dtype of a flattened config column (optional fields by their inner type)."""
    hint = FIELDS[path]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return config_dtype(base) if isinstance(base, type) else "string"


def config_arrow_type(path: str) -> pa.DataType:
    """Arrow type of a flattened config column; tuples are stored as strings (``format_sequence``)."""
    return _ARROW[config_dtype_of(path)]


def _config_value(value: object) -> Cell:
    if isinstance(value, list | tuple):
        return format_sequence(value)
    return value  # type: ignore[return-value]  # config leaves are str/int/float/bool/None


def config_columns(trial: Trial) -> dict[str, Cell]:
    """The trial's flattened configuration exactly as the ``trials/`` table's config columns hold it
    (dotted path -> value, sequences as ``format_sequence`` strings); the trackers log these as run
    parameters, so a run and its row never disagree."""
    return {p: _config_value(v) for p, v in flatten(trial.config_dict()).items()}


def trial_schema(label_kind: str) -> pa.Schema:
    """Column order and types of ``trials/`` for a study on data of ``label_kind``."""
    return _arrow_schema(trials_columns(label_kind, [(p, config_dtype_of(p)) for p in FIELDS]))


def _ids(trial: Trial) -> dict[str, Cell]:
    return {"study": trial.study, "trial_id": trial.trial_id, "config_id": trial.config_id,
            "variant": trial.variant, "seed": trial.seed, "phase": trial.phase}


def _finite(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


def trial_table(trial: Trial, *, label_kind: str, status: str, error: str | None,
                best_epoch: int, epochs_run: int, objective: float | None, valid: dict[str, float],
                test: dict[str, float], time_total_s: float | None, time_per_epoch_s: float | None,
                started_at: datetime | None, finished_at: datetime | None, cpus: float, gpus: float,
                node: str | None, node_id: str | None, attempts: int, code_version: str,
                data: str) -> pa.Table:
    """One ``trials/`` row for a planned trial."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    row: dict[str, Cell] = _ids(trial)
    row.update(status=status, error=error)
    row.update(config_columns(trial))
    row.update(best_epoch=int(best_epoch), epochs_run=int(epochs_run), objective=_finite(objective))
    for split, values in (("valid", valid), ("test", test)):
        for m in metric_names(label_kind):
            row[f"{split}_{m}"] = _finite(values.get(m))
    row.update(time_total_s=time_total_s, time_per_epoch_s=time_per_epoch_s, started_at=started_at,
               finished_at=finished_at, cpus=float(cpus), gpus=float(gpus), node=node, node_id=node_id,
               attempts=int(attempts), code_version=code_version, data=data)
    schema = trial_schema(label_kind)
    return pa.Table.from_pylist([{f.name: row.get(f.name) for f in schema}], schema=schema)


def epoch_row(record: EpochRecord) -> dict[str, Cell]:
    """An ``EpochRecord`` as the plain, JSON-safe part of an ``epochs/`` row."""
    row: dict[str, Cell] = {"epoch": int(record.epoch)}
    row.update({f"train_{k}": _finite(record.train.get(k)) for k in EPOCH_LOSSES})
    row.update({f"valid_{k}": _finite(v) for k, v in record.valid.items()})
    row.update({f"test_{k}": _finite(v) for k, v in (record.test or {}).items()})
    row.update(improved=bool(record.improved), lr=_finite(record.lr), time_s=_finite(record.time_s))
    row.update({f"w_{m}": _finite(record.router_mean.get(f"w_{m}")) for m in MODALITIES})
    return row


def _epoch_of(row: Mapping[str, Cell]) -> int:
    epoch = row["epoch"]
    assert isinstance(epoch, int), "epoch_row writes an int epoch"
    return epoch


def epochs_table(trial: Trial, rows: Sequence[Mapping[str, Cell]], *, label_kind: str) -> pa.Table:
    """``epochs/`` rows of one trial from ``epoch_row`` dicts (sorted by epoch)."""
    schema = _arrow_schema(epochs_columns(label_kind))
    ids = _ids(trial)
    data = [{f.name: {**ids, **r}.get(f.name) for f in schema} for r in sorted(rows, key=_epoch_of)]
    return pa.Table.from_pylist(data, schema=schema)


def router_table(trial: Trial, rec: RouterRecord) -> pa.Table:
    """``router/`` rows: per test sample, router weights, prediction, label and true reliabilities."""
    n = len(rec.labels)
    w = np.asarray(rec.weights, dtype=np.float64).reshape(n, 3)
    cols: dict[str, pa.Array] = {
        **{k: pa.array([v] * n) for k, v in _ids(trial).items()},
        "sample": pa.array(np.arange(n, dtype=np.int64)),
        "sample_id": pa.nulls(n) if rec.ids is None else pa.array([str(i) for i in rec.ids]),
        "label": pa.array(np.asarray(rec.labels, dtype=np.float64)),
        "pred": pa.array(np.asarray(rec.preds, dtype=np.float64).reshape(n)),
    }
    for j, m in enumerate(MODALITIES):
        cols[f"w_{m}"] = pa.array(w[:, j])
    r = None if rec.reliability is None else np.asarray(rec.reliability, dtype=np.float64).reshape(n, 3)
    for j, m in enumerate(MODALITIES):
        cols[f"r_{m}"] = pa.nulls(n) if r is None else pa.array(r[:, j])
    schema = _arrow_schema(router_columns())
    return pa.table([cols[f.name].cast(f.type) for f in schema], schema=schema)


def _coded(values: Sequence[str | None], n: int, dtype: Dtype) -> pa.DictionaryArray:
    """A dictionary-coded string column of ``n`` rows (one value repeated when ``values`` has one)."""
    full = list(values) * n if len(values) == 1 else list(values)
    return pa.array(full, type=_ARROW["string"]).dictionary_encode().cast(_ARROW[dtype])


def predictions_table(trial: Trial, splits: Mapping[str, RouterRecord]) -> pa.Table:
    """``predictions/`` rows: per split (``valid``/``test``) and sample, label and selected-epoch prediction.

    Ids are dictionary-coded and values float32, so a trial's file stays a few bytes per sample; the data
    set's own sample ids (MMSA ``id``) are kept as strings exactly as they are in the data.
    """
    parts = []
    columns = predictions_columns()
    schema = _arrow_schema(columns)
    dtype = dict(columns)
    for split, rec in splits.items():
        n = len(rec.labels)
        cols: dict[str, pa.Array] = {
            **{k: _coded([str(v)], n, dtype[k]) for k, v in _ids(trial).items() if k not in ("seed", "phase")},
            "seed": pa.array(np.full(n, trial.seed, dtype=np.int64)),
            "phase": _coded([trial.phase], n, dtype["phase"]),
            "split": _coded([split], n, dtype["split"]),
            "sample": pa.array(np.arange(n, dtype=np.int32)),
            "sample_id": (pa.nulls(n, _ARROW[dtype["sample_id"]]) if rec.ids is None
                          else _coded([str(i) for i in rec.ids], n, dtype["sample_id"])),
            "label": pa.array(np.asarray(rec.labels, dtype=np.float32).reshape(n)),
            "prediction": pa.array(np.asarray(rec.preds, dtype=np.float32).reshape(n)),
        }
        parts.append(pa.table([cols[f.name] for f in schema], schema=schema))
    if not parts:
        return schema.empty_table()
    # one dictionary per column across the splits (unify_dictionaries), so readers see a single chunk type
    return pa.concat_tables(parts).unify_dictionaries().combine_chunks()
