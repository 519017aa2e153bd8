"""A cheap model of EMOE's learning curves, for simulated studies (``simulate: true``).

``SimulatedCurve(trial, label_kind)`` gives, epoch by epoch, what a trained trial would measure: the
training loss terms, validation and test metrics of the data's label kind, the learning rate and the mean
router weights. The curve is a smooth response surface of the trial's configuration with one optimum
(learning rate near 1e-3, router temperature near 0.1, distillation weight near 0.3, dropouts near 0.25,
d_model near 128, 3 levels, the balance and unimodal weights near their reference values, a learned
router), plus noise: a per-configuration offset, a per-seed offset and per-epoch jitter. A learning rate
sets how fast the curve falls (too high a rate diverges), low dropout overfits late. Everything is drawn
from generators seeded by the trial's ids and the epoch, so a trial's curve is the same on every run, a
resumed trial continues exactly, and nothing depends on the order trials run in. It is a plausible
landscape for trying schedulers and search spaces, not a prediction of EMOE's real numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from emoe.outputs import RouterRecord
from emoe_schema import LOSS_TERMS, MODALITIES, metric_names
from harness.study.trial import Trial

__all__ = ["DIVERGE_LR", "EpochDraw", "SimulatedCurve", "penalty"]

#: Learning rates at or above this diverge after a few epochs (a non-finite training loss).
DIVERGE_LR = 0.05
_MAE_START, _MAE_BEST, _MAE_SPAN = 1.45, 0.70, 0.60  # untrained, best reachable, worst asymptote above best
_ROUTER_LOGITS = np.array([1.2, 0.0, 0.3])  # at temperature 0.1: text first, as EMOE's router learns on MOSI


def _sq_log(value: float, best: float, base: float = 10.0) -> float:
    return (math.log(max(value, 1e-12), base) - math.log(best, base)) ** 2


def penalty(trial: Trial) -> float:
    """How far the trial's configuration is from the surface's optimum (0 at the optimum, grows smoothly)."""
    m, loss, t = trial.config.model, trial.config.loss, trial.config.train
    dropouts = (m.text_dropout, m.embed_dropout, m.attn_dropout_l, m.attn_dropout_v, m.attn_dropout_a,
                m.relu_dropout, m.res_dropout, m.out_dropout)
    p = 0.08 * _sq_log(t.lr, 1e-3) + 0.05 * _sq_log(m.temperature, 0.1)
    p += 0.2 * (loss.distill_weight - 0.3) ** 2 + 0.5 * (loss.balance_weight - 0.1) ** 2
    p += 0.02 * _sq_log(loss.uni_weight + 0.1, 1.1, 2.0) + 0.02 * (loss.sim_alpha - 0.1) ** 2
    p += 0.4 * (float(np.mean(dropouts)) - 0.25) ** 2
    p += 0.015 * _sq_log(m.d_model, 128, 2.0) + 0.01 * (m.n_levels - 3) ** 2
    if m.router == "uniform":
        p += 0.03
    elif m.router == "fixed":
        p += 0.1 * float(np.sum((np.asarray(m.fixed_weights) - np.array([0.6, 0.2, 0.2])) ** 2)) + 0.01
    return p


@dataclass(frozen=True)
class EpochDraw:
    """One simulated epoch: training losses, validation and test metrics, router means; ``diverged`` set
    when the training loss went non-finite this epoch (then nothing else is meaningful)."""

    train: dict[str, float]
    valid: dict[str, float]
    test: dict[str, float]
    router_mean: dict[str, float]
    lr: float
    diverged: bool = False


def _seed_of(*hex_ids: str) -> list[int]:
    return [int(h, 16) & 0xFFFFFFFF for h in hex_ids]


class SimulatedCurve:
    """The deterministic learning curve of one trial on data of ``label_kind`` (see the module docstring)."""

    def __init__(self, trial: Trial, label_kind: str, n_classes: int = 2):
        self.trial, self.label_kind, self.n_classes = trial, label_kind, max(2, n_classes)
        cfg = trial.config
        self.lr = float(cfg.train.lr)
        config_rng = np.random.default_rng(_seed_of(trial.config_id))
        seed_rng = np.random.default_rng(_seed_of(trial.trial_id))
        p = penalty(trial)
        self.asymptote = (_MAE_BEST + _MAE_SPAN * p / (1.0 + p) + 0.01 * config_rng.standard_normal()
                          + 0.012 * seed_rng.standard_normal())
        self.tau = float(np.clip(2.5 * math.sqrt(1e-3 / self.lr), 0.5, 60.0))  # epochs to fall by 1/e
        drop = float(np.mean([cfg.model.out_dropout, cfg.model.res_dropout, cfg.model.relu_dropout,
                              cfg.model.embed_dropout]))
        self.overfit_from = 4.0 * self.tau * (1.0 + 4.0 * drop)
        self.overfit_rate = 0.004 * (1.0 - drop)
        self.diverge_at = (1 + int(seed_rng.integers(0, 3))) if self.lr >= DIVERGE_LR else None
        self.test_offset = 0.01 + 0.01 * seed_rng.standard_normal()

    def _rng(self, epoch: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([*_seed_of(self.trial.trial_id), epoch, stream])

    def mae(self, epoch: int) -> float:
        """Validation MAE after ``epoch`` epochs (the latent quantity every metric follows)."""
        fall = (_MAE_START - self.asymptote) * math.exp(-epoch / self.tau)
        over = self.overfit_rate * max(0.0, epoch - self.overfit_from)
        return self.asymptote + fall + over + 0.006 * float(self._rng(epoch, 0).standard_normal())

    def _metrics(self, mae: float, rng: np.random.Generator) -> dict[str, float]:
        """Every metric of the label kind from the latent MAE; ``loss`` is the validation L1 or cross-entropy."""
        q = float(np.clip((_MAE_START - mae) / (_MAE_START - _MAE_BEST), -0.2, 1.2))  # 0 untrained, 1 best
        jitter = 0.004 * rng.standard_normal(8)
        if self.label_kind == "classification":
            chance = 1.0 / self.n_classes
            acc = float(np.clip(chance + (0.75 - chance) * q + jitter[0], 0.0, 1.0))
            out = {"loss": math.log(self.n_classes) * (1.0 - 0.6 * q), "acc": acc, "f1_macro": acc - 0.03 + jitter[1],
                   "precision_macro": acc - 0.02 + jitter[2], "recall_macro": acc - 0.03 + jitter[3]}
        else:
            scale = 0.55 if self.label_kind == "sims" else 1.0  # CH-SIMS labels span [-1, 1], MOSI [-3, 3]
            acc2 = float(np.clip(0.5 + 0.34 * q + jitter[0], 0.0, 1.0))
            out = {"loss": mae * scale, "mae": mae * scale, "corr": float(np.clip(0.1 + 0.7 * q + jitter[1], -1, 1)),
                   "acc2": acc2, "f1": acc2 - 0.003 + jitter[2], "acc2_hz": acc2 + 0.012 + jitter[3],
                   "f1_hz": acc2 + 0.01 + jitter[4], "acc3": 0.8 * acc2 + jitter[5], "acc5": 0.6 * acc2 + jitter[6],
                   "acc7": 0.5 * acc2 + jitter[7]}
        return {k: float(out[k]) for k in metric_names(self.label_kind) if k in out}

    def router_weights(self, epoch: int) -> np.ndarray:
        """Mean router weights (l, v, a) after ``epoch`` epochs: sharper with training and a low temperature."""
        m = self.trial.config.model
        if m.router == "uniform":
            return np.full(3, 1.0 / 3.0)
        if m.router == "fixed":
            return np.asarray(m.fixed_weights, dtype=float)
        logits = _ROUTER_LOGITS * (0.1 / m.temperature) * (1.0 - math.exp(-epoch / self.tau))
        w = np.exp(logits - logits.max())
        return w / w.sum()

    def epoch(self, epoch: int) -> EpochDraw:
        """Everything measured at the end of ``epoch`` (1-based)."""
        cfg = self.trial.config
        if self.diverge_at is not None and epoch >= self.diverge_at:
            return EpochDraw({}, {}, {}, {}, self.lr, diverged=True)
        rng = self._rng(epoch, 1)
        mae = self.mae(epoch)
        valid = self._metrics(mae, rng)
        test = self._metrics(mae + self.test_offset + 0.008 * float(rng.standard_normal()), rng)
        task = 0.8 * self.asymptote + (_MAE_START - 0.8 * self.asymptote) * math.exp(-1.2 * epoch / self.tau)
        terms = {"task": task, "uni": 1.1 * task, "sim": 0.5 * math.exp(-epoch / self.tau),
                 "ent": math.log(3) * (0.4 + 0.6 * math.exp(-epoch / self.tau)),
                 "ud": 0.1 + 0.2 * math.exp(-epoch / self.tau)}
        terms = {k: v * (1.0 + 0.01 * float(rng.standard_normal())) for k, v in terms.items()}
        loss = cfg.loss
        total = (terms["task"] + loss.uni_weight * terms["uni"] + loss.distill_weight * terms["ud"]
                 + loss.balance_weight * (terms["ent"] + loss.sim_alpha * terms["sim"]))
        train = {"loss": total, **{k: terms[k] for k in LOSS_TERMS}}
        w = self.router_weights(epoch)
        return EpochDraw(train, valid, test, {f"w_{k}": float(v) for k, v in zip(MODALITIES, w)}, self.lr)

    def per_sample(self, labels: np.ndarray, reliability: np.ndarray | None, epoch: int, split: str,
                   ids: np.ndarray | None = None) -> RouterRecord:
        """Per-sample predictions and router weights of a split at ``epoch``, consistent with its metrics:
        regression errors drawn so the MAE matches, classes right with the simulated accuracy."""
        n = len(labels)
        rng = np.random.default_rng([*_seed_of(self.trial.trial_id), epoch, 2 if split == "test" else 3])
        mae = self.mae(epoch) + (self.test_offset if split == "test" else 0.0)
        if self.label_kind == "classification":
            acc = self._metrics(mae, rng)["acc"]
            wrong = rng.random(n) >= acc
            shift = rng.integers(1, self.n_classes, n)
            preds = np.where(wrong, (labels.astype(np.int64) + shift) % self.n_classes, labels).astype(np.float32)
        else:
            scale = 0.55 if self.label_kind == "sims" else 1.0
            preds = (labels + rng.normal(0.0, mae * scale * math.sqrt(math.pi / 2), n)).astype(np.float32)
        logits = np.log(self.router_weights(epoch))[None, :] + 0.3 * rng.standard_normal((n, 3))
        if reliability is not None and self.trial.config.model.router == "learned":
            logits = logits + 2.0 * (np.asarray(reliability, dtype=float) - 0.5)
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w = (w / w.sum(axis=1, keepdims=True)).astype(np.float32)
        return RouterRecord(weights=w, preds=preds, labels=np.asarray(labels), ids=ids, reliability=reliability)
