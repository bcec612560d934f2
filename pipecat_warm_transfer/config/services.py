#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pipecat services by provider name, imported only when a bot is built.

Provider names come from Pipecat's own service registry (`pipecat.cli.registry`, the
table behind `pipecat init`): `deepgram` for STT is the registry's `deepgram_stt`,
`openai` for the LLM is `openai_llm`, and so on, each mapped to its import path. A few
aliases cover common spellings (`google`/`gemini` for the LLM). `scripted` builds the
offline stand-ins of `pipecat_warm_transfer.testing`, and `package.module:ClassName`
names any other service class.

Validation only looks names up; nothing is imported until `build_service`, so a YAML
file can be validated without the providers' extras installed.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from typing import Any

from pipecat_warm_transfer.config.loader import PathT

KINDS = ("stt", "llm", "tts")
SCRIPTED = "scripted"
_LABEL = {"stt": "STT", "llm": "LLM", "tts": "TTS"}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+(.+)$")

#: Other spellings of registry names.
_ALIASES = {
    "llm": {"google": "google_gemini", "gemini": "google_gemini", "vertex": "google_vertex"},
    "stt": {"gemini": "gemini"},
    "tts": {},
}

#: Used only when Pipecat's registry cannot be read (it ships with pipecat-ai).
_FALLBACK = {
    "stt": {
        "deepgram": ("pipecat.services.deepgram.stt", "DeepgramSTTService", "deepgram"),
        "openai": ("pipecat.services.openai.stt", "OpenAISTTService", "openai"),
        "google": ("pipecat.services.google.stt", "GoogleSTTService", "google"),
        "elevenlabs": ("pipecat.services.elevenlabs.stt", "ElevenLabsSTTService", "elevenlabs"),
        "cartesia": ("pipecat.services.cartesia.stt", "CartesiaSTTService", "cartesia"),
    },
    "llm": {
        "openai": ("pipecat.services.openai.llm", "OpenAILLMService", "openai"),
        "anthropic": ("pipecat.services.anthropic.llm", "AnthropicLLMService", "anthropic"),
        "google_gemini": ("pipecat.services.google.llm", "GoogleLLMService", "google"),
    },
    "tts": {
        "cartesia": ("pipecat.services.cartesia.tts", "CartesiaTTSService", "cartesia"),
        "elevenlabs": ("pipecat.services.elevenlabs.tts", "ElevenLabsTTSService", "elevenlabs"),
        "openai": ("pipecat.services.openai.tts", "OpenAITTSService", "openai"),
        "deepgram": ("pipecat.services.deepgram.tts", "DeepgramTTSService", "deepgram"),
        "google": ("pipecat.services.google.tts", "GoogleTTSService", "google"),
    },
}


class ServiceBuildError(ValueError):
    """A service that cannot be built; `path` is relative to its YAML section.

    Parameters:
        path: The offending field, e.g. `("options",)` or `("settings", "voice")`.
        message: What is wrong, one line.
    """

    def __init__(self, path: PathT, message: str):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


@dataclass(frozen=True)
class ProviderSpec:
    """Where a provider's service class lives.

    Parameters:
        kind: `stt`, `llm` or `tts`.
        name: The provider name as written.
        module: Module to import (empty for `scripted`).
        class_name: Class in that module.
        extra: The pipecat-ai extra that installs its dependencies, when known.
    """

    kind: str
    name: str
    module: str
    class_name: str
    extra: str | None = None

    @property
    def scripted(self) -> bool:
        """Whether this is the offline stand-in."""
        return self.name == SCRIPTED


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, dict[str, tuple[str, str, str | None]]]:
    """Provider name → (module, class, extra) per kind, from Pipecat's registry."""
    try:
        from pipecat.cli.registry import ServiceLoader, ServiceRegistry, extract_package_extra
    except Exception:  # an older or trimmed pipecat: the fallback table covers the basics
        return {kind: dict(table) for kind, table in _FALLBACK.items()}
    table: dict[str, dict[str, tuple[str, str, str | None]]] = {kind: {} for kind in KINDS}
    for kind in KINDS:
        for definition in ServiceLoader.get_all_services_by_type(kind):
            located = _locate(definition.class_name or [], ServiceRegistry.IMPORTS, definition)
            if located is None:
                continue
            extras = extract_package_extra(definition.package)
            name = definition.value.removesuffix(f"_{kind}")
            table[kind][name] = (*located, extras[0] if extras else None)
        for name, spec in _FALLBACK[kind].items():
            table[kind].setdefault(name, spec)
    return table


