"""Training without importing ``torch._dynamo`` (``emoe.dynamo_free``): the same updates, the same results,
and the import really avoided, on every path a trial process takes (a run alone on the fast and the
reference path, a stack, a checkpoint saved and resumed). The trial processes of a study are checked in
``tests/harness/test_trial_imports.py``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from emoe.dynamo_free import Adam, avoid_dynamo
from tests.harness.conftest import REPO


def _params(seed: int, dtype: torch.dtype) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=dtype)) for shape in ((7, 5), (5,), (3, 4, 2))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("impl", [{"fused": True}, {"foreach": False}, {"foreach": True}])
def test_adam_steps_exactly_as_torch_adam_and_keeps_its_state_dict(impl, dtype):
    """Bit for bit over steps with weight decay and a learning rate changed between them (as the plateau
    scheduler does), and the state dicts interchange: a checkpoint of either resumes in the other."""
    ours, theirs = _params(0, dtype), _params(0, dtype)
    a = Adam(ours, lr=1e-2, weight_decay=1e-3, **impl)
    b = torch.optim.Adam(theirs, lr=1e-2, weight_decay=1e-3, **impl)
    g = torch.Generator().manual_seed(1)
    for step in range(6):
        grads = [torch.randn(p.shape, generator=g, dtype=dtype) for p in ours]
        for p, q, grad in zip(ours, theirs, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        if step == 3:
            a.param_groups[0]["lr"] = b.param_groups[0]["lr"] = 3e-3
        a.step()
        b.step()
        a.zero_grad(set_to_none=True)
        b.zero_grad(set_to_none=True)
        for p, q in zip(ours, theirs):
            assert torch.equal(p, q), f"step {step}: parameters differ"
    sa, sb = a.state_dict(), b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sb["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][i][key], sb["state"][i][key])
    resumed = Adam(_params(9, dtype), lr=1.0, **impl)
    resumed.load_state_dict(sb)
    assert resumed.param_groups[0]["lr"] == 3e-3 and torch.equal(resumed.state_dict()["state"][0]["exp_avg"],
                                                                  sb["state"][0]["exp_avg"])


@pytest.mark.parametrize("impl", [{"fused": True}, {"foreach": False}])
def test_adam_steps_without_recording_and_gives_the_callers_grad_mode_back(impl):
    """As torch's step: the update runs with grad mode off (in place on leaves that require grad, which
    grad mode would refuse), and the caller's mode is back afterwards; the profiler hooks still run."""
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = Adam([p], lr=0.1, **impl)
    hooked: list[bool] = []
    opt.register_step_post_hook(lambda *_: hooked.append(True))
    with torch.enable_grad():
        opt.step()
        assert torch.is_grad_enabled()
    assert p.grad_fn is None and torch.all(p < 1) and hooked == [True]


RUNS = r"""
import json, sys
import torch
import emoe.stack, emoe.train
from emoe.checkpoint import load_state, save_state
from emoe.config import EMOEConfig, from_dict, to_dict
from emoe.data.synthetic import make_synthetic
from emoe.dynamo_free import allow_dynamo, avoid_dynamo

data = make_synthetic("tiny")
def cfg(**train):
    d = to_dict(EMOEConfig())
    d["model"].update(d_model=8, n_heads=2, n_levels=1, **data.dims)
    d["train"].update(batch_size=8, max_epochs=3, device="cpu", **train)
    return from_dict(d)

def runs(path):
    out = {}
    for fast in (True, False):
        states = []
        def keep(record, checkpoint):
            if record.epoch == 2:
                save_state(checkpoint(), path)
        res = emoe.train.train_emoe(cfg(fast_path=fast, seed=5), data, on_epoch=keep)
        out[f"alone fast={fast}"] = [e.valid for e in res.history]
        resumed = emoe.train.train_emoe(cfg(fast_path=fast, seed=5), data, resume=load_state(path))
        out[f"resumed fast={fast}"] = [e.valid for e in resumed.history]
    stacked = emoe.stack.fit_stacked([cfg(seed=s, weight_decay=w) for s, w in ((1, 0.0), (2, 1e-3))], data)
    out["stacked"] = [[e.valid for e in r.history] for r in stacked]
    return out

marked = avoid_dynamo()
lean = runs(sys.argv[1])
lean_imported = "torch._dynamo" in sys.modules
restored = allow_dynamo()
import torch._dynamo
stock = runs(sys.argv[1])
print(json.dumps({"marked": marked, "restored": restored, "imported": lean_imported, "same": lean == stock,
                  "epochs": len(lean["alone fast=True"])}))
"""


