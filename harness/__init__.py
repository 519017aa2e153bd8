"""Studies of EMOE on Ray Tune + Optuna: a YAML study -> validated plan -> trials -> Parquet results.

Command line: ``python -m harness.run STUDY.yaml`` (see docs/studies.md). From Python::

    from harness import build_plan, load_spec, load_study_data
    spec = load_spec("studies/distill_weight.yaml", ["base.train.max_epochs=3"])
    plan = build_plan(spec, load_study_data(spec.data))     # trials, configurations; no Ray needed

Importing this package does not import Ray; ``harness.tune.runner.run_tune`` does.
"""

from harness.results.sink import ResultStore
from harness.study.data import load_study_data
from harness.study.errors import SpecError, StudyExistsError
from harness.study.load import load_spec
from harness.study.plan import Plan, build_plan
from harness.study.spec import StudySpec
from harness.study.trial import Trial

__all__ = ["Plan", "ResultStore", "SpecError", "StudyExistsError", "StudySpec", "Trial", "build_plan", "load_spec",
           "load_study_data"]