def _locate(class_names: list[str], imports: dict, definition) -> tuple[str, str] | None:
    for line in imports.get(definition.value, []):
        match = _FROM_IMPORT.match(line.strip())
        if not match:
            continue
        imported = [n.strip() for n in match.group(2).split(",")]
        for class_name in class_names:
            if class_name in imported:
                return match.group(1), class_name
    return None


def known_providers(kind: str) -> list[str]:
    """Every provider name accepted for a kind (registry names, aliases, `scripted`)."""
    names = set(_registry()[kind]) | set(_ALIASES[kind]) | {SCRIPTED}
    return sorted(names)


def resolve_provider(kind: str, provider: str) -> ProviderSpec:
    """Look a provider up for a kind (`stt`, `llm`, `tts`), importing nothing.

    Raises:
        ValueError: Unknown provider (the message suggests close names).
    """
    name = provider.strip()
    if name == SCRIPTED:
        return ProviderSpec(kind, name, "", "")
    if ":" in name:
        if not _IMPORT_PATH.match(name):
            raise ValueError(f"{name!r} is not an import path (package.module:ClassName)")
        module, class_name = name.split(":")
        return ProviderSpec(kind, name, module, class_name)
    table = _registry()[kind]
    key = name.lower().replace("-", "_").removesuffix(f"_{kind}")
    key = _ALIASES[kind].get(key, key)
    if key in table:
        module, class_name, extra = table[key]
        return ProviderSpec(kind, name, module, class_name, extra)
    close = difflib.get_close_matches(key, known_providers(kind), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None
    if hint is None:
        sample = ", ".join(
            p
            for p in ("deepgram", "openai", "cartesia", "elevenlabs", "google")
            if p in known_providers(kind)
        )
        hint = f"e.g. {sample}, or package.module:ClassName"
    raise ValueError(f"unknown {_LABEL[kind]} provider {name!r} ({hint})")


def service_class(spec: ProviderSpec) -> type:
    """Import a provider's service class.

    Raises:
        ServiceBuildError: The module or class cannot be imported.
    """
    try:
        module = importlib.import_module(spec.module)
    except ImportError as e:
        install = f"; install it with `pip install pipecat-ai[{spec.extra}]`" if spec.extra else ""
        raise ServiceBuildError(
            ("provider",), f"cannot import {spec.module} ({e.msg or e}){install}"
        ) from None
    except Exception as e:
        raise ServiceBuildError(
            ("provider",), f"cannot import {spec.module}: {type(e).__name__}: {e}"
        ) from None
    cls = getattr(module, spec.class_name, None)
    if not isinstance(cls, type):
        raise ServiceBuildError(("provider",), f"{spec.module} has no class {spec.class_name}")
    return cls


def check_service(
    kind: str,
    provider: str,
    options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> None:
    """Check that a service could be built, without building it (nothing is opened).

    The class is imported, the settings are built, and the option names are matched
    against the constructor's signature (any name passes when it takes `**kwargs`).

    Raises:
        ServiceBuildError: The provider, an option or a setting is refused.
    """
    try:
        spec = resolve_provider(kind, provider)
    except ValueError as e:
        raise ServiceBuildError(("provider",), str(e)) from None
    if spec.scripted:
        return
    cls = service_class(spec)
    if settings:
        settings_class = getattr(cls, "Settings", None)
        if settings_class is None:
            raise ServiceBuildError(("settings",), f"{cls.__name__} takes no settings")
        try:
            settings_class(**settings)
        except TypeError as e:
            raise ServiceBuildError(("settings",), _type_error(e, settings_class)) from None
    try:
        parameters = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    for name in options or {}:
        if name not in parameters:
            raise ServiceBuildError(("options", name), f"{cls.__name__} has no argument {name!r}")


def build_service(
    kind: str,
    provider: str,
    options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    *,
    sample_rate: int | None = None,
    system_instruction: str | None = None,
):
    """Build one Pipecat service (a fresh instance each call).

    Args:
        kind: `stt`, `llm` or `tts`.
        provider: The provider name (see `resolve_provider`).
        options: Constructor keyword arguments.
        settings: Fields of the service class's `Settings`.
        sample_rate: The pipeline's audio rate (used by the scripted TTS).
        system_instruction: The LLM's system instruction (a `settings` field).

    Raises:
        ServiceBuildError: The provider, an option or a setting is refused.
    """
    try:
        spec = resolve_provider(kind, provider)
    except ValueError as e:
        raise ServiceBuildError(("provider",), str(e)) from None
    options = dict(options or {})
    settings = dict(settings or {})
    if spec.scripted:
        return _scripted(kind, options, settings, sample_rate, system_instruction)
    cls = service_class(spec)
    if system_instruction and kind == "llm":
        settings.setdefault("system_instruction", system_instruction)
    if settings:
        settings_class = getattr(cls, "Settings", None)
        if settings_class is None:
            raise ServiceBuildError(("settings",), f"{cls.__name__} takes no settings")
        try:
            options["settings"] = settings_class(**settings)
        except TypeError as e:
            raise ServiceBuildError(("settings",), _type_error(e, settings_class)) from None
    try:
        return cls(**options)
    except TypeError as e:
        raise ServiceBuildError(("options",), _type_error(e, cls)) from None
    except Exception as e:
        raise ServiceBuildError(
            ("options",), f"{cls.__name__} refused its options: {type(e).__name__}: {e}"
        ) from None


def _type_error(error: TypeError, target: type) -> str:
    text = str(error)
    unexpected = re.search(r"unexpected keyword argument '(\w+)'", text)
    if unexpected:
        return f"{target.__name__} has no argument {unexpected.group(1)!r}"
    missing = re.search(r"missing \d+ required keyword-only arguments?: (.+)$", text)
    if missing:
        return f"{target.__name__} needs {missing.group(1)}"
    return f"{target.__name__}: {text.split(': ', 1)[-1] if '()' in text else text}"


def _scripted(
    kind: str,
    options: dict[str, Any],
    settings: dict[str, Any],
    sample_rate: int | None,
    system_instruction: str | None,
):
    """The offline stand-ins (`pipecat_warm_transfer.testing`), for tests and rehearsals."""
    from pipecat_warm_transfer.testing.scripted_services import (
        ScriptedLLMService,
        ScriptedReply,
        ScriptedSTTService,
    )
    from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService

    if settings:
        raise ServiceBuildError(("settings",), "the scripted services take no settings")
    try:
        if kind == "stt":
            lines = options.pop("lines", [])
            if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
                raise ServiceBuildError(("options", "lines"), "expected a list of strings")
            return ScriptedSTTService(lines, **options)
        if kind == "tts":
            if sample_rate is not None:
                options.setdefault("sample_rate", sample_rate)
            return ScriptedToneTTSService(**options)
        replies = [
            _scripted_reply(i, r, ScriptedReply) for i, r in enumerate(options.pop("replies", []))
        ]
        return ScriptedLLMService(replies, **options)
    except TypeError as e:
        raise ServiceBuildError(("options",), _type_error(e, ScriptedLLMService)) from None


def _scripted_reply(index: int, reply: Any, reply_class: type):
    if not isinstance(reply, dict) or not set(reply) <= {"say", "call", "when"}:
        raise ServiceBuildError(
            ("options", "replies", index), "a reply is a mapping of say, call and when"
        )
    call = reply.get("call")
    if isinstance(call, dict):
        if "name" not in call or not set(call) <= {"name", "arguments"}:
            raise ServiceBuildError(
                ("options", "replies", index, "call"), "a call is a mapping of name and arguments"
            )
        call = (str(call["name"]), dict(call.get("arguments") or {}))
    elif isinstance(call, str):
        call = (call, {})
    elif call is not None:
        raise ServiceBuildError(
            ("options", "replies", index, "call"), "a call is a function name or {name, arguments}"
        )
    return reply_class(say=reply.get("say"), call=call, when=reply.get("when"))
