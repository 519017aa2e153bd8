"""Reading a study: YAML -> ``--set`` overrides -> pydantic structure -> meaning checks -> ``StudySpec``.

The one entry point from a file (``load_spec``) or a parsed document (``parse_spec``); every problem of
both stages is reported at once as a ``SpecError``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from harness.study.errors import SpecError
from harness.study.overrides import apply_set_overrides
from harness.study.spec import StudySpec, pydantic_errors
from harness.study.validation import check_semantics
from harness.study.yamlio import read_yaml

__all__ = ["load_spec", "parse_spec"]


def _errors_of_the_rest(raw: dict[str, object], exc: ValidationError) -> list[str]:
    """Meaning errors of the top-level fields that passed pydantic, so that a misspelt key or a wrong type
    does not hide the rest (combinations of fields only when the fields they depend on are among those)."""
    if any(not e["loc"] for e in exc.errors()):  # a rule between fields (e.g. grid and search): stop here
        return []
    bad = {e["loc"][0] for e in exc.errors()}
    rest = {k: v for k, v in raw.items() if k not in bad}
    if "name" not in rest:
        rest["name"] = "unnamed"  # only to validate the rest; its own error is already listed
    try:
        partial = StudySpec.model_validate(rest)
    except ValidationError:
        return []
    # combinations need only base and what varies: a misspelt other key must not hide a bad grid point
    return check_semantics(partial, combinations=not bad & {"base", "grid", "ablation", "search", "seeds",
                                                             "confirm"})[1]


def parse_spec(raw: object, *, source: str = "<spec>") -> StudySpec:
    """Validate an already-parsed YAML document; raises ``SpecError`` listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError([f"(top level): expected a mapping of study fields, got {type(raw).__name__}"],
                        source=source)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc) + _errors_of_the_rest(raw, exc), source=source) from None
    spec, errors = check_semantics(spec)
    if errors:
        raise SpecError(errors, source=source)
    return spec


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read, override (``--set path=value``) and validate a study file; ``SpecError`` on any problem."""
    path = Path(path)
    raw = read_yaml(path)
    raw = apply_set_overrides(raw, overrides or [], source=str(path))
    return parse_spec(raw, source=str(path))
