#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Hold-music mixer for a Pipecat output transport.

`HoldMusicMixer` is a `BaseAudioMixer`: install it as the caller output transport's
`audio_out_mixer` and switch it with `MixerEnableFrame`. Compared with Pipecat's
`SoundfileMixer` it resamples any file to the transport rate, downmixes stereo,
normalises loudness, loops without a click, fades in and out, ducks under the bot's
voice, saturates instead of wrapping, and pays no arithmetic for a held frame with
silent input (a slice of a precomputed loop).

Pipecat's output loop asks a mixer for a frame whenever its queue is empty, and a
transport that queues (LiveKit's `AudioSource` takes a second of audio at once) would let
it run that far ahead of real time: everything the bot says next would wait behind it.
So the mixer writes nothing while no music plays (the transport's own silence stays
the transport's: LiveKit plays silence when its source runs dry), and hands out its own
audio (music over the transport's silence) in pieces of `PIECE_SECS`, only when the
transport has less than `MAX_LEAD_SECS` left to play. Speech then waits behind at most
one piece and the lead, and the music stream stays sample-continuous.

With `shared_engine`, a mixer in its steady held state also hands its call to the
process's `SharedHoldEngine` (see `hold_engine.py`) and parks its transport's audio task
until something else must be played, so a held call costs no per-frame pipeline work.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
from loguru import logger
from pipecat.audio.mixers.base_audio_mixer import BaseAudioMixer
from pipecat.frames.frames import MixerControlFrame, MixerEnableFrame, MixerUpdateSettingsFrame

from pipecat_warm_transfer.audio.hold_engine import HoldChannel, HoldSink, SharedHoldEngine
from pipecat_warm_transfer.audio.hold_sink import hold_sink_for
from pipecat_warm_transfer.audio.music_source import (
    HoldMusicError,
    MusicLoop,
    load_music_loop,
    resolve_source,
    validate_level,
)

#: Input frames whose peak is above this level count as speech and duck the music.
DUCK_THRESHOLD_DBFS = -42.0
#: How fast the music ducks when speech starts, and comes back when it stops.
DUCK_ATTACK_MS = 20.0
DUCK_RELEASE_MS = 250.0
#: Speech-free time before the music starts to come back (bridges pauses between words).
DUCK_HOLD_MS = 200.0
#: Ramp for level and source changes while playing.
CHANGE_RAMP_MS = 50.0

#: Quiet time (no frame on its way to the transport) before a held call parks.
PARK_AFTER_SECS = 0.5
#: A parked transport's audio task still looks at its queue this often, in case a frame
#: reached the transport without waking the mixer (e.g. queued into it directly).
MAX_PARK_SECS = 1.0

#: Own audio left queued in a transport when the mixer hands out the next piece: enough
#: to cover the event loop's timer jitter and LiveKit's 10 ms playout steps.
MAX_LEAD_SECS = 0.015
#: Own audio is handed out in pieces this long (on transports that queue), so speech
#: waits behind at most `MAX_LEAD_SECS` plus one piece.
PIECE_SECS = 0.020
#: A woken frame reaches the transport's audio queue a little after `wake()` (it passes
#: the transport's own input queue first): for this long after a wake the mixer looks
#: at the transport's queue again every `WOKEN_POLL_SECS` instead of resting.
WOKEN_SECS = 0.050
WOKEN_POLL_SECS = 0.002
#: A parked call keeps this much audio queued at each engine tick (covers late ticks).
ENGINE_MARGIN_SECS = 0.015

MAX_DUCK_DB = 60.0
MAX_FADE_MS = 10_000.0

_SETTINGS_KEYS = ("level_dbfs", "source", "duck_db")

_I32_MIN, _I32_MAX = np.int32(-32768), np.int32(32767)
_F32_MIN, _F32_MAX = np.float32(-32768.0), np.float32(32767.0)


def _validate_duck(duck_db: float) -> float:
    try:
        value = float(duck_db)
    except (TypeError, ValueError):
        raise HoldMusicError(f"duck_db: expected a number of dB, got {duck_db!r}") from None
    if not np.isfinite(value) or value < 0.0 or value > MAX_DUCK_DB:
        raise HoldMusicError(f"duck_db: {duck_db!r} is out of range (0 to {MAX_DUCK_DB:g} dB)")
    return value


def _validate_fade(fade_ms: float) -> float:
    try:
        value = float(fade_ms)
    except (TypeError, ValueError):
        raise HoldMusicError(f"fade_ms: expected milliseconds, got {fade_ms!r}") from None
    if not np.isfinite(value) or value < 0.0 or value > MAX_FADE_MS:
        raise HoldMusicError(f"fade_ms: {fade_ms!r} is out of range (0 to {MAX_FADE_MS:g} ms)")
    return value


def _ramp(start: float, target: float, step: float, n: int) -> tuple[np.ndarray, float]:
    """Per-sample linear ramp from `start` toward `target` by `step` a sample, clamped."""
    if step <= 0.0:
        return np.full(n, target, dtype=np.float32), target
    direction = 1.0 if target > start else -1.0
    ramp = start + direction * step * np.arange(1, n + 1, dtype=np.float32)
    ramp = np.minimum(ramp, target) if direction > 0 else np.maximum(ramp, target)
    return ramp.astype(np.float32, copy=False), float(ramp[-1])


class MixerStartAfterSpeechFrame(MixerControlFrame):
    """Enable the music at the first non-speech sample of the output.

    Sent while the last words before a hold are still queued in the output transport
    (mixer control frames overtake queued audio), so the music fades in exactly where the
    speech ends: no dead air, whatever the transport's queueing delay.
    """


class HoldMusicMixer(BaseAudioMixer):
    """Mixes looped hold music into a Pipecat output transport's audio.

    Disabled, the output is the input, byte for byte. Enabled, the music plays at
    `level_dbfs` RMS over silent input and `duck_db` lower under non-silent input
    (the bot speaking while the caller is held). Enabling and disabling fade over
    `fade_ms`. Settings (`MixerUpdateSettingsFrame`): `level_dbfs`, `source`,
    `duck_db`; unknown keys and bad values are logged once and ignored.
    """

    def __init__(
        self,
        source: str | os.PathLike | None = None,
        *,
        level_dbfs: float = -24.0,
        fade_ms: float = 250,
        duck_db: float = 12.0,
        enabled: bool = False,
        telephone_band: bool = False,
        shared_engine: SharedHoldEngine | bool = False,
    ):
        """Initialize the mixer and check its settings.

        Args:
            source: A wav/flac/ogg/mp3 file at any rate, mono or stereo, or None for the
                bundled music.
            level_dbfs: RMS level of the music over silent input.
            fade_ms: Fade-in and fade-out duration on enable and disable.
            duck_db: How far the music drops while the input is not silent.
            enabled: Whether the music plays (faded in) from the start.
            telephone_band: Band-limit the music to 300-3400 Hz, as a phone would.
            shared_engine: Hand steady held music to a `SharedHoldEngine` (True: the
                running event loop's). Needs the output transport bound (`bind_output`,
                done by `WarmTransfer.caller_output()` / `HoldMusicLink`) and a
                processor before the transport that calls `wake()` on each frame.

        Raises:
            HoldMusicError: A setting is out of range, or the file is missing or cannot
                be decoded.
        """
        self._source = None if source is None else resolve_source(source)
        self._level_dbfs = validate_level(level_dbfs)
        self._fade_ms = _validate_fade(fade_ms)
        self._duck_db = _validate_duck(duck_db)
        self._telephone_band = telephone_band
        self._enabled = enabled
        self._start_after_speech = False
        self._warned: set[str] = set()

        self._sample_rate = 0
        self._loop: MusicLoop | None = None
        self._ducked: MusicLoop | None = None
        self._pos = 0
        self._fade = 0.0  # 0 = silent, 1 = full level (linear, shaped when applied)
        self._duck = 1.0  # current duck gain
        self._duck_floor = 1.0
        self._speech_quiet = 0  # samples since the last speech frame
        self._change_gain = 1.0  # ramps level/source changes
        self._old_loop: MusicLoop | None = None  # crossfade source on a source change
        self._old_pos = 0
        self._xfade = 0.0  # 1 = all old loop, ramps to 0
        self._zeros = b""
        self._fade_step = 0.0
        self._attack_step = 0.0
        self._release_step = 0.0
        self._change_step = 0.0
        self._hold_samples = 0
        self._threshold = 0

        self._shared_engine = shared_engine
        self._engine: SharedHoldEngine | None = None
        self._sink: HoldSink | None = None
        self._channel: HoldChannel | None = None
        self._park_future: asyncio.Future | None = None
        self._last_wake = time.monotonic()
        self._last_input: bytes | None = None
        self._silence: bytes | None = None  # the transport's reused mixer-only buffer
        self._wakes = 0  # wake() calls so far
        self._wakes_seen = 0  # wakes before the transport last looked at its queue
        self._inflight: asyncio.Future | None = None  # the engine's last write, on leaving
        self._play_end = 0.0  # monotonic time all audio handed out so far has played

    @property
    def enabled(self) -> bool:
        """Whether the music is on (or fading in)."""
        return self._enabled

    @property
    def playing(self) -> bool:
        """Whether any music reaches the output (on, or still fading out)."""
        return self._enabled or self._fade > 0.0

    @property
    def parked(self) -> bool:
        """Whether the shared hold engine is playing this call right now."""
        return self._channel is not None

    @property
    def shared_engine(self) -> SharedHoldEngine | bool:
        """The `shared_engine` setting (True: the running event loop's engine)."""
        return self._shared_engine

    def bind_output(self, output) -> bool:
        """Let the engine write to `output` (the transport this mixer is installed in).

        Returns:
            Whether the transport offers a write the engine can use (see `hold_sink.py`).
        """
        self._sink = hold_sink_for(output)
        return self._sink is not None

    def bind_sink(self, sink: HoldSink | None):
        """Let the engine write to `sink` (for transports `bind_output` does not know)."""
        self._sink = sink

    def wake(self):
        """Something is on its way to the transport: take the call back from the engine.

        Called for every frame passing the processor before the output transport; cheap
        when not parked. The call parks again after `PARK_AFTER_SECS` of quiet.
        """
        self._last_wake = time.monotonic()
        self._wakes += 1
        if self._channel is not None:
            self._leave_engine()
        future = self._park_future
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def level_dbfs(self) -> float:
        """The music's RMS level over silent input."""
        return self._level_dbfs

    @property
    def sample_rate(self) -> int:
        """The transport sample rate given to `start()` (0 before)."""
        return self._sample_rate

    async def start(self, sample_rate: int):
        """Prepare (or take from the shared cache) the music at the transport rate.

        Args:
            sample_rate: The output transport's sample rate in Hz.
        """
        self._sample_rate = int(sample_rate)
        rate = self._sample_rate
        self._fade_step = 1.0 / max(1.0, self._fade_ms * rate / 1000.0)
        self._attack_step = 1.0 / max(1.0, DUCK_ATTACK_MS * rate / 1000.0)
        self._release_step = 1.0 / max(1.0, DUCK_RELEASE_MS * rate / 1000.0)
        self._change_step = 1.0 / max(1.0, CHANGE_RAMP_MS * rate / 1000.0)
        self._hold_samples = int(DUCK_HOLD_MS * rate / 1000.0)
        self._threshold = int(32768 * 10 ** (DUCK_THRESHOLD_DBFS / 20.0))
        self._loop, self._ducked = await asyncio.to_thread(
            self._load, self._source, self._level_dbfs, self._duck_db
        )
        self._duck_floor = 10.0 ** (-self._duck_db / 20.0)
        self._pos = 0

    async def stop(self):
        """Release this mixer's state (the shared music cache stays)."""
        self.wake()
        self._loop = self._ducked = self._old_loop = None
        self._fade = 0.0
        self._duck = 1.0
        self._xfade = 0.0

    async def process_frame(self, frame: MixerControlFrame):
        """Enable/disable the music or update its settings.

        Args:
            frame: A `MixerEnableFrame` or `MixerUpdateSettingsFrame`.
        """
        self.wake()
        if isinstance(frame, MixerStartAfterSpeechFrame):
            self._start_after_speech = not self._enabled
        elif isinstance(frame, MixerEnableFrame):
            self._enabled = bool(frame.enable)
            self._start_after_speech = False
        elif isinstance(frame, MixerUpdateSettingsFrame):
            await self._update_settings(frame.settings)

    async def mix(self, audio: bytes) -> bytes:
        """Mix the music into a frame of 16-bit mono PCM.

        Args:
            audio: The transport's audio, any whole number of samples.

        Returns:
            The mixed audio (the input object itself when no music plays), or a part of
            it; empty when the transport should look at its queue again (after a wait
            for real time to catch up, or a park).
        """
        inflight, self._inflight = self._inflight, None
        if inflight is not None and not inflight.done():
            # LiveKit takes one capture at a time: let the engine's last write land first.
            await asyncio.wait([inflight])
        if self._is_own_silence(audio):
            # Park only with little queued: the engine keeps what it finds at the join.
            if self._channel is not None:
                waited = await self._park(audio)
            else:
                waited = await self._wait_for_room() or await self._maybe_park(audio)
            if waited:
                self._wakes_seen = self._wakes
                return b""
            audio = audio[: self._piece_bytes(len(audio))]
        elif self._channel is not None:
            self._leave_engine()  # a frame reached us without a wake: play it
        out = self.mix_now(audio)
        self._handed_out(len(out) // 2)
        self._wakes_seen = self._wakes
        return out

    def _is_own_silence(self, audio: bytes) -> bool:
        """Whether `audio` is the transport's own silence (nothing queued to play).

        Pipecat's output loop passes the same all-zero buffer each time its queue is
        empty; the first time it is seen twice, it is remembered.
        """
        if audio is self._silence:
            return True
        last, self._last_input = self._last_input, audio
        if audio is last and audio.count(0) == len(audio):
            self._silence = audio
            return True
        return False

    async def _wait_for_room(self) -> bool:
        """Wait while the transport needs nothing from us; True if we waited."""
        music = self._loop is not None and (self.playing or self._start_after_speech)
        if not music and self._sink is not None:
            # No music: add nothing, as a transport without a mixer would. Every frame
            # on its way to the transport wakes us (`wake()`).
            await self._rest(MAX_PARK_SECS)
            return True
        lead = self._lead()
        if lead > MAX_LEAD_SECS:
            await self._rest(lead - MAX_LEAD_SECS)
            return True
        return False

    def unplayed_secs(self) -> float:
        """Seconds of audio handed to the transport that the caller has not heard yet.

        Pipecat reports speech stopped when its last frame is written; on LiveKit that is
        up to the source's queue before it is heard. Read from the transport's queue when
        it has one, else from what this mixer handed out.
        """
        return self._lead()

    def _lead(self) -> float:
        """Seconds of audio the transport still has to play."""
        queued = getattr(self._sink, "queued", None)
        if queued is not None:
            return queued()
        return max(0.0, self._play_end - time.monotonic())

    def _piece_bytes(self, size: int) -> int:
        """Bytes of own audio to hand out: a transport that queues gets short pieces."""
        if not self._sample_rate or getattr(self._sink, "paced", False):
            return size
        return min(size, 2 * max(1, int(PIECE_SECS * self._sample_rate)))

    def _handed_out(self, samples: int):
        if self._sample_rate:
            now = time.monotonic()
            self._play_end = max(self._play_end, now) + samples / self._sample_rate

    async def _rest(self, secs: float):
        """Sleep up to `secs`, or until something is on its way to the transport."""
        if self._wakes != self._wakes_seen:
            return  # woken since the transport last looked: it should look again
        if time.monotonic() - self._last_wake < WOKEN_SECS:
            secs = min(secs, WOKEN_POLL_SECS)  # the frame may not have reached the queue yet
        loop = asyncio.get_running_loop()
        future = self._park_future = loop.create_future()
        timer = loop.call_later(secs, _resolve, future)
        try:
            await future
        finally:
            timer.cancel()
            self._park_future = None

    async def _maybe_park(self, audio: bytes) -> bool:
        return self._may_park(audio) and await self._park(audio)

    def _may_park(self, audio: bytes) -> bool:
        """Steady music over the transport's own silence, quiet for a while."""
        if not self._shared_engine or self._sink is None:
            return False
        return (
            self._loop is not None
            and self._steady()
            and self._duck >= 1.0
            and not self._start_after_speech
            and 0 < len(audio) // 2 <= self._loop.pad
            and time.monotonic() - self._last_wake >= PARK_AFTER_SECS
        )

    async def _park(self, audio: bytes) -> bool:
        """Let the engine play this call and wait until woken; False if not parked."""
        frame_samples = self._piece_bytes(len(audio)) // 2
        if self._channel is None and not await self._join_engine(frame_samples):
            return False
        try:
            await self._rest(MAX_PARK_SECS)
        except asyncio.CancelledError:
            self._leave_engine()
            raise
        return True

    async def _join_engine(self, frame_samples: int) -> bool:
        engine = self._shared_engine
        if not isinstance(engine, SharedHoldEngine):
            engine = SharedHoldEngine.for_running_loop()
        loop, sink = self._loop, self._sink
        lead = engine.lead(loop, frame_samples)
        lag = getattr(sink, "lag", None)
        if lag is not None:
            # A transport running late (a busy event loop) is short of audio: catch it
            # up now, as its own paced write would, instead of freezing the deficit.
            lead = min(lead + int(round(lag() * loop.sample_rate)), loop.pad)
        queued = getattr(sink, "queued", None)
        if queued is not None:
            # A queueing transport plays what it holds: top it up so that at each tick
            # it still holds ENGINE_MARGIN_SECS (a late tick must not run it dry).
            short = max(0.0, ENGINE_MARGIN_SECS - queued())
            lead = min(lead + int(round(short * loop.sample_rate)), loop.pad)
        if lead:
            # Up to the engine's next tick the music goes out through our own write.
            woken_at = self._last_wake
            written = sink.write(loop.take(self._pos, lead).tobytes())
            if not isinstance(written, bool) and written is not None:
                await written
            self._advance(lead)
            changed = self._loop is not loop or self._sink is not sink or not self._steady()
            if changed or self._last_wake != woken_at:
                return False  # woken or changed while an async write was under way
        self._engine = engine
        self._channel = engine.join(
            loop, frame_samples, self._pos, sink, on_dropped=self._on_engine_dropped
        )
        return True

    def _leave_engine(self):
        channel, self._channel = self._channel, None
        if channel is not None and self._engine is not None:
            self._inflight = channel.pending
            position = self._engine.leave(channel)
            if position is not None and self._loop is not None:
                self._pos = position % self._loop.length

    def _on_engine_dropped(self, channel: HoldChannel):
        """The engine could not write to our sink: stop using it, play on our own."""
        if channel is self._channel:
            self._sink = None
            self.wake()

    def mix_now(self, audio: bytes) -> bytes:
        """Synchronous `mix`, for callers outside an event loop (benchmarks, offline tools)."""
        if self._start_after_speech and self._loop is not None:
            self._maybe_start_after_speech(audio)
        if self._loop is None or not (self._enabled or self._fade > 0.0):
            return audio
        n = len(audio) // 2
        if n == 0:
            return audio
        tail = audio[2 * n :]
        body = audio[: 2 * n] if tail else audio
        out = self._mix_steady(body, n) if self._steady() else None
        if out is None:
            out = self._mix_general(np.frombuffer(body, dtype=np.int16))
        return out + tail if tail else out

    def _maybe_start_after_speech(self, audio: bytes):
        x = np.frombuffer(audio[: len(audio) - len(audio) % 2], dtype=np.int16)
        if x.size and not self._is_speech(x):
            self._start_after_speech = False
            self._enabled = True

    def _steady(self) -> bool:
        """On, faded in, no level or source change under way: the cheap paths apply."""
        return (
            self._enabled
            and self._fade >= 1.0
            and self._old_loop is None
            and self._change_gain == 1.0
        )

    def _mix_steady(self, body: bytes, n: int) -> bytes | None:
        """The per-frame fast paths; None when the frame needs the general path."""
        if len(self._zeros) != len(body):
            self._zeros = bytes(len(body))
        if body == self._zeros:
            # Held with silent input: the music is already scaled, a slice is the frame.
            if self._duck >= 1.0:
                loop = self._loop
            elif self._duck <= self._duck_floor and self._speech_quiet + n < self._hold_samples:
                loop = self._ducked  # a pause between words: stay ducked
            else:
                return None
            out = loop.take(self._pos, n).tobytes()
            self._advance(n)
            self._speech_quiet += n
            return out

        x = np.frombuffer(body, dtype=np.int16)
        peak = int(np.abs(x).view(np.uint16).max())
        if peak > self._threshold:
            if self._duck > self._duck_floor:
                return None  # ducking starts: ramp in the general path
            self._speech_quiet = 0
            loop = self._ducked
        elif self._duck >= 1.0:
            self._speech_quiet += n
            loop = self._loop  # quiet, non-silent input (noise): no ducking
        else:
            return None
        music = loop.take(self._pos, n)
        self._advance(n)
        if peak + loop.peak <= 32767:
            return np.add(x, music).tobytes()  # cannot overflow: no clipping needed
        mixed = np.add(x, music, dtype=np.int32)
        np.clip(mixed, _I32_MIN, _I32_MAX, out=mixed)
        return mixed.astype(np.int16).tobytes()

    def _is_speech(self, x: np.ndarray) -> bool:
        return int(np.abs(x).view(np.uint16).max()) > self._threshold

    def _advance(self, n: int):
        self._pos = (self._pos + n) % self._loop.length
        if self._old_loop is not None:
            self._old_pos = (self._old_pos + n) % self._old_loop.length

    def _gain_ramp(self, x: np.ndarray) -> np.ndarray | float:
        """This frame's music gain: fade x duck x change, a scalar when nothing moves."""
        n = len(x)
        gain: np.ndarray | float = 1.0

        # Fade in/out on an equal-power (sine) curve: no dead air at the start of a fade-in.
        target = 1.0 if self._enabled else 0.0
        if self._fade != target:
            fade, self._fade = _ramp(self._fade, target, self._fade_step, n)
            gain = np.sin(np.float32(0.5 * np.pi) * fade)

        # Ducking: speech pulls the music down fast; it comes back after a short hold.
        if self._is_speech(x):
            self._speech_quiet = 0
            duck_target, step = self._duck_floor, self._attack_step * (1.0 - self._duck_floor)
        else:
            self._speech_quiet += n
            held = self._speech_quiet < self._hold_samples
            duck_target = self._duck if held else 1.0
            step = self._release_step * (1.0 - self._duck_floor)
        if self._duck != duck_target:
            duck, self._duck = _ramp(self._duck, duck_target, step, n)
            gain = gain * duck
        elif self._duck != 1.0:
            gain = gain * np.float32(self._duck)

        if self._change_gain != 1.0:
            change, self._change_gain = _ramp(self._change_gain, 1.0, self._change_step, n)
            gain = gain * change
        return gain

    def _mix_general(self, x: np.ndarray) -> bytes:
        """Mix with per-sample gain ramps (fades, ducking transitions, changes)."""
        n = len(x)
        gain = self._gain_ramp(x)
        music = self._loop.take(self._pos, n).astype(np.float32)
        if self._old_loop is not None:
            weight, self._xfade = _ramp(self._xfade, 0.0, self._change_step, n)
            old = self._old_loop.take(self._old_pos, n).astype(np.float32)
            music += (old - music) * weight
            if self._xfade <= 0.0:
                self._old_loop = None
        self._advance(n)
        if self._fade <= 0.0 and not self._enabled:
            self._duck = 1.0
            self._speech_quiet = self._hold_samples

        music *= gain
        music += x
        np.clip(music, _F32_MIN, _F32_MAX, out=music)
        return music.astype(np.int16).tobytes()

    def _load(
        self, source: os.PathLike | None, level_dbfs: float, duck_db: float
    ) -> tuple[MusicLoop, MusicLoop]:
        rate = self._sample_rate
        band = self._telephone_band
        loop = load_music_loop(source, rate, level_dbfs, telephone_band=band)
        ducked = load_music_loop(
            source, rate, level_dbfs, gain=10.0 ** (-duck_db / 20.0), telephone_band=band
        )
        return loop, ducked

    def _warn_once(self, key: str, message: str):
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(f"{self}: {message} (ignored)")

    async def _update_settings(self, settings: dict):
        for key, value in settings.items():
            if key not in _SETTINGS_KEYS:
                self._warn_once(f"key:{key}", f"unknown mixer setting {key!r}")
                continue
            try:
                await self._apply_setting(key, value)
            except HoldMusicError as e:
                self._warn_once(f"value:{key}:{value!r}", str(e))

    async def _apply_setting(self, key: str, value):
        if key == "duck_db":
            duck_db = _validate_duck(value)
            if self._sample_rate:
                _, self._ducked = await asyncio.to_thread(
                    self._load, self._source, self._level_dbfs, duck_db
                )
            self._duck_floor = 10.0 ** (-duck_db / 20.0)
            self._duck = max(self._duck, self._duck_floor) if self._duck < 1.0 else 1.0
            self._duck_db = duck_db
        elif key == "level_dbfs":
            level = validate_level(value)
            if self._sample_rate:
                self._loop, self._ducked = await asyncio.to_thread(
                    self._load, self._source, level, self._duck_db
                )
                # Start at the old loudness and ramp to the new one: no step.
                self._change_gain = 10.0 ** ((self._level_dbfs - level) / 20.0)
            self._level_dbfs = level
        elif key == "source":
            source = None if value is None else resolve_source(value)
            if self._sample_rate:
                loop, ducked = await asyncio.to_thread(
                    self._load, source, self._level_dbfs, self._duck_db
                )
                if self.playing:
                    self._old_loop, self._old_pos, self._xfade = self._loop, self._pos, 1.0
                self._loop, self._ducked, self._pos = loop, ducked, 0
            self._source = source

    def __str__(self) -> str:
        return "HoldMusicMixer"


def _resolve(future: asyncio.Future):
    if not future.done():
        future.set_result(None)
