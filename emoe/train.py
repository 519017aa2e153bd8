"""Training EMOE the reference way: Adam, accumulation windows, plateau LR, selection on validation.

``fit`` runs the reference training loop with a per-epoch callback (for reporting,
pruning and checkpointing) and exact resumption; ``train_emoe`` seeds, builds the model and fits.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from emoe.capture import TrainStep
from emoe.checkpoint import (
    STATE_VERSION,
    Key,
    check_state,
    record_from_state,
    record_to_state,
    router_from_state,
    router_to_state,
)
from emoe.config import MODALITIES, ConfigError, EMOEConfig, to_dict
from emoe.data.arrays import DataSet, Split
from emoe.data.batches import Batch, iter_batches
from emoe.dropout import NATIVE, PlannedDropout
from emoe.dynamo_free import Adam
from emoe.evaluate import NonFiniteOutput, autocast_context, bf16_active, evaluate
from emoe.losses import EPOCH_LOSSES
from emoe.model import EMOE
from emoe.outputs import EpochRecord, FitResult, RouterRecord
from emoe.precision import BF16Weights

__all__ = [
    "EpochTrain",
    "OnEpoch",
    "check_data_fits",
    "dropout_generator",
    "fit",
    "make_optimizer",
    "resolve_device",
    "restore_dropout_generator",
    "seed_everything",
    "train_emoe",
    "train_epoch",
]

#: ``on_epoch(record, checkpoint)``: ``checkpoint()`` builds the full training state on demand;
#: returning True stops training after this epoch.
OnEpoch = Callable[[EpochRecord, Callable[[], dict[str, Any]]], bool | None]

# Fields that may differ between the run that saved a state and the run resuming from it.
_RESUME_FREE = {("train", "device"), ("train", "eval_batch_size"), ("train", "max_epochs"),
                ("train", "early_stop"), ("train", "fast_path"), ("train", "compile"), ("train", "window_forward")}


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def dropout_generator(seed: int, device: torch.device) -> torch.Generator:
    """A run's own dropout generator on ``device``, seeded from ``train.seed`` (a stream apart from the
    data order's, which uses the seed itself): its masks depend on nothing else, alone or stacked."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, 0xD12]).generate_state(1, dtype=np.uint64)[0] >> 1))
    return gen


