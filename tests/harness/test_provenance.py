"""Provenance: the project's own commit (never an enclosing repository's), packages, machine, data hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from emoe.data.verify import sha256_file
from harness.results.provenance import machine, package_versions, project_version, provenance

ROOT = Path(__file__).resolve().parents[2]


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=True).stdout.strip()


def _commit_all(repo: Path) -> None:
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")


def test_a_checkout_of_the_project_gives_its_commit_and_whether_it_was_modified(tmp_path: Path) -> None:
    repo = tmp_path / "project"
    shutil.copytree(ROOT / "harness", repo / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    _git(tmp_path, "init", "-q", str(repo))
    _commit_all(repo)
    info = project_version(repo)
    assert info["source"] == "git" and info["commit"] == _git(repo, "rev-parse", "HEAD")
    assert info["modified"] is False
    (repo / "harness" / "run.py").write_text("# changed\n")
    assert project_version(repo)["modified"] is True


def test_by_default_the_project_is_the_folder_that_holds_harness() -> None:
    # the default root pointed at harness/ itself once the module moved to harness/results/: every study.json
    # and report sidecar recorded commit null (source "package"), even in a git clone
    import harness.results.provenance as prov

    assert prov._ROOT == ROOT and (ROOT / "harness" / "__init__.py").is_file()
    if (ROOT / ".git").exists():  # a checkout (CI clones one): its commit is recorded
        assert project_version()["commit"] == _git(ROOT, "rev-parse", "HEAD")


def test_a_copy_inside_another_repository_does_not_take_that_repositorys_commit(tmp_path: Path) -> None:
    outer = tmp_path / "paper"
    project = outer / "vendor" / "emoe-harness"
    shutil.copytree(ROOT / "harness", project / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    _git(tmp_path, "init", "-q", str(outer))
    _commit_all(outer)
    info = project_version(project)
    assert info["commit"] is None and info["modified"] is None and info["source"] == "package"


def test_packages_machine_and_command_are_json_ready() -> None:
    versions = package_versions(("pandas", "surely-not-installed-pkg"))
    assert versions["pandas"] and versions["surely-not-installed-pkg"] is None and versions["python"]
    node = machine()
    assert node["cpus"] and isinstance(node["gpus"], list)
    record = provenance(["-m", "harness.run", "studies/x.yaml", "--set", "a=b c"])
    assert record["command"].endswith("-m harness.run studies/x.yaml --set 'a=b c'")
    json.dumps(record)  # study.json must be able to hold it


@pytest.mark.parametrize("size", [0, 5, (1 << 20) + 3])
def test_the_data_hash_equals_hashlib_on_the_whole_file(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_torchs_cuda_version_is_recorded_without_importing_torch(tmp_path) -> None:
    """The driver imports no torch, yet study.json's packages say which CUDA its torch was built for: read
    from the installed torch/version.py (here a stand-in package that must not be imported)."""
    import sys

    import torch

    from harness.results.provenance import torch_cuda

    assert torch_cuda() == torch.version.cuda  # this process has torch: its own answer
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('torch must not be imported for its version')\n")
    (fake / "version.py").write_text("from typing import Optional\n__version__ = '2.11.0'\ncuda: Optional[str] = '13.0'\n")
    code = ("import sys; from harness.results.provenance import package_versions; "
            "print(package_versions(('numpy',))['cuda'], 'torch' in sys.modules)")
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(repo)])})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["13.0", "False"]


def test_the_drivers_gpus_are_named_without_torch(monkeypatch) -> None:
    """The driver imports no torch: its GPUs come from nvidia-smi, as a node probe's do (here a stand-in)."""
    import harness.results.provenance as prov

    monkeypatch.setattr(prov, "gpu_names", lambda: ["NVIDIA H200"])
    monkeypatch.setattr(prov, "_gpu_models", lambda: [])  # torch has none (not imported, or a CPU build)
    assert provenance(["-m", "harness.run"])["driver"]["gpus"] == ["NVIDIA H200"]
