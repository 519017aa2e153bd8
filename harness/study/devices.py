"""The devices a study's trials train on (``train.device``), checked before anything starts.

A trial that names a device it cannot have fails in every trial, after Ray has started, with a traceback
each. Two checks catch that up front (``SpecError``, exit status 2):

* ``device_errors`` (part of validating the file, so it holds on every machine): a CUDA device needs a
  GPU per trial. Ray reserves GPUs only for trials that ask for them (``resources.gpus > 0``); without
  that, trials would share whatever GPU they find, unaccounted. Inside a trial Ray numbers the GPUs it
  assigned from 0, so ``cuda:N`` needs N below the trial's GPU count (1 for a fraction of a GPU).
* ``local_device_errors`` (only for a local Ray runtime that the driver starts, where the trials run on
  this machine): torch here has CUDA, with as many devices as a trial asks for; ``local_resource_errors``:
  a trial's CPUs and GPUs fit the runtime, whose GPUs are those Ray will detect (``local_gpus``). On a
  cluster joined with ``--address``, or through a runtime already initialised in the process (a notebook's
  ``ray.init``), the driver's own devices say nothing about the workers' (a CPU-only head node often drives
  GPU workers), so this is not checked there; ``harness.tune.cluster.check_fits`` then says whether some
  node has the GPUs.

``auto`` (the default) is always valid: CUDA when the trial sees a GPU, else the CPU.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess

from harness.study.errors import SpecError
from harness.study.params import flatten
from harness.study.spec import StudySpec

__all__ = [
    "DEVICE_PATH",
    "check_local_devices",
    "cuda_device_count",
    "device_errors",
    "gpu_memory_bytes",
    "local_cpus",
    "local_device_errors",
    "local_gpus",
    "local_resource_errors",
    "study_devices",
]

DEVICE_PATH = "train.device"


def study_devices(spec: StudySpec) -> dict[str, str]:
    """Every device a trial of ``spec`` may use -> where it is set (the first place, for messages)."""
    base = flatten(spec.base).get(DEVICE_PATH, "auto")
    found: dict[str, str] = {}

    def add(device: object, where: str) -> None:  # spec values are any YAML value; only strings name devices
        if isinstance(device, str):
            found.setdefault(device, where)

    if spec.grid and DEVICE_PATH in spec.grid:
        for i, device in enumerate(spec.grid[DEVICE_PATH]):
            add(device, f"grid.{DEVICE_PATH}.{i}")
    elif spec.ablation is not None:
        for name, overrides in spec.ablation.variants.items():
            flat = flatten(overrides or {})
            add(flat.get(DEVICE_PATH, base), f"ablation.variants.{name}.{DEVICE_PATH}" if DEVICE_PATH in flat
                else f"base.{DEVICE_PATH}")
    elif spec.search is not None and DEVICE_PATH in spec.search.params:
        param = spec.search.params[DEVICE_PATH]
        for i, device in enumerate(getattr(param, "choices", [])):
            add(device, f"search.params.{DEVICE_PATH}.choices.{i}")
        if param.when:  # not sampled for some trials: those keep the base device
            add(base, f"base.{DEVICE_PATH}")
    else:
        add(base, f"base.{DEVICE_PATH}")
    return found


def _cuda_index(device: str) -> int | None:
    """``cuda:N`` -> N, ``cuda`` -> 0, anything else (cpu, auto, ...) -> None."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return int(device[5:])
    return None


def device_errors(spec: StudySpec) -> list[str]:
    """Devices the trials cannot have whatever the machine: CUDA without ``resources.gpus``, or a
    ``cuda:N`` beyond the GPUs Ray assigns a trial."""
    gpus = spec.resources.gpus
    per_trial = max(1, math.ceil(gpus))
    errors = []
    for device, where in study_devices(spec).items():
        index = _cuda_index(device)
        if index is None:
            continue
        if gpus == 0:
            errors.append(f"{where}: {device!r} needs a GPU per trial, but resources.gpus is 0, so Ray reserves "
                          "none; set resources.gpus (1, or a fraction such as 0.5 to share a GPU), or use "
                          "device auto or cpu")
        elif index >= per_trial:
            errors.append(f"{where}: {device!r}, but a trial gets {gpus:g} GPU, which it sees as "
                          f"{', '.join(f'cuda:{i}' for i in range(per_trial))} (Ray numbers a trial's GPUs from "
                          "0); use cuda, or raise resources.gpus")
    return errors


