#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pipecat's real `LiveKitTransport`, offline: only the room connection is faked.

Everything on the media path is LiveKit's own: Pipecat's `LiveKitOutputTransport`
writes into a real livekit-rtc `AudioSource` (the FFI, its queue of `queue_size_ms`, its
rule of one pending capture at a time, which refuses a second with `InvalidState`).
The source plays out in real time, 10 ms at a time, and silence when it runs dry, with
or without a room, so an `AudioStream` on the published track hears exactly what a
participant of the room would, and when.

`OfflineLiveKitTransport` records both ends:

- `media.captures`: every `capture_frame` with its time, the source's queued duration
  just before, and its outcome (taken, refused, failed);
- `media.heard`: every sample the source played out, with the time of the first one.

Pass `on_heard` to forward what plays (every 10 ms frame, silence included) somewhere
else, e.g. into a `MemoryRoom`, so a scripted caller hears the bot through LiveKit's own
output path.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc
from pipecat.transports.livekit.transport import (
    LiveKitParams,
    LiveKitTransport,
    LiveKitTransportClient,
)

#: Outcomes of a capture.
TAKEN, REFUSED, FAILED = "taken", "refused", "failed"


@dataclass(frozen=True)
class Capture:
    """One `AudioSource.capture_frame` call.

    Parameters:
        at: Event-loop time the capture started.
        samples: Samples per channel in the frame.
        queued_before: The source's `queued_duration` just before (seconds).
        outcome: `TAKEN`, `REFUSED` (InvalidState: another capture was pending, or
            the queue was full) or `FAILED` (any other error).
        returned_at: Event-loop time the capture returned.
    """

    at: float
    samples: int
    queued_before: float
    outcome: str
    returned_at: float


