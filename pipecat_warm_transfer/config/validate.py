#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Load and check a bot declaration: every problem, one line each, with its file and line.

`load_config(path)` returns a `LoadedConfig` or raises `ConfigError`, whose `problems`
print as `FILE:LINE: field.path: problem`. Checked, in one pass: YAML syntax, unset
`${VAR}`s, unknown keys, wrong types, the transfer settings (by the library's own
validators), service providers, the hold-music file, and the Flows config (Pipecat's
`FlowConfig` validation, then its references to tools and handlers via `Flow`, then the
`warm_transfer` actions).
"""

from __future__ import annotations

import importlib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from pipecat.flows import Flow, FlowConfig, FlowReferenceError
from pipecat.flows.config import BUILT_IN_ACTIONS
from pydantic import BaseModel, ValidationError

from pipecat_warm_transfer.config.loader import (
    ConfigError,
    ConfigProblem,
    PathT,
    SourceMap,
    format_path,
    load_yaml,
)
from pipecat_warm_transfer.config.schema import BotConfig, problem_text
from pipecat_warm_transfer.config.settings import TransferSettings, transfer_settings


@dataclass
class LoadedConfig:
    """A valid bot declaration and where each of its values was written.

    Parameters:
        config: The declaration.
        path: Its file.
        source: Line of every key (for problems found later, e.g. building a service).
    """

    config: BotConfig
    path: Path
    source: SourceMap

    @property
    def base_dir(self) -> Path:
        """The folder relative paths in the file resolve against."""
        return self.path.parent

    def transfer_settings(self) -> TransferSettings:
        """The target, `WarmTransferParams`, `BriefingParams` options and hold music."""
        return transfer_settings(self.config, base_dir=self.base_dir)

    def flow(self, handlers: list[Any] | None = None) -> Flow | None:
        """The declared flow joined to the transfer tool and the `flow_handlers` modules."""
        if self.config.flow is None:
            return None
        from pipecat_warm_transfer.flows import WARM_TRANSFER_HANDLERS

        modules = [importlib.import_module(name) for name in self.config.flow_handlers]
        return Flow(
            self.config.flow, handlers=[WARM_TRANSFER_HANDLERS, *modules, *(handlers or [])]
        )

    def problem(self, path: PathT, message: str) -> ConfigProblem:
        """A problem at a field of this file (its line looked up, secrets scrubbed)."""
        return self.source.problem(path, message)


def load_config(
    path: str | os.PathLike, *, environ: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Load, interpolate and check a bot declaration.

    Args:
        path: The YAML file.
        environ: Environment for `${VAR}` (default: `os.environ`).

    Returns:
        The valid declaration.

    Raises:
        ConfigError: One or more problems (each `FILE:LINE: field.path: problem`).
    """
    document = load_yaml(path, environ=environ)
    source = document.source
    problems = list(document.problems)
    data = document.data
    if not problems and data is None:
        problems.append(source.problem((), "the file is empty"))
    elif data is not None and not isinstance(data, dict):
        problems.append(source.problem((), "the top level must be a mapping of sections"))
    if isinstance(data, dict):
        failed = {_path_of(p) for p in problems}
        config = _validate_model(data, Path(path).parent, source, failed, problems)
        if config is not None and not problems:
            problems.extend(_check_flow(config, data, source))
    else:
        config = None
    if problems or config is None:
        problems.sort(key=lambda p: (p.file != str(path), p.file, p.line))
        raise ConfigError(_unique(problems))
    return LoadedConfig(config, Path(path), source)


def validate_config_file(
    path: str | os.PathLike, *, environ: Mapping[str, str] | None = None
) -> list[ConfigProblem]:
    """Every problem of a bot declaration (empty when it is valid)."""
    try:
        load_config(path, environ=environ)
    except ConfigError as e:
        return e.problems
    return []


