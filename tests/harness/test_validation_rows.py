"""Issue 10's validation rows: ``--set`` on exclusive sources (row 6), devices the trials cannot have
(row 7), ``--set`` into the grid's dotted keys, and every error of a file reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch
import yaml

from harness.run import main
from harness.study.errors import SpecError
from harness.study.load import load_spec, parse_spec
from harness.study.overrides import apply_set_overrides
from tests.emoe.data.mmsa_files import write_mmsa_pickle
from tests.harness.conftest import REPO, tiny_study

STUDIES = REPO / "studies"


pytestmark = pytest.mark.usefixtures("ray_init_calls")  # tests/harness/conftest.py: Ray refused


@pytest.fixture
def emoe_data(tmp_path, monkeypatch) -> Path:
    """``$EMOE_DATA`` with a small MOSI-layout pickle where the README's command looks for it."""
    root = tmp_path / "MMSA"
    write_mmsa_pickle(root / "MOSI" / "Processed" / "unaligned_50.pkl", len_text=12, len_audio=10, len_vision=11)
    monkeypatch.setenv("EMOE_DATA", str(root))
    return root


# --- row 6: a --set of one data source replaces the file's other one ------------------------------------

def test_the_readmes_real_data_command_plans(emoe_data, tmp_path, capsys, ray_init_calls):
    results = tmp_path / "results"
    code = main([str(STUDIES / "distill_weight.yaml"), "--set",
                 "data.path=${EMOE_DATA}/MOSI/Processed/unaligned_50.pkl", "--set", "base.model.d_model=256",
                 "--set", "base.model.n_heads=8", "--set", "base.model.n_levels=4", "--results", str(results),
                 "--dry-run", "--no-measure"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"data: {emoe_data / 'MOSI' / 'Processed' / 'unaligned_50.pkl'}" in out
    assert "train 12 / valid 5 / test 7" in out
    assert not results.exists() and ray_init_calls == []


def test_set_synthetic_replaces_the_files_path(tmp_path, write_study):
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data)
    spec = load_spec(write_study(tiny_study(data={"path": str(data)})), ["data.synthetic=tiny"])
    assert spec.data.path is None and spec.data.synthetic.preset == "tiny"
    spec = load_spec(write_study(tiny_study(data={"path": str(data)})), ["data.synthetic.seed=3"])
    assert spec.data.path is None and spec.data.synthetic.seed == 3


def test_set_path_replaces_a_synthetic_shorthand(tmp_path, write_study):
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data)
    spec = load_spec(write_study(tiny_study(data={"synthetic": "tiny"})), [f"data.path={data}"])
    assert spec.data.path == str(data) and spec.data.synthetic is None


def test_both_sources_on_the_command_line_are_still_an_error(tmp_path, write_study):
    data = tmp_path / "mosi.pkl"
    write_mmsa_pickle(data)
    with pytest.raises(SpecError, match="give either synthetic or path, not both"):
        load_spec(write_study(tiny_study()), [f"data.path={data}", "data.synthetic=tiny"])
    # the smoke study's documented form (path, then synthetic=null) stays valid
    spec = load_spec(STUDIES / "smoke.yaml", [f"data.path={data}", "data.synthetic=null"])
    assert spec.data.path == str(data)


def test_both_sources_in_the_file_are_an_error(tmp_path, write_study):
    with pytest.raises(SpecError, match="give either synthetic or path, not both"):
        load_spec(write_study(tiny_study(data={"synthetic": "tiny", "path": str(tmp_path)})))


def test_grid_ablation_search_are_not_replaced_by_a_set(capsys, tmp_path):
    code = main([str(STUDIES / "ablation.yaml"), "--set", "grid.loss.distill_weight=[0,1]", "--results",
                 str(tmp_path / "r"), "--dry-run", "--no-measure"])
    assert code == 2
    err = capsys.readouterr().err
    assert "give at most one of grid, ablation, search (got grid and ablation)" in err
    assert "--set ablation=null" in err
    spec = load_spec(STUDIES / "ablation.yaml", ["grid.loss.distill_weight=[0,1]", "ablation=null"])
    assert spec.kind == "grid" and spec.grid == {"loss.distill_weight": [0.0, 1.0]}


def test_a_set_goes_through_shorthands_and_empty_entries(write_study):
    path = write_study(tiny_study(report=True, grid=None, ablation={"baseline": "full", "variants": {
        "full": None, "no_distillation": {"loss.distill_weight": 0.0}}}))
    spec = load_spec(path, ["report.formats=[pdf]", "ablation.variants.full.loss.uni_weight=0.5"])
    assert spec.report.formats == ["pdf"]
    assert spec.ablation.variants["full"] == {"loss.uni_weight": 0.5}


