"""Reading a study: YAML -> ``--set`` overrides -> pydantic structure -> meaning checks -> ``StudySpec``.

The one entry point from a file (``load_spec``) or a parsed document (``parse_spec``); every problem of
both stages is reported at once as a ``SpecError``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from harness.study.errors import SpecError
from harness.study.spec import StudySpec, pydantic_errors
from harness.study.validation import check_semantics
from harness.study.yamlio import apply_set_overrides, read_yaml

__all__ = ["load_spec", "parse_spec"]


def parse_spec(raw: object, *, source: str = "<spec>") -> StudySpec:
    """Validate an already-parsed YAML document; raises ``SpecError`` listing every problem."""
    if not isinstance(raw, dict):
        raise SpecError([f"(top level): expected a mapping of study fields, got {type(raw).__name__}"],
                        source=source)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(pydantic_errors(exc), source=source) from None
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
