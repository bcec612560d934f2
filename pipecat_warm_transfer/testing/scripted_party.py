#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Scripted phone users in a `MemoryRoom`: they talk on cue and record what they hear.

A `ScriptedParty` joins a room directly (no pipeline). Like a phone, it sends a
continuous stream of 20 ms frames in real time (silence between its clips), plays timed
actions (`say`, `dtmf`, `hang_up`) and records everything it receives into an int16
timeline whose sample 0 is the event-loop time `t0`, so recordings of several parties
line up. A frame is placed at the time it was sent, which in memory is its arrival time
(delivery is immediate); each publisher is kept at its own rate and resampled to the
party's rate when a recording is read, so resampling adds no delay to the timeline. `HumanScript` describes how a dialed human behaves (answer, busy, no answer,
voicemail, what they say and when they hang up) for `InMemoryBackend`.

Audio content is the caller's business: `tone()` makes test clips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import soxr
from loguru import logger

from pipecat_warm_transfer.testing.memory_room import (
    DTMF_DIGITS,
    AudioReceived,
    Disconnected,
    DtmfReceived,
    MemoryConnection,
    MemoryRoomServer,
    ParticipantJoined,
    ParticipantLeft,
    RoomMoved,
)

#: Outcomes a dialed human's phone can have.
HUMAN_OUTCOMES = ("answer", "busy", "no_answer", "decline", "fail")

#: Frame length a party publishes.
FRAME_SECS = 0.02

#: A frame sent this much later than where the publisher's stream had got to starts a
#: new run at its send time (a gap); nearer, it is appended to the stream.
_RESYNC_SECS = 0.1

#: A sender this far behind its clock skips ahead instead of bursting to catch up.
_MAX_SEND_LAG_SECS = 0.2


def tone(freq: float, secs: float, rate: int = 16000, dbfs: float = -20.0) -> bytes:
    """A sine tone as mono int16 PCM.

    Args:
        freq: Frequency in Hz.
        secs: Duration in seconds.
        rate: Sample rate in Hz.
        dbfs: RMS level in dBFS (full scale 32768).

    Returns:
        The PCM bytes.
    """
    n = max(0, int(round(secs * rate)))
    amplitude = 32768.0 * 10 ** (dbfs / 20.0) * np.sqrt(2.0)
    t = np.arange(n) / rate
    samples = np.clip(np.round(amplitude * np.sin(2 * np.pi * freq * t)), -32768, 32767)
    return samples.astype(np.int16).tobytes()


def silence(secs: float, rate: int = 16000) -> bytes:
    """Digital silence as mono int16 PCM."""
    return bytes(2 * max(0, int(round(secs * rate))))


@dataclass
class _Clip:
    start: int | None
    samples: np.ndarray


@dataclass(order=True)
class _Action:
    at_sample: int
    seq: int
    kind: str = field(compare=False)
    value: str | None = field(default=None, compare=False)


class _Track:
    """One publisher's audio at its own rate, placed on the party's timeline."""

    def __init__(self, rate: int, limit_secs: float):
        self.rate = rate
        self.data = np.zeros(0, dtype=np.int16)
        self.length = 0
        self.cursor: int | None = None
        self.gaps = 0
        self._limit = int(limit_secs * rate)

    def write(self, position: int, samples: np.ndarray) -> None:
        if position < 0:
            samples = samples[-position:]
            position = 0
        end = min(position + samples.size, self._limit)
        if end <= position:
            return
        samples = samples[: end - position]
        if end > self.data.size:
            grown = np.zeros(max(end, 2 * self.data.size, 16000), dtype=np.int16)
            grown[: self.length] = self.data[: self.length]
            self.data = grown
        region = self.data[position:end].astype(np.int32) + samples
        self.data[position:end] = np.clip(region, -32768, 32767).astype(np.int16)
        self.length = max(self.length, end)

    def at_rate(self, rate: int) -> np.ndarray:
        audio = self.data[: self.length]
        if rate == self.rate or not audio.size:
            return audio.copy()
        return soxr.resample(audio, self.rate, rate, quality="VHQ")


