"""Typed, frozen configuration of EMOE: model, losses and training.

Every field a study may vary lives here, with the reference default for CMU-MOSI
(the EMOE paper and its official code). ``validate()`` returns every problem at once as
``"field: message"`` strings; ``__post_init__`` raises ``ConfigError`` listing them.
The package stays free of YAML/Ray: the harness builds these from validated specs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "LOSS_WEIGHTS",
    "MODALITIES",
    "ConfigError",
    "EMOEConfig",
    "LossConfig",
    "ModelConfig",
    "TrainConfig",
    "from_dict",
    "to_dict",
]

#: Modality order used everywhere (router input, weights, stacked tensors): language, vision, acoustic.
MODALITIES: tuple[str, str, str] = ("l", "v", "a")
#: The ``LossConfig`` fields that weight the objective's terms, in this order wherever they travel together
#: (``emoe.losses.weighted_total``'s keywords; a stacked member's weight row, ``emoe.stack``).
LOSS_WEIGHTS: tuple[str, ...] = ("uni_weight", "balance_weight", "sim_alpha", "distill_weight")

RouterKind = Literal["learned", "uniform", "fixed"]
RouterInput = Literal["flatten", "mean"]
Fusion = Literal["sum", "concat"]
TextInput = Literal["features", "bert"]
Importance = Literal["inverse", "softmax"]
Task = Literal["regression", "classification"]


class ConfigError(ValueError):
    """A configuration with one or more invalid fields; ``errors`` lists ``"field: message"``."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.errors))


