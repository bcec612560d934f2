#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""YAML loading that remembers where every value came from.

A bot declaration is loaded in two steps: `yaml.compose` turns the text into nodes that
carry their `start_mark` (file, line), then the nodes are built into plain Python data
while a `SourceMap` records the file and line of every mapping key and sequence item.
While building, `${VAR}` in string values is replaced from the environment (a whole
value of `${VAR:-}` leaves its key out when VAR is unset or empty, so an optional field
keeps its default) and `!include path` tags are replaced by the data of another YAML
file (relative to the including file), whose lines are kept too, so a problem inside an
included Flows file is reported against that file.

Problems found while loading (a syntax error, an unset variable, a missing include, a
duplicate key) are collected as `ConfigProblem`s rather than raised one at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: `${NAME}` or `${NAME:-default}`; `$${...}` is a literal `${...}`.
_ENV_REF = re.compile(r"\$(\$?)\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A whole value of `${NAME:-}`: an optional field, left out when NAME is unset or empty.
_OPTIONAL_REF = re.compile(r"^\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:-\}$")

#: Keys whose values are secrets: never echoed in problems.
SECRET_KEY = re.compile(r"(secret|token|password|passwd|api_?key|credential)", re.IGNORECASE)

INCLUDE_TAG = "!include"
_MAX_INCLUDE_DEPTH = 8

PathT = tuple[str | int, ...]


def format_path(path: PathT) -> str:
    """Render a field path: `transfer.target.headers.X-Reason`, `flow.nodes.a.functions[0]`."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
            continue
        name = str(part)
        if not name.isprintable():
            name = name.encode("unicode_escape").decode("ascii")
        text += f".{name}" if text else name
    return text or "(document)"


@dataclass(frozen=True)
class Location:
    """Where a value was written.

    Parameters:
        file: The file, as given (relative paths stay relative).
        line: 1-based line number.
    """

    file: str
    line: int


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in a bot declaration, printed as `FILE:LINE: field.path: problem`.

    Parameters:
        file: The file the problem is in.
        line: 1-based line number.
        path: Dotted field path (`transfer.ring_timeout`).
        message: What is wrong, one line, never a secret.
    """

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.path}: {self.message}"


class ConfigError(ValueError):
    """A bot declaration with problems; `problems` holds one entry per problem."""

    def __init__(self, problems: list[ConfigProblem]):
        """Initialize with the problems (at least one).

        Args:
            problems: Every problem found, in file order.
        """
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass
class SourceMap:
    """The file and line of every key and item of a loaded document.

    Parameters:
        root: The document's file.
        locations: Location of each path (a mapping key, or a sequence item).
        secrets: Values found under secret keys, scrubbed from every problem message.
    """

    root: str
    locations: dict[PathT, Location] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)

    def locate(self, path: PathT) -> Location:
        """The location of `path`, or of its nearest recorded parent."""
        path = tuple(path)
        while path:
            if path in self.locations:
                return self.locations[path]
            path = path[:-1]
        return self.locations.get((), Location(self.root, 1))

    def problem(self, path: PathT, message: str) -> ConfigProblem:
        """A problem at `path`, with its location and secrets scrubbed from the message."""
        where = self.locate(path)
        return ConfigProblem(where.file, where.line, format_path(path), self.scrub(message))

    def scrub(self, message: str) -> str:
        """Replace every known secret value in `message` by `***`."""
        for secret in sorted(self.secrets, key=len, reverse=True):
            if len(secret) >= 4:
                message = message.replace(secret, "***")
        return " ".join(message.split())


class _ComposeLoader(yaml.SafeLoader):
    """A safe loader that leaves `!include` tags on their nodes (resolved by the builder)."""


def _keep_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None


_ComposeLoader.add_constructor(INCLUDE_TAG, _keep_tag)


