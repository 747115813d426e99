"""Typed YAML reading for reviewed config files (site catalogue, pipeline specs, data contracts).

A dataclass declares the file's shape; the reader builds it from YAML nodes and every mistake names
the file, the line, the field path and what is allowed. Unknown keys, duplicate keys, merge keys and
wrong types are errors, never silent defaults. Imports only PyYAML: specs are read at DAG parse time.

Every file is hostile until read: it is opened without following links and only if it is a regular file
of at most ``MAX_FILE_BYTES``; control characters, YAML tags other than the core schema's, nesting deeper
than ``MAX_DEPTH``, more than ``MAX_ALIASES`` aliases and documents that expand to more than
``MAX_NODES`` nodes are refused while the file is composed (iteratively: no recursion, no alias bomb),
so a bad file answers with an error in milliseconds, never a hang, a crash or a traceback.

Field metadata understood: ``min`` and ``max`` (numbers), ``pattern`` with ``pattern_help`` (text, full
match, ASCII classes), ``keys`` (a pattern every mapping key must match in full), ``loaded`` (not a key of
the file: set by the loader, e.g. the file's path and its line table).
"""

from __future__ import annotations

import math
import os
import re
import stat
import types
from dataclasses import MISSING, Field, dataclass, fields, is_dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal, NewType, NoReturn, Union, get_args, get_origin, get_type_hints

import yaml
from yaml.events import (
    AliasEvent,
    CollectionStartEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
)

from operators.errors import FactoryError
from operators.units import slurm_time_seconds

# Read from the YAML text as written: unquoted 24:00:00 is a base-60 integer to YAML 1.1.
Walltime = NewType("Walltime", str)

MAX_FILE_BYTES = 1 << 20  # a spec is a few KB; a catalogue entry or a contract of 1,000 columns well under this
MAX_DEPTH = 32  # levels of nesting; the deepest real file has 6
MAX_ALIASES = 100  # YAML aliases (*name) in one file
MAX_NODES = 200_000  # scalars, lists and mappings once every alias is expanded
LARGEST_INT = 2**63 - 1  # what PostgreSQL, JSON readers and Slurm's C integers all hold

CORE_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "seq", "map")}
# Characters no reviewed file may hold: C0 controls but tab and line ends, DEL, C1 controls, non-characters;
# values may not hold a carriage return either (a NUL or CR in a tag or an #SBATCH line is never meant)
CONTROL_IN_FILE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffe\uffff]")
CONTROL_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ufffe\uffff]")
CONTROL_IN_KEY = re.compile("[\x00-\x1f\x7f-\x9f\ufffe\uffff]")  # a key is one line: no tab or line feed


@dataclass(frozen=True)
class Problem:
    """One mistake in a reviewed file: where (file, line, field) and what, formatted only at the edges."""

    file: str | None
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.line) if part is not None)
        return "".join((f"{where}: " if where else "", f"{self.field}: " if self.field else "", self.message))

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ConfigError(FactoryError, ValueError):
    """A mistake in a reviewed file: ``file:line: field: what is wrong (allowed: ...)``; ``problems`` holds
    every one when several were found, ``errors`` the same as text."""

    def __init__(self, problems: str | Problem | list[Problem]) -> None:
        if isinstance(problems, str):
            problems = [Problem(None, None, None, problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))

    @property
    def errors(self) -> list[str]:
        return [str(problem) for problem in self.problems]


NULL_TAG = "tag:yaml.org,2002:null"
# libyaml's parser gives the same events and marks as PyYAML's, ~10x faster: specs are read at parse time
FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SCALARS = yaml.constructor.SafeConstructor()


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
    names = {bool: "true/false", int: "a whole number", float: "a number", str: "text", date: "a date",
             bytes: "binary data"}
    return names.get(type(value), type(value).__name__)


def line_of(lines: dict[str, int], where: str) -> int:
    """The line a field was read from, or its nearest parent's (checks name fields, e.g. ``a.b.0.c``)."""
    while where and where not in lines:
        where = where.rpartition(".")[0]
    return lines.get(where, 1)