@dataclass
class LiveKitMediaRecord:
    """What went into the `AudioSource` and what came out of it."""

    sample_rate: int = 0
    captures: list[Capture] = field(default_factory=list)
    heard_frames: list[bytes] = field(default_factory=list)
    heard_arrivals: list[float] = field(default_factory=list)
    heard_first_at: float | None = None
    heard_last_at: float | None = None
    record_heard: bool = True

    @property
    def refused(self) -> int:
        """Captures LiveKit refused (Pipecat drops those frames silently)."""
        return sum(1 for c in self.captures if c.outcome == REFUSED)

    @property
    def failed(self) -> int:
        """Captures that failed for another reason."""
        return sum(1 for c in self.captures if c.outcome == FAILED)

    def heard(self) -> np.ndarray:
        """Every sample the source played out, in order (int16)."""
        if not self.heard_frames:
            return np.zeros(0, dtype=np.int16)
        return np.frombuffer(b"".join(self.heard_frames), dtype=np.int16)

    def heard_time(self, index: int) -> float:
        """Event-loop time sample `index` of `heard()` played.

        Each 10 ms frame is timed by its arrival from the source's real-time clock.
        """
        if not self.heard_frames:
            raise ValueError("nothing was heard yet")
        frame_len = len(self.heard_frames[0]) // 2
        k = min(index // frame_len, len(self.heard_arrivals) - 1)
        return self.heard_arrivals[k] - (frame_len - (index - k * frame_len)) / self.sample_rate

    def heard_index(self, at: float) -> int:
        """Index into `heard()` of the first sample played at or after event-loop time `at`."""
        if not self.heard_frames:
            raise ValueError("nothing was heard yet")
        frame_len = len(self.heard_frames[0]) // 2
        k = bisect.bisect_left(self.heard_arrivals, at)
        if k >= len(self.heard_arrivals):
            return k * frame_len
        start = self.heard_arrivals[k] - frame_len / self.sample_rate
        return k * frame_len + max(0, int(round((at - start) * self.sample_rate)))

    def first_heard_above(self, threshold: int, after: float) -> float | None:
        """Event-loop time the first sample louder than `threshold` played after `after`."""
        heard = self.heard()
        start = self.heard_index(after)
        loud = np.flatnonzero(np.abs(heard[start:].astype(np.int32)) > threshold)
        return self.heard_time(start + int(loud[0])) if loud.size else None


class _Recorder:
    """Wraps an `AudioSource`: records captures, keeps their audio, listens to the track."""

    def __init__(
        self,
        record: LiveKitMediaRecord,
        on_heard: Callable[[bytes, float], None] | None,
        keep_captured: bool,
    ):
        self._record = record
        self._on_heard = on_heard
        self._keep_captured = keep_captured
        self.captured: list[bytes] = []
        self._stream: rtc.AudioStream | None = None
        self._task: asyncio.Task | None = None

    def wrap(self, source: rtc.AudioSource) -> None:
        original = source.capture_frame
        record = self._record
        record.sample_rate = source.sample_rate
        loop = asyncio.get_running_loop()

        async def capture_frame(frame: rtc.AudioFrame) -> None:
            at, queued = loop.time(), source.queued_duration
            outcome = TAKEN
            try:
                await original(frame)
            except Exception as e:
                outcome = REFUSED if "InvalidState" in str(e) else FAILED
                raise
            finally:
                record.captures.append(
                    Capture(at, frame.samples_per_channel, queued, outcome, loop.time())
                )
                if outcome == TAKEN and self._keep_captured:
                    self.captured.append(bytes(frame.data))

        source.capture_frame = capture_frame

    def listen(self, track: rtc.LocalAudioTrack, sample_rate: int) -> None:
        if not (self._record.record_heard or self._on_heard):
            return
        self._stream = rtc.AudioStream.from_track(
            track=track, sample_rate=sample_rate, num_channels=1
        )
        self._task = asyncio.get_running_loop().create_task(
            self._listen(self._stream), name="offline-livekit-listener"
        )

    async def _listen(self, stream: rtc.AudioStream) -> None:
        record, loop = self._record, asyncio.get_running_loop()
        async for event in stream:
            frame = event.frame
            now = loop.time()
            data = bytes(frame.data)
            if record.heard_first_at is None:
                record.heard_first_at = now - frame.samples_per_channel / frame.sample_rate
            record.heard_last_at = now
            if record.record_heard:
                record.heard_frames.append(data)
                record.heard_arrivals.append(now)
            if self._on_heard is not None:
                self._on_heard(data, now)

    async def close(self) -> None:
        task, self._task = self._task, None
        stream, self._stream = self._stream, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        if stream is not None:
            await stream.aclose()


class _OfflineLocalParticipant:
    """The parts of `rtc.LocalParticipant` Pipecat's client uses, without a server."""

    def __init__(self, identity: str, on_publish: Callable[[rtc.Track], None]):
        self.identity = identity
        self.sid = f"PA_{identity}"
        self.metadata = ""
        self.attributes: dict[str, str] = {}
        self.track_publications: dict[str, object] = {}
        self.data_sent: list[tuple[bytes, list[str] | None]] = []
        self.dtmf_sent: list[str] = []
        self._on_publish = on_publish

    async def publish_track(self, track: rtc.Track, options=None):
        self._on_publish(track)
        self.track_publications[track.sid or track.name] = track
        return track

    async def unpublish_track(self, track_sid: str) -> None:
        self.track_publications.pop(track_sid, None)

    async def publish_data(
        self, payload, *, reliable: bool = True, destination_identities=None, **_
    ):
        data = payload.encode() if isinstance(payload, str) else bytes(payload)
        self.data_sent.append((data, destination_identities))

    async def publish_dtmf(self, *, code: int, digit: str) -> None:
        self.dtmf_sent.append(digit)

    async def set_metadata(self, metadata: str) -> None:
        self.metadata = metadata

    async def set_attributes(self, attributes: dict[str, str]) -> None:
        self.attributes.update(attributes)


class OfflineRoom(rtc.Room):
    """An `rtc.Room` that connects to nothing: alone in its room, it publishes locally."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        name: str,
        identity: str,
        on_publish: Callable[[rtc.Track], None],
    ):
        """Initialize the room (events are `rtc.Room`'s).

        Args:
            loop: The event loop the client runs on.
            name: The room name.
            identity: The local participant's identity.
            on_publish: Called with each track the local participant publishes.
        """
        super().__init__(loop=loop)
        self._offline_name = name
        self._offline_local = _OfflineLocalParticipant(identity, on_publish)
        self._offline_connected = False
        self.on_disconnect: Callable[[], object] | None = None

    @property
    def name(self) -> str:
        """The room name."""
        return self._offline_name

    @property
    def local_participant(self) -> _OfflineLocalParticipant:
        """The bot, publishing locally."""
        return self._offline_local

    @property
    def remote_participants(self) -> dict:
        """Nobody else is here."""
        return {}

    def isconnected(self) -> bool:
        """Whether `connect()` was called and `disconnect()` was not since."""
        return self._offline_connected

    async def connect(self, url: str, token: str, options=None) -> None:
        """Connect to nothing (Pipecat then creates and publishes its real source)."""
        self._offline_connected = True

    async def disconnect(self) -> None:
        """Stop listening to the published track."""
        self._offline_connected = False
        if self.on_disconnect is not None:
            await self.on_disconnect()


class _OfflineClient(LiveKitTransportClient):
    """Pipecat's client with an `OfflineRoom` in place of a connection."""

    def __init__(self, *args, identity: str, recorder: _Recorder, **kwargs):
        super().__init__(*args, **kwargs)
        self._offline_identity = identity
        self._recorder = recorder

    async def setup(self, setup):
        first = self._task_manager is None
        await super().setup(setup)
        if first:
            # Pipecat registered its handlers on the room it built; move them over.
            real = self._room
            room = OfflineRoom(
                self._task_manager.get_event_loop(),
                name=self._room_name,
                identity=self._offline_identity,
                on_publish=self._on_publish,
            )
            room._events = real._events
            room.on_disconnect = self._recorder.close
            self._room = room

    def _on_publish(self, track: rtc.Track) -> None:
        if isinstance(track, rtc.LocalAudioTrack) and self._audio_source is not None:
            self._recorder.wrap(self._audio_source)
            self._recorder.listen(track, self._audio_source.sample_rate)


class OfflineLiveKitTransport(LiveKitTransport):
    """Pipecat's `LiveKitTransport` on an offline room, recording its audio output.

    Example::

        transport = OfflineLiveKitTransport(params=LiveKitParams(audio_out_enabled=True))
        ...  # a pipeline ending in transport.output()
        transport.media.refused, transport.media.heard()
    """

    def __init__(
        self,
        room_name: str = "offline-room",
        *,
        identity: str = "bot",
        params: LiveKitParams | None = None,
        on_heard: Callable[[bytes, float], None] | None = None,
        record_heard: bool = True,
        keep_captured: bool = True,
        **kwargs,
    ):
        """Initialize the transport (nothing connects until the pipeline starts).

        Args:
            room_name: Name of the offline room.
            identity: The bot's identity in it.
            params: Pipecat's `LiveKitParams` (the defaults are what users run).
            on_heard: Called with each 10 ms frame as it plays, and its time.
            record_heard: Keep every played sample in `media.heard()` (off for benchmarks
                of many calls; the track is then not listened to unless `on_heard`).
            keep_captured: Keep every captured sample in `captured()`.
            **kwargs: Passed to `LiveKitTransport` (input_name, output_name).
        """
        params = params or LiveKitParams()
        super().__init__("ws://offline.invalid", "offline-token", room_name, params, **kwargs)
        self.media = LiveKitMediaRecord(record_heard=record_heard)
        self._recorder = _Recorder(self.media, on_heard, keep_captured)
        callbacks = self._client._callbacks
        self._client = _OfflineClient(
            "ws://offline.invalid",
            "offline-token",
            room_name,
            self._params,
            callbacks,
            self.name,
            identity=identity,
            recorder=self._recorder,
        )

    def captured(self) -> np.ndarray:
        """Every sample LiveKit took, in capture order (int16)."""
        chunks = self._recorder.captured
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.frombuffer(b"".join(chunks), dtype=np.int16)

    @property
    def audio_source(self) -> rtc.AudioSource | None:
        """The real livekit-rtc source the output writes into (None until connected)."""
        return self._client._audio_source
