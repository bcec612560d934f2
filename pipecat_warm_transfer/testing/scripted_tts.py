#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A deterministic stand-in TTS for tests: voiced, syllable-shaped tones, no network.

`ScriptedToneTTSService` is a real Pipecat `TTSService` (same frames, same timing path),
so transfer code cannot tell it from a cloud TTS. Each voice has its own pitch, which lets
a test tell from the audio alone who was speaking (dominant frequency).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator

import numpy as np
from pipecat.frames.frames import Frame, TTSAudioRawFrame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService

#: Seconds of audio per character of text (about 150 words a minute).
SECS_PER_CHAR = 0.06
MIN_SECS = 0.3
MAX_SECS = 8.0


def synthesize_tone_speech(
    text: str, sample_rate: int, pitch_hz: float, level_dbfs: float = -20.0
) -> bytes:
    """Speech-shaped audio for `text`: a harmonic tone with 4 Hz syllable envelopes.

    Each syllable's tone starts at a phase drawn from the text, where the envelope is
    lowest: the pitch stays the voice's, but two sentences differ sample for sample and
    hardly correlate, so a test can tell *which* sentence a party heard (`speech_finder`).
    """
    secs = min(MAX_SECS, max(MIN_SECS, SECS_PER_CHAR * len(text)))
    t = np.arange(int(secs * sample_rate)) / sample_rate
    syllable = np.floor(t * 4.0).astype(int)
    phases = np.random.default_rng(zlib.crc32(text.encode())).uniform(
        0, 2 * np.pi, syllable[-1] + 1 if len(t) else 1
    )[syllable]
    voice = np.sin(2 * np.pi * pitch_hz * t + phases) + 0.3 * np.sin(
        4 * np.pi * pitch_hz * t + 2 * phases
    )
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    edge = np.minimum(1.0, np.minimum(t, secs - t) / 0.02)
    x = voice * syllables * edge
    rms = float(np.sqrt(np.mean(x * x))) or 1.0
    x = x / rms * 32768 * 10 ** (level_dbfs / 20)
    return np.clip(x, -32768, 32767).astype(np.int16).tobytes()


class ScriptedToneTTSService(TTSService):
    """Scripted TTS: speech-shaped tones at a voice's pitch (tests only, not speech)."""

    def __init__(
        self,
        *,
        pitch_hz: float = 220.0,
        sample_rate: int = 16000,
        silent_on: tuple[str, ...] = (),
        **kwargs,
    ):
        """Initialize the service.

        Args:
            pitch_hz: The voice's pitch; tests identify speakers by it.
            sample_rate: Output sample rate.
            silent_on: Sentences it fails on silently (no audio, no error), as a cloud
                TTS that drops a request would.
            **kwargs: Passed to `TTSService`.
        """
        kwargs.setdefault(
            "settings", TTSSettings(model=None, voice=f"tone-{pitch_hz:g}", language=None)
        )
        super().__init__(
            push_start_frame=True, push_stop_frames=True, sample_rate=sample_rate, **kwargs
        )
        self._pitch_hz = pitch_hz
        self._silent_on = silent_on
        self.spoken: list[str] = []

    def can_generate_metrics(self) -> bool:
        """No metrics for a scripted service."""
        return False

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        """Yield the tone speech for `text` in 20 ms frames."""
        self.spoken.append(text)
        if text in self._silent_on:
            return
        audio = synthesize_tone_speech(text, self.sample_rate, self._pitch_hz)
        chunk = 2 * self.sample_rate // 50
        for i in range(0, len(audio), chunk):
            yield TTSAudioRawFrame(
                audio=audio[i : i + chunk],
                sample_rate=self.sample_rate,
                num_channels=1,
                context_id=context_id,
            )