def full_match(pattern: str, text: str) -> bool:
    """The whole text, ASCII classes: ``$`` would accept a trailing newline, ``\\d`` any script's digits."""
    return re.fullmatch(pattern, text, re.ASCII) is not None


def text_problem(value: str, control: re.Pattern[str] = CONTROL_IN_TEXT) -> str | None:
    """Why a text value cannot be stored or shown as it is (control characters, broken Unicode); None if fine."""
    found = control.search(value)
    if found:
        return f"holds the control character U+{ord(found.group()):04X}: remove it"
    try:
        value.encode()
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate escape)"
    return None


class TypedReader:
    """Builds dataclasses from YAML nodes, keeping each field's line and every null it met."""

    def __init__(self, file: Path, error: type[ConfigError], root: str) -> None:
        self.file, self.error, self.root = file, error, root
        self.lines: dict[str, int] = {}
        self.nulls: list[str] = []

    def problem_at(self, where: str, message: str) -> Problem:
        return Problem(str(self.file), self.line_of(where), where, message)

    def fail(self, node: yaml.Node, where: str, message: str) -> NoReturn:
        raise self.error(Problem(str(self.file), node.start_mark.line + 1, where or self.root, message))

    def fail_at(self, where: str, message: str) -> NoReturn:
        """A mistake found after reading (consistency checks), at the line the field was read from."""
        raise self.error(self.problem_at(where, message))

    def line_of(self, where: str) -> int:
        return line_of(self.lines, where)

    def fail_all(self, problems: list[tuple[str, str]]) -> None:
        """Raise one error listing every ``(field, message)`` found after reading, each at its line."""
        if problems:
            raise self.error([self.problem_at(where, message) for where, message in problems])

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
                slurm_time_seconds(node.value)
            except ValueError as error:
                self.fail(node, where, str(error))
            return node.value
        value = self.scalar(node, where)
        if origin is Literal:
            if value not in get_args(hint):
                allowed = ", ".join(str(arg) for arg in get_args(hint))
                self.fail(node, where, f"{value!r} is not allowed (allowed: {allowed})")
            return value
        wanted = (int, float) if hint is float else hint
        if not isinstance(value, wanted) or (isinstance(value, bool) and hint is not bool):
            self.fail(node, where, f"expected {expected}, got {_kind_of(value)} {value!r}")
        self.check_value(node, where, hint, value, meta or {})
        return value

    def check_value(self, node: yaml.Node, where: str, hint: Any, value: Any, meta: dict[str, Any]) -> None:
        """Bounds, patterns and what no field may hold (NaN, infinity, control characters)."""
        kind = "a whole number" if hint is int else "a number"
        if isinstance(value, float) and not math.isfinite(value):
            self.fail(node, where, f"{node.value!r} is not allowed (expected a finite number)")
        minimum, maximum = meta.get("min"), meta.get("max")
        if minimum is not None and value < minimum:
            self.fail(node, where, f"{value!r} must be {kind} >= {minimum}")
        if maximum is not None and value > maximum:
            self.fail(node, where, f"{value!r} must be {kind} <= {maximum}")
        pattern = meta.get("pattern")
        if pattern is not None and isinstance(value, str) and not full_match(pattern, value):
            self.fail(node, where, f"{value!r} is not allowed ({meta.get('pattern_help') or f'must match {pattern}'})")

    def scalar(self, node: yaml.Node, where: str) -> Any:
        """A plain value: text, number, true/false or null; dates and binary are not JSON and are refused."""
        try:
            value = _SCALARS.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError):
            self.fail(node, where, f"{node.value!r} is not a valid {node.tag.rpartition(':')[2]}")
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                self.fail(node, where, f"the text {problem}")
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if abs(value) > LARGEST_INT:
                self.fail(node, where, f"{node.value!r} is too large (at most {LARGEST_INT})")
        elif isinstance(value, float):
            if not math.isfinite(value):
                self.fail(node, where, f"{node.value!r} is not allowed (expected a finite number)")
        else:  # YAML 1.1 reads 2026-01-01 as a date: not JSON, and Airflow's XCom and MLflow take only JSON
            self.fail(node, where, f"{_kind_of(value)} {node.value!r} is not a plain value: quote it to keep it "
                                   "as text")
        return value

    def read_any(self, node: yaml.Node, where: str) -> Any:
        """Free-form values (training params): plain JSON data, still without merge keys or duplicates."""
        if isinstance(node, yaml.SequenceNode):
            return [self.read_any(child, f"{where}.{index}") for index, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = self.read_key(key_node, where, result)
                result[key] = self.read_any(value_node, f"{where}.{key}")
            return result
        return self.scalar(node, where)

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
            if pattern and not full_match(pattern, key):
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
        problem = text_problem(key, CONTROL_IN_KEY)
        if problem:
            self.fail(key_node, where, f"a key {problem}")
        if key in seen:
            self.fail(key_node, f"{where}.{key}" if where else key, "given twice")
        return key

    def read_record(self, cls: Any, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, where, "expected a mapping")
        hints = get_type_hints(cls)
        known: dict[str, Field[Any]] = {spec.name: spec for spec in fields(cls)
                                        if spec.init and not spec.metadata.get("loaded")}
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
                raise self.error(Problem(str(self.file), line, path, f"required field is missing (expected "
                                         f"{describe(hints[name])}{self.missing_advice(hints[name])})"))
        return cls(**values)

    def missing_advice(self, hint: Any) -> str:
        """Extra words for a missing field; the site catalogue asks for explicit nulls."""
        return ""


def read_config_text(path: Path, error: type[ConfigError], root_name: str) -> str:
    """The file's text, read without following a link and only from a regular file of bounded size: a
    reviewed file may not stand for ``/etc/shadow``, a FIFO that never answers or ``/dev/zero``."""
    def fail(message: str, line: int = 1) -> NoReturn:
        raise error(Problem(str(path), line, root_name, message))

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as problem:
        if os.path.islink(path):
            fail("is a symbolic link: reviewed files are read only as regular files in their own folder")
        fail(f"cannot read: {problem.strerror}")
    with os.fdopen(fd, "rb") as handle:
        status = os.fstat(handle.fileno())
        if not stat.S_ISREG(status.st_mode):
            fail("is not a regular file")
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        fail(f"is larger than {MAX_FILE_BYTES // 1024} KiB: not a reviewed config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as problem:
        fail(f"not UTF-8 text (byte 0x{data[problem.start]:02x})", data.count(b"\n", 0, problem.start) + 1)
    found = CONTROL_IN_FILE.search(text)
    if found:
        line = text.count("\n", 0, found.start()) + 1
        column = found.start() - (text.rfind("\n", 0, found.start()) + 1) + 1
        fail(f"control character U+{ord(found.group()):04X} at column {column}: remove it", line)
    return text


def compose(path: Path, error: type[ConfigError], root_name: str, empty_hint: str) -> yaml.Node:
    """The file's YAML node tree; unreadable, invalid, oversized or empty files raise ``error`` naming the file."""
    text = read_config_text(path, error, root_name)
    try:
        root = _BoundedComposer(text, path, error, root_name).compose()
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        line = mark.line + 1 if mark else 1
        raise error(Problem(str(path), line, root_name,
                            f"not valid YAML: {problem.problem or problem.context}")) from None
    except yaml.YAMLError as problem:
        raise error(Problem(str(path), 1, root_name, f"not valid YAML: {problem}")) from None
    if root is None:
        raise error(Problem(str(path), 1, root_name, f"the file is empty (expected {empty_hint})"))
    return root


class _BoundedComposer:
    """YAML events to nodes, iteratively, with limits on depth, aliases, expanded size and tags.

    PyYAML's composers recurse (libyaml's in C, where 100,000 levels overflow the stack) and share an
    aliased node between its uses, so a few lines can stand for billions of nodes; here every limit is
    checked at the event that crosses it.
    """

    def __init__(self, text: str, path: Path, error: type[ConfigError], root_name: str) -> None:
        self.loader = FAST_LOADER(text)
        self.path, self.error, self.root_name = path, error, root_name
        self.anchors: dict[str, yaml.Node] = {}
        self.sizes: dict[int, int] = {}  # expanded size of each finished node
        self.expanded = 0
        self.aliases = 0

    def fail(self, event: Any, message: str) -> NoReturn:
        raise self.error(Problem(str(self.path), event.start_mark.line + 1, self.root_name, message))

    def compose(self) -> yaml.Node | None:
        try:
            return self._compose()
        finally:
            self.loader.dispose()

    def _count(self, event: Any, size: int) -> None:
        self.expanded += size
        if self.expanded > MAX_NODES:
            self.fail(event, f"expands to more than {MAX_NODES} values (aliases of aliases?): refused")

    def _compose(self) -> yaml.Node | None:
        root: yaml.Node | None = None
        stack: list[list[Any]] = []  # [node, size, pending mapping key]
        documents = 0
        while self.loader.check_event():
            event = self.loader.get_event()
            if isinstance(event, DocumentStartEvent):
                documents += 1
                if documents > 1:
                    self.fail(event, "not valid YAML: expected a single document in the stream (remove '---')")
                continue
            if isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                node, size, _ = stack.pop()
                node.end_mark = event.end_mark
                self.sizes[id(node)] = size
                child, child_size = node, size
            elif isinstance(event, AliasEvent):
                child = self.anchors.get(event.anchor)
                if child is None:
                    self.fail(event, f"not valid YAML: found undefined alias {event.anchor!r}")
                if id(child) not in self.sizes:
                    self.fail(event, f"the alias *{event.anchor} refers to a value that contains it (recursive)")
                self.aliases += 1
                if self.aliases > MAX_ALIASES:
                    self.fail(event, f"more than {MAX_ALIASES} YAML aliases (*name): write the values out")
                child_size = self.sizes[id(child)]
                self._count(event, child_size)
            elif isinstance(event, (ScalarEvent, CollectionStartEvent)):
                node = self._node(event)
                self._count(event, 1)
                if event.anchor is not None:
                    if event.anchor in self.anchors:
                        self.fail(event, f"not valid YAML: the anchor &{event.anchor} is defined twice")
                    self.anchors[event.anchor] = node
                if isinstance(event, CollectionStartEvent):
                    if len(stack) >= MAX_DEPTH:
                        self.fail(event, f"nested more than {MAX_DEPTH} levels deep: refused")
                    stack.append([node, 1, None])
                    continue
                self.sizes[id(node)] = 1
                child, child_size = node, 1
            else:  # stream start and end, document end
                continue
            if not stack:
                root = child
                continue
            parent = stack[-1]
            parent[1] += child_size
            if isinstance(parent[0], yaml.SequenceNode):
                parent[0].value.append(child)
            elif parent[2] is None:
                parent[2] = child
            else:
                parent[0].value.append((parent[2], child))
                parent[2] = None
        return root

    def _node(self, event: Any) -> yaml.Node:
        tag = event.tag
        if isinstance(event, ScalarEvent):
            kind, value = yaml.ScalarNode, event.value
            if tag is None or tag == "!":
                tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        else:
            kind, value = (yaml.SequenceNode if not isinstance(event, MappingStartEvent) else yaml.MappingNode), []
            if tag is None or tag == "!":
                tag = self.loader.resolve(kind, None, event.implicit)
        if tag not in CORE_TAGS and tag != "tag:yaml.org,2002:merge" and not (
                tag in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:binary") and event.tag is None):
            shown = event.tag.replace("tag:yaml.org,2002:", "!!") if event.tag else tag
            self.fail(event, f"the YAML tag {shown} is not supported: write a plain value (text in quotes, "
                             "numbers, true/false, lists and mappings)")
        if kind is yaml.ScalarNode:
            return yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, style=event.style)
        return kind(tag, value, event.start_mark, None, flow_style=event.flow_style)
