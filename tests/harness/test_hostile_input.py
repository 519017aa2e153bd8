"""Hostile study files and arguments: every malformed input ends with exit status 2 and a message, never a
traceback, never a results directory and never a Ray runtime; a study name or results path cannot make
the harness write outside the results root it is given. Property-based (hypothesis) plus named cases;
the CLI runs in-process (``main``) for speed and a few times as ``python -m harness.run``."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.run import main
from harness.study.spec import NAME_PATTERN, StudySpec
from tests.harness.conftest import REPO, tiny_study

FIELDS = sorted(StudySpec.model_fields)
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    """Any attempt to start or join Ray fails the test (a malformed study must stop before Ray)."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray must not be started for a malformed study")

    monkeypatch.setattr(ray, "init", refuse)


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    left: list[str]  # everything in the work directory afterwards, besides the study file


def run_cli(study: Any, *args: str, raw: bytes | None = None, dry_run: bool = False) -> Outcome:
    """Write ``study`` (a YAML-able value, or ``raw`` bytes) to a fresh directory and run ``main`` on it."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        spec = work / "study.yaml"
        spec.write_bytes(raw if raw is not None else yaml.safe_dump(study, allow_unicode=True).encode())
        out, err = io.StringIO(), io.StringIO()
        argv = [str(spec), "--results", str(work / "results"), *args]
        if dry_run:
            argv += ["--dry-run", "--no-measure"]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
        left = sorted(str(p.relative_to(work)) for p in work.rglob("*") if p != spec)
        return Outcome(code, out.getvalue().replace(tmp, "<work>"), err.getvalue().replace(tmp, "<work>"), left)


def assert_refused(o: Outcome, message: str | None = None) -> None:
    assert o.code == 2, (o.code, o.err[-2000:])
    assert o.err.startswith("error: ") and len(o.err.strip()) > len("error: "), o.err
    assert "Traceback" not in o.err + o.out
    assert o.left == [], f"created {o.left}"
    if message is not None:
        assert message in o.err, o.err


def assert_handled(o: Outcome) -> None:
    """A dry run either plans (0) or refuses (2); it never crashes and never creates anything."""
    assert o.code in (0, 2), (o.code, o.err[-2000:])
    assert "Traceback" not in o.err + o.out
    assert o.left == [], f"created {o.left}"
    if o.code == 2:
        assert o.err.startswith("error: "), o.err


# --- strategies ----------------------------------------------------------------------------------------
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_nasty = st.sampled_from([
    math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 2**63, -(2**63) - 1, 10**40, -1, 0,
    "", " ", "../x", "/etc/passwd", "${NO_SUCH_VARIABLE_X}", "~root", "\u202e", "\x00", "🙂", "x" * 5000,
    True, False, None, [], {}, [[[]]], {"a": {"b": None}},
])
scalars = st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | _text | _nasty
keys = st.sampled_from([*FIELDS, "model", "train", "loss", "preset", "path", "low", "high", "type",
                        "params", "variants", "baseline", "n_trials", "metric"]) | _text
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(keys, kids, max_size=3),
                      max_leaves=10)
documents = st.dictionaries(keys, values, max_size=6) | values


def _known_invalid(doc: Any) -> bool:
    """Documents no study can be: not a mapping, a key StudySpec does not know, or no name."""
    return not isinstance(doc, dict) or "name" not in doc or any(k not in FIELDS for k in doc)


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    return isinstance(value, list) and any(_has_nonfinite(v) for v in value)


def _search_study() -> dict[str, Any]:
    return tiny_study(grid=None, search={"n_trials": 2, "seed": 0, "params": {
        "train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
        "model.n_heads": {"type": "categorical", "choices": [1, 2]}}})


def _ablation_study() -> dict[str, Any]:
    return tiny_study(grid=None, ablation={"baseline": "full", "variants": {
        "full": {}, "no_distill": {"loss.distill_weight": 0.0}}})


#: (base study, path into it): places a hostile value can go. Data sizes are left out on purpose: a
#: plausible but large size (10^7 samples) is valid and would really be generated.
TARGETS: list[tuple[str, tuple[Any, ...]]] = [
    ("grid", ()), ("grid", ("name",)), ("grid", ("description",)), ("grid", ("seeds",)), ("grid", ("seeds", 0)),
    ("grid", ("grid",)), ("grid", ("grid", "loss.distill_weight")), ("grid", ("grid", "loss.distill_weight", 0)),
    ("grid", ("base",)), ("grid", ("base", "model")), ("grid", ("base", "model", "d_model")),
    ("grid", ("base", "model", "n_heads")), ("grid", ("base", "train", "lr")),
    ("grid", ("base", "train", "max_epochs")), ("grid", ("base", "loss", "distill_weight")),
    ("grid", ("data",)), ("grid", ("data", "synthetic")), ("grid", ("data", "synthetic", "preset")),
    ("grid", ("data", "synthetic", "seed")), ("grid", ("data", "synthetic", "noise")), ("grid", ("data", "path")),
    ("grid", ("objective",)), ("grid", ("objective", "metric")), ("grid", ("objective", "mode")),
    ("grid", ("scheduler",)), ("grid", ("scheduler", "name")), ("grid", ("scheduler", "grace_period")),
    ("grid", ("scheduler", "reduction_factor")), ("grid", ("scheduler", "brackets")),
    ("grid", ("resources",)), ("grid", ("resources", "cpus")), ("grid", ("resources", "gpus")),
    ("grid", ("concurrency",)), ("grid", ("time_budget_s",)), ("grid", ("max_failures",)),
    ("grid", ("checkpoint_every",)), ("grid", ("report",)),
    ("search", ("search",)), ("search", ("search", "n_trials")), ("search", ("search", "seed")),
    ("search", ("search", "sampler")), ("search", ("search", "sampler_options")),
    ("search", ("search", "params")), ("search", ("search", "params", "train.lr")),
    ("search", ("search", "params", "train.lr", "low")), ("search", ("search", "params", "train.lr", "high")),
    ("search", ("search", "params", "train.lr", "type")), ("search", ("search", "params", "model.n_heads", "choices")),
    ("search", ("search", "params", "model.n_heads", "choices", 0)),
    ("ablation", ("ablation",)), ("ablation", ("ablation", "baseline")), ("ablation", ("ablation", "variants")),
    ("ablation", ("ablation", "variants", "no_distill")),
    ("ablation", ("ablation", "variants", "no_distill", "loss.distill_weight")),
]
BASES = {"grid": tiny_study, "search": _search_study, "ablation": _ablation_study}


def _mutate(kind: str, path: tuple[Any, ...], value: Any) -> dict[str, Any] | Any:
    doc: Any = copy.deepcopy(BASES[kind]())
    if not path:
        doc[f"extra {value!r}"[:60]] = value  # a top-level key no study has
        return doc
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return doc


# --- properties ----------------------------------------------------------------------------------------
@HYPO
@given(doc=documents)
def test_random_documents_are_refused_or_planned_never_crash(doc):
    o = run_cli(doc, dry_run=True)
    assert_handled(o)
    if _known_invalid(doc) or _has_nonfinite(doc):
        assert_refused(o)


@HYPO
@given(target=st.sampled_from(TARGETS), value=values)
def test_a_hostile_value_anywhere_in_a_valid_study_is_refused_or_planned(target, value):
    doc = _mutate(*target, value)
    o = run_cli(doc, dry_run=True)
    assert_handled(o)
    if _has_nonfinite(value) or not target[1]:
        assert_refused(o)  # no NaN/inf is a valid setting; an unknown top-level key never is
    if o.code == 2:  # the real run refuses the same way, before creating or starting anything
        real = run_cli(doc)
        assert_refused(real)
        assert real.err == o.err


@HYPO
@given(data=st.binary(max_size=300))
def test_bytes_that_are_not_utf8_are_refused(data):
    assert_refused(run_cli(None, raw=b"\xff\xfe" + data), "cannot read the study file")


@HYPO
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_refused_or_planned(text):
    o = run_cli(None, raw=text.encode("utf-8", "surrogatepass"), dry_run=True)
    assert_handled(o)
    try:
        doc = yaml.safe_load(text)
    except Exception:  # not YAML at all: certainly refused
        doc = None
    if _known_invalid(doc):
        assert_refused(o)


@HYPO
@given(path=_text, value=_text)
def test_hostile_set_overrides_are_refused_or_planned(path, value):
    o = run_cli(tiny_study(), f"--set={path}={value}", dry_run=True)  # one argument, even for "-..."
    assert_handled(o)


# --- named cases -----------------------------------------------------------------------------------------
DEEP = {
    "flow lists": "[" * 5_000 + "]" * 5_000,
    "flow mappings": "name: t\nbase: " + "{a: " * 2_000 + "1" + "}" * 2_000,
    "block lists 40 deep": "".join("  " * i + "-\n" for i in range(40)) + "  " * 40 + "- 1\n",
    "just past the limit": "name: t\nbase: " + "[" * 33 + "]" * 33,
    "alias to itself": "name: t\nbase: &a [*a]\n",
}


@pytest.mark.parametrize("case", list(DEEP))
def test_deep_or_self_referencing_documents_are_refused(case):
    o = run_cli(None, raw=DEEP[case].encode())
    assert_refused(o)
    assert "nested too deeply" in o.err or "YAML syntax" in o.err


def test_alias_bomb_is_refused_quickly():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")) + "name: t\n"
    assert_refused(run_cli(None, raw=bomb.encode()), "unknown key")


def _with(**fields: Any) -> dict[str, Any]:
    return tiny_study(**fields)


def _search_with(**search: Any) -> dict[str, Any]:
    study = _search_study()
    study["search"].update(search)
    return study


#: case -> (study dict, or raw file text; a phrase the message must hold)
VALUE_CASES: dict[str, tuple[dict[str, Any] | str, str]] = {
    "5000-digit integer": ("name: t\nseeds: [" + "7" * 5000 + "]\n", "YAML value"),
    "impossible date": ("name: t\ndescription: 2001-13-45\n", "YAML value"),
    "bad explicit tag": ("name: t\ndescription: !!timestamp nope\n", "YAML value"),
    "python object tag": ("!!python/object/apply:os.system ['true']\n", "could not determine a constructor"),
    "NUL character": ("name: a\x00b\n", "YAML syntax"),
    "seed past 64 bits": (_with(seeds=[2**64]), "seeds.0"),
    "sampler seed past 32 bits": (_search_with(seed=2**32), "search.seed"),
    "infinite learning rate": (_with(base={"train": {"lr": math.inf}}), "must be a finite number"),
    "infinite grid value": (_with(grid={"loss.distill_weight": [0.5, math.inf]}), "must be a finite number"),
    "NaN CPUs": (_with(resources={"cpus": math.nan}), "resources.cpus"),
    "infinite time budget": (_with(time_budget_s=math.inf), "time_budget_s"),
    "integer range past 64 bits": (_search_with(params={
        "train.max_epochs": {"type": "int", "low": 1, "high": 10**30}}), "search.params.train.max_epochs.high"),
    "float range that overflows": (_search_with(params={
        "loss.distill_weight": {"type": "uniform", "low": -1e308, "high": 1e308}}), "range too wide"),
    "epochs past 64 bits": (_with(base={"train": {"max_epochs": 2**70}}), "out of range"),
    "synthetic data beyond any memory": (_with(data={"synthetic": {"preset": "tiny", "n_train": 2**62}}),
                                         "cannot generate the synthetic data"),
    "data path longer than the file system allows": (_with(data={"path": "d" * 5000}), "cannot access"),
    "ASHA with a billion brackets": (_with(scheduler={"name": "asha", "brackets": 10**9}), "scheduler.brackets"),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_values_nothing_downstream_can_use_are_refused(case):
    study, message = VALUE_CASES[case]
    o = run_cli(None, raw=study.encode()) if isinstance(study, str) else run_cli(study)
    assert_refused(o, message)


def test_hostile_results_roots_are_refused(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    for root in (str(a_file), str(a_file / "below"), "nul\x00byte"):
        o = run_cli(tiny_study(), "--results", root)  # the later --results wins
        assert o.code == 2 and "--results" in o.err and "Traceback" not in o.err, o.err
    assert a_file.read_text() == "not a directory"


# --- names and paths cannot leave the results root ------------------------------------------------------
ESCAPES = ["..", ".", "../x", "../../etc", "/tmp/x", "a/b", "a\\b", "~", "$HOME", "${HOME}", "", " ", "a b",
           "a\nb", "x" * 65, "a.", "-a", ".hidden", "..\u2215x", "\u2024\u2024", "name\x00", "c:\\x", "\u202eevil"]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("name", ESCAPES, ids=[repr(n) for n in ESCAPES])
def test_a_study_name_cannot_escape_the_results_root(name, tmp_path):
    named = tmp_path / "named.yaml"
    named.write_text(yaml.safe_dump(tiny_study(name=name)))
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(tiny_study(name="ok")))
    before = _tree(tmp_path)
    for argv in ([str(named)], [str(plain), "--set", f"name={json.dumps(name)}"]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert main([*argv, "--results", str(tmp_path / "results")]) == 2, err.getvalue()
        assert "name" in err.getvalue() and "Traceback" not in err.getvalue()
    assert _tree(tmp_path) == before  # nothing written anywhere (``../x`` would land beside results/)


@HYPO
@given(name=st.text(max_size=80))
def test_any_accepted_name_is_a_plain_directory_inside_the_root(name):
    o = run_cli(tiny_study(name=name), dry_run=True)
    assert_handled(o)
    if o.code == 0:
        assert re.fullmatch(NAME_PATTERN, name) and not name.endswith(".") and name not in (".", "..")
        shown = re.search(r"^results: (.*)$", o.out, re.M)
        assert shown is not None
        results_line = Path(shown.group(1))
        assert results_line.name == name and results_line.parent.name == "results"


def test_symlinked_study_or_table_directories_pointing_outside_are_refused(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(tiny_study(name="t")))
    results = tmp_path / "results"
    for link in ("t", "t/trials", "t/epochs", "t/.runs", "t/tune"):
        (results / "t").mkdir(parents=True, exist_ok=True)
        target = results / link
        if target.exists() or target.is_symlink():
            target.unlink() if target.is_symlink() else target.rmdir()
        target.symlink_to(outside)
        assert main([str(spec), "--results", str(results)]) == 2, link
        assert "outside the results root" in capsys.readouterr().err
        assert list(outside.iterdir()) == []
        target.unlink()


# --- the real command --------------------------------------------------------------------------------------
SUBPROCESS_CASES = {
    "not UTF-8": b"name: \xff\xfe\n",
    "deeply nested": b"[" * 5_000 + b"]" * 5_000,
    "NaN learning rate": yaml.safe_dump(tiny_study(base={"train": {"lr": math.nan}})).encode(),
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_the_module_exits_2_without_a_traceback(case, tmp_path):
    spec = tmp_path / "study.yaml"
    spec.write_bytes(SUBPROCESS_CASES[case])
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # were Ray started by mistake, it could not connect
    proc = subprocess.run([sys.executable, "-m", "harness.run", str(spec), "--results", str(tmp_path / "r")],
                          cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()
