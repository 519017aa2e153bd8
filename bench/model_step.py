"""Training throughput (samples/s) of EMOE's real training loop on random MOSI-shaped data.

Measures ``emoe.train.train_epoch``: forward + backward per batch, one Adam step per accumulation window,
for the faithful MOSI configuration (batch 16, d_model 256, 4 levels, flattened ~196M-weight router,
window 10) and a small one, in variants side by side: ``fast`` (fused attention, foreach Adam), ``plain``
(reference arithmetic) and ``bf16`` (fast + bf16 autocast, also on CPU). Medians of several repeats.

    python bench/model_step.py                          # faithful + small, fast variant (~2-3 min here)
    python bench/model_step.py --variants plain,fast,bf16 --configs faithful --repeats 5
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import platform
import statistics
import time

import numpy as np
import torch

from emoe.config import EMOEConfig, ModelConfig, TrainConfig
from emoe.data.arrays import Split
from emoe.model import build_model
from emoe.train import make_optimizer, resolve_device, train_epoch

_MOSI = ModelConfig(d_text=768, d_audio=5, d_vision=20, len_text=50, len_audio=50, len_vision=50)
CONFIGS: dict[str, ModelConfig] = {
    # the reference defaults (aligned MOSI): flattened router input 50 * 793 -> 4956 hidden
    "faithful": _MOSI,
    # a cheap study configuration on the same inputs: narrow, shallow experts, mean-pooled router
    "small": dataclasses.replace(_MOSI, d_model=64, n_heads=4, n_levels=2, router_input="mean"),
}
VARIANTS = {
    "plain": {"fast_path": False},
    "fast": {"fast_path": True},
    "bf16": {"fast_path": True, "bf16": True, "allow_cpu_bf16": True},
}


def random_split(model: ModelConfig, n: int, seed: int = 0) -> Split:
    """n random samples with the shapes ``model`` expects; labels uniform in [-3, 3]."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    return Split(text=normal(n, model.len_text, model.d_text), audio=normal(n, model.len_audio, model.d_audio),
                 vision=normal(n, model.len_vision, model.d_vision),
                 labels=rng.uniform(-3, 3, n).astype(np.float32))


def bench_config(name: str, model_cfg: ModelConfig, variants: list[str], args: argparse.Namespace) -> None:
    """Print one row per variant: median/min/max samples/s over ``args.repeats`` timed passes."""
    window, batch = args.window, args.batch
    n = batch * window * args.windows
    torch.manual_seed(0)
    model = build_model(model_cfg)
    n_params = sum(p.numel() for p in model.parameters())
    timed, warm = random_split(model_cfg, n, seed=1), random_split(model_cfg, batch * window, seed=2)
    device = resolve_device(args.device)
    model.to(device)
    print(f"\n{name}: {n_params / 1e6:.1f}M parameters, batch {batch}, window {window}, "
          f"{n} samples ({args.windows} window(s)) per repeat")
    for variant in variants:
        train = TrainConfig(batch_size=batch, update_epochs=window, device=args.device, **VARIANTS[variant])
        cfg = EMOEConfig(model=model_cfg, train=train)
        model.set_fast_path(train.fast_path)
        optimizer = make_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(0)
        train_epoch(model, warm, cfg, optimizer, generator=gen, device=device)  # allocations, Adam state
        rates = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = train_epoch(model, timed, cfg, optimizer, generator=gen, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            rates.append(n / (time.perf_counter() - start))
            if out.error:
                print(f"  {variant}: {out.error}")
                break
        print(f"  {variant:>5}: {statistics.median(rates):8.2f} samples/s  "
              f"(min {min(rates):.2f}, max {max(rates):.2f}, {len(rates)} repeats)", flush=True)
        del optimizer
        model.zero_grad(set_to_none=True)
        gc.collect()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="faithful,small", help=f"comma list of {sorted(CONFIGS)}")
    p.add_argument("--variants", default="fast", help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant (median reported)")
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
    if bad or args.repeats < 1 or args.windows < 1:
        p.error(f"unknown config/variant {bad} or non-positive --repeats/--windows")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    for name in configs:
        cfg = CONFIGS[name]
        if args.unaligned:
            cfg = dataclasses.replace(cfg, len_audio=375, len_vision=500)
        bench_config(name, cfg, variants, args)


if __name__ == "__main__":
    main()
