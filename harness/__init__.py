"""Studies of EMOE on Ray Tune + Optuna: a YAML study -> validated plan -> trials -> Parquet results.

Command line: ``python -m harness.run STUDY.yaml`` (see docs/studies.md). From Python::

    from harness import build_plan, load_spec, load_study_data
    spec = load_spec("studies/distill_weight.yaml", ["base.train.max_epochs=3"])
    plan = build_plan(spec, load_study_data(spec.data))     # trials, configurations; no Ray needed

Importing this package imports neither Ray nor torch: the names below load their modules when first used,
so a process that needs one light submodule (a Ray node's provenance probe) does not pay for the rest.
``harness.tune.runner.run_tune`` imports Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.results.sink import ResultStore
    from harness.study.data import load_study_data
    from harness.study.errors import SpecError, StudyExistsError
    from harness.study.load import load_spec
    from harness.study.plan import Plan, build_plan
    from harness.study.spec import StudySpec
    from harness.study.trial import Trial

#: Each public name and the module that defines it.
_HOMES = {"ResultStore": "harness.results.sink", "load_study_data": "harness.study.data",
          "SpecError": "harness.study.errors", "StudyExistsError": "harness.study.errors",
          "load_spec": "harness.study.load", "Plan": "harness.study.plan", "build_plan": "harness.study.plan",
          "StudySpec": "harness.study.spec", "Trial": "harness.study.trial"}

__all__ = ["Plan", "ResultStore", "SpecError", "StudyExistsError", "StudySpec", "Trial", "build_plan", "load_spec",
           "load_study_data"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'harness' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
