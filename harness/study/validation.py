"""Meaning checks of a structurally valid study: paths, value types, constraints, names, files.

Run by ``harness.study.spec.parse_spec`` after pydantic; returns every problem as ``"field.path: message"``.
Data shapes are not known here (the data are loaded later), so points are checked with sequence
lengths left open; ``harness.study.plan`` checks them again against the real data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from emoe.metrics import METRIC_NAMES, metric_mode
from harness.study.data import synthetic_errors
from harness.study.devices import device_errors
from harness.study.params import (
    DATA_FIELDS,
    FIELDS,
    SEED_PATH,
    ParamValue,
    apply_overrides,
    check_path,
    coerce,
    config_id,
    field_type,
    flatten,
)
from harness.study.samplers import sampler_errors
from harness.study.space import (
    Point,
    SearchSpace,
    ablation_points,
    check_point,
    feasible_fraction,
    grid_points,
)
from harness.study.spec import NAME_RULE, CategoricalParam, DataSpec, StudySpec, is_safe_name
from harness.study.trial import OPEN_DIMS

__all__ = ["OPEN_DIMS", "check_semantics", "known_metrics", "locate", "resolve_path", "same_configuration",
           "search_feasibility", "search_space"]
_MAX_LISTED = 12
_VAR = re.compile(r"\$(\w+)|\$\{([^}]*)\}")


def known_metrics() -> set[str]:
    """Every validation metric name any task produces (``loss`` included)."""
    return {"loss"} | {m for names in METRIC_NAMES.values() for m in names}


def resolve_path(text: str) -> tuple[Path | None, str | None]:
    """Expand ``$VAR``/``${VAR}`` and ``~``; relative paths are taken from the current directory."""
    missing = [a or b for a, b in _VAR.findall(text) if (a or b) not in os.environ]
    if missing:
        return None, f"environment variable {missing[0]} is not set (in {text!r})"
    return Path(os.path.expanduser(os.path.expandvars(text))).absolute(), None


def _param_path_error(where: str, path: str) -> str | None:
    err = check_path(path)
    if err:
        return f"{where}: {err}"
    if path == SEED_PATH:
        return f"{where}: {path} is set from the top-level seeds list"
    if path in DATA_FIELDS:
        return f"{where}: {path} is set from the data"
    return None


def _check_overrides(where: str, tree: dict[str, object]) -> list[str]:
    try:
        flat = flatten(tree)
    except ValueError as exc:
        return [f"{where}: {exc}"]
    errors = []
    for path, value in flat.items():
        if "." not in path and any(f.startswith(f"{path}.") for f in FIELDS):  # e.g. --set base.train=null
            errors.append(f"{where}.{path}: the {path} section needs a mapping of its fields, got {value!r}")
            continue
        err = _param_path_error(f"{where}.{path}", path)
        if err:
            errors.append(err)
            continue
        try:
            coerce(path, value)
        except ValueError as exc:
            errors.append(f"{where}.{exc}")
    return errors


def _check_data(data: DataSpec) -> tuple[DataSpec, list[str]]:
    if data.path is None:
        return data, [f"data.synthetic.{e}" for e in synthetic_errors(data.synthetic)]
    if not data.path.strip():  # "" would be resolved to the current directory
        return data, ["data.path: empty (give an MMSA pickle or a converted directory, or data.synthetic)"]
    path, err = resolve_path(data.path)
    if err or path is None:
        return data, [f"data.path: {err}"]
    try:
        exists = path.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        shown = data.path if len(data.path) <= 200 else data.path[:200] + "..."
        return data, [f"data.path: cannot access {shown!r}: {exc.strerror or exc}"]
    if not exists:
        shown = f"{path} (from {data.path!r})" if str(path) != data.path else str(path)
        return data, [f"data.path: file not found: {shown}"]
    return data.model_copy(update={"path": str(path)}), []


def _typed(path: str, value: object) -> object:
    """``value`` as the field's type, or as given when it has none (a bad base value is reported there)."""
    try:
        return coerce(path, value)
    except ValueError:
        return value


