#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Offline text-to-speech with eSpeak NG, for the demo.

The library and its voice data come from the `espeakng-loader` wheel (the `demo` extra), so
nothing is downloaded at run time. eSpeak NG is called through ctypes in synchronous mode:
`espeak_Synth` returns once the text is spoken, and a callback collects the int16 samples at
the library's native rate (22050 Hz), which are then resampled.

The library is process-global and not thread-safe: it is initialised once per process and
every synthesis holds a lock. `EspeakTTSService` runs synthesis in a worker thread, so the
event loop never blocks on it.

Voices are a language voice, optionally with a variant after `+`: `en-us`, `en-gb`,
`en-us+f3`, `en-gb+m3`. Variants are the files in `espeak-ng-data/voices/!v` (`f1`-`f5`,
`m1`-`m8`, `klatt`, ...); see `available_variants()`.

Example::

    tts = EspeakTTSService(voice="en-us", sample_rate=16000)
    pcm = synthesize("Please hold.", voice="en-us+f3")  # mono int16 bytes at 16 kHz
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from loguru import logger
from pipecat.frames.frames import ErrorFrame, Frame
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.tracing.service_decorators import traced_tts
from pipecat.utils.types import NOT_GIVEN, NotGiven, assert_given, is_given

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_BUFFER_MS = 100

#: Speaking rate limits (words per minute) and pitch limits accepted by eSpeak NG.
RATE_RANGE = (80, 450)
PITCH_RANGE = (0, 100)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class _Engine:
    """The process-wide eSpeak NG instance (use `_engine()`; every call holds `_LOCK`)."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise RuntimeError(
                "eSpeak NG unavailable: the 'espeakng-loader' package is not installed "
                "(pip install 'pipecat-warm-transfer[demo]')"
            ) from None
        lib_path = espeakng_loader.get_library_path()
        try:
            data_path = espeakng_loader.get_data_path()
        except RuntimeError as e:
            raise RuntimeError(f"eSpeak NG unavailable: {e}") from None
        try:
            lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise RuntimeError(f"eSpeak NG unavailable: cannot load {lib_path}: {e}") from None

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        ]
        lib.espeak_Synth.restype = ctypes.c_int

        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise RuntimeError(
                f"eSpeak NG unavailable: espeak_Initialize failed with data {data_path}"
            )

        self._lib = lib
        self.sample_rate: int = rate
        self.data_path = Path(data_path)
        self._sink: Callable[[bytes], None] | None = None
        # Kept referenced for the life of the process: the library holds the pointer.
        self._callback = _SynthCallback(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self._voices = self._list_voices()
        self._resolved: dict[str, bytes] = {}
        logger.debug(f"eSpeak NG loaded from {lib_path} ({rate} Hz, {len(self._voices)} voices)")

    def _on_samples(self, wav, num_samples, _events) -> int:
        try:
            if wav and num_samples > 0 and self._sink is not None:
                self._sink(ctypes.string_at(wav, num_samples * 2))
            return 0
        except Exception:  # never let an exception unwind through C
            return 1  # abort synthesis

    def _list_voices(self) -> list[tuple[str, str, list[tuple[int, str]]]]:
        """(identifier, name, [(priority, language), ...]) for every installed voice."""
        voices = []
        table = self._lib.espeak_ListVoices(None)
        i = 0
        while table[i]:
            v = table[i].contents
            languages = []
            p = v.languages
            while p:
                priority = ctypes.c_ubyte.from_address(p).value
                if priority == 0:
                    break
                lang = ctypes.string_at(p + 1)
                languages.append((priority, lang.decode()))
                p += 2 + len(lang)
            voices.append(((v.identifier or b"").decode(), (v.name or b"").decode(), languages))
            i += 1
        return voices

    def variants(self) -> list[str]:
        return sorted(p.name for p in (self.data_path / "voices" / "!v").iterdir() if p.is_file())

    def resolve(self, voice: str) -> bytes:
        """Map `lang[+variant]` to an installed `identifier[+variant]`, or raise ValueError."""
        if voice in self._resolved:
            return self._resolved[voice]
        base, _, variant = voice.partition("+")
        key = base.strip().lower()
        identifier = None
        for ident, name, _langs in self._voices:
            if key in (ident.lower(), ident.rsplit("/", 1)[-1].lower(), name.lower()):
                identifier = ident
                break
        if identifier is None:
            ranked = [
                (priority, ident)
                for ident, _name, langs in self._voices
                for priority, lang in langs
                if lang == key
            ]
            if ranked:
                identifier = min(ranked)[1]
        if identifier is None:
            raise ValueError(f"eSpeak NG has no voice {base!r} (try 'en-us' or 'en-gb')")
        if variant:
            if variant not in self.variants():
                raise ValueError(f"eSpeak NG has no voice variant {variant!r} (try 'f3' or 'm3')")
            identifier = f"{identifier}+{variant}"
        self._resolved[voice] = identifier.encode()
        return self._resolved[voice]

    def synthesize(self, text: str, voice: str, pitch: int, rate: int) -> bytes:
        """Speak `text`; returns mono int16 at `self.sample_rate` (call with `_LOCK` held)."""
        chunks: list[bytes] = []
        name = self.resolve(voice)
        if self._lib.espeak_SetVoiceByName(name) != _EE_OK:
            raise ValueError(f"eSpeak NG could not select voice {voice!r}")
        self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        data = ctypes.create_string_buffer(text.encode("utf-8"))
        self._sink = chunks.append
        try:
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
        finally:
            self._sink = None
        if err != _EE_OK:
            raise RuntimeError(f"eSpeak NG synthesis failed (error {err})")
        return b"".join(chunks)


_LOCK = threading.Lock()
_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    """The process's eSpeak NG instance, loaded on first use (call with `_LOCK` held)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def native_sample_rate() -> int:
    """The output rate of eSpeak NG (22050 Hz).

    Raises:
        RuntimeError: The library cannot be loaded.
    """
    with _LOCK:
        return _engine().sample_rate