def _sum_tracks(tracks: list[_Track], rate: int) -> np.ndarray:
    parts = [track.at_rate(rate) for track in tracks]
    length = max((part.size for part in parts), default=0)
    total = np.zeros(length, dtype=np.int32)
    for part in parts:
        total[: part.size] += part
    return np.clip(total, -32768, 32767).astype(np.int16)


class ScriptedParty:
    """A scripted participant: plays timed audio/DTMF/hang-up and records what it hears.

    Action times are seconds from `t0`, the event-loop time of sample 0 of the
    recording. An action scheduled before the party starts (or `at=None`) happens as
    soon as it can; a clip that starts late is delayed, not cut.

    Example::

        party = ScriptedParty(server, "caller-room", "caller", t0=loop.time())
        party.say(0.5, tone(440, 1.0)).dtmf(2.0, "1").hang_up(3.0)
        await party.start()
        await asyncio.wait_for(party.wait_ended(), 5)
        heard = party.recording()
        await party.close()
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        room: str,
        identity: str,
        sample_rate: int = 16000,
        t0: float | None = None,
        *,
        kind: str = "standard",
        record_limit_secs: float = 600.0,
        on_hang_up: Callable[[MemoryConnection], None] | None = None,
    ):
        """Create the party (it joins on `start()`).

        Args:
            server: The room server.
            room: The room to join.
            identity: The participant identity.
            sample_rate: Rate it sends and records at.
            t0: Event-loop time of sample 0 (default: when `start()` is called).
            kind: Participant kind (`standard`, `sip` or `agent`).
            record_limit_secs: Recording length cap (audio past it is not kept).
            on_hang_up: Called with the connection just before a scripted hang-up
                leaves the room (a SIP line sets `sip.callStatus` to `hangup` there).
        """
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        self._server = server
        self._room = room
        self._identity = identity
        self._rate = sample_rate
        self._t0 = t0
        self._kind = kind
        self._frame = int(round(sample_rate * FRAME_SECS))
        self._limit_secs = record_limit_secs
        self._on_hang_up = on_hang_up
        self._clips: list[_Clip] = []
        self._actions: list[_Action] = []
        self._seq = 0
        self._tracks: dict[tuple[str, int], _Track] = {}
        self._connection: MemoryConnection | None = None
        self._send_task: asyncio.Task | None = None
        self._receive_task: asyncio.Task | None = None
        self._ended = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._end_reason: str | None = None
        self._hanging_up = False
        self._started = False
        self._send_position = 0
        self.dtmf_heard: list[tuple[float, str, str]] = []
        self.dtmf_sent: list[tuple[float, str]] = []
        self.events: list[tuple[float, object]] = []

    def __repr__(self) -> str:
        return f"ScriptedParty({self._identity!r} in {self.room!r})"

    # Properties

    @property
    def identity(self) -> str:
        """The participant identity."""
        return self._identity

    @property
    def room(self) -> str:
        """The room the party is in (follows a move)."""
        return self._connection.room_name if self._connection is not None else self._room

    @property
    def sample_rate(self) -> int:
        """Rate the party sends and records at."""
        return self._rate

    @property
    def t0(self) -> float | None:
        """Event-loop time of sample 0 (None until known)."""
        return self._t0

    @property
    def connection(self) -> MemoryConnection | None:
        """The room connection (None before `start()`)."""
        return self._connection

    @property
    def connected(self) -> bool:
        """Whether the party is in a room."""
        return self._connection is not None and self._connection.connected

    @property
    def ended(self) -> bool:
        """Whether the party has left (hung up, removed, room deleted or closed)."""
        return self._ended.is_set()

    @property
    def end_reason(self) -> str | None:
        """`hung_up`, `removed`, `room_deleted`, `duplicate_identity` or `closed`."""
        return self._end_reason

    @property
    def speaking(self) -> bool:
        """Whether a clip is playing or waiting to play."""
        return bool(self._clips)

    # Script

    def say(self, at: float | None, audio: bytes) -> ScriptedParty:
        """Play a mono int16 clip at `at` seconds from `t0` (None: now).

        Returns:
            The party, for chaining.
        """
        samples = np.frombuffer(audio, dtype=np.int16).copy()
        if samples.size:
            start = None if at is None else self._position(at)
            self._clips.append(_Clip(start, samples))
            if not self._ended.is_set():
                self._idle.clear()
        return self

    def dtmf(self, at: float | None, digit: str) -> ScriptedParty:
        """Send a DTMF digit at `at` seconds from `t0` (None: now).

        Returns:
            The party, for chaining.
        """
        if digit not in DTMF_DIGITS:
            raise ValueError(f"invalid DTMF digit {digit!r}")
        self._schedule(at, "dtmf", digit)
        return self

    def hang_up(self, at: float | None = None) -> ScriptedParty:
        """Hang up at `at` seconds from `t0` (None: now).

        Returns:
            The party, for chaining.
        """
        self._schedule(at, "hang_up")
        return self

    def now(self) -> float:
        """Seconds since `t0` (0 before it is known)."""
        if self._t0 is None:
            return 0.0
        return asyncio.get_running_loop().time() - self._t0

    # Life cycle

    async def start(self, connection: MemoryConnection | None = None) -> ScriptedParty:
        """Join the room and start sending and receiving.

        Args:
            connection: An open connection to take over (a SIP participant that was
                already in the room while its phone rang), instead of joining anew.

        Returns:
            The party.
        """
        if self._started:
            return self
        self._started = True
        loop = asyncio.get_running_loop()
        if self._t0 is None:
            self._t0 = loop.time()
        if connection is None:
            connection = self._server.connect(self._room, self._identity, self._kind)
        self._connection = connection
        self._send_position = max(0, self._position(loop.time() - self._t0))
        self._receive_task = asyncio.create_task(
            self._receive_loop(self._connection), name=f"{self}::receive"
        )
        self._send_task = asyncio.create_task(self._send_loop(), name=f"{self}::send")
        return self

    async def wait_ended(self) -> str | None:
        """Wait until the party has left (bound it with `asyncio.timeout`).

        Returns:
            The end reason.
        """
        await self._ended.wait()
        return self._end_reason

    async def wait_idle(self) -> None:
        """Wait until no clip is playing or pending, or the party ended."""
        await self._idle.wait()

    async def close(self) -> None:
        """Leave the room (if still in it) and stop the party's tasks. Idempotent."""
        connection = self._connection
        reason = "closed"
        if connection is not None:
            if connection.connected:
                connection.disconnect()
            elif connection.disconnect_reason not in (None, "client_initiated"):
                reason = str(connection.disconnect_reason)  # removed, room_deleted, ...
        self._finish(reason)
        current = asyncio.current_task()
        tasks = [t for t in (self._send_task, self._receive_task) if t and t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    logger.warning(f"{self}: task ended with {result!r}")

    async def __aenter__(self) -> ScriptedParty:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # Recordings

    def recording(self) -> np.ndarray:
        """Everything heard, mixed (saturating), from `t0`, as int16 at `sample_rate`."""
        return _sum_tracks(list(self._tracks.values()), self._rate)

    def heard_from(self, identity: str) -> np.ndarray:
        """What one participant sent, on the same timeline (empty if nothing)."""
        tracks = [track for (who, _), track in self._tracks.items() if who == identity]
        return _sum_tracks(tracks, self._rate)

    def stream_gaps(self, identity: str) -> int:
        """How often a participant's stream paused (over 0.1 s) and resumed later."""
        return sum(track.gaps for (who, _), track in self._tracks.items() if who == identity)

    def heard_identities(self) -> list[str]:
        """Identities the party received audio from."""
        return list(dict.fromkeys(who for who, _ in self._tracks))

    # Internals

    def _position(self, secs: float) -> int:
        return int(round(secs * self._rate))

    def _schedule(self, at: float | None, kind: str, value: str | None = None) -> None:
        position = -1 if at is None else self._position(at)
        self._seq += 1
        self._actions.append(_Action(position, self._seq, kind, value))
        self._actions.sort()

    def _finish(self, reason: str) -> None:
        if not self._ended.is_set():
            self._end_reason = reason
            self._ended.set()
            self._idle.set()
            logger.debug(f"{self}: ended ({reason})")

    def _next_frame(self, position: int) -> bytes:
        n = self._frame
        out = np.zeros(n, dtype=np.int32)
        remaining: list[_Clip] = []
        for clip in self._clips:
            if clip.start is None or clip.start < position:
                clip.start = position  # late (or "now"): delayed, not cut
            offset = clip.start - position
            if offset >= n:
                remaining.append(clip)
                continue
            part = clip.samples[: n - offset]
            out[offset : offset + part.size] += part
            rest = clip.samples[n - offset :]
            if rest.size:
                remaining.append(_Clip(position + n, rest))
        self._clips = remaining
        if not remaining:
            self._idle.set()
        return np.clip(out, -32768, 32767).astype(np.int16).tobytes()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        connection = self._connection
        assert connection is not None and self._t0 is not None
        position = self._send_position
        while connection.connected:
            while self._actions and self._actions[0].at_sample <= position:
                action = self._actions.pop(0)
                if action.kind == "dtmf" and action.value is not None:
                    connection.send_dtmf(action.value)
                    self.dtmf_sent.append((position / self._rate, action.value))
                elif action.kind == "hang_up":
                    self._hanging_up = True
                    self._finish("hung_up")
                    if self._on_hang_up is not None:
                        self._on_hang_up(connection)
                    connection.disconnect()
                    return
            connection.publish_audio(self._next_frame(position), self._rate)
            position += self._frame
            self._send_position = position
            due = self._t0 + position / self._rate
            now = loop.time()
            if now - due > _MAX_SEND_LAG_SECS:
                position = self._position(now - self._t0)
                continue
            await asyncio.sleep(max(0.0, due - now))

    async def _receive_loop(self, connection: MemoryConnection) -> None:
        loop = asyncio.get_running_loop()
        assert self._t0 is not None
        async for event in connection.events():
            now = loop.time() - self._t0
            if isinstance(event, AudioReceived):
                self._record(event)
            elif isinstance(event, DtmfReceived):
                self.dtmf_heard.append((now, event.identity, event.digit))
            elif isinstance(event, Disconnected):
                reason = "hung_up" if self._hanging_up else event.reason
                if reason == "client_initiated":
                    reason = "closed"
                self.events.append((now, event))
                self._finish(reason)
                if self._send_task is not None and not self._send_task.done():
                    self._send_task.cancel()
            elif isinstance(event, ParticipantJoined | ParticipantLeft | RoomMoved):
                if len(self.events) < 10000:
                    self.events.append((now, event))

    def _record(self, event: AudioReceived) -> None:
        samples = np.frombuffer(event.audio, dtype=np.int16)
        if not samples.size or self._t0 is None:
            return
        key = (event.identity, event.sample_rate)
        track = self._tracks.get(key)
        if track is None:
            track = _Track(event.sample_rate, self._limit_secs)
            self._tracks[key] = track
        # Like a jitter buffer: a publisher's frames are played back to back, and a new
        # run starts at the frame's send time only after a real gap in the stream.
        sent = int(round((event.sent_at - self._t0) * track.rate))
        if track.cursor is None or sent > track.cursor + int(_RESYNC_SECS * track.rate):
            if track.cursor is not None:
                track.gaps += 1
            track.cursor = sent
        track.write(track.cursor, samples)
        track.cursor += samples.size


@dataclass
class HumanScript:
    """How a dialed human behaves (for `InMemoryBackend`).

    Parameters:
        outcome: `answer`, `busy`, `no_answer`, `decline` or `fail`.
        sip_status: SIP status reported for a failed dial (default per outcome: busy
            486, no_answer 480, decline 603, fail 500). On the LiveKit emulator a
            `no_answer` without a `sip_status` rings until LiveKit's own ringing timeout
            ends it (no SIP status at all), as an unanswered phone does; with one, the
            carrier gives up first and answers that status after `answer_after`.
        answer_after: Seconds the phone rings before it answers (or is busy, declined,
            failed). Past the ring timeout the dial fails with `no_answer`.
        join_delay: Seconds before the SIP participant has joined the room (LiveKit's
            ring clock starts only then; the emulator only).
        ringing_after: Seconds from the INVITE to the carrier's 180 Ringing, which sets
            `sip.callStatus` to `ringing` (the emulator only).
        voicemail: The call is answered by a voicemail system (the leg reports it as
            `voicemail`); the greeting plays, then the actions, as for a human.
        greeting: What is said on answering (mono int16 at the backend's rate).
        actions: Timed actions, seconds after the answer: `("say", at, pcm)`,
            `("dtmf", at, digit)` or `("hang_up", at)`.
        hang_up_after: Seconds after the answer the human hangs up (None: never).
    """

    outcome: str = "answer"
    sip_status: int | None = None
    answer_after: float = 0.0
    join_delay: float = 0.0
    ringing_after: float = 0.0
    voicemail: bool = False
    greeting: bytes | None = None
    actions: list[tuple] = field(default_factory=list)
    hang_up_after: float | None = None

    def __post_init__(self):
        if self.outcome not in HUMAN_OUTCOMES:
            raise ValueError(f"outcome must be one of {HUMAN_OUTCOMES}, not {self.outcome!r}")
        if self.answer_after < 0:
            raise ValueError("answer_after must not be negative")
        if self.join_delay < 0 or self.ringing_after < 0:
            raise ValueError("join_delay and ringing_after must not be negative")
        if self.hang_up_after is not None and self.hang_up_after < 0:
            raise ValueError("hang_up_after must not be negative")
        for action in self.actions:
            if not action or action[0] not in ("say", "dtmf", "hang_up"):
                raise ValueError(f"unknown action {action!r}: use say, dtmf or hang_up")

    def say(self, at: float, audio: bytes) -> HumanScript:
        """Add a clip said `at` seconds after the answer.

        Returns:
            The script, for chaining.
        """
        self.actions.append(("say", at, audio))
        return self

    def dtmf(self, at: float, digit: str) -> HumanScript:
        """Add a DTMF digit pressed `at` seconds after the answer.

        Returns:
            The script, for chaining.
        """
        if digit not in DTMF_DIGITS:
            raise ValueError(f"invalid DTMF digit {digit!r}")
        self.actions.append(("dtmf", at, digit))
        return self

    def default_sip_status(self) -> int | None:
        """The SIP status a failed dial reports (None when the human answers)."""
        if self.sip_status is not None:
            return self.sip_status
        return {"busy": 486, "no_answer": 480, "decline": 603, "fail": 500}.get(self.outcome)

    def apply(self, party: ScriptedParty, answered_at: float) -> None:
        """Schedule the greeting, the actions and the hang-up on a party.

        Args:
            party: The human's party.
            answered_at: Seconds from the party's `t0` when the call was answered.
        """
        if self.greeting:
            party.say(answered_at, self.greeting)
        for action in self.actions:
            kind, at = action[0], answered_at + float(action[1])
            if kind == "say":
                party.say(at, action[2])
            elif kind == "dtmf":
                party.dtmf(at, action[2])
            else:
                party.hang_up(at)
        if self.hang_up_after is not None:
            party.hang_up(answered_at + self.hang_up_after)