def test_a_set_through_a_plain_value_names_it():
    with pytest.raises(SpecError, match=r"cannot set 'seeds.x': seeds is \[1, 2\], not a mapping"):
        apply_set_overrides(tiny_study(), ["seeds.x=1"])


# --- grid keys are dotted parameter paths ----------------------------------------------------------------

def test_set_into_the_grid_adds_a_dotted_entry(write_study):
    spec = load_spec(write_study(tiny_study()), ["grid.model.n_heads=[1,2]"])
    assert spec.grid == {"loss.distill_weight": [0.0, 1.0], "model.n_heads": [1, 2]}
    spec = load_spec(write_study(tiny_study()), ["grid.loss.distill_weight=[0.5]"])
    assert spec.grid == {"loss.distill_weight": [0.5]}


def test_set_into_search_params_reaches_a_parameters_field(write_study):
    study = tiny_study(grid=None, search={"n_trials": 2, "params": {
        "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}})
    spec = load_spec(write_study(study), ["search.params.train.lr.low=1e-5",
                                          "search.params.model.n_heads={type: categorical, choices: [1, 2]}"])
    assert spec.search.params["train.lr"].low == 1e-5
    assert spec.search.params["model.n_heads"].choices == [1, 2]


def test_a_nested_grid_in_the_file_says_how_to_write_it(write_study):
    with pytest.raises(SpecError) as info:
        load_spec(write_study(tiny_study(grid={"model": {"n_heads": [1, 2]}})))
    assert "grid.model: grid keys are dotted parameter paths" in str(info.value)
    assert "`model.n_heads: [...]`" in str(info.value)


def test_a_nested_search_parameter_says_how_to_write_it(write_study):
    study = tiny_study(grid=None, search={"n_trials": 2, "params": {
        "train": {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}}})
    with pytest.raises(SpecError, match=r"write `train.lr: \{type: ...\}` under search.params"):
        load_spec(write_study(study))


# --- every error at once, a misspelt key included ---------------------------------------------------------

def test_a_misspelt_top_level_key_is_listed_with_every_other_error(write_study, tmp_path):
    study = tiny_study(shedule={"name": "fifo"}, data={"path": str(tmp_path / "absent.pkl")},
                       grid={"model.nheads": [1, 2]})
    study["base"]["train"]["lr"] = "fast"
    with pytest.raises(SpecError) as info:
        load_spec(write_study(study))
    text = str(info.value)
    assert "shedule: unknown key (did you mean 'scheduler'?)" in text
    assert "data.path: file not found" in text
    assert "base.train.lr: expected a number, got 'fast'" in text
    assert "grid.model.nheads: unknown parameter 'model.nheads' (did you mean 'model.n_heads'?)" in text
    assert "4 problem(s)" in text


def test_unknown_nested_keys_get_a_suggestion_too():
    study = tiny_study(resources={"cpu": 1}, grid=None, search={"n_trials": 2, "params": {
        "train.lr": {"type": "loguniform", "lwo": 1e-4, "high": 1e-2}}})
    with pytest.raises(SpecError) as info:
        parse_spec(study)
    assert "resources.cpu: unknown key (did you mean 'cpus'?)" in str(info.value)
    assert "search.params.train.lr.lwo: unknown key (did you mean 'low'?)" in str(info.value)


def test_a_wrong_study_name_still_lets_the_rest_be_checked():
    study = tiny_study(name="../x", seeds=[1, 1])
    study["base"]["model"]["n_heads"] = "two"
    with pytest.raises(SpecError) as info:
        parse_spec(study)
    text = str(info.value)
    assert "name: must be" in text and "seeds must be distinct" in text
    assert "base.model.n_heads: expected an integer" in text


# --- row 7: devices the trials cannot have are refused before Ray starts ---------------------------------

def _fake_gpus(monkeypatch, count: int) -> None:
    import harness.study.devices as devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(devices, "local_gpus", lambda: count)  # what Ray will detect


@pytest.mark.parametrize(("sets", "message"), [
    (["base.train.device=cuda"], "'cuda' needs a GPU per trial, but resources.gpus is 0"),
    (["base.train.device=cuda", "resources.gpus=1"], "this machine has no CUDA device that torch can use"),
    (["base.train.device=cuda:7", "resources.gpus=1"], "'cuda:7', but a trial gets 1 GPU, which it sees as cuda:0"),
    (["base.train.device=mps"], "must be auto, cpu, cuda or cuda:N, got 'mps'"),
])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_device_this_machine_lacks_exits_2_before_ray(sets, message, dry_run, monkeypatch, write_study, tmp_path,
                                                       capsys, ray_init_calls):
    _fake_gpus(monkeypatch, 0)
    results = tmp_path / "results"
    args = [str(write_study(tiny_study())), "--results", str(results)] + [a for s in sets for a in ("--set", s)]
    assert main(args + (["--dry-run", "--no-measure"] if dry_run else [])) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not results.exists() and ray_init_calls == []


@pytest.mark.parametrize("dry_run", [True, False])
def test_resources_a_local_runtime_cannot_give_exit_2_before_ray(dry_run, monkeypatch, write_study, tmp_path, capsys,
                                                                ray_init_calls):
    # the dry run used to plan it (exit 0) and the run to start Ray only to exit 2 ("no node ... has that many")
    _fake_gpus(monkeypatch, 0)
    results = tmp_path / "results"
    args = [str(write_study(tiny_study())), "--results", str(results), "--set", "resources.cpus=1000",
            "--set", "resources.gpus=1", *(["--dry-run", "--no-measure"] if dry_run else [])]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "resources.cpus: a trial asks for 1000 CPUs, but the local runtime will have" in err
    assert "resources.gpus: a trial asks for 1 GPU, but the local runtime will have 0" in err
    assert not results.exists() and ray_init_calls == []
    assert main([*args[:3], "--set", "resources.gpus=1", "--num-gpus", "1", "--dry-run", "--no-measure"]) == 0


def test_a_device_index_beyond_this_machines_gpus_is_refused(monkeypatch, write_study, tmp_path, capsys):
    _fake_gpus(monkeypatch, 1)
    args = [str(write_study(tiny_study())), "--results", str(tmp_path / "r"), "--dry-run", "--no-measure"]
    assert main([*args, "--set", "base.train.device=cuda:1", "--set", "resources.gpus=2"]) == 2
    assert "with resources.gpus 2, but this machine has 1 CUDA device(s)" in capsys.readouterr().err
    assert main([*args, "--set", "base.train.device=cuda", "--set", "resources.gpus=0.5"]) == 0


def test_on_a_cluster_only_the_machine_independent_checks_apply(monkeypatch, write_study, tmp_path, capsys):
    """The driver of --address may have no GPU while the workers do: its own devices are not checked."""
    _fake_gpus(monkeypatch, 0)
    args = [str(write_study(tiny_study())), "--results", str(tmp_path / "r"), "--dry-run", "--no-measure",
            "--address", "auto", "--set", "base.train.device=cuda"]
    assert main([*args, "--set", "resources.gpus=1"]) == 0
    assert main(args) == 2
    assert "resources.gpus is 0" in capsys.readouterr().err


def test_a_runtime_already_initialised_in_the_process_is_not_taken_for_this_machine(monkeypatch, write_study,
                                                                                     tmp_path, capsys):
    """A notebook that called ray.init(address=...) itself: the harness uses that runtime, whose nodes may
    have the GPUs this driver lacks, so only the machine-independent checks apply (as with --address)."""
    _fake_gpus(monkeypatch, 0)
    args = [str(write_study(tiny_study())), "--results", str(tmp_path / "r"), "--dry-run", "--no-measure",
            "--set", "base.train.device=cuda:1"]
    assert main([*args, "--set", "resources.gpus=2"]) == 2  # no runtime yet: one started here, on no GPU
    assert "this machine has no CUDA device that torch can use" in capsys.readouterr().err
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    assert main([*args, "--set", "resources.gpus=2"]) == 0
    assert main([*args, "--set", "resources.gpus=1"]) == 2
    assert "'cuda:1', but a trial gets 1 GPU" in capsys.readouterr().err


def test_devices_of_variants_and_search_choices_are_checked(monkeypatch, write_study):
    ablation = tiny_study(grid=None, ablation={"baseline": "full", "variants": {
        "full": {}, "gpu": {"train.device": "cuda:1", "train.lr": 0.01}}}, resources={"gpus": 1})
    with pytest.raises(SpecError, match=r"ablation.variants.gpu.train.device: 'cuda:1', but a trial gets 1 GPU"):
        parse_spec(ablation)
    search = tiny_study(grid=None, search={"n_trials": 2, "params": {
        "train.device": {"type": "categorical", "choices": ["cpu", "cuda"]}}})
    with pytest.raises(SpecError, match=r"search.params.train.device.choices.1: 'cuda' needs a GPU per trial"):
        parse_spec(search)


def test_the_device_rule_is_in_the_docs():
    text = (REPO / "docs" / "studies.md").read_text()
    assert "train.device" in text and "--address" in text and "resources.gpus" in text
    yaml.safe_load((STUDIES / "smoke.yaml").read_text())  # the studies' own comments stay parseable
