"""Typed YAML reading for reviewed config files (site catalogue, pipeline specs).

A dataclass declares the file's shape; the reader builds it from YAML nodes and every mistake names
the file, the line, the field path and what is allowed. Unknown keys, duplicate keys, merge keys and
wrong types are errors, never silent defaults. Imports only PyYAML: specs are read at DAG parse time.

Field metadata understood: ``min`` (numbers), ``pattern`` with ``pattern_help`` (text, full match),
``keys`` (a pattern every mapping key must match).
"""

from __future__ import annotations

import re
import types
from dataclasses import MISSING, Field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, NewType, NoReturn, Union, get_args, get_origin, get_type_hints

import yaml

# Read from the YAML text as written: unquoted 24:00:00 is a base-60 integer to YAML 1.1.
Walltime = NewType("Walltime", str)

class ConfigError(ValueError):
    """A mistake in a reviewed file: ``file:line: field: what is wrong (allowed: ...)``; ``errors`` lists
    every one when several were found."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or [message]


NULL_TAG = "tag:yaml.org,2002:null"
# libyaml's parser gives the same nodes and marks as PyYAML's, ~10x faster: specs are read at parse time
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()


def walltime_seconds(text: str) -> int:
    """Slurm's time formats: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a Slurm time (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, first, second, third = match.groups()
    if days is None and third is None:  # M or M:S
        hours, minutes, seconds = 0, int(first), int(second or 0)
        too_big = seconds > 59
    else:  # H:M:S, D-H, D-H:M, D-H:M:S
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        too_big = minutes > 59 or seconds > 59
    if too_big:
        raise ValueError(f"{text!r}: minutes and seconds must be below 60")
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def describe(hint: Any) -> str:
    """What a field expects, in words, for error messages."""
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = [describe(option) for option in get_args(hint) if option is not type(None)]
        return " or ".join([*options, "null"])
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in get_args(hint))
    if hint is Walltime:
        return "a Slurm time such as 24:00:00 or 2-00:00:00"
    if origin is list:
        return f"a list of {describe(get_args(hint)[0]).removeprefix('a ')}"
    if origin is dict or is_dataclass(hint):
        return "a mapping"
    if hint is Any:
        return "any value"
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text"}.get(hint, str(hint))


def _kind_of(value: Any) -> str:
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "text"}
    return names.get(type(value), type(value).__name__)


def line_of(lines: dict[str, int], where: str) -> int:
    """The line a field was read from, or its nearest parent's (checks name fields, e.g. ``a.b.0.c``)."""
    while where and where not in lines:
        where = where.rpartition(".")[0]
    return lines.get(where, 1)


