"""Provenance of a study: which code, packages, machines, command and data made its results.

Recorded in ``study.json`` when a study starts (and again when it is resumed, under ``resumes``) and copied
into every report's sidecar files, so a table in a paper can be traced back to what produced it. Every
probe degrades to ``None`` rather than failing: provenance must never stop a study.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PACKAGES", "ProjectVersion", "gpu_names", "machine", "node_machine", "package_versions",
           "project_version", "provenance", "torch_cuda"]

#: Distributions whose versions change a study's numbers or its behaviour.
PACKAGES = ("torch", "ray", "optuna", "numpy", "pandas", "pyarrow", "scipy")

#: The project's root: the folder that holds the ``harness`` package (this file is harness/results/...).
_ROOT = Path(__file__).resolve().parents[2]
_DIST = "emoe-harness"

ProjectVersion = dict[str, str | bool | None]
Scalar = str | int | float | bool | None


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                             check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def project_version(root: Path = _ROOT) -> ProjectVersion:
    """The project's own version, and its commit when the project *is* a git checkout.

    A copy of the project inside another repository (vendored, a notebook repo) would otherwise report
    that repository's commit: the commit is taken only when the checkout's top level is the project root.
    ``modified`` says whether tracked files of the project differ from that commit.
    """
    try:
        version: str | None = importlib.metadata.version(_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = None
    top = _git(root, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return {"version": version, "commit": None, "modified": None, "source": "package"}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"version": version, "commit": commit, "modified": None if status is None else bool(status),
            "source": "git"}


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (``None`` where one is missing), plus Python's and CUDA's."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch_cuda()
    return found


def torch_cuda() -> str | None:
    """The CUDA version torch was built for (``torch.version.cuda``; None for a CPU build or without torch),
    read from the installed ``torch/version.py`` when this process has not imported torch: the driver never
    does (a second or more of its start), and ``import torch.version`` would import all of torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return getattr(getattr(torch, "version", None), "cuda", None)
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        try:
            tree = ast.parse((Path(folder) / "version.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.Assign | ast.AnnAssign) or node.value is None:
                continue
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "cuda" for t in targets):
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    return None
                return value if isinstance(value, str) else None
    return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpu_models() -> list[str]:
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    try:
        if not torch.cuda.is_available():
            return []
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop a study
        return []


def machine() -> dict[str, Scalar | list[str]]:
    """This node: host name, OS, CPU model and count, GPU models (torch's, when this process imported it)."""
    return {"host": platform.node() or None, "os": platform.platform(), "cpu": _cpu_model(),
            "cpus": os.cpu_count(), "gpus": _gpu_models()}


def gpu_names() -> list[str]:
    """This node's GPU models from ``nvidia-smi`` (no torch import, no CUDA context); [] without one."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def node_machine() -> dict[str, Scalar | list[str]]:
    """``machine()``, GPU models from ``nvidia-smi`` when torch has none: what a Ray node's probe returns.

    It runs as a Ray task on every node at a study's start, in a fresh worker process that imports this
    module (and the ``harness`` package, which imports nothing heavy): this module imports only the
    standard library, so a probe costs a worker's start, not torch's import (about 1.2 s of CPU per node).
    """
    info = machine()
    if not info["gpus"]:
        info["gpus"] = gpu_names()
    return info


def provenance(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Everything above in one JSON-ready dict (the command line defaults to this process's)."""
    args = list(sys.argv if argv is None else argv)
    return {"project": project_version(), "packages": package_versions(), "driver": node_machine(),  # no torch here
            "command": shlex.join([Path(sys.executable).name, *args])}
