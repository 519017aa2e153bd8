"""What keeps the driver's cost per trial flat as studies grow (bench/scale.py, bench/README.md "Scale").

Behaviour, not timing: a grid's trials reach Tune's variant generation shared rather than deep-copied
once per variant (which made a grid of N trials cost O(N^2) copies), in plan order, each once.
"""

from __future__ import annotations

import copy

from ray.tune.search.variant_generator import generate_variants

from harness.study.data import load_study_data
from harness.study.plan import build_plan
from harness.study.spec import StudySpec
from harness.tune.runner import grid_space
from tests.harness.conftest import tiny_study


def _trials():
    spec = StudySpec.model_validate(tiny_study(grid={"train.lr": [1e-4, 3e-4, 1e-3, 3e-3]}, seeds=[1, 2, 3]))
    return build_plan(spec, load_study_data(spec.data)).trials


def test_a_grid_space_is_shared_not_copied_and_yields_every_trial_once_in_order():
    trials = _trials()
    space = grid_space(trials)
    copied = copy.deepcopy(space)
    assert copied["trial"]["grid_search"] is space["trial"]["grid_search"]  # O(1) per variant, not O(N)
    assert all(a is b for a, b in zip(copied["trial"]["grid_search"], trials))
    variants = [config["trial"] for _, config in generate_variants(space)]
    assert [t.trial_id for t in variants] == [t.trial_id for t in trials]