def _check_when(params: Mapping[str, object], path: str, where: str, base: Mapping[str, object] | None) -> list[str]:
    """Problems with the ``when`` of search parameter ``path``: a bad path or value, a condition on itself
    or on a parameter sampled after it (parameters are sampled in file order, so the condition would be
    tested against the base value instead), or one that can never hold (its field is not searched and
    ``base``, the flattened base with the defaults, has another value: the parameter would never be
    sampled)."""
    when = getattr(params[path], "when", None) or {}
    order = list(params)
    errors = []
    for cond, want in when.items():
        cerr = check_path(cond)
        if cerr:
            errors.append(f"{where}.when: {cerr}")
            continue
        try:
            allowed = [coerce(cond, w) for w in (want if isinstance(want, list) else [want])]
        except ValueError as exc:
            errors.append(f"{where}.when.{exc}")
            continue
        if cond == path:
            errors.append(f"{where}.when.{cond}: a parameter cannot depend on itself")
        elif cond in params and order.index(cond) > order.index(path):
            errors.append(f"{where}.when.{cond}: {cond} is sampled after {path} (parameters are sampled in "
                          f"file order): list it before {path} in search.params")
        elif cond not in params and base is not None and _typed(cond, base.get(cond)) not in allowed:
            errors.append(f"{where}.when.{cond}: never holds: {cond} is not searched and is "
                          f"{base.get(cond)!r} (base or default), so {path} would never be sampled")
    return errors


def _check_search(spec: StudySpec, *, feasibility: bool = True) -> list[str]:
    assert spec.search is not None
    s = spec.search
    errors = [f"search.{e}" for e in sampler_errors(s.sampler, s.sampler_options)]
    try:
        base: Mapping[str, object] | None = search_space(spec).base  # the defaults and base, as sampling sees them
    except ValueError:  # a field given twice in base: reported there
        base = None
    for path, param in s.params.items():
        where = f"search.params.{path}"
        err = _param_path_error(where, path)
        if err:
            errors.append(err)
            continue
        hint = str(FIELDS[path])
        if param.type in ("uniform", "loguniform") and "float" not in hint:
            errors.append(f"{where}: {param.type} needs a real-valued field, {path} is {field_type(path)}")
        elif param.type == "int" and hint != str(int):
            errors.append(f"{where}: int needs an integer field, {path} is {field_type(path)}")
        elif param.type == "categorical":
            for i, choice in enumerate(param.choices):
                try:
                    coerce(path, choice)
                except ValueError as exc:
                    errors.append(f"{where}.choices.{i}: {str(exc).split(': ', 1)[-1]}")
        if s.sampler == "bruteforce" and (param.type == "loguniform"
                                          or (param.type == "uniform" and param.step is None)):
            errors.append(f"{where}: the bruteforce sampler tries every value, so it needs a finite space: "
                          f"{'use uniform with a step' if param.type == 'loguniform' else 'give uniform a step'}"
                          " (or a categorical, or another sampler)")
        errors += _check_when(s.params, path, where, base)
    if errors or not feasibility:
        return errors
    return search_feasibility(spec, OPEN_DIMS, scope="in the search space (all random draws violate a "
                                                    "constraint)")[1]


def search_space(spec: StudySpec) -> SearchSpace:
    """The study's define-by-run search space (the study must have a ``search`` section)."""
    assert spec.search is not None
    return SearchSpace({p: v.model_dump() for p, v in spec.search.params.items()}, spec.base)


def search_feasibility(spec: StudySpec, dims: Mapping[str, ParamValue], *, scope: str) -> tuple[float, list[str]]:
    """Share of random draws of the search space whose configuration is valid with data dimensions ``dims``
    (open before the data are read, the data's after), and the error when none is."""
    assert spec.search is not None
    frac, reasons = feasible_fraction(search_space(spec), spec.base, dims, seed=spec.search.seed)
    if frac > 0.0:
        return frac, []
    return frac, [f"search.params: no valid configuration {scope}, e.g. {reasons[0] if reasons else '?'}"]


def locate(spec: StudySpec, point: Point) -> str:
    """Where a point comes from in the study file, as error messages name it."""
    if spec.ablation is not None:
        return f"ablation.variants.{point.label}"
    return "base" if point.label == "base" else f"grid point {point.label}"


def same_configuration(spec: StudySpec, keyed: list[tuple[Point, str]], *, note: str) -> list[str]:
    """An error for every point whose identity ``key`` an earlier point already has."""
    errors: list[str] = []
    seen: dict[str, Point] = {}
    for point, key in keyed:
        if key in seen:
            errors.append(f"{locate(spec, point)}: same configuration as {locate(spec, seen[key])} ({note})")
        seen.setdefault(key, point)
    return errors


def _check_points(spec: StudySpec) -> list[str]:
    points = (ablation_points(spec.ablation.variants) if spec.ablation is not None else grid_points(spec.grid))
    errors: list[str] = []
    keyed: list[tuple[Point, str]] = []
    for point in points:
        cfg, errs = check_point(spec.base, point, OPEN_DIMS)
        errors.extend(f"{locate(spec, point)}: {e}" for e in errs)
        if cfg is not None:
            keyed.append((point, config_id(cfg, "")))
    errors += same_configuration(spec, keyed, note="fields such as train.device or train.fast_path do not "
                                                   "change results and are not compared")
    if len(errors) > _MAX_LISTED:
        errors = [*errors[:_MAX_LISTED], f"... and {len(errors) - _MAX_LISTED} more invalid points"]
    return errors


