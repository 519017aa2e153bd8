"""YAML reading with line numbers, no silent duplicate keys and bounded nesting (``harness.study.overrides``
applies ``--set`` with the same loader)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import yaml

from harness.study.errors import SpecError

__all__ = ["MAX_DEPTH", "UniqueKeyLoader", "YAMLValue", "depth", "read_yaml"]

#: A value of a YAML document as the safe loader builds it: scalars (timestamps and ``!!binary`` too),
#: lists and mappings. A study file's mapping keys are strings (the spec's models refuse any other).
YAMLValue = str | int | float | bool | None | date | bytes | list["YAMLValue"] | dict[str, "YAMLValue"]

#: Deepest nesting of mappings/lists a study file may have (real studies need about 6). Deeper documents
#: are refused before anything walks them recursively.
MAX_DEPTH = 32


class UniqueKeyLoader(yaml.SafeLoader):
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


# YAML 1.1 (PyYAML) reads 1e-3 as a string (its floats need a dot); YAML 1.2 and every researcher read a
# number. Resolved here, every numeric field gets a number, and the spec's models can refuse strings.
UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _children(node: object) -> list[object]:
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    return [c for c in items if isinstance(c, dict | list)]


def depth(doc: object, limit: int) -> int:
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
        doc = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
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
    if depth(doc, MAX_DEPTH) > MAX_DEPTH:
        raise SpecError([f"YAML: nested too deeply (a study file needs at most {MAX_DEPTH} levels)"],
                        source=str(path))
    return doc
