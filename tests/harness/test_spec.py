"""Study files: every shipped study validates, and each kind of mistake gives its own clear message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.study.data import load_study_data
from harness.study.errors import SpecError
from harness.study.load import load_spec, parse_spec
from harness.study.plan import build_plan
from harness.study.spec import dump_spec
from tests.harness.conftest import STUDIES, tiny_study


def test_studies_folder_is_complete():
    names = {p.stem for p in STUDIES}
    assert {"smoke", "distill_weight", "router_temperature", "expert_size", "ablation", "hpo"} <= names


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_every_study_validates_and_plans(path: Path):
    spec = load_spec(path)
    assert spec.name == path.stem
    plan = build_plan(spec, load_study_data(spec.data))
    assert plan.n_trials >= 2
    assert plan.varied, "a study varies something"
    # the spec as run (spec.yaml) reads back to the same study
    assert parse_spec(yaml.safe_load(dump_spec(spec))) == spec


def test_distill_weight_study_is_a_grid_from_0_to_1_with_3_seeds():
    spec = load_spec(STUDIES[0].parent / "distill_weight.yaml")
    values = spec.grid["loss.distill_weight"]
    assert min(values) == 0.0 and max(values) == 1.0 and len(spec.seeds) == 3


def test_ablation_study_has_the_required_variants():
    spec = load_spec(STUDIES[0].parent / "ablation.yaml")
    plan = build_plan(spec, load_study_data(spec.data))
    cfgs = {p.label: plan.factory.config(p.overrides) for p in plan.points}
    assert spec.ablation.baseline == "full" and len(spec.seeds) == 5
    assert cfgs["uniform_router"].model.router == "uniform"
    assert cfgs["no_balance"].loss.balance_weight == 0
    assert cfgs["no_similarity"].loss.sim_alpha == 0
    assert cfgs["no_distillation"].loss.distill_weight == 0
    assert cfgs["no_unimodal"].loss.uni_weight == 0
    assert cfgs["concat_fusion"].model.fusion == "concat"
    assert cfgs["mean_router_input"].model.router_input == "mean"


def _set(study: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(study)
    node = out
    keys = path.split("/")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return out


_SEARCH = {"n_trials": 2, "params": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}

# (mutation of a valid study, substring of the expected message)
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key", _set(tiny_study(), "colour", "blue"), "colour: unknown key"),
    ("unknown nested key", _set(tiny_study(), "resources", {"cpu": 1}), "resources.cpu: unknown key"),
    ("missing name", {k: v for k, v in tiny_study().items() if k != "name"}, "name: required key is missing"),
    ("wrong type", _set(tiny_study(), "seeds", "many"), "seeds:"),
    ("wrong value type", _set(tiny_study(), "base/train/lr", "fast"), "base.train.lr: expected a number"),
    ("unknown parameter", _set(tiny_study(), "grid", {"model.dmodel": [8]}), "did you mean 'model.d_model'"),
    ("empty grid", _set(tiny_study(), "grid", {"loss.distill_weight": []}), "grid.loss.distill_weight"),
    ("repeated grid value", _set(tiny_study(), "grid", {"loss.distill_weight": [0.5, 0.5]}), "must be distinct"),
    ("empty range", _set(tiny_study(grid=None), "search",
                         {**_SEARCH, "params": {"train.lr": {"type": "uniform", "low": 0.1, "high": 0.1}}}),
     "search.params.train.lr: empty or inverted range"),
    ("inverted range", _set(tiny_study(grid=None), "search",
                            {**_SEARCH, "params": {"model.n_levels": {"type": "int", "low": 4, "high": 1}}}),
     "search.params.model.n_levels: empty or inverted range"),
    ("bad distribution", _set(tiny_study(grid=None), "search",
                              {**_SEARCH, "params": {"train.lr": {"type": "normal", "low": 0, "high": 1}}}),
     "type must be one of"),
    ("heads do not divide d_model (grid)", _set(tiny_study(), "grid", {"model.n_heads": [2, 3]}),
     "grid point n_heads=3: model.n_heads: must divide d_model (8), got 3"),
    ("heads do not divide d_model (variant)", _set(tiny_study(grid=None), "ablation",
                                                   {"baseline": "full", "variants": {"full": {},
                                                                                     "odd": {"model.n_heads": 3}}}),
     "ablation.variants.odd: model.n_heads: must divide d_model"),
    ("impossible search space", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "model.d_model": {"type": "categorical", "choices": [6, 10]},
        "model.n_heads": {"type": "categorical", "choices": [4]}}}), "no valid configuration in the search space"),
    ("data file missing", _set(tiny_study(), "data", {"path": "/nonexistent/mosi.pkl"}),
     "data.path: file not found: /nonexistent/mosi.pkl"),
    ("data path empty", _set(tiny_study(), "data", {"path": ""}),  # was the current directory
     "data.path: empty (give an MMSA pickle or a converted directory, or data.synthetic)"),
    ("data path blank", _set(tiny_study(), "data", {"path": "  "}), "data.path: empty"),
    ("environment variable unset", _set(tiny_study(), "data", {"path": "${EMOE_TEST_UNSET_VAR}/mosi.pkl"}),
     "data.path: environment variable EMOE_TEST_UNSET_VAR is not set"),
    ("unknown synthetic preset", _set(tiny_study(), "data", {"synthetic": {"preset": "huge"}}),
     "data.synthetic"),
    ("unsafe study name", _set(tiny_study(), "name", "../escape"), "name: must be 1-64 letters"),
    ("test metric as objective", _set(tiny_study(), "objective", {"metric": "test_mae"}),
     "trials are selected on validation"),
    ("unknown metric", _set(tiny_study(), "objective", {"metric": "valid_accuracy"}), "unknown metric"),
    ("contradictory mode", _set(tiny_study(), "objective", {"metric": "valid_mae", "mode": "max"}),
     "objective.mode"),
    ("unknown sampler", _set(tiny_study(grid=None), "search", {**_SEARCH, "sampler": "magic"}),
     "unknown sampler 'magic'"),
    ("unknown sampler option", _set(tiny_study(grid=None), "search", {**_SEARCH, "sampler_options": {"x": 1}}),
     "sampler_options.x: unknown option of TPESampler"),
    ("sampler option of the wrong type", _set(tiny_study(grid=None), "search",
                                              {**_SEARCH, "sampler_options": {"n_startup_trials": "ten"}}),
     "sampler_options.n_startup_trials: expected int, got str 'ten'"),
    ("sampler option a study file cannot give", _set(tiny_study(grid=None), "search",
                                                     {**_SEARCH, "sampler_options": {"gamma": 3}}),
     "sampler_options.gamma: expected Callable"),
    ("baseline not a variant", _set(tiny_study(grid=None), "ablation",
                                    {"baseline": "full", "variants": {"a": {}, "b": {"loss.uni_weight": 0}}}),
     "baseline 'full' is not one of the variants"),
    ("two kinds of variation", _set(tiny_study(), "search", _SEARCH), "give at most one of grid, ablation, search"),
    ("seed as a parameter", _set(tiny_study(), "grid", {"train.seed": [1, 2]}), "set from the top-level seeds"),
    ("data shape as a parameter", _set(tiny_study(), "base/model/d_text", 12), "model.d_text is set from the data"),
    ("duplicate seeds", _set(tiny_study(), "seeds", [1, 1]), "seeds must be distinct"),
    ("fractional GPUs above one", _set(tiny_study(), "resources", {"gpus": 1.5}), "whole number"),
    ("same configuration twice", _set(tiny_study(grid=None), "ablation", {"baseline": "full", "variants": {
        "full": {}, "same": {"loss.distill_weight": 0.1}}}), "same configuration as ablation.variants.full"),
    # found by a review: each of these used to pass validation
    ("a field dotted and nested in a variant", _set(tiny_study(grid=None), "ablation", {
        "baseline": "full", "variants": {"full": {}, "v": {"loss.distill_weight": 0, "loss": {"distill_weight": 0.5}}}}),
     "ablation.variants.v: loss.distill_weight is given twice (dotted and nested)"),
    ("a field dotted and nested in base", _set(tiny_study(), "base/model.d_model", 16),
     "base: model.d_model is given twice"),
    ("a field dotted and nested in a search's base", _set(_set(tiny_study(grid=None), "search", _SEARCH),
                                                          "base/model.d_model", 16),
     "base: model.d_model is given twice"),
    ("bruteforce over a continuous range", _set(tiny_study(grid=None), "search", {**_SEARCH, "sampler": "bruteforce"}),
     "search.params.train.lr: the bruteforce sampler tries every value, so it needs a finite space"),
    ("when on a parameter sampled later", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "model.temperature": {"type": "loguniform", "low": 0.03, "high": 1.0, "when": {"model.router": "learned"}},
        "model.router": {"type": "categorical", "choices": ["learned", "uniform"]}}}),
     "search.params.model.temperature.when.model.router: model.router is sampled after model.temperature"),
    ("when on itself", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "model.temperature": {"type": "uniform", "low": 0.1, "high": 1.0, "when": {"model.temperature": 0.5}}}}),
     "a parameter cannot depend on itself"),
    ("when that never holds", _set(_set(tiny_study(grid=None), "base/model/router", "uniform"), "search", {
        "n_trials": 2, "params": {"model.temperature": {"type": "uniform", "low": 0.1, "high": 1.0,
                                                        "when": {"model.router": "learned"}}}}),
     "never holds: model.router is not searched and is 'uniform'"),
    ("step larger than the range", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "loss.distill_weight": {"type": "uniform", "low": 0.0, "high": 1.0, "step": 2.0}}}),
     "step 2.0 is larger than the range 0.0 to 1.0: only 0.0 would be drawn"),
    ("range not a whole number of steps", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "model.n_levels": {"type": "int", "low": 1, "high": 4, "step": 2}}}),
     "the last value drawn would be 3, not 4"),
    ("a stack of 0 trials", _set(tiny_study(), "resources", {"stack": 0}),
     "resources.stack: must be auto or a whole number of trials >= 1, got 0"),
    ("a section that is not a mapping", _set(tiny_study(), "base/train", None),
     "base.train: the train section needs a mapping of its fields, got None"),
    ("a distribution for a categorical field", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "model.router": {"type": "uniform", "low": 0, "high": 1}}}),
     "uniform needs a real-valued field, model.router is one of 'learned', 'uniform', 'fixed'"),
    ("a bad synthetic field", _set(tiny_study(), "data", {"synthetic": {"preset": "tiny", "n_train": 0}}),
     "data.synthetic.n_train: must be a positive integer, got 0"),
    ("a huge int range not a whole number of steps", _set(tiny_study(grid=None), "search", {"n_trials": 2, "params": {
        "train.max_epochs": {"type": "int", "low": 0, "high": 2**61 + 1, "step": 2}}}),
     "is not a whole number of steps of 2"),  # float division rounded the remainder away
    ("a variant name ending in '.'", _set(tiny_study(grid=None), "ablation", {
        "baseline": "full", "variants": {"full": {}, "full.": {"loss.uni_weight": 0}}}),
     "ablation.variants.full.: a variant name must be 1-64 letters, digits, '_', '-' or '.', starting with a "
     "letter or digit and not ending with '.'"),
    ("a boolean as a number", _set(tiny_study(), "max_failures", False), "max_failures: Input should be a valid integer"),
    ("a string as a seed", _set(tiny_study(), "seeds", [1, "2"]), "seeds.1: Input should be a valid integer"),
]


@pytest.mark.parametrize(("study", "message"), [(s, m) for _, s, m in CASES], ids=[c[0] for c in CASES])
def test_each_kind_of_error_has_its_message(write_study, study, message):
    with pytest.raises(SpecError) as info:
        load_spec(write_study(study))
    assert any(message in e for e in info.value.errors), info.value.errors


def test_every_error_is_reported_at_once(write_study):
    study = _set(_set(tiny_study(), "base/train/lr", "fast"), "grid", {"model.dmodel": [8]})
    study = _set(study, "data", {"path": "/nonexistent/x.pkl"})
    with pytest.raises(SpecError) as info:
        load_spec(write_study(study))
    joined = "\n".join(info.value.errors)
    assert "base.train.lr" in joined and "model.dmodel" in joined and "data.path" in joined


@pytest.mark.parametrize("other", [{"shedule": {"name": "asha"}}, {"data": {"path": "/nonexistent/x.pkl"}}])
def test_a_bad_grid_point_is_listed_beside_the_other_fields_errors(write_study, other):
    # a grid point was checked only when nothing else was wrong: the user fixed the file in rounds
    study = {**_set(tiny_study(), "grid", {"model.n_heads": [2, 3]}), **other}
    with pytest.raises(SpecError) as info:
        load_spec(write_study(study))
    assert len(info.value.errors) == 2, info.value.errors
    assert any("grid point n_heads=3: model.n_heads: must divide d_model" in e for e in info.value.errors)


def test_yaml_problems_are_spec_errors(write_study, tmp_path):
    with pytest.raises(SpecError, match="duplicate key 'seeds'"):
        load_spec(write_study("name: a\nseeds: [1]\nseeds: [2]\n"))
    with pytest.raises(SpecError, match="YAML syntax: line 3"):
        load_spec(write_study("name: a\nseeds: [1, 2\n"))
    with pytest.raises(SpecError, match="study file not found"):
        load_spec(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(write_study("- just\n- a list\n"))


def test_exponent_numbers_are_numbers_everywhere(write_study):
    # YAML 1.1 reads 1e-5 as a string; the study's loader reads it as YAML 1.2 does, so the strict spec
    # fields (search ranges, sampler options) take it as the number it is, in the file and in --set
    study = tiny_study(grid=None, search={"n_trials": 2, "params": {
        "train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}})
    text = yaml.safe_dump(study, sort_keys=False).replace("1.0e-05", "1e-5").replace("0.01", "1E-2")
    assert "1e-5" in text and "1E-2" in text
    spec = load_spec(write_study(text), ["base.train.lr=2e-3", "time_budget_s=3e2"])
    assert spec.search.params["train.lr"].low == 1e-5 and spec.search.params["train.lr"].high == 1e-2
    assert spec.base["train"]["lr"] == 2e-3 and spec.time_budget_s == 300.0


def test_set_overrides_any_field_with_yaml_values(write_study):
    path = write_study(tiny_study())
    spec = load_spec(path, ["base.train.max_epochs=3", "seeds=[7, 8, 9]", "grid.loss.distill_weight=[0, 0.5]",
                            "name=renamed", "base.model.temperature=1e-2"])
    assert spec.base["train"]["max_epochs"] == 3 and spec.seeds == [7, 8, 9] and spec.name == "renamed"
    assert spec.grid == {"loss.distill_weight": [0.0, 0.5]}
    assert spec.base["model"]["temperature"] == 0.01  # YAML's "1e-2" string coerced to the field's float
    with pytest.raises(SpecError, match="expected PATH=VALUE"):
        load_spec(path, ["seeds"])
    with pytest.raises(SpecError, match=r"base\.train\.lr: expected a number"):
        load_spec(path, ["base.train.lr=quick"])
    for empty in ("data.path=", "data.path=  "):  # `--set data.path=$UNSET`: it kept the synthetic data silently
        with pytest.raises(SpecError, match=r"--set data\.path: empty \(a shell variable that is not set\?\)"):
            load_spec(path, [empty])


def test_environment_variables_expand_in_data_paths(write_study, tmp_path, monkeypatch):
    (tmp_path / "mosi.pkl").write_bytes(b"")
    monkeypatch.setenv("EMOE_TEST_DATA", str(tmp_path))
    spec = load_spec(write_study(_set(tiny_study(), "data", {"path": "${EMOE_TEST_DATA}/mosi.pkl"})))
    assert spec.data.path == str(tmp_path / "mosi.pkl")


def test_defaults_follow_the_kind_of_study(write_study):
    grid = load_spec(write_study(tiny_study()))
    search = load_spec(write_study(_set(tiny_study(grid=None), "search", _SEARCH), "s.yaml"))
    assert (grid.kind, grid.scheduler_name, grid.mode) == ("grid", "fifo", "min")
    assert (search.kind, search.scheduler_name) == ("search", "asha")
    corr = load_spec(write_study(_set(tiny_study(), "objective", {"metric": "valid_corr"}), "c.yaml"))
    assert corr.mode == "max"


def test_objective_must_be_computed_on_the_data():
    spec = parse_spec(tiny_study(objective={"metric": "valid_f1_macro"}))  # a classification metric
    with pytest.raises(SpecError, match="valid_f1_macro is not computed on mosi data"):
        build_plan(spec, load_study_data(spec.data))