def restore_dropout_generator(gen: torch.Generator, state: torch.Tensor, seed: int, epoch: int) -> None:
    """Continue a run's dropout stream from its checkpoint's generator state. A checkpoint written on another
    kind of device (a CPU generator's state does not fit a CUDA generator, nor the reverse; a resume may
    change ``train.device``) cannot continue that stream: the run goes on with one seeded from its seed and
    epoch, after a warning, like a run on another device, not bit for bit the uninterrupted one."""
    if state.numel() == gen.get_state().numel():
        gen.set_state(state)
        return
    warnings.warn(f"resume at epoch {epoch}: the checkpoint's dropout generator was on another kind of device "
                  f"than {gen.device.type}; dropout continues from a stream seeded from train.seed and the epoch",
                  RuntimeWarning, stacklevel=2)
    gen.manual_seed(int(np.random.SeedSequence([seed, 0xD12, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1))


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` checked to exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r}: CUDA is not available on this machine")
        dev = torch.device(name)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return dev
    raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N")


def make_optimizer(model: nn.Module, cfg: EMOEConfig, params: list[torch.Tensor] | None = None) -> torch.optim.Adam:
    """Adam over all trainable parameters (or ``params``, e.g. bf16 training's float32 masters);
    ``train.fast_path`` picks the fused kernel (one pass over each parameter, no temporaries: what the
    ~196M-weight router needs), else the per-tensor reference loop. ``torch.optim.Adam``'s updates, from
    ``emoe.dynamo_free.Adam`` (a step that does not import ``torch._dynamo``)."""
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    if t.fast_path:
        return Adam(params, lr=t.lr, weight_decay=t.weight_decay, fused=True)
    return Adam(params, lr=t.lr, weight_decay=t.weight_decay, foreach=False)


@dataclass
class EpochTrain:
    """One training epoch: mean loss terms over batches, optimiser steps taken, divergence message."""

    losses: dict[str, float]
    steps: int
    error: str | None = None


def _nonfinite_name(value: float) -> str:
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def train_epoch(model: nn.Module, split: Split, cfg: EMOEConfig, optimizer: torch.optim.Optimizer, *,
                generator: torch.Generator, device: torch.device, epoch: int = 1,
                step: TrainStep | None = None, precision: BF16Weights | None = None) -> EpochTrain:
    """One pass over ``split`` in shuffled batches with the reference accumulation window.

    Gradients are zeroed at the start of each window of ``train.update_epochs`` batches and the optimiser
    steps at its end and after the last, partial window; the loss is not divided by the window. Before a
    step, gradients are clipped (``train.grad_clip``) and checked: a non-finite loss or gradient norm ends
    the epoch with ``error`` set and no step taken. Loss terms stay on the device; the only host syncs are
    one finiteness check per window and the epoch means at the end. ``step`` runs a batch's forward and
    loss (``emoe.capture.TrainStep``: eager or compiled, with the run's dropout; default eager on the
    global generator). A ``windowed`` step (``train.window_forward``, see ``TrainStep.window``) runs
    each window's batches in one forward and one backward, each batch with its own loss and masks.
    Otherwise, with ``train.fast_path`` and an eager step, a model offering
    ``set_deferred_grads``/``flush_grads`` (EMOE) computes its router's weight gradient once per window
    instead of once per batch (same sum) and its forward product once per window. ``precision``: bf16
    working weights whose gradients move to the optimiser's float32 masters once per window and which are
    refreshed once per step (``emoe.precision``).
    """
    step = step if step is not None else TrainStep(model, cfg, device)
    deferred = (cfg.train.fast_path and step.eager and not step.windowed
                and callable(getattr(model, "flush_grads", None)))
    if not deferred:
        return _train_epoch(model, split, cfg, optimizer, step, generator=generator, device=device, epoch=epoch,
                            precision=precision)
    model.set_deferred_grads(True)  # type: ignore[operator]
    try:
        return _train_epoch(model, split, cfg, optimizer, step, generator=generator, device=device, epoch=epoch,
                            precision=precision, flush=model.flush_grads,  # type: ignore[arg-type]
                            prime=getattr(model, "prime_router", None))
    finally:
        model.set_deferred_grads(False)  # type: ignore[operator]


def _train_epoch(model: nn.Module, split: Split, cfg: EMOEConfig, optimizer: torch.optim.Optimizer,
                 step: TrainStep, *, generator: torch.Generator, device: torch.device, epoch: int,
                 precision: BF16Weights | None = None, flush: Callable[[], None] | None = None,
                 prime: Callable[[list[Any]], list[Any]] | None = None) -> EpochTrain:
    t = cfg.train
    model.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_batches = math.ceil(len(split) / t.batch_size)
    sums = torch.zeros(len(EPOCH_LOSSES), device=device)
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first batch with non-finite loss
    bad_value = torch.zeros((), device=device)
    steps = done = 0
    for piece in _pieces(split, cfg, step, generator=generator, device=device, prime=prime):
        if done % t.update_epochs == 0:
            optimizer.zero_grad(set_to_none=True)
            if precision is not None:
                precision.zero_grad()
        total, vals = piece()  # (W, 6): the piece's batches' terms
        total.backward()
        sums += vals.sum(0)
        bad = ~torch.isfinite(vals[:, 0])
        at = torch.argmax(bad.to(torch.uint8))  # the piece's first bad batch (argmax: first of the maxima)
        newly_bad = bad.any() & (first_bad < 0)
        first_bad = torch.where(newly_bad, done + at, first_bad)
        bad_value = torch.where(newly_bad, vals[at, 0], bad_value)
        done += vals.shape[0]
        if done % t.update_epochs and done < n_batches:
            continue
        if flush is not None:
            flush()
        error = _end_window(optimizer, params, t, first_bad, bad_value, device=device, epoch=epoch, batch=done,
                            precision=precision)
        if error is not None:
            return EpochTrain({}, steps, error)
        steps += 1
    means = (sums / max(n_batches, 1)).tolist()
    return EpochTrain(dict(zip(EPOCH_LOSSES, means)), steps)


def _pieces(split: Split, cfg: EMOEConfig, step: TrainStep, *, generator: torch.Generator, device: torch.device,
            prime: Callable[[list[Any]], list[Any]] | None) -> Iterator[Callable[[], tuple[torch.Tensor, torch.Tensor]]]:
    """The epoch's forward passes in order, each returning (total, (W, 6) terms) of its W batches: whole
    accumulation windows (``TrainStep.windowed``: the same permutation cut in windows of rows) or single
    batches (primed a window ahead when ``prime`` is given)."""
    t = cfg.train
    if step.windowed:
        for window in iter_batches(split, t.batch_size * t.update_epochs, device=device, generator=generator,
                                   shuffle=True):
            yield functools.partial(step.window, window, t.batch_size)
        return
    batches: Iterator[tuple[Batch, Any]] = (
        (b, None) for b in iter_batches(split, t.batch_size, device=device, generator=generator, shuffle=True))
    if prime is not None:
        batches = _primed_windows(batches, t.update_epochs, prime, cfg, device)
    for batch, primed in batches:
        def one(batch: Batch = batch, primed: Any = primed) -> tuple[torch.Tensor, torch.Tensor]:
            total, vals = step(batch, primed)
            return total, vals.unsqueeze(0)
        yield one


def _end_window(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], t: Any, first_bad: torch.Tensor,
                bad_value: torch.Tensor, *, device: torch.device, epoch: int, batch: int,
                precision: BF16Weights | None) -> str | None:
    """The end of an accumulation window (its last batch is ``batch``, from 1): one host sync for the first
    bad batch, its loss and the gradient norm; then clip and step, or the divergence message (no step)."""
    if precision is not None:
        precision.grads_to_master()
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=t.fast_path) if grads else torch.zeros((), device=device)
    bad_batch, bad_loss, norm_value = torch.stack([first_bad.double(), bad_value.double(), norm.double()]).tolist()
    if bad_batch >= 0:
        return (f"diverged: non-finite training loss ({_nonfinite_name(bad_loss)}) at epoch {epoch}, "
                f"batch {int(bad_batch) + 1}")
    if not math.isfinite(norm_value):
        return f"diverged: non-finite gradient norm ({_nonfinite_name(norm_value)}) at epoch {epoch}, batch {batch}"
    if t.grad_clip is not None and grads:
        torch.nn.utils.clip_grads_with_norm_(params, t.grad_clip, norm, foreach=t.fast_path)
    optimizer.step()
    if precision is not None:
        precision.refresh()
    return None


def _primed_windows(batches: Iterator[tuple[Batch, Any]], window: int, prime: Callable[[list[Any]], list[Any]],
                    cfg: EMOEConfig, device: torch.device) -> Iterator[tuple[Batch, Any]]:
    """The batches as they come, reading a window ahead: before a window's first batch, ``prime`` gets
    all of its inputs and returns one primed entry per batch (the router's product for the window)."""
    while chunk := [b for b, _ in itertools.islice(batches, window)]:
        with autocast_context(cfg, device):
            primed = prime([{"text": b.text, "audio": b.audio, "vision": b.vision} for b in chunk])
        yield from zip(chunk, primed)


@dataclass
class _Selection:
    """Model selection so far: the best validation loss, its epoch, metrics and test router record."""

    loss: float = math.inf
    epoch: int = 0
    valid: dict[str, float] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    router: RouterRecord | None = None
    valid_router: RouterRecord | None = None  # the validation split's record at the same epoch


def _check_resume(state: dict[str, Any], cfg: EMOEConfig) -> None:
    check_state(state)
    saved, now = state[Key.CONFIG], to_dict(cfg)
    diff = [f"{sec}.{k}: saved {saved.get(sec, {}).get(k)!r}, now {v!r}"
            for sec, fields in now.items() for k, v in fields.items()
            if (sec, k) not in _RESUME_FREE and saved.get(sec, {}).get(k) != v]
    if diff:
        raise ValueError("cannot resume: the configuration differs from the saved run:\n  " + "\n  ".join(diff))


def fit(model: nn.Module, data: DataSet, cfg: EMOEConfig, *, on_epoch: OnEpoch | None = None,
        resume: dict[str, Any] | None = None) -> FitResult:
    """Train ``model`` on ``data.train``, select on ``data.valid``, report ``data.test`` at the selection.

    Each epoch: train (``train_epoch``), evaluate validation, step ReduceLROnPlateau on the validation loss,
    and if the loss improved by at least ``train.min_delta`` evaluate test (only then) and keep its metrics
    and per-sample router record. Stops after ``train.early_stop`` epochs without improvement, at
    ``train.max_epochs``, when ``on_epoch`` returns True (status stays "completed"), or when the training
    loss becomes non-finite (status "diverged", the selection so far kept). ``EpochRecord.lr`` is the rate
    the epoch trained with. ``on_epoch``'s ``checkpoint()`` returns the full state by reference (no tensor
    copies): save it (``save_state``) before training goes on. ``resume`` (such a state, e.g. from
    ``load_state``) continues exactly where it stopped; its configuration must match ``cfg`` except for
    device, eval batch size, max_epochs, early_stop, fast_path, compile and window_forward. A resume uses
    its state up: on the state's own device the optimiser trains its tensors in place (Adam's moments and
    step counts), so load the state again to resume from it a second time. Dropout masks
    come from the run's own generator (``dropout_generator``), so a run's trajectory depends only on its
    configuration and initial weights. Seed the global RNG before building the model for reproducible
    initial weights (``train_emoe`` does).
    """
    t = cfg.train
    for name, split in data.splits().items():
        if len(split) == 0:
            raise ValueError(f"data.{name}: the split is empty")
    device = resolve_device(t.device)
    model.to(device)
    set_fast_path = getattr(model, "set_fast_path", None)
    if callable(set_fast_path):  # the training config decides fused vs plain attention
        set_fast_path(t.fast_path)
    # bf16: bf16 working weights, float32 masters for the optimiser (no per-batch weight conversion)
    precision = BF16Weights(model) if bf16_active(cfg, device) else None
    optimizer = make_optimizer(model, cfg, None if precision is None else precision.masters)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=t.plateau_factor, patience=t.plateau_patience)
    generator = torch.Generator()
    generator.manual_seed(t.seed)
    drop_gen = dropout_generator(t.seed, device)
    sel = _Selection()
    history: list[EpochRecord] = []
    epoch = 0
    if resume is not None:
        _check_resume(resume, cfg)
        if precision is not None:
            precision.load_state_dict(resume[Key.MODEL])
        else:
            model.load_state_dict(resume[Key.MODEL])
        optimizer.load_state_dict(resume[Key.OPTIMIZER])
        scheduler.load_state_dict(resume[Key.SCHEDULER])
        generator.set_state(resume[Key.GENERATOR])
        restore_dropout_generator(drop_gen, resume[Key.TORCH_RNG], t.seed, int(resume[Key.EPOCH]))
        if device.type == "cuda" and resume[Key.CUDA_RNG]:
            torch.cuda.set_rng_state_all(resume[Key.CUDA_RNG])
        sel = _Selection(float(resume[Key.BEST_LOSS]), int(resume[Key.BEST_EPOCH]), dict(resume[Key.BEST_VALID]),
                         dict(resume[Key.BEST_TEST]), router_from_state(resume[Key.BEST_ROUTER]),
                         router_from_state(resume.get(Key.BEST_VALID_ROUTER)))
        history = [record_from_state(r) for r in resume[Key.HISTORY]]
        epoch = int(resume[Key.EPOCH])

    def checkpoint() -> dict[str, Any]:
        # References live tensors: save (save_state) or copy it before training continues.
        return {
            Key.VERSION: STATE_VERSION, Key.CONFIG: to_dict(cfg), Key.EPOCH: epoch,
            Key.MODEL: model.state_dict() if precision is None else precision.state_dict(),
            Key.OPTIMIZER: optimizer.state_dict(),
            Key.SCHEDULER: scheduler.state_dict(),
            Key.BEST_LOSS: sel.loss, Key.BEST_EPOCH: sel.epoch, Key.BEST_VALID: dict(sel.valid),
            Key.BEST_TEST: dict(sel.test), Key.BEST_ROUTER: router_to_state(sel.router),
            Key.BEST_VALID_ROUTER: router_to_state(sel.valid_router),
            # "torch_rng": the run's dropout generator (its masks come from nothing else)
            Key.GENERATOR: generator.get_state(), Key.TORCH_RNG: drop_gen.get_state(),
            Key.CUDA_RNG: torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
            Key.HISTORY: [record_to_state(r) for r in history],
        }

    status: Literal["completed", "diverged"] = "completed"
    error: str | None = None
    stopped_by_callback = False
    def more_epochs() -> bool:  # the stopping rule: budget left and patience not exhausted
        return epoch < t.max_epochs and epoch - sel.epoch < t.early_stop

    dropout = PlannedDropout([drop_gen], device)
    set_source = getattr(model, "set_dropout_source", None)
    if callable(set_source):  # the run's masks come from its own generator
        set_source(dropout.feed)
        step = TrainStep(model, cfg, device, dropout)
    else:  # a model that does not take planned masks: its dropout uses the global generator
        step = TrainStep(model, cfg, device)
    try:
        while more_epochs():
            start = time.perf_counter()
            lr = float(optimizer.param_groups[0]["lr"])
            outcome = train_epoch(model, data.train, cfg, optimizer, generator=generator, device=device,
                                  epoch=epoch + 1, step=step, precision=precision)
            if outcome.error is not None:
                status, error = "diverged", outcome.error
                break
            epoch += 1
            split_name = "validation"
            try:
                valid, vrec = evaluate(model, data.valid, cfg, data.label_kind, device)
                improved = valid["loss"] <= sel.loss - t.min_delta
                test, trec = None, None
                if improved:
                    split_name = "test"
                    test, trec = evaluate(model, data.test, cfg, data.label_kind, device)
            except NonFiniteOutput as exc:
                status, error = ("diverged",
                                 f"diverged: non-finite {split_name} predictions at epoch {epoch} ({exc})")
                break
            if improved and test is not None:
                sel = _Selection(valid["loss"], epoch, valid, test, trec, vrec)
            scheduler.step(valid["loss"])
            mean_w = vrec.weights.mean(axis=0)
            record = EpochRecord(
                epoch=epoch, train=outcome.losses, valid=valid, lr=lr, improved=improved, best_epoch=sel.epoch,
                test=test, router_mean={f"w_{m}": float(w) for m, w in zip(MODALITIES, mean_w)},
                time_s=time.perf_counter() - start, last=not more_epochs())
            history.append(record)
            if on_epoch is not None and on_epoch(record, checkpoint) is True:
                stopped_by_callback = True
                break
    finally:
        step.release()
        if callable(set_source):
            set_source(NATIVE)
        if precision is not None:
            precision.restore()  # the caller gets float32 weights (the masters) back
    return FitResult(
        status=status, best_epoch=sel.epoch, epochs_run=len(history), valid=sel.valid, test=sel.test,
        history=history, router=sel.router, error=error, valid_router=sel.valid_router,
        extra={"device": str(device), "stopped_by_callback": stopped_by_callback,
               "final_lr": float(optimizer.param_groups[0]["lr"])})


def check_data_fits(cfg: EMOEConfig, data: DataSet) -> None:
    """Raise ``ConfigError`` listing every shape or task field of ``cfg`` that disagrees with ``data``."""
    m, errors = cfg.model, []
    bert = data.train.text.ndim == 3 and np.issubdtype(data.train.text.dtype, np.integer)
    if (m.text_input == "bert") != bert:
        errors.append(f"model.text_input: {m.text_input!r} but the data hold "
                      f"{'BERT token triples' if bert else 'text features'}")
    for name, value in data.dims.items():
        if name == "d_text" and m.text_input == "bert":
            continue
        if getattr(m, name) != value:
            errors.append(f"model.{name}: the configuration says {getattr(m, name)}, the data have {value}")
    classification = data.label_kind == "classification"
    if classification != (cfg.loss.task == "classification"):
        errors.append(f"loss.task: {cfg.loss.task!r} does not fit labels of kind {data.label_kind!r}")
    elif classification:
        n_classes = int(max(int(s.labels.max()) for s in data.splits().values())) + 1
        if m.n_outputs < n_classes:
            errors.append(f"model.n_outputs: {m.n_outputs} outputs but the labels have {n_classes} classes")
    elif m.n_outputs != 1:
        errors.append(f"model.n_outputs: regression needs 1 output, got {m.n_outputs}")
    if errors:
        raise ConfigError(errors)


def train_emoe(cfg: EMOEConfig, data: DataSet, **fit_kwargs: Any) -> FitResult:
    """Check ``cfg`` against ``data``, seed everything from ``train.seed``, build EMOE and ``fit`` it."""
    check_data_fits(cfg, data)
    seed_everything(cfg.train.seed)
    model = EMOE(cfg.model, fast_path=cfg.train.fast_path)
    return fit(model, data, cfg, **fit_kwargs)
