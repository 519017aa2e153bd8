"""The results schema (docs/results.md) in one dependency-free module: the harness writes it, reports reads it.

Table names, every column's name and type (as a dtype name such as ``"float64"``), the schema version,
the trial statuses, the loss-term and metric names with their directions, and how a sequence-valued
configuration field is stored. Standard library only, so ``reports`` can import it on a laptop without
torch or Ray, and the harness builds its Arrow schemas from it. A test checks the names restated here
(loss terms, metric names, modalities) against ``emoe``, the package that computes them. The submodule
``emoe_schema.layout`` (which files of a table count after compaction, and reading them) needs pyarrow;
this module does not import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

__all__ = [
    "COMPLETED",
    "DTYPES",
    "EPOCH_LOSSES",
    "FINISHED",
    "ID_COLUMNS",
    "LOSS_TERMS",
    "LOWER_IS_BETTER",
    "METRIC_NAMES",
    "MODALITIES",
    "PHASES",
    "REQUIRED",
    "SCHEMA_VERSION",
    "SIMULATED_NOTE",
    "SPLITS",
    "STATUSES",
    "STUDY_KINDS",
    "TABLES",
    "Column",
    "Dtype",
    "config_dtype",
    "epochs_columns",
    "format_sequence",
    "metric_mode",
    "metric_names",
    "predictions_columns",
    "router_columns",
    "trials_columns",
]

#: Version written to ``study.json``; readers refuse other versions.
SCHEMA_VERSION = 1
#: What every output of a simulated study (``simulate: true``; ``study.json`` has ``"simulated": true``) says
#: about itself: the command line's lines, report.md, figure titles and table captions.
SIMULATED_NOTE = "SIMULATED: learning curves drawn from a model, no training"
#: The per-trial tables: one Parquet file per trial in ``results/<study>/<table>/``.
TABLES: tuple[str, ...] = ("trials", "epochs", "router", "predictions")
#: ``study.json``'s ``kind``.
STUDY_KINDS: tuple[str, ...] = ("grid", "ablation", "search")

#: Column types, as pyarrow/pandas dtype names; timestamps are microseconds in UTC.
Dtype = Literal["string", "int64", "float64", "bool", "timestamp[us, tz=UTC]", "int32", "float32",
                "dictionary<int32, string>", "dictionary<int8, string>"]
DTYPES: tuple[Dtype, ...] = ("string", "int64", "float64", "bool", "timestamp[us, tz=UTC]", "int32", "float32",
                             "dictionary<int32, string>", "dictionary<int8, string>")
Column = tuple[str, Dtype]

#: Final statuses of a trial (the ``status`` column).
STATUSES: tuple[str, ...] = ("completed", "pruned", "failed", "diverged")
#: The status of trials that ran to the end: the only rows figures and tables compare.
COMPLETED = "completed"
#: Statuses of trials that trained to their end (a diverged trial stops but is not retried).
FINISHED: tuple[str, ...] = ("completed", "diverged")

#: The objective's terms (``emoe.losses.LOSS_TERMS``), and an epoch's training losses: the total as ``loss``.
LOSS_TERMS: tuple[str, ...] = ("task", "uni", "sim", "ent", "ud")
EPOCH_LOSSES: tuple[str, ...] = ("loss", *LOSS_TERMS)
#: Router weight / reliability column suffixes (``emoe.config.MODALITIES``): text, vision, audio.
MODALITIES: tuple[str, ...] = ("l", "v", "a")
#: Metric names per label kind (``emoe.metrics.METRIC_NAMES``); ``loss`` comes first in every table.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "mosi": ("mae", "corr", "acc2", "f1", "acc2_hz", "f1_hz", "acc3", "acc5", "acc7"),
    "sims": ("mae", "corr", "acc2", "f1", "acc3", "acc5"),
    "classification": ("acc", "f1_macro", "precision_macro", "recall_macro"),
}
#: Metrics and losses that improve downwards; every other metric improves upwards.
LOWER_IS_BETTER: frozenset[str] = frozenset({"loss", "mae", *LOSS_TERMS})
#: Column prefixes of the splits a value was measured on.
SPLITS: tuple[str, ...] = ("train", "valid", "test")

#: The ``phase`` column: a tuning trial, or a confirmation trial (a top configuration trained again on the
#: study's fresh ``confirm.seeds``). Results written before the column existed read as ``"tune"``.
PHASES: tuple[str, ...] = ("tune", "confirm")

#: Identity columns every table starts with.
ID_COLUMNS: tuple[Column, ...] = (("study", "string"), ("trial_id", "string"), ("config_id", "string"),
                                  ("variant", "string"), ("seed", "int64"))
#: Columns a reader requires in each table.
REQUIRED: dict[str, tuple[str, ...]] = {
    "trials": ("study", "trial_id", "config_id", "variant", "seed", "status"),
    "epochs": ("trial_id", "config_id", "variant", "seed", "epoch"),
    "router": ("trial_id", "config_id", "variant", "seed", "sample", "label", *(f"w_{m}" for m in MODALITIES)),
    "predictions": ("trial_id", "config_id", "variant", "seed", "split", "sample", "label", "prediction"),
}
_TS: Dtype = "timestamp[us, tz=UTC]"


def metric_mode(name: str) -> Literal["min", "max"]:
    """Whether a metric (optionally prefixed ``train_``/``valid_``/``test_``) improves downwards or upwards."""
    for split in SPLITS:
        if name.startswith(split + "_"):
            name = name[len(split) + 1:]
            break
    return "min" if name in LOWER_IS_BETTER else "max"


def metric_names(label_kind: str) -> list[str]:
    """Metric names of a label kind, ``loss`` first (unknown kinds get the MOSI names)."""
    return ["loss", *METRIC_NAMES.get(label_kind, METRIC_NAMES["mosi"])]


def config_dtype(python_type: type) -> Dtype:
    """Column type of a configuration field of ``python_type``; sequences and names are strings."""
    types: dict[type, Dtype] = {bool: "bool", int: "int64", float: "float64"}
    return types.get(python_type, "string")


def format_sequence(values: Iterable[object]) -> str:
    """How a sequence-valued configuration field is stored: ``[0.333333, 0.333333, 0.333333]``."""
    return "[" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values) + "]"


def _metric_columns(label_kind: str) -> list[Column]:
    return [(f"{s}_{m}", "float64") for s in ("valid", "test") for m in metric_names(label_kind)]


def trials_columns(label_kind: str, config: Sequence[Column]) -> list[Column]:
    """``trials/``: ids, status, the flattened configuration (``config``), selected-epoch metrics, timings."""
    return [*ID_COLUMNS, ("phase", "string"), ("status", "string"), ("error", "string"), *config,
            ("best_epoch", "int64"), ("epochs_run", "int64"), ("objective", "float64"),
            *_metric_columns(label_kind),
            ("time_total_s", "float64"), ("time_per_epoch_s", "float64"), ("started_at", _TS),
            ("finished_at", _TS), ("cpus", "float64"), ("gpus", "float64"), ("node", "string"),
            ("node_id", "string"), ("attempts", "int64"), ("code_version", "string"), ("data", "string")]


def epochs_columns(label_kind: str) -> list[Column]:
    """``epochs/``: one row per trial and epoch: training losses, metrics, lr, router weight means."""
    return [*ID_COLUMNS, ("phase", "string"), ("epoch", "int64"), *((f"train_{k}", "float64") for k in EPOCH_LOSSES),
            *_metric_columns(label_kind), ("improved", "bool"), ("lr", "float64"),
            *((f"w_{m}", "float64") for m in MODALITIES), ("time_s", "float64")]


def router_columns() -> list[Column]:
    """``router/``: per test sample, router weights, prediction, label and true reliabilities (synthetic)."""
    return [*ID_COLUMNS, ("sample", "int64"), ("sample_id", "string"), ("label", "float64"),
            ("pred", "float64"), *((f"w_{m}", "float64") for m in MODALITIES),
            *((f"r_{m}", "float64") for m in MODALITIES)]


def predictions_columns() -> list[Column]:
    """``predictions/``: per split and sample, label and prediction at the selected epoch (kept small:
    dictionary-coded ids, float32 values)."""
    ids: Dtype = "dictionary<int32, string>"
    return [("study", ids), ("trial_id", ids), ("config_id", ids), ("variant", ids), ("seed", "int64"),
            ("phase", "dictionary<int8, string>"), ("split", "dictionary<int8, string>"), ("sample", "int32"), ("sample_id", ids),
            ("label", "float32"), ("prediction", "float32")]
