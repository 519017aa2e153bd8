"""YAML reading with line numbers and no silent duplicate keys, and ``--set path=value`` overrides."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from harness.study.errors import SpecError

__all__ = ["MAX_DEPTH", "apply_set_overrides", "read_yaml"]

#: Deepest nesting of mappings/lists a study file may have (real studies need about 6). Deeper documents
#: are refused before anything walks them recursively.
MAX_DEPTH = 32


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, f"unhashable key {key!r}", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _children(node: object) -> list[object]:
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [c for c in items if isinstance(c, dict | list)]


def _depth(doc: object, limit: int) -> int:
    """Nesting depth of lists/mappings in ``doc``, without recursion; each container is visited once
    (YAML aliases share them) and a container inside itself (``&a [*a]``) counts as deeper than ``limit``."""
    depth: dict[int, int] = {}
    open_: set[int] = set()  # containers whose children are being measured: the current path
    stack: list[tuple[object, bool]] = [(doc, False)] if _children([doc]) else []
    while stack:
        node, closing = stack.pop()
        if closing:
            open_.discard(id(node))
            depth[id(node)] = 1 + max((depth[id(c)] for c in _children(node)), default=0)
            if depth[id(node)] > limit:
                return depth[id(node)]
        elif id(node) in open_:
            return limit + 1
        elif id(node) not in depth:
            open_.add(id(node))
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node))
    return depth.get(id(doc), 0)


def read_yaml(path: Path) -> object:
    """Parse one YAML document; a missing/unreadable file, a syntax error or absurd nesting is a
    ``SpecError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError([f"study file not found: {path}"], source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"cannot read the study file: {exc}"], source=str(path)) from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except RecursionError:
        raise SpecError([f"YAML: nested too deeply (a study file needs at most {MAX_DEPTH} levels)"],
                        source=str(path)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError([f"YAML syntax: {where}{exc.problem or exc}"], source=str(path)) from None
    except yaml.YAMLError as exc:
        raise SpecError([f"YAML syntax: {exc}"], source=str(path)) from None
    except Exception as exc:  # a value PyYAML cannot build (a 5000-digit int, month 13, a bad !!tag)
        raise SpecError([f"YAML value: {type(exc).__name__}: {exc}"], source=str(path)) from None
    if _depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise SpecError([f"YAML: nested too deeply (a study file needs at most {MAX_DEPTH} levels)"],
                        source=str(path))
    return doc


def _set_path(tree: dict[str, object], path: str, value: object) -> None:
    """Set ``path`` in ``tree``, matching the longest existing key first so dotted keys such as
    ``grid.loss.distill_weight`` reach the grid entry named ``loss.distill_weight``."""
    node: object = tree
    rest = path
    while True:
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {path!r}: {type(node).__name__} in the way")
        if rest in node or "." not in rest:
            node[rest] = value
            return
        parts = rest.split(".")
        for n in range(len(parts) - 1, 0, -1):
            key = ".".join(parts[:n])
            if key in node and isinstance(node[key], dict):
                node, rest = node[key], ".".join(parts[n:])
                break
        else:
            node = node.setdefault(parts[0], {})
            rest = ".".join(parts[1:])


def apply_set_overrides(raw: object, overrides: list[str], *, source: str = "<spec>") -> object:
    """Apply ``path=value`` strings (value parsed as YAML) to a copy of ``raw``; every bad one reported."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise SpecError(["(top level): expected a mapping of study fields"], source=source)
    out = copy.deepcopy(raw)
    errors: list[str] = []
    for item in overrides:
        path, sep, text = item.partition("=")
        path = path.strip()
        if not sep or not path:
            errors.append(f"--set {item!r}: expected PATH=VALUE, e.g. base.train.max_epochs=3")
            continue
        try:
            value = yaml.load(text, Loader=_UniqueKeyLoader) if text.strip() else None
        except Exception as exc:  # YAML errors, and values PyYAML cannot build (see read_yaml)
            errors.append(f"--set {path}: the value is not valid YAML ({type(exc).__name__}: {exc})")
            continue
        if _depth(value, MAX_DEPTH) > MAX_DEPTH:
            errors.append(f"--set {path}: the value is nested too deeply")
            continue
        try:
            _set_path(out, path, value)
        except ValueError as exc:
            errors.append(f"--set {exc}")
    if errors:
        raise SpecError(errors, source=source)
    return out