def test_training_alone_stacked_and_resumed_never_imports_dynamo_and_gives_the_same_results(tmp_path):
    """In a fresh interpreter, as in a trial process: with ``avoid_dynamo`` nothing imports ``torch._dynamo``,
    and every epoch's validation metrics equal those of the same runs with torch's wrappers and dynamo loaded."""
    proc = subprocess.run([sys.executable, "-c", RUNS, str(tmp_path / "state.pt")], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["marked"] > 0 and out["restored"] == out["marked"]
    assert out["imported"] is False
    assert out["same"] is True and out["epochs"] == 3


COMPILED_AFTER = r"""
import json, sys
import torch
from torch._compile import _disable_dynamo
from emoe.capture import TrainStep
from emoe.config import EMOEConfig, ModelConfig, TrainConfig
from emoe.dynamo_free import allow_dynamo, avoid_dynamo
from emoe.model import EMOE
from tests.emoe.test_fast_path import SMALL

def target():
    return 1

wrapper = _disable_dynamo(target)
marked = avoid_dynamo()
out = {"marked": marked, "answer": getattr(target, "__dynamo_disable", None) is target, "call": wrapper(),
       "imported": "torch._dynamo" in sys.modules}
cfg = EMOEConfig(model=ModelConfig(**SMALL), train=TrainConfig(compile="default", device="cpu"))
TrainStep(EMOE(cfg.model), cfg, torch.device("cpu"))
out |= {"left": hasattr(target, "__dynamo_disable"), "again": allow_dynamo()}
print(json.dumps(out))
"""


def test_allow_dynamo_takes_back_every_mark_and_compile_default_asks_for_it():
    """What ``avoid_dynamo`` set is removed again, so ``torch.compile`` meets torch's own wrappers: the
    compiled step (``train.compile: default``) asks for that before compiling, whatever ran before it in
    the process (a fresh interpreter: once anything imported dynamo, ``avoid_dynamo`` marks nothing)."""
    proc = subprocess.run([sys.executable, "-c", COMPILED_AFTER], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["marked"] > 0 and out["answer"] is True and out["call"] == 1 and out["imported"] is False
    assert out["left"] is False and out["again"] == 0


def test_avoid_dynamo_leaves_a_process_that_already_imported_it_alone():
    import torch._dynamo  # noqa: F401  (what any compile in this process would have done)

    assert avoid_dynamo() == 0


CUDA_RUNS = r"""
import json, sys
import emoe.stack, emoe.train
from emoe.config import EMOEConfig, from_dict, to_dict
from emoe.data.synthetic import make_synthetic
from emoe.dynamo_free import avoid_dynamo

data = make_synthetic("tiny")
def cfg(**train):
    d = to_dict(EMOEConfig())
    d["model"].update(d_model=8, n_heads=2, n_levels=1, **data.dims)
    d["train"].update(batch_size=8, max_epochs=2, device="cuda", compile="graphs", **train)
    return from_dict(d)

avoid_dynamo()
emoe.train.train_emoe(cfg(seed=1), data)
emoe.train.train_emoe(cfg(seed=1, bf16=True), data)
emoe.stack.fit_stacked([cfg(seed=1), cfg(seed=2)], data)
print(json.dumps({"imported": "torch._dynamo" in sys.modules}))
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_and_bf16_runs_never_import_dynamo():
    """On CUDA, as a trial process runs them: captured windows, bf16, a stack (make_graphed_callables, autocast)."""
    proc = subprocess.run([sys.executable, "-c", CUDA_RUNS], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["imported"] is False