class TypedReader:
    """Builds dataclasses from YAML nodes, keeping each field's line and every null it met."""

    def __init__(self, file: Path, error: type[ValueError], root: str) -> None:
        self.file, self.error, self.root = file, error, root
        self.lines: dict[str, int] = {}
        self.nulls: list[str] = []

    def fail(self, node: yaml.Node, where: str, message: str) -> NoReturn:
        raise self.error(f"{self.file}:{node.start_mark.line + 1}: {where or self.root}: {message}")

    def fail_at(self, where: str, message: str) -> NoReturn:
        """A mistake found after reading (consistency checks), at the line the field was read from."""
        raise self.error(f"{self.file}:{self.line_of(where)}: {where}: {message}")

    def line_of(self, where: str) -> int:
        return line_of(self.lines, where)

    def fail_all(self, problems: list[tuple[str, str]]) -> None:
        """Raise one error listing every ``(field, message)`` found after reading, each at its line."""
        if problems:
            errors = [f"{self.file}:{self.line_of(where)}: {where}: {message}" for where, message in problems]
            raise self.error("\n".join(errors), errors)

    def read(self, hint: Any, node: yaml.Node, where: str, meta: Any, expected: str = "") -> Any:
        """The value of one field; ``expected`` describes the declared type (``... or null``)."""
        self.lines.setdefault(where, node.start_mark.line + 1)  # mapping entries keep their key's line
        expected = expected or describe(hint)
        origin = get_origin(hint)
        if origin in (Union, types.UnionType):
            if node.tag == NULL_TAG:
                self.nulls.append(where)
                return None
            (inner,) = [option for option in get_args(hint) if option is not type(None)]
            return self.read(inner, node, where, meta, expected)
        if node.tag == NULL_TAG:
            self.fail(node, where, f"must not be null (expected {expected})")
        if hint is Any:
            return self.read_any(node, where)
        if is_dataclass(hint):
            return self.read_record(hint, node, where)
        if origin is dict:
            return self.read_mapping(hint, node, where, meta)
        if origin is list:
            if not isinstance(node, yaml.SequenceNode):
                self.fail(node, where, f"expected {expected}")
            (item,) = get_args(hint)
            return [self.read(item, child, f"{where}.{index}", meta) for index, child in enumerate(node.value)]
        if not isinstance(node, yaml.ScalarNode):
            got = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            self.fail(node, where, f"expected {expected}, got {got}")
        if hint is Walltime:
            try:
                walltime_seconds(node.value)
            except ValueError as error:
                self.fail(node, where, str(error))
            return node.value
        value = _SCALARS.construct_object(node)
        if origin is Literal:
            if value not in get_args(hint):
                allowed = ", ".join(str(arg) for arg in get_args(hint))
                self.fail(node, where, f"{value!r} is not allowed (allowed: {allowed})")
            return value
        wanted = (int, float) if hint is float else hint
        if not isinstance(value, wanted) or (isinstance(value, bool) and hint is not bool):
            self.fail(node, where, f"expected {expected}, got {_kind_of(value)} {value!r}")
        meta = meta or {}
        minimum = meta.get("min")
        if minimum is not None and value < minimum:
            self.fail(node, where, f"{value!r} must be {'a whole number' if hint is int else 'a number'} "
                                   f">= {minimum}")
        pattern = meta.get("pattern")
        if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
            self.fail(node, where, f"{value!r} is not allowed ({meta.get('pattern_help') or f'must match {pattern}'})")
        return value

    def read_any(self, node: yaml.Node, where: str) -> Any:
        """Free-form values (training params): plain YAML data, still without merge keys or duplicates."""
        if isinstance(node, yaml.SequenceNode):
            return [self.read_any(child, f"{where}.{index}") for index, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.read_key(key_node, where, result)
                result[key] = self.read_any(value_node, f"{where}.{key}")
            return result
        return _SCALARS.construct_object(node)

    def read_mapping(self, hint: Any, node: yaml.Node, where: str, meta: Any) -> dict[str, Any]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where, "expected a mapping")
        key_hint, value_hint = get_args(hint)
        pattern = meta.get("keys") if meta else None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.read_key(key_node, where, result)
            path = f"{where}.{key}"
            if get_origin(key_hint) is Literal and key not in get_args(key_hint):
                self.fail(key_node, path, f"{key!r} is not allowed (allowed: {', '.join(get_args(key_hint))})")
            if pattern and not re.match(pattern, key):
                self.fail(key_node, path, f"{key!r} is not a valid name (must match {pattern})")
            self.lines[path] = key_node.start_mark.line + 1
            result[key] = self.read(value_hint, value_node, path, {key: value for key, value in (meta or {}).items()
                                                                   if key != "keys"})
        return result

    def read_key(self, key_node: yaml.Node, where: str, seen: dict[str, Any]) -> str:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:merge":
            self.fail(key_node, where, "YAML merge keys (<<) are not supported: write the fields out")
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
            self.fail(key_node, where, f"keys must be text, got {shown!r}")
        key = key_node.value
        if key in seen:
            self.fail(key_node, f"{where}.{key}" if where else key, "given twice")
        return key

    def read_record(self, cls: Any, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where, "expected a mapping")
        hints = get_type_hints(cls)
        known: dict[str, Field[Any]] = {spec.name: spec for spec in fields(cls) if spec.init}
        values: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.read_key(key_node, where, values)
            path = f"{where}.{key}" if where else key
            if key not in known:
                self.fail(key_node, path, f"unknown field (allowed: {', '.join(sorted(known))})")
            self.lines[path] = key_node.start_mark.line + 1
            values[key] = self.read(hints[key], value_node, path, known[key].metadata)
        for name, spec in known.items():
            if name not in values and spec.default is MISSING and spec.default_factory is MISSING:
                path = f"{where}.{name}" if where else name
                line = self.lines.get(where, node.start_mark.line + 1)  # the line of the parent's key
                raise self.error(f"{self.file}:{line}: {path}: required field is missing "
                                 f"(expected {describe(hints[name])}{self.missing_advice(hints[name])})")
        return cls(**values)

    def missing_advice(self, hint: Any) -> str:
        """Extra words for a missing field; the site catalogue asks for explicit nulls."""
        return ""


def compose(path: Path, error: type[ValueError], root_name: str, empty_hint: str) -> yaml.Node:
    """The file's YAML node tree; unreadable, invalid or empty files raise ``error`` naming the file."""
    try:
        root = yaml.compose(path.read_text(), Loader=FAST_LOADER)
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        line = mark.line + 1 if mark else 1
        raise error(f"{path}:{line}: {root_name}: not valid YAML: {problem.problem or problem.context}") from None
    except yaml.YAMLError as problem:
        raise error(f"{path}:1: {root_name}: not valid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except OSError as problem:
        raise error(f"{path}: cannot read: {problem.strerror}") from None
    if root is None:
        raise error(f"{path}:1: {root_name}: the file is empty (expected {empty_hint})")
    return root
