"""Operators dispatched per training batch: what a launch-bound GPU step pays for, counted on any machine.

A small EMOE batch on a GPU is hundreds of tiny kernels, each started from Python; its time is about the
number of launches, not the arithmetic. This counts the ATen operators that run kernels (views and other
metadata-only operators apart) per training batch of one epoch, on the CPU, for one trial batch by batch
(``window_forward: false``), one trial with each accumulation window in one forward, and K stacked
members both ways, split by phase (forward + backward, dropout masks, optimiser, evaluation), with the
windows cut as on a GPU (``--cpu-rule``: as on this CPU). CPU wall time per epoch is printed beside it
(on a 2-core CPU the arithmetic, not the launches, decides it).

    python bench/launches.py                       # the main job's model (studies/distill_weight.yaml)
    python bench/launches.py --members 3,8 --epochs 2
"""

from __future__ import annotations

import argparse
import collections
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import emoe.capture as capture
import emoe.dropout as dropout
import emoe.stack as stack
import emoe.stack_optim as stack_optim
import emoe.train as train
from emoe.config import EMOEConfig, LossConfig, ModelConfig, TrainConfig
from emoe.data.synthetic import make_synthetic
from emoe.model import EMOE

FREE = {"view", "t", "transpose", "detach", "expand", "slice", "select", "unsqueeze", "_unsafe_view", "permute",
        "squeeze", "alias", "as_strided", "lift_fresh", "split", "unbind", "_reshape_alias", "reshape"}


class Phases(TorchDispatchMode):
    """Counts kernel-running operators under the phase set by ``label`` (innermost wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()
        self.phase = ["other"]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in FREE:
            self.counts[self.phase[-1]] += 1
        return func(*args, **(kwargs or {}))


def label(owner: object, name: str, phase: str, mode: Phases) -> None:
    f = getattr(owner, name)

    @functools.wraps(f)
    def wrapped(*a: Any, **k: Any) -> Any:
        mode.phase.append(phase)
        try:
            return f(*a, **k)
        finally:
            mode.phase.pop()
    setattr(owner, name, wrapped)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--members", default="3,8", help="stack sizes K to count (comma list)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--cpu-rule", action="store_true",
                   help="chunk windows as on CPU (emoe.capture.batches_per_forward); default: as on a GPU, whole "
                        "windows in one forward")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if not args.cpu_rule:  # count what a GPU launches: every window in one forward, whatever its size
        capture.CPU_FORWARD_BYTES = 2**62
    data = make_synthetic("small")
    model = ModelConfig(**data.dims, d_model=32, n_heads=4, n_levels=2)  # studies/distill_weight.yaml

    def cfg(seed: int, window: bool) -> EMOEConfig:
        return EMOEConfig(model=model, loss=LossConfig(), train=TrainConfig(
            lr=1e-3, batch_size=16, max_epochs=args.epochs, early_stop=10, device="cpu", seed=seed,
            window_forward=window))

    mode = Phases()
    for owner, name, phase in [(capture.TrainStep, "__call__", "forward+backward"),
                               (capture.TrainStep, "window", "forward+backward"),
                               (stack._Stack, "train_window", "forward+backward"),
                               (capture, "cut_masks", "masks"), (dropout, "window_masks", "masks"),
                               (dropout, "draw_uniforms", "masks"),
                               (torch.optim.Adam, "step", "optimiser"),
                               (stack_optim.StackedAdam, "grad_norms", "optimiser"),
                               (stack_optim.StackedAdam, "clip", "optimiser"),
                               (train, "_end_window", "optimiser"),
                               (train, "evaluate", "evaluation"), (stack._Stack, "evaluate", "evaluation")]:
        label(owner, name, phase, mode)
    batches = args.epochs * -(-len(data.train) // 16)
    runs: list[tuple[str, Callable[[], object]]] = []
    for window in (False, True):
        how = "window in one forward" if window else "batch by batch"
        runs.append((f"1 trial, {how}", lambda w=window: train.fit(EMOE(model), data, cfg(1, w))))
        for k in (int(x) for x in args.members.split(",") if x.strip()):
            runs.append((f"stack of {k}, {how}",
                         lambda w=window, k=k: stack.fit_stacked([cfg(1 + i, w) for i in range(k)], data)))
    print(f"torch {torch.__version__}; the main job's model on synthetic:small, {batches} training batches of 16 "
          f"({args.epochs} epochs); kernel-running operators per training batch (backward included in "
          "forward+backward; 'other' is mostly the per-batch backward and gradient accumulation)\n")
    print(f"{'run':<38} {'per batch':>9}  {'phases':<80} {'CPU s/epoch':>11}")
    for name, run in runs:
        run()  # warm-up
        mode.counts.clear()
        with mode:
            run()
        start = time.perf_counter()
        run()
        wall = (time.perf_counter() - start) / args.epochs
        total = sum(mode.counts.values()) / batches
        phases = ", ".join(f"{p} {n / batches:.0f}" for p, n in mode.counts.most_common())
        print(f"{name:<38} {total:9.0f}  {phases:<80} {wall:11.2f}", flush=True)


if __name__ == "__main__":
    main()