def check_semantics(spec: StudySpec, *, combinations: bool = True) -> tuple[StudySpec, list[str]]:
    """The spec with its data path resolved, and every meaning error (empty when it can run).
    Grid points, variants and the search space are checked as wholes whenever base and the varied values
    are valid field by field, whatever else is wrong. ``combinations=False`` checks fields one by one only:
    for the rest of a file whose base or varied fields did not even parse."""
    data, errors = _check_data(spec.data)
    spec = spec.model_copy(update={"data": data})
    before_points = len(errors)  # the combinations below depend on base and the varied values only
    base_errors = _check_overrides("base", spec.base)
    overrides_ok = not base_errors  # the device check below reads base and the variants
    errors += base_errors
    if spec.grid is not None:
        for path, values in spec.grid.items():
            err = _param_path_error(f"grid.{path}", path)
            if err:
                errors.append(err)
                continue
            coerced = []
            for i, v in enumerate(values):
                try:
                    coerced.append(coerce(path, v))
                except ValueError as exc:
                    errors.append(f"grid.{path}.{i}: {str(exc).split(': ', 1)[-1]}")
            if len({repr(c) for c in coerced}) != len(coerced):
                errors.append(f"grid.{path}: values must be distinct, got {values}")
    if spec.ablation is not None:
        for name, overrides in spec.ablation.variants.items():
            if not is_safe_name(name):
                errors.append(f"ablation.variants.{name}: a variant name {NAME_RULE}")
            variant_errors = _check_overrides(f"ablation.variants.{name}", overrides or {})
            overrides_ok &= not variant_errors
            errors += variant_errors
    if spec.search is not None:  # the search space is a combination too: it needs a base that flattens
        errors += _check_search(spec, feasibility=combinations and not base_errors)
    points_checkable = len(errors) == before_points  # base, grid and variants are valid field by field
    metric = spec.objective.metric
    name = metric.removeprefix("valid_")
    if metric.startswith("test_"):
        errors.append(f"objective.metric: {metric!r}: trials are selected on validation, use valid_{name[5:]}")
    elif not metric.startswith("valid_") or name not in known_metrics():
        errors.append(f"objective.metric: unknown metric {metric!r}, expected valid_ followed by one of "
                      f"{sorted(known_metrics())}")
    elif spec.objective.mode and spec.objective.mode != metric_mode(metric):
        errors.append(f"objective.mode: {metric} is better when {'lower' if metric_mode(metric) == 'min' else 'higher'}"
                      f", mode {spec.objective.mode!r} would pick the worst trials")
    if combinations and spec.confirm is not None:
        reused = [s for s in spec.confirm.seeds if s in spec.seeds]
        if reused:
            errors.append(f"confirm.seeds: must be fresh, but {reused} also tune (seeds: {spec.seeds}); a "
                          "configuration selected on a seed cannot be confirmed on that same seed")
    if points_checkable and combinations and spec.kind != "search":
        errors += _check_points(spec)  # also beside other fields' errors: every error at once
    if overrides_ok:
        errors += device_errors(spec)
    if not errors:
        spec = _normalised(spec)
    return spec, errors


def _normalised(spec: StudySpec) -> StudySpec:
    """Values converted to their field types (``"1e-3"`` -> 0.001), so spec.yaml and resume checks agree:
    base, grid values, variants, and a search's categorical choices and ``when`` values."""
    def typed(tree: dict[str, object]) -> dict[str, ParamValue]:
        return {p: coerce(p, v) for p, v in flatten(tree).items()}

    base = apply_overrides({}, typed(spec.base))
    update: dict[str, object] = {"base": {sec: fields for sec, fields in base.items() if fields}}
    if spec.grid is not None:
        update["grid"] = {p: [coerce(p, v) for v in values] for p, values in spec.grid.items()}
    if spec.ablation is not None:
        variants = {name: typed(ov or {}) for name, ov in spec.ablation.variants.items()}
        update["ablation"] = spec.ablation.model_copy(update={"variants": variants})
    if spec.search is not None:  # categorical choices and when values: typed too, so sampling compares alike
        params = {}
        for path, param in spec.search.params.items():
            changes: dict[str, object] = {}
            if isinstance(param, CategoricalParam):
                changes["choices"] = [coerce(path, c) for c in param.choices]
            if param.when:
                changes["when"] = {c: [coerce(c, w) for w in want] if isinstance(want, list) else coerce(c, want)
                                   for c, want in param.when.items()}
            params[path] = param.model_copy(update=changes)
        update["search"] = spec.search.model_copy(update={"params": params})
    return spec.model_copy(update=update)