def _unique(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    seen: set[str] = set()
    out = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            out.append(problem)
    return out


def _path_of(problem: ConfigProblem) -> str:
    return problem.path


def _validate_model(
    data: dict,
    base_dir: Path,
    source: SourceMap,
    failed: set[str],
    problems: list[ConfigProblem],
) -> BotConfig | None:
    try:
        return BotConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as e:
        grouped: dict[PathT, list[str]] = {}
        for item in e.errors(include_url=False, include_input=False, include_context=False):
            path, message = _describe(item)
            text = format_path(path)
            if any(text == f or text.startswith((f + ".", f + "[")) for f in failed):
                continue  # already reported (e.g. an unset ${VAR} left this value empty)
            grouped.setdefault(path, [])
            if message not in grouped[path]:
                grouped[path].append(message)
        for path, messages in grouped.items():
            if path == ("flow",) or (path[:1] == ("flow",) and _graph_message(messages[0])):
                for refined, message in _refine_flow(messages, data.get("flow"), path):
                    problems.append(source.problem(refined, message))
                continue
            message = messages[0] if len(messages) == 1 else " | ".join(messages)
            problems.append(source.problem(path, message))
        return None


def _describe(item: Mapping[str, Any]) -> tuple[PathT, str]:
    """The YAML path and one-line message of one pydantic error."""
    kind = item.get("type", "")
    loc = tuple(item.get("loc", ()))
    if kind == "extra_forbidden":
        path = _clean_loc(loc[:-1]) + (loc[-1],)
        allowed = _fields_at(path[:-1])
        close = _close(str(loc[-1]), allowed)
        hint = f" (did you mean {close!r}?)" if close else ""
        return path, f"unknown field{hint}"
    path = _clean_loc(loc)
    if kind == "missing":
        return path, "required field is missing"
    return path, problem_text(str(item.get("msg", "invalid")))


def _close(name: str, allowed: list[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    matches = matches or [a for a in allowed if len(name) >= 4 and a.startswith(name)]
    return matches[0] if matches else None


def _members(annotation: Any) -> list[Any]:
    """The concrete types an annotation may hold (unions and `Annotated` unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            out.extend(_members(arg))
        return out
    return [annotation]


def _step(annotation: Any, part: str | int) -> list[Any]:
    """Types reached from `annotation` through one path component (empty: not a field)."""
    found = []
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            if isinstance(part, str) and part in member.model_fields:
                found.append(member.model_fields[part].annotation)
        elif origin in (dict, Mapping) and not isinstance(part, int):
            found.append(typing.get_args(member)[1] if typing.get_args(member) else Any)
        elif origin is list and isinstance(part, int):
            found.append(typing.get_args(member)[0] if typing.get_args(member) else Any)
        elif origin in (dict, Mapping) and isinstance(part, int):
            found.append(typing.get_args(member)[1] if typing.get_args(member) else Any)
    return found


def _clean_loc(loc: tuple) -> PathT:
    """Drop pydantic's union-member tags (`str`, `Branch`, ...) and `[key]` from a location."""
    path: list[str | int] = []
    current: list[Any] = [BotConfig]
    for part in loc:
        if part == "[key]":
            continue
        reached = [t for annotation in current for t in _step(annotation, part)]
        if reached:
            path.append(part)
            current = reached
            continue
        # A union member's tag: narrow to the member it names, when it is a model.
        named = [
            m
            for a in current
            for m in _members(a)
            if isinstance(m, type) and m.__name__ == str(part).split("[")[0]
        ]
        current = named or current
    return tuple(path)


def _fields_at(path: PathT) -> list[str]:
    current: list[Any] = [BotConfig]
    for part in path:
        current = [t for annotation in current for t in _step(annotation, part)] or current
    names: list[str] = []
    for annotation in current:
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                names.extend(member.model_fields)
    return names


#
# Flows
#

_UNKNOWN_NODE = re.compile(
    r"^(node '(?P<node>[^']+)'|global_functions) function '(?P<fn>[^']+)' transitions to "
    r"unknown node '(?P<target>[^']+)'$"
)
_INITIAL = re.compile(r"^initial_node '(?P<target>[^']+)' is not a defined node$")
_ALSO_GLOBAL = re.compile(r"^node '(?P<node>[^']+)' function '(?P<fn>[^']+)' is also a global")
_DUPLICATE = re.compile(r"^duplicate function '(?P<fn>[^']+)' in (?P<where>node|global_functions)")


def _graph_message(message: str) -> bool:
    return bool(
        _UNKNOWN_NODE.match(message)
        or _INITIAL.match(message)
        or _ALSO_GLOBAL.match(message)
        or _DUPLICATE.match(message)
    )


def _refine_flow(messages: list[str], flow: Any, path: PathT):
    """Point FlowConfig's graph errors (reported on the whole flow) at the field at fault."""
    for message in messages:
        yield _refine_one(message, flow if isinstance(flow, dict) else {}, path), message


def _refine_one(message: str, flow: dict, path: PathT) -> PathT:
    if match := _INITIAL.match(message):
        return ("flow", "initial_node")
    if match := _UNKNOWN_NODE.match(message):
        functions, base = _functions_of(flow, match.group("node"))
        for index, function in enumerate(functions):
            if isinstance(function, dict) and function.get("name") == match.group("fn"):
                return (*base, index, *_target_path(function, match.group("target")))
    if match := _ALSO_GLOBAL.match(message):
        functions, base = _functions_of(flow, match.group("node"))
        for index, function in enumerate(functions):
            if isinstance(function, dict) and function.get("name") == match.group("fn"):
                return (*base, index, "name")
    if match := _DUPLICATE.match(message):
        for node_name, node in (flow.get("nodes") or {}).items():
            names = [
                f.get("name") for f in (node or {}).get("functions") or [] if isinstance(f, dict)
            ]
            if names.count(match.group("fn")) > 1:
                second = [i for i, n in enumerate(names) if n == match.group("fn")][1]
                return ("flow", "nodes", node_name, "functions", second, "name")
        names = [f.get("name") for f in flow.get("global_functions") or [] if isinstance(f, dict)]
        if names.count(match.group("fn")) > 1:
            second = [i for i, n in enumerate(names) if n == match.group("fn")][1]
            return ("flow", "global_functions", second, "name")
    return path


def _functions_of(flow: dict, node: str | None) -> tuple[list, PathT]:
    if node is None:
        return list(flow.get("global_functions") or []), ("flow", "global_functions")
    node_data = (flow.get("nodes") or {}).get(node) or {}
    return list(node_data.get("functions") or []), ("flow", "nodes", node, "functions")


def _target_path(function: dict, target: str) -> PathT:
    transition = function.get("transition_to")
    if isinstance(transition, dict):
        for key, value in (transition.get("cases") or {}).items():
            if value == target:
                return ("transition_to", "cases", key)
        if transition.get("default") == target:
            return ("transition_to", "default")
    return ("transition_to",)


def _check_flow(config: BotConfig, data: dict, source: SourceMap) -> list[ConfigProblem]:
    """Problems Pipecat's `Flow` finds joining the config to its handlers, and our actions."""
    flow = config.flow
    if flow is None:
        return []
    from pipecat_warm_transfer.flows import (
        WARM_TRANSFER_ACTION,
        WARM_TRANSFER_HANDLERS,
        check_warm_transfer_actions,
    )

    problems: list[ConfigProblem] = []
    modules = []
    for index, name in enumerate(config.flow_handlers):
        try:
            modules.append(importlib.import_module(name))
        except Exception as e:
            problems.append(source.problem(("flow_handlers", index), f"cannot import {name}: {e}"))
    imports_failed = bool(problems)
    for path, message in check_warm_transfer_actions(flow):
        problems.append(source.problem(("flow", *path), message))
    for node_name, node in flow.nodes.items():
        for where in ("pre_actions", "post_actions"):
            for index, action in enumerate(getattr(node, where)):
                if action.registered_in_code and action.type != WARM_TRANSFER_ACTION:
                    known = ", ".join(sorted(BUILT_IN_ACTIONS | {WARM_TRANSFER_ACTION}))
                    problems.append(
                        source.problem(
                            ("flow", "nodes", node_name, where, index, "type"),
                            f"action type '{action.type}' has no handler (known types: {known}; "
                            "a custom type names its handler)",
                        )
                    )
    if imports_failed:
        return problems  # the references would be reported missing for no fault of theirs
    try:
        Flow(flow, handlers=[WARM_TRANSFER_HANDLERS, *modules])
    except FlowReferenceError as e:
        for problem in e.problems:
            path = _reference_path(flow, problem)
            problems.append(source.problem(path, problem.message))
    return problems


def _reference_path(flow: FlowConfig, problem) -> PathT:
    if problem.function is not None:
        if problem.node is None:
            names = [f.name for f in flow.global_functions]
            base: PathT = ("flow", "global_functions")
        else:
            names = [f.name for f in flow.nodes[problem.node].functions]
            base = ("flow", "nodes", problem.node, "functions")
        if problem.function in names:
            return (*base, names.index(problem.function), "name")
        return base
    if problem.node is not None:
        node = flow.nodes[problem.node]
        for where in ("pre_actions", "post_actions"):
            for index, action in enumerate(getattr(node, where)):
                if action.handler and f"'{action.handler}'" in problem.message:
                    return ("flow", "nodes", problem.node, where, index, "handler")
        return ("flow", "nodes", problem.node)
    return ("flow",)