def available_variants() -> list[str]:
    """Names of the bundled voice variants (`f1`..`f5`, `m1`..`m8`, ...).

    Raises:
        RuntimeError: The library cannot be loaded.
    """
    with _LOCK:
        return _engine().variants()


def check_voice(voice: str) -> None:
    """Check that a voice (`lang[+variant]`) is installed.

    Raises:
        ValueError: The voice or variant does not exist.
        RuntimeError: The library cannot be loaded.
    """
    with _LOCK:
        _engine().resolve(voice)


def _check_range(what: str, value: int, bounds: tuple[int, int]):
    if not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"eSpeak NG {what} must be in {bounds[0]}..{bounds[1]}, got {value}")


def synthesize_native(
    text: str, *, voice: str = "en-us", pitch: int = 50, rate: int = 165
) -> bytes:
    """Speak `text` at eSpeak NG's native rate (see `native_sample_rate()`).

    Blocking; thread-safe.

    Args:
        text: Plain text (UTF-8; no SSML).
        voice: `lang[+variant]`, e.g. `en-us`, `en-gb`, `en-us+f3`.
        pitch: Base pitch, 0-100 (50 is the voice's normal pitch).
        rate: Speaking rate in words per minute, 80-450.

    Returns:
        Mono int16 PCM bytes.

    Raises:
        ValueError: Unknown voice, or pitch/rate out of range.
        RuntimeError: The library cannot be loaded, or synthesis failed.
    """
    _check_range("pitch", pitch, PITCH_RANGE)
    _check_range("rate", rate, RATE_RANGE)
    with _LOCK:
        return _engine().synthesize(text, voice, pitch, rate)


def synthesize(
    text: str,
    *,
    voice: str = "en-us",
    pitch: int = 50,
    rate: int = 165,
    sample_rate: int = 16000,
) -> bytes:
    """Speak `text` and return mono int16 PCM at `sample_rate` (for pre-rendered lines).

    Blocking; thread-safe. Use `EspeakTTSService` inside a pipeline.

    Args:
        text: Plain text (UTF-8; no SSML).
        voice: `lang[+variant]`, e.g. `en-us`, `en-gb`, `en-us+f3`.
        pitch: Base pitch, 0-100 (50 is the voice's normal pitch).
        rate: Speaking rate in words per minute, 80-450.
        sample_rate: Output sample rate in Hz.

    Returns:
        Mono int16 PCM bytes.

    Raises:
        ValueError: Unknown voice, or pitch/rate out of range.
        RuntimeError: The library cannot be loaded, or synthesis failed.
    """
    pcm = synthesize_native(text, voice=voice, pitch=pitch, rate=rate)
    native = native_sample_rate()
    if sample_rate == native or not pcm:
        return pcm
    audio = np.frombuffer(pcm, dtype=np.int16)
    out = soxr.resample(audio, native, sample_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16).tobytes()


