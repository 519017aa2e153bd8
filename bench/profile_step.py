"""Where a training window of EMOE spends its time: torch.profiler's top operators, per step variant.

Profiles one accumulation window (forward + backward per batch, one Adam step) of the faithful MOSI
configuration on random data, after an untimed warm-up window, and prints the operators with the most
self CPU time. Variants: ``reference`` (``bench/reference_step.py``: plain arithmetic, per-sample fusion,
single-tensor Adam, a loss read per batch), ``plain``/``fast``/``bf16`` (``emoe.train.train_epoch``).

    python bench/profile_step.py --variant reference --threads 1
    python bench/profile_step.py --variant fast --rows 25 --window 5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_step import CONFIGS, VARIANTS, random_split
from reference_step import reference_epoch, reference_optimizer

from emoe.config import EMOEConfig, TrainConfig
from emoe.model import EMOE
from emoe.train import make_optimizer, resolve_device, train_epoch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="faithful", choices=sorted(CONFIGS))
    p.add_argument("--variant", default="fast", choices=list(VARIANTS))
    p.add_argument("--window", type=int, default=10, help="accumulation window in batches (update_epochs)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rows", type=int, default=20, help="operators to print")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--sort", default="self_cpu_time_total", help="profiler sort key")
    p.add_argument("--shapes", action="store_true", help="group the table by input shapes")
    p.add_argument("--trace", type=Path, default=None, help="also write a Chrome trace to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg = CONFIGS[args.config]
    variant = VARIANTS[args.variant]
    train = TrainConfig(batch_size=args.batch, update_epochs=args.window, device="cpu", **variant)
    cfg = EMOEConfig(model=model_cfg, train=train)
    device = resolve_device("cpu")
    torch.manual_seed(0)
    model = EMOE(model_cfg, fast_path=train.fast_path)
    data = random_split(model_cfg, args.batch * args.window, seed=1)
    gen = torch.Generator().manual_seed(0)

    def window() -> None:
        if args.variant == "reference":
            reference_epoch(model, data, cfg, optimizer, generator=gen)
        else:
            train_epoch(model, data, cfg, optimizer, generator=gen, device=device)

    optimizer = reference_optimizer(model, cfg) if args.variant == "reference" else make_optimizer(model, cfg)
    window()  # warm-up: allocations and Adam state
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.config} config, "
          f"variant {args.variant}, window of {args.window} batches of {args.batch}")
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof, \
            record_function("window"):
        window()
    elapsed = time.perf_counter() - start
    print(f"profiled window: {elapsed:.2f} s, {args.batch * args.window / elapsed:.2f} samples/s "
          "(profiler overhead included)")
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by=args.sort, row_limit=args.rows, max_name_column_width=48))
    if args.trace:
        prof.export_chrome_trace(str(args.trace))


if __name__ == "__main__":
    main()
