"""Which searched parameters get a log axis: the ones the search sampled log-uniformly.

The harness writes the spec as run to ``spec.yaml``; its ``search.params`` give each parameter's
distribution (``loguniform``, or ``int`` with ``log: true``, are log). When that is not recorded (an older
or copied result directory without spec.yaml, or a parameter missing from it), the scale is inferred from
the values: positive values spanning at least two decades get a log axis, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from reports.load import Study
from reports.metrics import param_label

__all__ = ["INFER_DECADES", "Scale", "inferred_note", "param_scales", "recorded_space", "study_scales"]

#: without a recorded distribution, positive values spanning this many decades (or more) get a log axis
INFER_DECADES = 2.0


@dataclass(frozen=True)
class Scale:
    """A parameter's axis: ``log`` or linear, and whether the search space says so or it was inferred."""

    log: bool
    source: Literal["spec", "inferred"]


def recorded_space(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``search.params`` of a spec.yaml (parameter path -> its distribution), {} when there is none."""
    search = spec.get("search") if isinstance(spec, Mapping) else None
    params = search.get("params") if isinstance(search, Mapping) else None
    if not isinstance(params, Mapping):
        return {}
    return {str(p): dict(d) for p, d in params.items() if isinstance(d, Mapping)}


def _recorded_log(dist: Mapping[str, Any]) -> bool | None:
    kind = dist.get("type")
    if kind == "loguniform":
        return True
    if kind == "int":
        return bool(dist.get("log", False))
    if kind in ("uniform", "categorical"):
        return False
    return None  # an unknown distribution kind: infer from the values


def _spans_decades(values: pd.Series) -> bool:
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(float)
    v = v[np.isfinite(v)]
    return bool(v.size >= 2 and v.min() > 0 and np.log10(v.max() / v.min()) >= INFER_DECADES)


def param_scales(trials: pd.DataFrame, params: Sequence[str],
                 spec: Mapping[str, Any] | None = None) -> dict[str, Scale]:
    """The axis scale of each numeric parameter in ``params`` (categorical and boolean ones are left out)."""
    space = recorded_space(spec or {})
    out: dict[str, Scale] = {}
    for p in params:
        if p not in trials.columns:
            continue
        s = trials[p]
        if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
            continue
        recorded = _recorded_log(space[p]) if p in space else None
        out[p] = (Scale(recorded, "spec") if recorded is not None
                  else Scale(_spans_decades(s), "inferred"))
    return out


def study_scales(study: Study) -> dict[str, Scale]:
    """:func:`param_scales` of a loaded study's varied parameters, with its spec.yaml."""
    return param_scales(study.trials, study.varied, study.spec)


def inferred_note(scales: Mapping[str, Scale]) -> str | None:
    """A sentence for report.md when some log axis was inferred rather than read from the search space."""
    inferred = [p for p, s in scales.items() if s.source == "inferred" and s.log]
    if not inferred:
        return None
    names = ", ".join(param_label(p) for p in inferred)
    return (f"Log axis inferred for {names}: the search space is not recorded (no spec.yaml search.params "
            f"entry), and the values span at least {INFER_DECADES:g} decades.")