@dataclass
class EspeakTTSSettings(TTSSettings):
    """Settings for `EspeakTTSService` (all can be changed at run time).

    Parameters:
        pitch: Base pitch, 0-100 (50 is the voice's normal pitch).
        rate: Speaking rate in words per minute, 80-450.
    """

    pitch: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)
    rate: int | NotGiven = field(default_factory=lambda: NOT_GIVEN)


class EspeakTTSService(TTSService):
    """Offline Pipecat TTS with eSpeak NG (robotic, but real speech, no network).

    Synthesis runs in a worker thread under a process-wide lock; the audio is resampled from
    22050 Hz to the service's sample rate. Several instances with different voices can share
    one process (e.g. a caller, a bot and a human in the demo).

    Example::

        tts = EspeakTTSService(voice="en-us+f3", pitch=60, rate=170)
    """

    Settings = EspeakTTSSettings
    _settings: Settings

    def __init__(
        self,
        *,
        voice: str = "en-us",
        pitch: int = 50,
        rate: int = 165,
        sample_rate: int | None = 16000,
        **kwargs,
    ):
        """Initialize the service (loads eSpeak NG if not loaded yet).

        Args:
            voice: `lang[+variant]`, e.g. `en-us`, `en-gb`, `en-us+f3`, `en-gb+m3`.
            pitch: Base pitch, 0-100 (50 is the voice's normal pitch).
            rate: Speaking rate in words per minute, 80-450.
            sample_rate: Output sample rate (None: the pipeline's output rate).
            **kwargs: Passed to `TTSService` (e.g. `settings=EspeakTTSService.Settings(...)`
                overrides the arguments above).

        Raises:
            RuntimeError: eSpeak NG cannot be loaded (one line naming the cause).
            ValueError: Unknown voice or variant, or pitch/rate out of range.
        """
        settings = self.Settings(model=None, voice=voice, language=None, pitch=pitch, rate=rate)
        delta = kwargs.pop("settings", None)
        if delta is not None:
            settings.apply_update(delta)
        _check_range("pitch", assert_given(settings.pitch), PITCH_RANGE)
        _check_range("rate", assert_given(settings.rate), RATE_RANGE)
        check_voice(str(settings.voice))
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            sample_rate=sample_rate,
            settings=settings,
            **kwargs,
        )
        self._native_rate = native_sample_rate()
        #: Every text synthesized, in order: what the service said, as text.
        self.spoken: list[str] = []

    def can_generate_metrics(self) -> bool:
        """Whether this service reports TTFB and usage metrics.

        Returns:
            True.
        """
        return True

    async def _update_settings(self, delta: Settings) -> dict[str, Any]:
        """Validate and apply a settings delta (used from the next sentence on)."""
        if is_given(delta.voice) and delta.voice is not None:
            await asyncio.to_thread(check_voice, delta.voice)
        if is_given(delta.pitch):
            _check_range("pitch", delta.pitch, PITCH_RANGE)
        if is_given(delta.rate):
            _check_range("rate", delta.rate, RATE_RANGE)
        return await super()._update_settings(delta)

    @traced_tts
    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame, None]:
        """Speak `text` with eSpeak NG.

        Args:
            text: The text to speak.
            context_id: The TTS context this audio belongs to.

        Yields:
            Frame: `TTSAudioRawFrame`s at the service's sample rate, or an `ErrorFrame`.
        """
        self.spoken.append(text)
        try:
            await self.start_tts_usage_metrics(text)
            pcm = await asyncio.to_thread(
                synthesize_native,
                text,
                voice=str(self._settings.voice),
                pitch=int(assert_given(self._settings.pitch)),
                rate=int(assert_given(self._settings.rate)),
            )
            await self.stop_ttfb_metrics()
            async for frame in self._stream_audio_frames_from_iterator(
                _chunks(pcm, self._native_rate),
                in_sample_rate=self._native_rate,
                context_id=context_id,
            ):
                yield frame
        except Exception as e:
            logger.error(f"{self} exception: {e}")
            yield ErrorFrame(error=f"eSpeak NG TTS error: {e}")
        finally:
            await self.stop_ttfb_metrics()


async def _chunks(pcm: bytes, sample_rate: int, ms: int = 100) -> AsyncIterator[bytes]:
    """`pcm` in pieces of `ms` milliseconds (so frames are not one huge buffer)."""
    step = sample_rate * ms // 1000 * 2
    for i in range(0, len(pcm), step):
        yield pcm[i : i + step]
