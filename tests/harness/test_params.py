"""Parameter paths, type coercion, identities and the variation kinds (grid, ablation, search space)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from emoe.config import EMOEConfig
from harness.study.params import (
    apply_overrides,
    build_config,
    check_path,
    coerce,
    config_id,
    flatten,
    trial_id,
)
from harness.study.space import (
    Point,
    RandomTrial,
    SearchSpace,
    ablation_points,
    check_point,
    feasible_fraction,
    grid_points,
)


def test_paths_are_checked_with_suggestions():
    assert check_path("model.d_model") is None
    assert "did you mean 'loss.distill_weight'" in check_path("loss.distil_weight")
    assert "paths start with model., loss. or train." in check_path("optim.lr")


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("train.lr", "1e-3", 0.001),  # YAML 1.1 reads 1e-3 as a string
    ("train.lr", 1, 1.0),
    ("model.d_model", 64.0, 64),
    ("train.grad_clip", None, None),
    ("model.fixed_weights", [1, 0, 0], (1.0, 0.0, 0.0)),
    ("model.router", "uniform", "uniform"),
])
def test_values_are_coerced_to_the_field_type(path, value, expected):
    assert coerce(path, value) == expected


@pytest.mark.parametrize(("path", "value", "message"), [
    ("model.d_model", 3.5, "expected an integer"),
    ("model.d_model", True, "expected an integer"),
    ("model.router", "smart", "must be one of 'learned', 'uniform', 'fixed'"),
    ("train.bf16", "yes", "expected true or false"),
    ("model.fixed_weights", [1, 0], "expected a list of 3 values"),
])
def test_bad_values_name_the_path(path, value, message):
    with pytest.raises(ValueError, match=message) as info:
        coerce(path, value)
    assert str(info.value).startswith(path)


def test_overrides_merge_dotted_and_nested_forms():
    nested = apply_overrides({"model": {"d_model": 16}, "train": {"lr": 0.1}}, {"model.d_model": 32, "loss.uni_weight": 0})
    assert nested["model"] == {"d_model": 32} and nested["loss"] == {"uni_weight": 0} and nested["train"] == {"lr": 0.1}
    assert flatten({"model": {"d_model": 8}, "train.lr": 1}) == {"model.d_model": 8, "train.lr": 1}


def test_identity_ignores_seed_device_and_speed_switches_but_not_results():
    base = build_config({"model": {"d_model": 16, "n_heads": 2}})
    same = build_config({"model": {"d_model": 16, "n_heads": 2}, "train": {"seed": 7, "device": "cpu",
                                                                           "eval_batch_size": 1, "fast_path": False}})
    other = build_config({"model": {"d_model": 16, "n_heads": 4}})
    assert config_id(base, "d") == config_id(same, "d")
    assert config_id(base, "d") != config_id(other, "d") != config_id(base, "other data")
    cid = config_id(base, "d")
    assert len(cid) == 12 and trial_id(cid, 1) != trial_id(cid, 2) != trial_id(cid, 1, "optuna:0")
    assert trial_id(cid, 1) == trial_id(cid, 1)


def test_grid_is_the_cartesian_product_in_file_order():
    points = grid_points({"loss.distill_weight": [0, 0.5], "model.n_heads": [2, 4, 8]})
    assert len(points) == 6
    assert points[0] == Point("distill_weight=0,n_heads=2", {"loss.distill_weight": 0.0, "model.n_heads": 2})
    assert points[-1].label == "distill_weight=0.5,n_heads=8"
    assert grid_points(None) == [Point("base", {})]


def test_ablation_points_flatten_nested_overrides():
    points = ablation_points({"full": {}, "no_ud": {"loss": {"distill_weight": 0}}})
    assert [p.label for p in points] == ["full", "no_ud"]
    assert points[1].overrides == {"loss.distill_weight": 0.0}


def test_check_point_reports_constraints():
    cfg, errors = check_point({"model": {"d_model": 8}}, Point("p", {"model.n_heads": 3}))
    assert cfg is None and any("n_heads: must divide d_model (8)" in e for e in errors)
    cfg, errors = check_point({"model": {"d_model": 8}}, Point("p", {"model.n_heads": 4}), {"len_text": 10})
    assert isinstance(cfg, EMOEConfig) and errors == [] and cfg.model.len_text == 10


def test_search_space_is_define_by_run_with_conditional_parameters():
    space = SearchSpace({
        "model.router": {"type": "categorical", "choices": ["learned", "fixed"]},
        "model.temperature": {"type": "loguniform", "low": 0.01, "high": 1.0, "when": {"model.router": "learned"}},
        "model.fixed_weights": {"type": "categorical", "choices": [[0.5, 0.25, 0.25], [0.2, 0.4, 0.4]],
                                "when": {"model.router": "fixed"}},
        "model.n_levels": {"type": "int", "low": 1, "high": 3},
    }, base={})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        values = space(study.ask())
        seen.add(values["model.router"])
        if values["model.router"] == "learned":
            assert 0.01 <= values["model.temperature"] <= 1.0 and "model.fixed_weights" not in values
        else:
            assert values["model.fixed_weights"] in ((0.5, 0.25, 0.25), (0.2, 0.4, 0.4))
            assert "model.temperature" not in values
        assert 1 <= values["model.n_levels"] <= 3
    assert seen == {"learned", "fixed"}


def test_feasible_fraction_counts_constraint_violations():
    space = SearchSpace({"model.n_heads": {"type": "categorical", "choices": [2, 3]}}, base={"model": {"d_model": 8}})
    frac, reasons = feasible_fraction(space, {"model": {"d_model": 8}}, draws=200)
    assert 0.3 < frac < 0.7 and "must divide d_model" in reasons[0]
    value = space(RandomTrial(np.random.default_rng(1)))["model.n_heads"]
    assert value in (2, 3)