def cuda_device_count() -> int:
    """CUDA devices that torch can use on this machine (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def local_gpus() -> int:
    """The GPUs a local Ray runtime started here will have: Ray's own count (NVML, within
    ``CUDA_VISIBLE_DEVICES``), as ``ray.init`` makes it without ``num_gpus``. Asking Ray, not torch, keeps
    torch out of the driver (its import is about a second on a 2-core machine, three on an H200 host's CPU);
    when this Ray has no such detector, torch's count."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        if manager is None:
            return cuda_device_count()
        count = int(manager.get_current_node_num_accelerators())
        visible = manager.get_current_process_visible_accelerator_ids()
    except (ImportError, AttributeError, TypeError, ValueError):
        return cuda_device_count()
    return min(count, len(visible)) if visible is not None else count


def gpu_memory_bytes() -> int | None:
    """The memory of the smallest GPU a trial here may get (those ``CUDA_VISIBLE_DEVICES`` names, by index or
    UUID, else every one), from ``nvidia-smi``; None without it, without a GPU, or with names it does not
    list (MIG slices). Unlike torch's query this opens no CUDA context: the driver would keep one, with its
    memory on the trials' GPU, for the whole run."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,uuid,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        rows = [[f.strip() for f in line.split(",")] for line in out.splitlines() if line.strip()]
        sizes = {(index, uuid): int(float(mib)) << 20 for index, uuid, mib in rows}
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        found = [size for (index, uuid), size in sizes.items() if index in wanted or uuid in wanted]
        if len(found) != len(wanted):  # a name nvidia-smi does not list (MIG), or none at all
            return None
        return min(found, default=None)
    return min(sizes.values(), default=None)


def local_device_errors(spec: StudySpec) -> list[str]:
    """Devices this machine lacks, for trials that will run here (a local Ray runtime)."""
    cuda = {d: w for d, w in study_devices(spec).items() if _cuda_index(d) is not None}
    if not cuda:
        return []
    import torch

    count = cuda_device_count()
    errors = []
    for device, where in cuda.items():
        if count == 0:
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
            errors.append(f"{where}: {device!r}, but this machine has no CUDA device that torch can use "
                          f"({build}); use device auto or cpu, or run where the GPUs are (--address joins a "
                          "cluster)")
        elif spec.resources.gpus > count:
            errors.append(f"{where}: {device!r} with resources.gpus {spec.resources.gpus:g}, but this machine has "
                          f"{count} CUDA device(s)")
    return errors


def local_cpus(num_cpus: float | None) -> float:
    """The CPUs of a local Ray runtime started here: ``--num-cpus``, else this machine's."""
    return num_cpus if num_cpus is not None else float(os.cpu_count() or 1)


def local_resource_errors(spec: StudySpec, *, num_cpus: float | None = None, num_gpus: float | None = None
                          ) -> list[str]:
    """A trial's ``resources`` beyond what a local runtime started here will have (``--num-cpus`` /
    ``--num-gpus``, else this machine's CPUs and CUDA devices): no trial could ever start, and Ray would
    have been started only to say so."""
    res, errors = spec.resources, []
    cpus = local_cpus(num_cpus)
    if res.cpus > cpus:
        errors.append(f"resources.cpus: a trial asks for {res.cpus:g} CPUs, but the local runtime will have "
                      f"{cpus:g} ({'--num-cpus' if num_cpus is not None else 'this machine'}); lower it, or join "
                      "a cluster with --address")
    if res.gpus > 0:
        gpus = num_gpus if num_gpus is not None else float(local_gpus())
        if res.gpus > gpus:
            errors.append(f"resources.gpus: a trial asks for {res.gpus:g} GPU, but the local runtime will have "
                          f"{gpus:g} ({'--num-gpus' if num_gpus is not None else 'the GPUs Ray detects here'}); "
                          "lower it (--set resources.gpus=0 runs on the CPU), or join a cluster with --address")
    return errors


def check_local_devices(spec: StudySpec, *, source: str, num_cpus: float | None = None,
                        num_gpus: float | None = None) -> None:
    """``SpecError`` listing ``local_device_errors`` and ``local_resource_errors`` (the command line calls
    it for a local runtime)."""
    errors = local_device_errors(spec) + local_resource_errors(spec, num_cpus=num_cpus, num_gpus=num_gpus)
    if errors:
        raise SpecError(errors, source=source)
