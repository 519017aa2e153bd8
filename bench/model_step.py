"""Training throughput (samples/s) of EMOE: the reference procedure against the project's training loop.

Forward + backward per batch and one Adam step per accumulation window, for the faithful MOSI
configuration (batch 16, d_model 256, 4 levels, flattened ~196M-weight router, window 10) and a small
one, on random MOSI-shaped data. Variants, measured side by side in one run with interleaved repeats
(so a change in machine load hits all of them alike), medians reported:

- ``reference``: ``bench/reference_step.py`` (plain attention over every step, per-sample fusion loop,
  single-tensor Adam, the loss read back after every batch): the baseline the speed-up is quoted against.
- ``plain``: ``emoe.train.train_epoch`` with ``fast_path=False``.
- ``fast``: ``train_epoch`` with the fast path (fused attention, last-step-only last layer, deferred
  router weight gradient, fused Adam); float32, same outputs as the reference (tests/emoe/test_fast_path.py).
- ``bf16``: ``fast`` with bf16 working weights (float32 masters, refreshed once per step) under bf16
  autocast (on CPU too; one pass by default on a CPU without native bf16, where it is an order of
  magnitude slower than float32).
- ``stacked4``: four seeds trained as one vmapped model (``emoe.stack``), in member-samples/s: compare
  with ``fast`` for the gain (or loss) of stacking per member-sample.

    python bench/model_step.py                                  # reference, fast, bf16; faithful + small
    python bench/model_step.py --variants reference,plain,fast --configs faithful --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from reference_step import reference_epoch, reference_optimizer

from emoe.capture import TrainStep
from emoe.config import EMOEConfig, ModelConfig, TrainConfig
from emoe.data.arrays import Split
from emoe.dropout import NATIVE, PlannedDropout
from emoe.model import EMOE
from emoe.precision import BF16Weights
from emoe.train import dropout_generator, make_optimizer, resolve_device, train_epoch

_MOSI = ModelConfig(d_text=768, d_audio=5, d_vision=20, len_text=50, len_audio=50, len_vision=50)
CONFIGS: dict[str, ModelConfig] = {
    # the reference defaults (aligned MOSI): flattened router input 50 * 793 -> 4956 hidden
    "faithful": _MOSI,
    # a cheap study configuration on the same inputs: narrow, shallow experts, mean-pooled router
    "small": dataclasses.replace(_MOSI, d_model=64, n_heads=4, n_levels=2, router_input="mean"),
}
#: TrainConfig fields per variant; "reference" uses bench/reference_step.py with the plain path.
VARIANTS: dict[str, dict[str, bool]] = {
    "reference": {"fast_path": False},
    "plain": {"fast_path": False},
    "fast": {"fast_path": True},
    "perbatch": {"fast_path": True, "window_forward": False},  # fast, one forward per batch (as before)
    "bf16": {"fast_path": True, "bf16": True, "allow_cpu_bf16": True},
    "stacked4": {"fast_path": True},
}
BASELINE = "reference"


def random_split(model: ModelConfig, n: int, seed: int = 0) -> Split:
    """n random samples with the shapes ``model`` expects; labels uniform in [-3, 3]."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    return Split(text=normal(n, model.len_text, model.d_text), audio=normal(n, model.len_audio, model.d_audio),
                 vision=normal(n, model.len_vision, model.d_vision),
                 labels=rng.uniform(-3, 3, n).astype(np.float32))


def make_pass(variant: str, model: EMOE, cfg: EMOEConfig, device: torch.device,
              optimizers: dict[str, torch.optim.Optimizer]) -> Callable[[Split], str | None]:
    """A function training ``model`` for one pass over a split the way ``variant`` does; returns an error.

    Variants with the same kind of optimiser share one (Adam state for ~200M weights is 1.6 GB).
    """
    gen = torch.Generator().manual_seed(0)
    if variant == BASELINE:
        opt = optimizers.setdefault("single-tensor", reference_optimizer(model, cfg))

        def run_reference(split: Split) -> str | None:
            model.set_fast_path(False)
            reference_epoch(model, split, cfg, opt, generator=gen, device=device)
            return None

        return run_reference
    if variant.startswith("stacked"):
        from emoe.stack import _Stack
        from emoe.stack import _train_epoch as stacked_epoch

        k = int(variant.removeprefix("stacked"))
        stack = _Stack([dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=s))
                        for s in range(1111, 1111 + k)], device)

        def run_stack(split: Split) -> str | None:
            stacked_epoch(stack, split, cfg)
            return None if len(stack.members) == k else "a member diverged"

        return run_stack
    kind = "fused" if cfg.train.fast_path else "single-tensor"
    precision = None
    if cfg.train.bf16:  # its own copy: bf16 working weights and float32 masters (the others stay float32)
        model = copy.deepcopy(model)
        precision = BF16Weights(model)
    if precision is not None:
        kind = "bf16-masters"
    opt = optimizers.setdefault(kind, make_optimizer(model, cfg, None if precision is None else precision.masters))
    dropout = PlannedDropout([dropout_generator(0, device)], device)  # the run's own masks, as fit uses
    step = TrainStep(model, cfg, device, dropout)

    def run_loop(split: Split) -> str | None:
        model.set_fast_path(cfg.train.fast_path)
        model.set_dropout_source(dropout.feed)
        try:
            return train_epoch(model, split, cfg, opt, generator=gen, device=device, step=step,
                               precision=precision).error
        finally:
            model.set_dropout_source(NATIVE)

    return run_loop