def _check_prob(errors: list[str], name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        errors.append(f"{name}: dropout probability must be in [0, 1), got {value}")


def _check_literal(errors: list[str], name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        errors.append(f"{name}: must be one of {list(allowed)}, got {value!r}")


class _Validated:
    def validate(self) -> list[str]:  # pragma: no cover - overridden
        return []

    def __post_init__(self) -> None:
        errors = self.validate()
        if errors:
            raise ConfigError(errors)


@dataclass(frozen=True)
class ModelConfig(_Validated):
    """Architecture of EMOE. Input shapes describe the data; the rest are the model's knobs."""

    # --- inputs (set from the data set) ---
    d_text: int = 768  # BERT feature width (features) — ignored for text_input="bert"
    d_audio: int = 5  # MOSI 5, MOSEI 74
    d_vision: int = 20  # MOSI 20, MOSEI 35
    len_text: int = 50
    len_audio: int = 50  # unaligned MOSI 375
    len_vision: int = 50  # unaligned MOSI 500
    text_input: TextInput = "features"
    bert_path: str | None = None  # local directory with BERT weights (text_input="bert" only)
    # --- experts ---
    d_model: int = 256
    n_heads: int = 8
    n_levels: int = 4
    kernel_l: int = 5
    kernel_v: int = 5
    kernel_a: int = 5
    # --- dropouts ---
    text_dropout: float = 0.5
    embed_dropout: float = 0.2
    attn_dropout_l: float = 0.3
    attn_dropout_v: float = 0.0
    attn_dropout_a: float = 0.2
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    out_dropout: float = 0.5
    # --- router and fusion ---
    router: RouterKind = "learned"
    router_input: RouterInput = "flatten"
    fixed_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # (l, v, a), router="fixed"
    temperature: float = 0.1
    fusion: Fusion = "sum"
    # --- output ---
    n_outputs: int = 1  # 1 = regression score; >1 = number of classes

    @property
    def aligned(self) -> bool:
        """Aligned data has all three sequences at text length (no time-axis transfer maps)."""
        return self.len_audio == self.len_text and self.len_vision == self.len_text

    @property
    def fused_dim(self) -> int:
        return self.d_model * (3 if self.fusion == "concat" else 1)

    def validate(self) -> list[str]:
        e: list[str] = []
        for name in ("d_text", "d_audio", "d_vision", "len_text", "len_audio", "len_vision",
                     "d_model", "n_heads", "n_levels", "kernel_l", "kernel_v", "kernel_a", "n_outputs"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                e.append(f"{name}: must be a positive integer, got {v!r}")
        if not e:
            if self.d_model % self.n_heads:
                e.append(f"n_heads: must divide d_model ({self.d_model}), got {self.n_heads}")
            if self.d_model % 2:
                e.append(f"d_model: must be even (sinusoidal position embedding), got {self.d_model}")
            if self.d_model < 4:
                e.append(f"d_model: must be at least 4, got {self.d_model}")
            for m, k, length in (("l", self.kernel_l, self.len_text), ("v", self.kernel_v, self.len_vision),
                                 ("a", self.kernel_a, self.len_audio)):
                if k > length:
                    e.append(f"kernel_{m}: kernel {k} is longer than the sequence ({length})")
        for name in ("text_dropout", "embed_dropout", "attn_dropout_l", "attn_dropout_v", "attn_dropout_a",
                     "relu_dropout", "res_dropout", "out_dropout"):
            _check_prob(e, name, getattr(self, name))
        _check_literal(e, "router", self.router, ("learned", "uniform", "fixed"))
        _check_literal(e, "router_input", self.router_input, ("flatten", "mean"))
        _check_literal(e, "fusion", self.fusion, ("sum", "concat"))
        _check_literal(e, "text_input", self.text_input, ("features", "bert"))
        if not self.temperature > 0:
            e.append(f"temperature: must be > 0, got {self.temperature}")
        fw = tuple(self.fixed_weights)
        if len(fw) != 3 or any(w < 0 for w in fw) or abs(sum(fw) - 1.0) > 1e-6:
            e.append(f"fixed_weights: must be three non-negative weights (l, v, a) summing to 1, got {fw}")
        if self.text_input == "bert" and not self.bert_path:
            e.append("bert_path: a local BERT directory is required when text_input is 'bert'")
        return e


@dataclass(frozen=True)
class LossConfig(_Validated):
    """Weights of the EMOE objective; each weight may be 0 to ablate its term.

    total = task + uni_weight * L_uni + balance_weight * (L_ent + sim_alpha * L_sim) + distill_weight * L_ud
    """

    task: Task = "regression"
    uni_weight: float = 1.0
    balance_weight: float = 0.1
    sim_alpha: float = 0.1
    distill_weight: float = 0.1
    importance: Importance = "inverse"  # reference: 1/(e+eps) normalised; alternative softmax(-e)
    importance_eps: float = 0.1

    def validate(self) -> list[str]:
        e: list[str] = []
        _check_literal(e, "task", self.task, ("regression", "classification"))
        _check_literal(e, "importance", self.importance, ("inverse", "softmax"))
        for name in LOSS_WEIGHTS:
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v >= 0):
                e.append(f"{name}: must be a non-negative number, got {v!r}")
        if not self.importance_eps > 0:
            e.append(f"importance_eps: must be > 0, got {self.importance_eps}")
        return e


@dataclass(frozen=True)
class TrainConfig(_Validated):
    """The reference training procedure plus study options (weight decay, clipping, bf16, max epochs)."""

    lr: float = 1e-4
    batch_size: int = 16
    update_epochs: int = 10  # gradient-accumulation window, in batches
    max_epochs: int = 100
    early_stop: int = 10  # epochs without validation improvement before stopping
    min_delta: float = 1e-6  # an improvement of the validation L1 must be at least this
    plateau_patience: int = 5
    plateau_factor: float = 0.5
    weight_decay: float = 0.0  # listed but never applied by the reference
    grad_clip: float | None = None  # ditto; max global grad norm when set
    bf16: bool = False  # bf16 autocast (CUDA only; ignored on CPU unless allow_cpu_bf16)
    allow_cpu_bf16: bool = False
    seed: int = 1111
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    eval_batch_size: int = 256
    fast_path: bool = True  # fused attention / foreach optimiser where outputs are unchanged
    compile: str = "off"  # off | default (torch.compile of the step) | graphs (CUDA graphs; eager on CPU)
    window_forward: bool = True  # an accumulation window's batches in one forward + backward (same sums)

    def validate(self) -> list[str]:
        e: list[str] = []
        if not self.lr > 0:
            e.append(f"lr: must be > 0, got {self.lr}")
        for name in ("batch_size", "update_epochs", "max_epochs", "early_stop", "plateau_patience",
                     "eval_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                e.append(f"{name}: must be a positive integer, got {v!r}")
        if not 0 < self.plateau_factor < 1:
            e.append(f"plateau_factor: must be in (0, 1), got {self.plateau_factor}")
        if self.weight_decay < 0:
            e.append(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            e.append(f"grad_clip: must be > 0 or null, got {self.grad_clip}")
        if self.min_delta < 0:
            e.append(f"min_delta: must be >= 0, got {self.min_delta}")
        _check_literal(e, "compile", self.compile, ("off", "default", "graphs"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            e.append(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        return e


@dataclass(frozen=True)
class EMOEConfig:
    """Everything that determines a training run's result (besides the data)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


_SECTIONS = {"model": ModelConfig, "loss": LossConfig, "train": TrainConfig}


def to_dict(cfg: EMOEConfig) -> dict[str, dict[str, Any]]:
    """Nested plain dict (tuples become lists), e.g. for hashing or saving."""
    out: dict[str, dict[str, Any]] = {}
    for name in _SECTIONS:
        d = dataclasses.asdict(getattr(cfg, name))
        out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    return out


def from_dict(d: dict[str, dict[str, Any]]) -> EMOEConfig:
    """Build an ``EMOEConfig`` from nested dicts; unknown keys and bad values are all reported at once."""
    errors: list[str] = []
    parts: dict[str, Any] = {}
    for key in d:
        if key not in _SECTIONS:
            errors.append(f"{key}: unknown section (expected one of {list(_SECTIONS)})")
    for name, cls in _SECTIONS.items():
        sub = dict(d.get(name) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for k in sorted(set(sub) - known):
            errors.append(f"{name}.{k}: unknown field")
            sub.pop(k)
        if "fixed_weights" in sub and sub["fixed_weights"] is not None:
            sub["fixed_weights"] = tuple(sub["fixed_weights"])
        try:
            parts[name] = cls(**sub)
        except ConfigError as exc:
            errors.extend(f"{name}.{msg}" for msg in exc.errors)
        except TypeError as exc:
            errors.append(f"{name}: {exc}")
    if errors:
        raise ConfigError(errors)
    return EMOEConfig(**parts)