class _Builder:
    """Builds composed nodes into data, recording locations and collecting problems."""

    def __init__(self, source: SourceMap, environ: Mapping[str, str]):
        self.source = source
        self.environ = environ
        self.problems: list[ConfigProblem] = []
        self._including: list[Path] = []

    def load_file(self, path: Path, display: str, at: PathT = ()) -> Any:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self._problem_at(at, f"file not found: {display}")
            return None
        except (OSError, UnicodeDecodeError) as e:
            self._problem_at(at, f"cannot read {display}: {type(e).__name__}")
            return None
        loader = _ComposeLoader(text)
        self._including.append(path.resolve())
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            return self._build(node, at, display, path.parent, loader)
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            line = mark.line + 1 if mark is not None else 1
            problem = str(e.problem or e.context or "invalid YAML")
            self.problems.append(ConfigProblem(display, line, "yaml", problem))
            return None
        except yaml.YAMLError as e:
            self.problems.append(ConfigProblem(display, 1, "yaml", str(e).splitlines()[0]))
            return None
        finally:
            self._including.pop()
            loader.dispose()

    def _problem_at(self, path: PathT, message: str) -> None:
        self.problems.append(self.source.problem(path, message))

    def _record(self, path: PathT, file: str, node: yaml.Node) -> None:
        self.source.locations.setdefault(path, Location(file, node.start_mark.line + 1))

    def _build(self, node, path: PathT, file: str, base: Path, loader) -> Any:
        if node.tag == INCLUDE_TAG:
            return self._include(node, path, file, base)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, file, base, loader)
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                self._record((*path, index), file, item)
                items.append(self._build(item, (*path, index), file, base, loader))
            return items
        value = loader.construct_object(node, deep=True)
        if isinstance(value, str) and node.tag == "tag:yaml.org,2002:str":
            value = self._interpolate(value, path)
        if isinstance(value, str) and path and SECRET_KEY.search(str(path[-1])):
            self.source.secrets.add(value)
        return value

    def _mapping(self, node: yaml.MappingNode, path: PathT, file: str, base: Path, loader):
        loader.flatten_mapping(node)
        data: dict[Any, Any] = {}
        seen: set[Any] = set()  # keys left out (an unset `${VAR:-}`) count as written
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                self.problems.append(
                    ConfigProblem(
                        file,
                        key_node.start_mark.line + 1,
                        format_path(path),
                        "keys must be scalars",
                    )
                )
                continue
            child = (*path, key)
            if key in seen:
                self.problems.append(
                    ConfigProblem(
                        file,
                        key_node.start_mark.line + 1,
                        format_path(child),
                        "duplicate key (it is already set above)",
                    )
                )
                continue
            seen.add(key)
            self._record(child, file, key_node)
            if self._unset_optional(value_node):
                continue
            data[key] = self._build(value_node, child, file, base, loader)
        return data

    def _unset_optional(self, node: yaml.Node) -> bool:
        """Whether `node` is a whole `${NAME:-}` whose variable is unset or empty.

        Such a key is left out rather than set to "": an optional field then keeps its
        default, and a required one is reported missing.
        """
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str":
            return False
        match = _OPTIONAL_REF.match(node.value)
        return match is not None and not self.environ.get(match[1])

    def _include(self, node: yaml.Node, path: PathT, file: str, base: Path) -> Any:
        if not isinstance(node, yaml.ScalarNode) or not str(node.value).strip():
            self._problem_at(path, "!include expects a file path")
            return None
        name = self._interpolate(str(node.value).strip(), path)
        target = (base / name).expanduser()
        if len(self._including) >= _MAX_INCLUDE_DEPTH or target.resolve() in self._including:
            self._problem_at(path, f"!include {name}: includes itself")
            return None
        if not target.is_file():
            self._problem_at(path, f"!include {name}: file not found")
            return None
        display = _display_path(target)
        return self.load_file(target, display, path)

    def _interpolate(self, text: str, path: PathT) -> str:
        if "${" not in text:
            return text

        def substitute(match: re.Match) -> str:
            if match.group(1):  # `$${...}`: a literal `${...}`
                return match.group(0)[1:]
            body = match.group(2)
            name, has_default, default = body.partition(":-")
            name = name.strip()
            if not _ENV_NAME.match(name):
                self._problem_at(path, f"'${{{body}}}' is not a valid environment reference")
                return ""
            value = self.environ.get(name)
            if value is None or (has_default and value == ""):
                if has_default:
                    return default
                self._problem_at(path, f"environment variable {name} is not set")
                return ""
            if SECRET_KEY.search(str(path[-1]) if path else ""):
                self.source.secrets.add(value)
            return value

        return _ENV_REF.sub(substitute, text)


def _display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


@dataclass
class LoadedDocument:
    """A loaded YAML document.

    Parameters:
        data: The plain data (dicts, lists, scalars), `${VAR}` and `!include` resolved.
        source: Where each key and item came from.
        problems: Problems found while loading (empty when it loaded cleanly).
    """

    data: Any
    source: SourceMap
    problems: list[ConfigProblem]


def load_yaml(
    path: str | os.PathLike, *, environ: Mapping[str, str] | None = None
) -> LoadedDocument:
    """Load a YAML file with line tracking, `${VAR}` interpolation and `!include`.

    Args:
        path: The file.
        environ: Environment for `${VAR}` (default: `os.environ`).

    Returns:
        The document; `problems` lists what could not be loaded.
    """
    file = Path(path)
    display = str(path)
    source = SourceMap(display)
    builder = _Builder(source, os.environ if environ is None else environ)
    source.locations[()] = Location(display, 1)
    data = builder.load_file(file, display)
    return LoadedDocument(data, source, builder.problems)
