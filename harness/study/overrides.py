"""``--set PATH=VALUE`` on a study file: where a dotted PATH lands, and what a value there replaces.

The rules (docs/studies.md, "Command line"):

* Components are matched against the keys that exist, longest run first, so ``grid.loss.distill_weight``
  reaches the grid entry named ``loss.distill_weight`` and ``base.model.d_model`` the nested field.
* Mappings keyed by parameter paths (``grid``, ``search.params``, a search parameter's ``when``) take the
  rest of the PATH as one parameter path: ``--set grid.model.n_heads=[2,4]`` adds (or replaces) the grid
  entry ``model.n_heads``; ``--set search.params.train.lr.low=1e-5`` reaches ``low`` of ``train.lr``.
* A shorthand or an empty (null) entry on the way is expanded first: ``report: true`` -> ``{}``,
  ``synthetic: small`` -> ``{preset: small}``, ``full:`` (an empty variant) -> ``{}``.
* Setting one source of an exclusive pair replaces the file's other one: ``--set data.path=...`` on a file
  with ``data: {synthetic: ...}`` uses the file instead (and vice versa). Both given with ``--set`` stay
  an error. ``grid`` / ``ablation`` / ``search`` are not such a pair: a study has one kind, and changing
  it must be said (``--set ablation=null``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import yaml

from harness.study.errors import SpecError
from harness.study.yamlio import MAX_DEPTH, UniqueKeyLoader, YAMLValue, depth

__all__ = ["EXCLUSIVE", "apply_set_overrides", "set_path"]

#: Mapping location -> key -> the key it replaces there (one source of the data, not both).
EXCLUSIVE: dict[tuple[str, ...], dict[str, str]] = {("data",): {"path": "synthetic", "synthetic": "path"}}

#: Fields of one search parameter (``{type, low, high, ...}``), to split ``PATH.FIELD`` at the end.
_PARAM_FIELDS = frozenset({"type", "low", "high", "step", "log", "choices", "when"})

#: Shorthands expanded when a PATH goes through them: location -> value -> the mapping it stands for.
_SHORTHANDS: dict[tuple[str, ...], Callable[[YAMLValue], dict[str, YAMLValue] | None]] = {
    ("report",): lambda v: {} if v is True else None,
    ("data", "synthetic"): lambda v: {"preset": v} if isinstance(v, str) else None,
}


def _is_when(loc: tuple[str, ...]) -> bool:
    return len(loc) == 4 and loc[:2] == ("search", "params") and loc[3] == "when"


def _key_length(loc: tuple[str, ...], node: dict[str, YAMLValue], parts: list[str]) -> int:
    """How many of ``parts`` form the next key of ``node`` (a mapping found at ``loc``)."""
    if loc == ("grid",) or _is_when(loc):
        return len(parts)  # one parameter path; grid values are lists, when values are plain
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in node and (n == len(parts) or node[key] is None or isinstance(node[key], dict)
                            or _expand((*loc, key), node[key]) is not None):
            return n
    if loc == ("search", "params"):
        from harness.study.params import FIELDS

        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in FIELDS:
                return n
        return len(parts) - 1 if len(parts) > 1 and parts[-1] in _PARAM_FIELDS else len(parts)
    return 1


def _expand(loc: tuple[str, ...], value: YAMLValue) -> dict[str, YAMLValue] | None:
    make = _SHORTHANDS.get(loc)
    return make(value) if make else None


def _drop_exclusive(loc: tuple[str, ...], node: dict[str, YAMLValue], key: str, value: YAMLValue,
                    by_set: set[tuple[str, ...]]) -> None:
    other = EXCLUSIVE.get(loc, {}).get(key)
    if other is not None and value is not None and other in node and (*loc, other) not in by_set:
        del node[other]


def set_path(tree: dict[str, YAMLValue], path: str, value: YAMLValue, by_set: set[tuple[str, ...]] | None = None) -> None:
    """Set dotted ``path`` in ``tree`` to ``value`` by the module's rules (``ValueError`` when a value
    that is not a mapping is in the way). ``by_set`` collects the keys set so far by overrides, so an
    exclusive pair given twice on the command line is not silently resolved."""
    by_set = set() if by_set is None else by_set
    parts = path.split(".")
    node: dict[str, YAMLValue] = tree
    loc: tuple[str, ...] = ()
    while True:
        n = _key_length(loc, node, parts)
        key, parts = ".".join(parts[:n]), parts[n:]
        if not parts:
            node[key] = value
            _drop_exclusive(loc, node, key, value, by_set)
            by_set.add((*loc, key))
            return
        child = node.get(key)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            expanded = _expand((*loc, key), child)
            if expanded is None:
                where = ".".join((*loc, key))
                raise ValueError(f"cannot set {path!r}: {where} is {child!r}, not a mapping (set {where} "
                                 f"itself: --set {where}=VALUE)")
            child = expanded
        node[key] = child
        _drop_exclusive(loc, node, key, child, by_set)
        by_set.add((*loc, key))
        node, loc = child, (*loc, key)


def apply_set_overrides(raw: object, overrides: list[str], *, source: str = "<spec>") -> object:
    """Apply ``path=value`` strings (value parsed as YAML) to a copy of ``raw``; every bad one reported."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise SpecError(["(top level): expected a mapping of study fields"], source=source)
    out = copy.deepcopy(raw)
    errors: list[str] = []
    by_set: set[tuple[str, ...]] = set()
    for item in overrides:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path or "" in path.split("."):
            errors.append(f"--set {item!r}: expected PATH=VALUE, e.g. base.train.max_epochs=3")
            continue
        if not text.strip() and path == "data.path":  # a path from an unset shell variable, most likely
            errors.append("--set data.path: empty (a shell variable that is not set?); give the data file's path")
            continue
        try:
            value = yaml.load(text, Loader=UniqueKeyLoader) if text.strip() else None
        except Exception as exc:  # YAML errors, and values PyYAML cannot build (see read_yaml)
            errors.append(f"--set {path}: the value is not valid YAML ({type(exc).__name__}: {exc})")
            continue
        if depth(value, MAX_DEPTH) > MAX_DEPTH:
            errors.append(f"--set {path}: the value is nested too deeply")
            continue
        try:
            set_path(out, path, value, by_set)
        except ValueError as exc:
            errors.append(f"--set {exc}")
    if errors:
        raise SpecError(errors, source=source)
    return out
