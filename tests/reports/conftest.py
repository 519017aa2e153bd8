"""Fake study result directories written exactly as docs/results.md says (schema version 1): study.json and
one Parquet file per trial in trials/, epochs/ and router/, for a grid, an ablation and a search study.

Metric values follow simple known effects plus seeded noise, so the figures have something to show.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emoe_schema import format_sequence

REG_METRICS = ("loss", "mae", "corr", "acc2", "f1", "acc2_hz", "f1_hz", "acc3", "acc5", "acc7")
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
BASE_PARAMS: dict[str, Any] = {
    "model.d_model": 64, "model.n_heads": 4, "model.n_levels": 2, "model.temperature": 0.1,
    "model.fusion": "sum", "model.router": "learned", "model.router_input": "flatten",
    "model.fixed_weights": (1 / 3, 1 / 3, 1 / 3),  # stored as emoe_schema.format_sequence writes it
    "loss.distill_weight": 0.1, "loss.balance_weight": 0.1, "loss.sim_alpha": 0.1, "loss.uni_weight": 1.0,
    "train.lr": 1e-4, "train.batch_size": 16, "train.max_epochs": 12,
}


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _columns(params: dict[str, Any]) -> dict[str, Any]:
    """Configuration columns as the harness writes them (sequences by the schema's one rule)."""
    return {k: format_sequence(v) if isinstance(v, tuple | list) else v for k, v in params.items()}


def _metrics(quality: float, rng: np.random.Generator) -> dict[str, float]:
    """Regression metrics of a model whose quality (0 bad .. 1 good) is given, with a little noise."""
    mae = 1.2 - 0.5 * quality + rng.normal(0, 0.01)
    acc = {k: float(np.clip(base + 0.2 * quality + rng.normal(0, 0.006), 0, 1))
           for k, base in (("acc2", 0.6), ("f1", 0.6), ("acc2_hz", 0.58), ("f1_hz", 0.58), ("acc3", 0.45),
                           ("acc5", 0.3), ("acc7", 0.25))}
    return {"loss": mae, "mae": mae, "corr": float(np.clip(0.3 + 0.5 * quality + rng.normal(0, 0.01), -1, 1)), **acc}


def _write(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _trial(study: str, variant: str, params: dict[str, Any], seed: int, quality: float, index: int,
           out: Path, *, status: str = "completed", n_samples: int = 120, epochs: int = 8,
           reliability_link: float = 4.0, router_kind: str = "learned") -> None:
    """Write one trial's trials/, epochs/ and router/ files."""
    rng = np.random.default_rng([seed, index])
    config_id = _hash({k: str(v) if isinstance(v, tuple) else v for k, v in params.items()})  # fixture ids
    trial_id = _hash(config_id, seed)
    ids = {"study": study, "trial_id": trial_id, "config_id": config_id, "variant": variant, "seed": seed}
    epochs_run = epochs if status == "completed" else max(1, epochs // 3) if status == "pruned" else 0
    final = _metrics(quality, rng)
    ep_rows, best = [], 0
    for e in range(1, epochs_run + 1):
        frac = e / epochs
        valid = {f"valid_{k}": v + (0.25 * (1 - frac) if k in ("loss", "mae") else -0.1 * (1 - frac))
                 for k, v in final.items()}
        improved = e == 1 or valid["valid_loss"] < min(r["valid_loss"] for r in ep_rows)
        best = e if improved else best
        test = {f"test_{k}": (v + rng.normal(0, 0.01)) if improved else None for k, v in final.items()}
        w = rng.dirichlet([4, 2, 2])
        ep_rows.append({**ids, "epoch": e, "train_loss": 2.0 - frac, "train_task": 1.0 - 0.5 * frac,
                        "train_uni": 1.0, "train_sim": 0.05, "train_ent": -0.9, "train_ud": 0.01,
                        **valid, **test, "improved": improved, "lr": params["train.lr"],
                        "w_l": w[0], "w_v": w[1], "w_a": w[2], "time_s": 0.5})
    start = T0 + timedelta(seconds=30 * index)
    row: dict[str, Any] = {**ids, "status": status, "error": "RuntimeError: boom" if status == "failed" else None,
                           **_columns(params), "best_epoch": best, "epochs_run": epochs_run}
    last = ep_rows[best - 1] if best else {}
    for k in REG_METRICS:
        row[f"valid_{k}"] = last.get(f"valid_{k}")
        row[f"test_{k}"] = last.get(f"test_{k}")
    row["objective"] = row["valid_mae"]
    row.update({"time_total_s": 0.5 * epochs_run + 1.0, "time_per_epoch_s": 0.5, "started_at": start,
                "finished_at": start + timedelta(seconds=0.5 * epochs_run + 1.0), "cpus": 1.0, "gpus": 0.0,
                "node": "node-1", "attempts": 1, "code_version": "0.1.0+test", "data": "synthetic(n=600,seed=0)"})
    trial_df = pd.DataFrame([row])
    for col in ("started_at", "finished_at"):
        trial_df[col] = pd.to_datetime(trial_df[col], utc=True).astype("datetime64[us, UTC]")
    _write(trial_df, out / "trials" / f"{trial_id}.parquet")
    if ep_rows:
        _write(pd.DataFrame(ep_rows), out / "epochs" / f"{trial_id}.parquet")
    if status == "completed":
        rel = rng.dirichlet([2, 2, 2], size=n_samples)
        if router_kind == "uniform":
            w = np.full((n_samples, 3), 1 / 3)
        else:
            logits = reliability_link * rel + rng.normal(0, 0.3, size=(n_samples, 3))
            w = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        label = np.clip(np.random.default_rng(0).normal(0, 1.5, n_samples), -3, 3)  # one test set for all
        router = pd.DataFrame({**ids, "sample": np.arange(n_samples, dtype=np.int64),
                               "sample_id": [f"s{i}" for i in range(n_samples)], "label": label,
                               "pred": label + rng.normal(0, 0.7 * (1.8 - quality), n_samples), "w_l": w[:, 0], "w_v": w[:, 1],
                               "w_a": w[:, 2], "r_l": rel[:, 0], "r_v": rel[:, 1], "r_a": rel[:, 2]})
        _write(router, out / "router" / f"{trial_id}.parquet")


def _meta(out: Path, **fields: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    meta = {"schema_version": 1, "data": "synthetic", "task": "regression",
            "created_at": T0.isoformat(), **fields}
    (out / "study.json").write_text(json.dumps(meta))


def write_grid(out: Path, param: str = "loss.distill_weight", values: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 1.0),
               seeds: tuple[int, ...] = (1111, 1112, 1113),
               second: tuple[str, tuple[Any, ...]] | None = None) -> Path:
    """A grid study over one parameter (times ``second``'s values); quality peaks mid-range of ``param``."""
    extra_name, extra_values = second if second is not None else (None, (None,))
    varied = [param] + ([extra_name] if extra_name else [])
    _meta(out, study=out.name, kind="grid", varied=varied, objective={"metric": "valid_mae", "mode": "min"},
          baseline=None, seeds=list(seeds))
    lo, hi = np.log(min(values) + 1e-3), np.log(max(values) + 1e-3)
    index = 0
    for v in values:
        for e, extra in enumerate(extra_values):
            params = {**BASE_PARAMS, param: v, **({extra_name: extra} if extra_name else {})}
            label = f"{param.split('.')[-1]}={v:g}" + (f",{extra_name.split('.')[-1]}={extra}" if extra_name else "")
            pos = (np.log(v + 1e-3) - lo) / (hi - lo)
            for s in seeds:
                _trial(out.name, label, params, s, 0.2 + 0.6 * (1 - (pos - 0.6) ** 2) - 0.1 * e, index, out)
                index += 1
    (out / "trials" / ".tmp-partial.parquet").write_bytes(b"not parquet")  # hidden temp file: must be ignored
    return out


ABLATION = {"full": ({}, 0.8), "uniform_router": ({"model.router": "uniform"}, 0.6),
            "no_balance": ({"loss.balance_weight": 0.0}, 0.78), "no_distill": ({"loss.distill_weight": 0.0}, 0.7),
            "no_unimodal": ({"loss.uni_weight": 0.0}, 0.55), "concat_fusion": ({"model.fusion": "concat"}, 0.82)}


def write_ablation(out: Path, seeds: tuple[int, ...] = (1111, 1112, 1113, 1114, 1115)) -> Path:
    """An ablation study; no_unimodal's last seed failed (so it has one pair fewer)."""
    _meta(out, study=out.name, kind="ablation", varied=[], objective={"metric": "valid_mae", "mode": "min"},
          baseline="full", seeds=list(seeds))
    index = 0
    for name, (over, quality) in ABLATION.items():
        for s in seeds:
            status = "failed" if (name == "no_unimodal" and s == seeds[-1]) else "completed"
            _trial(out.name, name, {**BASE_PARAMS, **over}, s, quality, index, out, status=status,
                   router_kind="uniform" if name == "uniform_router" else "learned")
            index += 1
    return out


def write_search(out: Path, n_trials: int = 24) -> Path:
    """An Optuna search over lr (dominant), d_model, n_heads and n_levels; every 4th trial pruned."""
    varied = ["train.lr", "model.d_model", "model.n_heads", "model.n_levels"]
    _meta(out, study=out.name, kind="search", varied=varied, objective={"metric": "valid_mae", "mode": "min"},
          baseline=None, seeds=[1111])
    rng = np.random.default_rng(7)
    for i in range(n_trials):
        lr = float(10 ** rng.uniform(-5, -2))
        params = {**BASE_PARAMS, "train.lr": lr, "model.d_model": int(rng.choice([32, 64, 128])),
                  "model.n_heads": int(rng.choice([2, 4])), "model.n_levels": int(rng.integers(1, 5))}
        quality = float(np.clip(1 - abs(np.log10(lr) + 3.5) / 2, 0, 1))
        _trial(out.name, f"trial_{i:03d}", params, 1111, quality, i, out,
               status="pruned" if i % 4 == 3 else "completed")
    return out


@pytest.fixture(scope="session")
def grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grid(tmp_path_factory.mktemp("results") / "distill_weight")


@pytest.fixture(scope="session")
def log_grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grid(tmp_path_factory.mktemp("results") / "router_temperature", param="model.temperature",
                      values=(0.03, 0.1, 0.3, 1.0, 3.0))


@pytest.fixture(scope="session")
def ablation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ablation(tmp_path_factory.mktemp("results") / "ablation")


@pytest.fixture(scope="session")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search(tmp_path_factory.mktemp("results") / "expert_size")


@pytest.fixture
def make_study() -> Callable[..., Path]:
    """Factory: ``make_study(kind, path, **kw)`` writes a fresh study directory (for tests that alter it)."""
    writers = {"grid": write_grid, "ablation": write_ablation, "search": write_search, "hpo": write_hpo}
    return lambda kind, path, **kw: writers[kind](path, **kw)


HPO_SPACE: dict[str, dict[str, Any]] = {  # as studies/hpo.yaml's search.params, written to spec.yaml
    "train.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
    "model.d_model": {"type": "categorical", "choices": [16, 32, 64]},
    "model.n_heads": {"type": "categorical", "choices": [2, 4, 8]},
    "model.router": {"type": "categorical", "choices": ["learned", "uniform"]},
    "model.temperature": {"type": "loguniform", "low": 0.03, "high": 1.0, "when": {"model.router": "learned"}},
    "model.out_dropout": {"type": "uniform", "low": 0.0, "high": 0.5},
    "loss.distill_weight": {"type": "uniform", "low": 0.0, "high": 1.0},
    "loss.balance_weight": {"type": "uniform", "low": 0.0, "high": 0.3},
}


def write_hpo(out: Path, n_trials: int = 6, *, spec: bool = True, planned: int | None = None,
              status: str = "finished") -> Path:
    """A search shaped like studies/hpo.yaml: 8 parameters (3 categorical, the temperature conditional on
    the learned router), ``n_trials`` trial rows of ``planned`` (default: all), and spec.yaml recording
    the search space when ``spec``."""
    import yaml

    _meta(out, study=out.name, kind="search", varied=list(HPO_SPACE),
          objective={"metric": "valid_mae", "mode": "min"}, baseline=None, seeds=[1111],
          n_trials=planned or n_trials, status=status)
    if spec:
        (out / "spec.yaml").write_text(yaml.safe_dump({"name": out.name, "search": {
            "sampler": "tpe", "seed": 0, "n_trials": n_trials, "params": HPO_SPACE}}, sort_keys=False))
    rng = np.random.default_rng(3)
    for i in range(n_trials):
        lr = float(np.exp(rng.uniform(np.log(1e-4), np.log(3e-3))))
        router = str(rng.choice(["learned", "uniform"]))
        params = {**BASE_PARAMS, "train.lr": lr, "model.d_model": int(rng.choice([16, 32, 64])),
                  "model.n_heads": int(rng.choice([2, 4, 8])), "model.router": router,
                  "model.temperature": float(np.exp(rng.uniform(np.log(0.03), 0))) if router == "learned" else 0.1,
                  "model.out_dropout": float(rng.uniform(0, 0.5)), "loss.distill_weight": float(rng.uniform(0, 1)),
                  "loss.balance_weight": float(rng.uniform(0, 0.3))}
        quality = float(np.clip(1 - abs(np.log10(lr) + 3.3), 0, 1))
        _trial(out.name, f"trial{i:03d}", params, 1111, quality, i, out)
    return out


@pytest.fixture(scope="session")
def hpo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_hpo(tmp_path_factory.mktemp("results") / "hpo")


@pytest.fixture(scope="session")
def running_hpo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hpo-shaped search while it runs: 6 of 9 trials recorded."""
    return write_hpo(tmp_path_factory.mktemp("results") / "hpo_running", planned=9, status="running")


@pytest.fixture(scope="session")
def running_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ablation study still running: 2 seeds of 6 variants recorded out of 5 planned (30 trials)."""
    d = write_ablation(tmp_path_factory.mktemp("results") / "ablation_running", seeds=(1111, 1112))
    meta = json.loads((d / "study.json").read_text())
    (d / "study.json").write_text(json.dumps({**meta, "status": "running", "n_trials": 30}))
    return d