def bench_config(name: str, model_cfg: ModelConfig, variants: list[str], args: argparse.Namespace) -> None:
    """Print one row per variant: median/min/max samples/s over ``args.repeats`` interleaved passes."""
    window, batch = args.window, args.batch
    n = batch * window * args.windows
    torch.manual_seed(0)
    model = EMOE(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    timed, warm = random_split(model_cfg, n, seed=1), random_split(model_cfg, 2 * batch, seed=2)
    device = resolve_device(args.device)
    model.to(device)
    print(f"\n{name}: {n_params / 1e6:.1f}M parameters, batch {batch}, window {window}, "
          f"{n} samples ({args.windows} window(s)) per pass, {args.repeats} interleaved passes per variant")
    optimizers: dict[str, torch.optim.Optimizer] = {}
    passes = {}
    for variant in variants:
        train = TrainConfig(batch_size=batch, update_epochs=window, device=args.device, **VARIANTS[variant])
        passes[variant] = make_pass(variant, model, EMOEConfig(model=model_cfg, train=train), device, optimizers)
        passes[variant](warm)  # untimed: allocations, optimiser state
    rates: dict[str, list[float]] = {v: [] for v in variants}
    errors: dict[str, str] = {}
    for r in range(args.repeats):
        for variant in variants:
            if variant in errors or (variant == "bf16" and r >= args.bf16_repeats):
                continue
            start = time.perf_counter()
            error = passes[variant](timed)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            members = int(variant.removeprefix("stacked")) if variant.startswith("stacked") else 1
            rates[variant].append(members * n / (time.perf_counter() - start))
            if error:
                errors[variant] = error
    base = statistics.median(rates[BASELINE]) if rates.get(BASELINE) else None
    for variant in variants:
        r = rates[variant]
        ratio = f"  {statistics.median(r) / base:5.2f}x {BASELINE}" if base else ""
        print(f"  {variant:>9}: {statistics.median(r):8.2f} samples/s  (min {min(r):.2f}, max {max(r):.2f}, "
              f"{len(r)} passes){ratio}" + (f"  [{errors[variant]}]" if variant in errors else ""), flush=True)
    del optimizers, passes
    model.zero_grad(set_to_none=True)
    gc.collect()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="faithful,small", help=f"comma list of {sorted(CONFIGS)}")
    p.add_argument("--variants", default="reference,fast,bf16", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant (median reported)")
    p.add_argument("--bf16-repeats", type=int, default=None,
                   help="timed passes of bf16 (default: --repeats, but 1 on a CPU without native bf16)")
    p.add_argument("--windows", type=int, default=1, help="accumulation windows per timed pass")
    p.add_argument("--window", type=int, default=10, help="accumulation window in batches (update_epochs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--unaligned", action="store_true", help="unaligned MOSI lengths (audio 375, vision 500)")
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [c for c in configs if c not in CONFIGS] + [v for v in variants if v not in VARIANTS]
    if bad or args.repeats < 1 or args.windows < 1 or (args.bf16_repeats is not None and args.bf16_repeats < 1):
        p.error(f"unknown config/variant {bad} or non-positive --repeats/--windows/--bf16-repeats")
    if args.threads:
        torch.set_num_threads(args.threads)
    # without native bf16 (AVX512-BF16/AMX) a CPU emulates bf16 matrix products: an order slower than fp32
    native_bf16 = resolve_device(args.device).type != "cpu" or torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if args.bf16_repeats is None:
        args.bf16_repeats = args.repeats if native_bf16 else 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} threads, device {args.device}, native bf16 {'yes' if native_bf16 else 'no'}, "
          f"load average {load:.1f} at start")
    for name in configs:
        cfg = CONFIGS[name]
        if args.unaligned:
            cfg = dataclasses.replace(cfg, len_audio=375, len_vision=500)
        bench_config(name, cfg, variants, args)
    if hasattr(os, "getloadavg"):
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
