#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Scripted stand-ins for the cloud services of a call: STT and LLM.

They are real Pipecat services producing the frames the real ones would (transcriptions
at the end of each spoken segment; LLM text and function calls), driven by a script, so
the transfer code cannot tell the difference. The names say `Scripted` so nobody
mistakes them for speech recognition or a language model.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, fields
from typing import Any

from pipecat.frames.frames import (
    Frame,
    FunctionCallFromLLM,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import LLMService
from pipecat.services.settings import LLMSettings, STTSettings
from pipecat.services.stt_service import STTService
from pipecat.utils.time import time_now_iso8601

from pipecat_warm_transfer.audio.metrics import rms_dbfs

#: Words that make the scripted classifier call a greeting a voicemail.
VOICEMAIL_PHRASES = ("leave a message", "you've reached", "not available", "after the tone")

#: Input above this RMS level counts as speech.
SPEECH_DBFS = -40.0


class ScriptedSTTService(STTService):
    """Emits the next scripted line at the end of each spoken segment it hears.

    A segment is speech (RMS above `SPEECH_DBFS`) of at least `min_speech_secs`
    followed by `end_silence_secs` of quiet, as a VAD would see it. The audio decides
    *when* a transcript comes; the script decides *what* it says.
    """

    def __init__(
        self,
        lines: list[str],
        *,
        user_id: str = "user",
        min_speech_secs: float = 0.15,
        end_silence_secs: float = 0.3,
        **kwargs,
    ):
        """Initialize the service.

        Args:
            lines: What each successive segment "says".
            user_id: The `user_id` of the transcriptions.
            min_speech_secs: Shortest speech that counts as a segment.
            end_silence_secs: Quiet that ends a segment.
            **kwargs: Passed to `STTService`.
        """
        kwargs.setdefault("settings", _all_none(STTSettings))
        kwargs.setdefault("ttfs_p99_latency", end_silence_secs)
        super().__init__(**kwargs)
        self._lines = list(lines)
        self._user_id = user_id
        self._min_speech = min_speech_secs
        self._end_silence = end_silence_secs
        self._speech = 0.0
        self._quiet = 0.0
        self.transcribed: list[str] = []

    def can_generate_metrics(self) -> bool:
        """No metrics for a scripted service."""
        return False

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        """Track speech segments; yield a transcription when one ends."""
        secs = len(audio) / 2 / max(1, self.sample_rate)
        loud = rms_dbfs(audio) > SPEECH_DBFS
        if loud:
            self._speech += secs
            self._quiet = 0.0
        elif self._speech > 0:
            self._quiet += secs
            if self._quiet >= self._end_silence:
                long_enough = self._speech >= self._min_speech
                self._speech = self._quiet = 0.0
                if long_enough and self._lines:
                    text = self._lines.pop(0)
                    self.transcribed.append(text)
                    yield TranscriptionFrame(
                        text, self._user_id, time_now_iso8601(), finalized=True
                    )
        yield None


@dataclass
class ScriptedReply:
    """One scripted LLM turn.

    Parameters:
        say: Text the LLM answers with (None: no text).
        call: A function to call, `(name, arguments)` (None: no call).
        when: Only when the last user message contains this (case-insensitive);
            None matches any turn.
    """

    say: str | None = None
    call: tuple[str, dict[str, Any]] | None = None
    when: str | None = None


class ScriptedLLMService(LLMService):
    """Answers each context with the next matching scripted reply (text and/or a tool call).

    `run_inference` returns `summary` (for the transfer summary).
    """

    def __init__(
        self,
        replies: list[ScriptedReply],
        *,
        summary: str | None = None,
        fallback: str | None = None,
        **kwargs,
    ):
        """Initialize the service.

        Args:
            replies: The script, used in order; a reply with `when` waits for its words.
            summary: What `run_inference` returns (None: it returns None).
            fallback: Said when no reply matches (None: stay silent).
            **kwargs: Passed to `LLMService`.
        """
        kwargs.setdefault("settings", _all_none(LLMSettings))
        super().__init__(**kwargs)
        self._replies = list(replies)
        self._summary = summary
        self._fallback = fallback
        self.calls: list[str] = []
        self.contexts_seen = 0

    def can_generate_metrics(self) -> bool:
        """No metrics for a scripted service."""
        return False

    async def run_inference(self, context, max_tokens=None, system_instruction=None, **kwargs):
        """The scripted summary; a classifier's question gets a keyword-rule answer.

        Pipecat's `LLMClassifier` (behind `VoicemailDetector`) asks with a
        `response_schema`: each question is answered `voicemail` when the transcript
        holds one of `VOICEMAIL_PHRASES`, else `conversation`.
        """
        schema = kwargs.get("response_schema")
        if schema:
            # Judge only the classifier's input (the transcript), not its question text.
            text = _last_user_text(context)
            heard = text.split("Question ", 1)[0].removeprefix("Input:").lower()
            choice = "voicemail" if any(p in heard for p in VOICEMAIL_PHRASES) else "conversation"
            other = "conversation" if choice == "voicemail" else "voicemail"
            answer = {"choice": choice, "probabilities": {choice: 0.97, other: 0.03}}
            return json.dumps({name: answer for name in schema.get("properties", {})})
        return self._summary

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Answer `LLMContextFrame`s from the script; pass everything else on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self._answer(frame.context)
        else:
            await self.push_frame(frame, direction)

    def _next_reply(self, said: str) -> ScriptedReply | None:
        for i, reply in enumerate(self._replies):
            if reply.when is None or reply.when.lower() in said.lower():
                return self._replies.pop(i)
        return None

    async def _answer(self, context):
        self.contexts_seen += 1
        said = _last_user_text(context)
        if _last_is_tool_result(context):
            return  # a tool result: the scripted turn already said what it had to
        reply = self._next_reply(said)
        await self.push_frame(LLMFullResponseStartFrame())
        if reply is None:
            if self._fallback:
                await self.push_frame(LLMTextFrame(self._fallback))
        else:
            if reply.say:
                await self.push_frame(LLMTextFrame(reply.say))
            if reply.call:
                name, arguments = reply.call
                self.calls.append(name)
                await self.run_function_calls(
                    [
                        FunctionCallFromLLM(
                            function_name=name,
                            tool_call_id=f"call_{uuid.uuid4().hex[:8]}",
                            arguments=dict(arguments),
                            context=context,
                        )
                    ]
                )
        await self.push_frame(LLMFullResponseEndFrame())


def _all_none(settings_class):
    """A settings store with every field explicitly unset (a scripted service has none)."""
    return settings_class(**{f.name: None for f in fields(settings_class) if f.name != "extra"})


def _last_user_text(context) -> str:
    for message in reversed(context.get_messages()):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_is_tool_result(context) -> bool:
    messages = context.get_messages()
    return bool(messages) and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool"
