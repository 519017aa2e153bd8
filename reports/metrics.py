"""Names, units and directions of the result metrics, so every figure and table labels them alike.

Columns follow docs/results.md: ``valid_<m>`` / ``test_<m>`` for selected-epoch metrics and ``train_<term>``
for training losses. Accuracies and F1 are stored as fractions and shown as percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

from emoe_schema import LOWER_IS_BETTER

__all__ = [
    "CLASSIFICATION_MAIN",
    "REGRESSION_MAIN",
    "MetricInfo",
    "axis_label",
    "metric_info",
    "metric_title",
    "param_label",
]

_NAMES: dict[str, str] = {
    "loss": "Loss",
    "mae": "MAE",
    "corr": "Corr",
    "acc2": "Acc-2",
    "f1": "F1",
    "acc2_hz": "Acc-2 (has-0)",
    "f1_hz": "F1 (has-0)",
    "acc3": "Acc-3",
    "acc5": "Acc-5",
    "acc7": "Acc-7",
    "acc": "Accuracy",
    "f1_macro": "Macro-F1",
    "precision_macro": "Macro-precision",
    "recall_macro": "Macro-recall",
    "task": "Task loss",
    "uni": "Unimodal loss",
    "sim": "Similarity loss",
    "ent": "Entropy-balance loss",
    "ud": "Distillation loss",
}
_PERCENT = {"acc2", "f1", "acc2_hz", "f1_hz", "acc3", "acc5", "acc7", "acc", "f1_macro", "precision_macro",
            "recall_macro"}
_PARAMS: dict[str, str] = {
    "loss.distill_weight": r"Distillation weight $\lambda_\mathrm{ud}$",
    "loss.balance_weight": r"Balance weight $\lambda_\mathrm{bal}$",
    "loss.sim_alpha": r"Similarity weight $\alpha$",
    "loss.uni_weight": "Unimodal loss weight",
    "loss.importance_eps": r"Importance $\varepsilon$",
    "model.temperature": r"Router temperature $\tau$",
    "model.d_model": r"Expert width $d$",
    "model.n_heads": "Attention heads",
    "model.n_levels": "Transformer layers",
    "model.out_dropout": "Output dropout",
    "model.embed_dropout": "Embedding dropout",
    "model.fusion": "Fusion",
    "model.router": "Router",
    "model.router_input": "Router input",
    "train.lr": "Learning rate",
    "train.batch_size": "Batch size",
    "train.weight_decay": "Weight decay",
    "train.update_epochs": "Accumulation window (batches)",
}
_SPLITS = {"valid": "Validation", "test": "Test", "train": "Train"}

#: Headline metrics of a regression study (MOSI/MOSEI/SIMS), in the order papers print them.
REGRESSION_MAIN: tuple[str, ...] = ("acc2", "f1", "acc7", "mae", "corr")
#: Headline metrics of a classification study (e.g. MIntRec).
CLASSIFICATION_MAIN: tuple[str, ...] = ("acc", "f1_macro", "precision_macro", "recall_macro")


@dataclass(frozen=True)
class MetricInfo:
    """How one metric column is named, scaled for display and compared (direction)."""

    column: str
    metric: str  # base name without split prefix, e.g. "acc7"
    split: str | None  # "valid" | "test" | "train" | None
    name: str  # display name, e.g. "Acc-7"
    percent: bool  # stored as a fraction, shown x100
    higher_is_better: bool

    @property
    def scale(self) -> float:
        """Factor from stored values to displayed values (100 for percentages)."""
        return 100.0 if self.percent else 1.0

    @property
    def decimals(self) -> int:
        """Decimals shown in tables: one for percentages, three otherwise (MAE, Corr, losses)."""
        return 1 if self.percent else 3

    @property
    def unit(self) -> str:
        """Unit or reading hint shown in axis labels and table headers."""
        if self.percent:
            return "%"
        if self.metric == "corr":
            return "Pearson r"
        return "lower is better" if not self.higher_is_better else "higher is better"

    @property
    def short(self) -> str:
        """Name with unit, without the split (for table headers)."""
        return f"{self.name} ({self.unit})"


def metric_info(column: str, *, mode: str | None = None) -> MetricInfo:
    """Describe a metric column such as ``test_acc7``; ``mode`` ('min'/'max') overrides the direction.

    Unknown metrics are accepted (named by their column) when ``mode`` says which direction is better.
    """
    split: str | None = None
    metric = column
    for prefix in _SPLITS:
        if column.startswith(prefix + "_"):
            split, metric = prefix, column[len(prefix) + 1:]
            break
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    known = metric in _NAMES
    if not known and mode is None:
        raise ValueError(
            f"unknown metric column {column!r}: expected valid_/test_/train_ + one of {sorted(_NAMES)}, "
            "or pass mode='min'|'max'"
        )
    higher = (metric not in LOWER_IS_BETTER) if mode is None else mode == "max"
    name = _NAMES.get(metric, metric)
    if split == "train" and metric == "loss":
        name = "Loss"
    return MetricInfo(column=column, metric=metric, split=split, name=name, percent=metric in _PERCENT,
                      higher_is_better=higher)


def metric_title(column: str, *, mode: str | None = None) -> str:
    """Split and name without unit, e.g. ``Test Acc-7``."""
    info = metric_info(column, mode=mode)
    return f"{_SPLITS[info.split]} {info.name}" if info.split else info.name


def axis_label(column: str, *, mode: str | None = None, split: bool = True, wrap: bool = False) -> str:
    """Axis label with split, name and unit, e.g. ``Test Acc-7 (%)`` or ``Test MAE (lower is better)``;
    ``wrap`` puts a long unit on its own line (for narrow panels)."""
    info = metric_info(column, mode=mode)
    title = metric_title(column, mode=mode) if split else info.name
    sep = "\n" if wrap and len(info.unit) > 2 else " "
    return f"{title}{sep}({info.unit})"


def param_label(column: str) -> str:
    """Readable name of a parameter column, e.g. ``model.temperature`` -> ``Router temperature τ``."""
    return _PARAMS.get(column, column)
