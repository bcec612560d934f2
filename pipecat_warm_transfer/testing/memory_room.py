#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""In-memory media rooms: a stand-in for a LiveKit server inside one process.

A `MemoryRoomServer` holds `MemoryRoom`s; `server.connect(room, identity)` joins a
participant and returns its `MemoryConnection`. A connection publishes mono int16
audio and DTMF to every *other* connection in its room and receives theirs, with
participant joined/left events, through a bounded inbox read with `await recv()` (or
`async for event in connection.events()`).

The server also plays the part of the LiveKit room service: `move_participant`,
`remove_participant` and `delete_room`, with the reasons a client would see. Nothing is
global: several servers can coexist in one process, and `leftovers()` counts what one
of them still holds open.

Example::

    server = MemoryRoomServer()
    alice = server.connect("room", "alice", sample_rate=16000)
    bob = server.connect("room", "bob", sample_rate=16000)
    alice.publish_audio(pcm, 16000)
    event = await bob.recv()  # ParticipantJoined("alice") was queued first (present)
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np
from loguru import logger
from pipecat.audio.resamplers.base_audio_resampler import BaseAudioResampler
from pipecat.audio.utils import create_stream_resampler

#: Participant kinds, as LiveKit reports them.
PARTICIPANT_KINDS = ("standard", "sip", "agent")

#: DTMF digits a connection may send.
DTMF_DIGITS = frozenset("0123456789*#ABCD")

#: Default seconds of audio an inbox holds before it drops the oldest.
DEFAULT_MAX_AUDIO_SECS = 2.0

#: Default number of control events an inbox holds before it drops the oldest.
DEFAULT_MAX_EVENTS = 1024


class MemoryRoomError(LookupError):
    """A room or participant the operation names does not exist."""


class ConnectionClosedError(ConnectionError):
    """The connection is closed and its inbox is drained."""


@dataclass(frozen=True)
class AudioReceived:
    """Audio published by another participant.

    Parameters:
        identity: The publisher's identity.
        audio: Mono int16 PCM bytes at `sample_rate`.
        sample_rate: The audio's sample rate (the receiver's rate when it asked for one).
        sent_at: Event-loop time the publisher sent it.
    """

    identity: str
    audio: bytes
    sample_rate: int
    sent_at: float


@dataclass(frozen=True)
class DtmfReceived:
    """A DTMF digit sent by another participant.

    Parameters:
        identity: The sender's identity.
        digit: One of 0-9, *, #, A-D.
    """

    identity: str
    digit: str


@dataclass(frozen=True)
class ParticipantJoined:
    """Another participant is in the room.

    Parameters:
        identity: The participant's identity.
        kind: `standard`, `sip` or `agent`.
        reason: `joined`, `moved` (moved in from another room) or `present` (was
            already there when this connection joined or moved in).
    """

    identity: str
    kind: str
    reason: str = "joined"


@dataclass(frozen=True)
class ParticipantLeft:
    """Another participant left the room.

    Parameters:
        identity: The participant's identity.
        kind: `standard`, `sip` or `agent`.
        reason: `disconnected` (left by itself), `removed` (by the room service),
            `moved` (moved to another room, or this connection moved away),
            `duplicate_identity` (replaced by a new connection with its identity), or
            the reason a leaving participant gave (a SIP participant whose call failed
            leaves with `user_rejected` or `user_unavailable`, as LiveKit's SIP service does).
    """

    identity: str
    kind: str
    reason: str = "disconnected"


@dataclass(frozen=True)
class ParticipantAttributesChanged:
    """Another participant changed its attributes (LiveKit's `participant_attributes_changed`).

    Parameters:
        identity: The participant's identity.
        changed: The keys that changed, with their new values (`""` for a removed key).
        attributes: All of its attributes after the change.
    """

    identity: str
    changed: dict[str, str]
    attributes: dict[str, str]


@dataclass(frozen=True)
class RoomMoved:
    """This connection was moved to another room.

    Parameters:
        from_room: The room it left.
        to_room: The room it is now in.
    """

    from_room: str
    to_room: str


@dataclass(frozen=True)
class Disconnected:
    """This connection is closed; always the last event of an inbox.

    Parameters:
        reason: `client_initiated` (it disconnected itself), `removed`,
            `room_deleted` or `duplicate_identity`.
    """

    reason: str


MemoryEvent = (
    AudioReceived
    | DtmfReceived
    | ParticipantJoined
    | ParticipantLeft
    | ParticipantAttributesChanged
    | RoomMoved
)
"""Everything a connection can receive (plus the final `Disconnected`)."""


class _Inbox:
    """A bounded, non-blocking event queue with one reader.

    Audio beyond `max_audio_secs` and control events beyond `max_events` drop the oldest
    of their kind (counted), so a slow or absent reader never blocks a publisher nor
    grows memory without bound.
    """

    def __init__(self, max_audio_secs: float, max_events: int):
        self._items: deque = deque()
        self._max_audio_secs = max_audio_secs
        self._max_events = max_events
        self._audio_secs = 0.0
        self._events = 0
        self._wakeup = asyncio.Event()
        self._closed = False
        self.dropped_audio_frames = 0
        self.dropped_audio_secs = 0.0
        self.dropped_events = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def queued_audio_secs(self) -> float:
        return self._audio_secs

    def put(self, item) -> None:
        if self._closed:
            return
        self._items.append(item)
        if isinstance(item, AudioReceived):
            self._audio_secs += _duration(item)
            while self._audio_secs > self._max_audio_secs + 1e-6:
                self._drop_oldest(AudioReceived)
        else:
            self._events += 1
            while self._events > self._max_events:
                self._drop_oldest(None)
        self._wakeup.set()

    def close(self, final: Disconnected) -> None:
        if self._closed:
            return
        self._items.append(final)
        self._closed = True
        self._wakeup.set()

    def clear(self) -> None:
        self._items.clear()
        self._audio_secs = 0.0
        self._events = 0

    def get_nowait(self):
        if not self._items:
            return None
        item = self._items.popleft()
        if isinstance(item, AudioReceived):
            self._audio_secs = max(0.0, self._audio_secs - _duration(item))
        elif not isinstance(item, Disconnected):
            self._events -= 1
        return item

    async def get(self):
        while True:
            item = self.get_nowait()
            if item is not None:
                return item
            if self._closed:
                raise ConnectionClosedError("connection closed")
            self._wakeup.clear()
            await self._wakeup.wait()

    def _drop_oldest(self, kind: type | None) -> None:
        for index, item in enumerate(self._items):
            is_audio = isinstance(item, AudioReceived)
            if (kind is AudioReceived) == is_audio and not isinstance(item, Disconnected):
                del self._items[index]
                if is_audio:
                    self._audio_secs = max(0.0, self._audio_secs - _duration(item))
                    self.dropped_audio_frames += 1
                    self.dropped_audio_secs += _duration(item)
                else:
                    self._events -= 1
                    self.dropped_events += 1
                return
        # Nothing of that kind left to drop: reset the accounting.
        if kind is AudioReceived:
            self._audio_secs = 0.0
        else:
            self._events = 0


def _duration(item: AudioReceived) -> float:
    return len(item.audio) / (2 * item.sample_rate) if item.sample_rate > 0 else 0.0


class MemoryConnection:
    """One participant's connection to a `MemoryRoom` (made by `MemoryRoomServer.connect`).

    Publishing never blocks and never fails loudly: on a closed connection it returns
    False. Receiving is `await recv()` (one reader), which resamples audio to the
    connection's `sample_rate` when one was asked for.
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        room_name: str,
        identity: str,
        kind: str,
        sample_rate: int | None,
        max_audio_secs: float,
        max_events: int,
    ):
        self._server = server
        self._room_name = room_name
        self._identity = identity
        self._kind = kind
        self._sample_rate = sample_rate
        self._inbox = _Inbox(max_audio_secs, max_events)
        self._resamplers: dict[tuple[str, int], BaseAudioResampler] = {}
        self._disconnect_reason: str | None = None
        self._vanished = False
        self._attributes: dict[str, str] = {}
        self._room_audio_muted = False
        self.connected_at = time.monotonic()

    def __repr__(self) -> str:
        state = "open" if self.connected else f"closed:{self._disconnect_reason}"
        return f"MemoryConnection({self._identity!r} in {self._room_name!r}, {state})"

    @property
    def identity(self) -> str:
        """The participant identity."""
        return self._identity

    @property
    def kind(self) -> str:
        """The participant kind (`standard`, `sip` or `agent`)."""
        return self._kind

    @property
    def room_name(self) -> str:
        """The room the connection is in (changes when it is moved)."""
        return self._room_name

    @property
    def sample_rate(self) -> int | None:
        """The rate received audio is resampled to (None: as published)."""
        return self._sample_rate

    @sample_rate.setter
    def sample_rate(self, rate: int | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("sample_rate must be positive")
        self._sample_rate = rate
        self._resamplers.clear()

    @property
    def connected(self) -> bool:
        """Whether the connection is still open."""
        return self._disconnect_reason is None

    @property
    def disconnect_reason(self) -> str | None:
        """Why the connection closed (None while open)."""
        return self._disconnect_reason

    @property
    def dropped_audio_frames(self) -> int:
        """Audio frames dropped because the reader fell more than the limit behind."""
        return self._inbox.dropped_audio_frames

    @property
    def dropped_audio_secs(self) -> float:
        """Seconds of audio dropped because the reader fell behind."""
        return self._inbox.dropped_audio_secs

    @property
    def dropped_events(self) -> int:
        """Control events dropped because the reader fell behind."""
        return self._inbox.dropped_events

    @property
    def queued_audio_secs(self) -> float:
        """Seconds of audio waiting in the inbox."""
        return self._inbox.queued_audio_secs

    def participants(self) -> list[str]:
        """Identities of the other participants in the room."""
        room = self._server.get_room(self._room_name)
        if room is None or not self.connected:
            return []
        return [p for p in room.participants if p != self._identity]

    def publish_audio(self, audio: bytes, sample_rate: int) -> bool:
        """Send mono int16 PCM to every other participant in the room.

        Args:
            audio: Mono 16-bit PCM bytes (an even number of bytes).
            sample_rate: The audio's sample rate in Hz.

        Returns:
            Whether the audio was sent (False when the connection is closed).
        """
        if not self.connected or self._vanished:
            return False
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if len(audio) % 2:
            raise ValueError("audio must be 16-bit PCM (an even number of bytes)")
        if not audio:
            return True
        event = AudioReceived(self._identity, bytes(audio), sample_rate, _now())
        for peer in self._server._peers(self):
            if not peer._room_audio_muted:
                peer._inbox.put(event)
        return True

    @property
    def room_audio_muted(self) -> bool:
        """Whether the room's audio is kept from this participant (see `hear`)."""
        return self._room_audio_muted

    @room_audio_muted.setter
    def room_audio_muted(self, muted: bool) -> None:
        self._room_audio_muted = muted

    def hear(self, audio: bytes, sample_rate: int, source: str) -> bool:
        """Give this participant audio that does not come from the room.

        A SIP participant's phone hears what LiveKit's SIP service writes into the call,
        e.g. the ringing tone of a transfer, under the identity `source`.

        Returns:
            Whether it was given (False when the connection is closed).
        """
        if not self.connected or not audio:
            return False
        self._inbox.put(AudioReceived(source, bytes(audio), sample_rate, _now()))
        return True

    def send_dtmf(self, digit: str) -> bool:
        """Send one DTMF digit to every other participant in the room.

        Args:
            digit: One of 0-9, *, #, A-D.

        Returns:
            Whether the digit was sent (False when the connection is closed).
        """
        if digit not in DTMF_DIGITS:
            raise ValueError(f"invalid DTMF digit {digit!r}")
        if not self.connected or self._vanished:
            return False
        event = DtmfReceived(self._identity, digit)
        for peer in self._server._peers(self):
            peer._inbox.put(event)
        return True

    @property
    def attributes(self) -> dict[str, str]:
        """The participant's attributes (a copy)."""
        return dict(self._attributes)

    def set_attributes(self, attributes: dict[str, str]) -> bool:
        """Set (or, with `""`, remove) attributes; the others see what changed.

        Args:
            attributes: Keys and new values.

        Returns:
            Whether anything changed (False on a closed connection).
        """
        if not self.connected:
            return False
        changed = {k: str(v) for k, v in attributes.items() if self._attributes.get(k, "") != v}
        if not changed:
            return False
        for key, value in changed.items():
            if value:
                self._attributes[key] = value
            else:
                self._attributes.pop(key, None)
        event = ParticipantAttributesChanged(self._identity, changed, dict(self._attributes))
        for peer in self._server._peers(self):
            peer._inbox.put(event)
        return True

    def disconnect(self, reason: str = "disconnected") -> None:
        """Leave the room; the others see `ParticipantLeft(reason=reason)`. Idempotent.

        Args:
            reason: What the others are told (`disconnected`, or e.g. `user_rejected`).
        """
        if self.connected and not self._vanished:
            self._server._drop(self, own_reason="client_initiated", peer_reason=reason)

    async def recv(self) -> MemoryEvent | Disconnected:
        """Wait for the next event.

        Returns:
            The next event; `Disconnected` is the last one.

        Raises:
            ConnectionClosedError: The connection is closed and every event was read.
        """
        event = await self._inbox.get()
        if isinstance(event, AudioReceived):
            return await self._resampled(event)
        if isinstance(event, ParticipantLeft):
            for key in [k for k in self._resamplers if k[0] == event.identity]:
                del self._resamplers[key]
        return event

    async def events(self) -> AsyncIterator[MemoryEvent | Disconnected]:
        """Iterate over received events until (and including) `Disconnected`."""
        while True:
            try:
                event = await self.recv()
            except ConnectionClosedError:
                return
            yield event
            if isinstance(event, Disconnected):
                return

    async def _resampled(self, event: AudioReceived) -> AudioReceived:
        rate = self._sample_rate
        if rate is None or rate == event.sample_rate:
            return event
        key = (event.identity, event.sample_rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = create_stream_resampler(quality=self._server.resample_quality)
            self._resamplers[key] = resampler
        audio = await resampler.resample(event.audio, event.sample_rate, rate)
        return AudioReceived(event.identity, audio, rate, event.sent_at)

    # Called by the server only.

    def _close(self, reason: str) -> None:
        self._disconnect_reason = reason
        self._inbox.close(Disconnected(reason))

    def _deliver(self, event) -> None:
        self._inbox.put(event)


def _now() -> float:
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


@dataclass
class MemoryRoom:
    """A room: a name and the connections in it (mutated only through the server).

    Parameters:
        name: The room name.
        created_at: Event-loop time the room was created.
        metadata: Free-form room metadata.
    """

    name: str
    created_at: float = field(default_factory=_now)
    metadata: str = ""
    _connections: dict[str, MemoryConnection] = field(default_factory=dict, repr=False)

    @property
    def participants(self) -> list[str]:
        """Identities of the participants in the room."""
        return list(self._connections)

    def connection(self, identity: str) -> MemoryConnection | None:
        """The connection of a participant (None when not in the room)."""
        return self._connections.get(identity)

    def connections(self) -> list[MemoryConnection]:
        """The connections in the room."""
        return list(self._connections.values())

    def kind_of(self, identity: str) -> str | None:
        """The kind of a participant (None when not in the room)."""
        connection = self._connections.get(identity)
        return connection.kind if connection else None

    def __len__(self) -> int:
        return len(self._connections)

    def __bool__(self) -> bool:
        return True

    def __contains__(self, identity: object) -> bool:
        return identity in self._connections


class MemoryRoomServer:
    """A registry of in-memory rooms and the room service operations on them.

    Parameters:
        auto_delete_empty: Delete a room as soon as its last participant leaves (as
            LiveKit does after its departure timeout). Off by default: rooms live until
            `delete_room`.
        max_audio_secs: Seconds of received audio a connection's inbox holds before it
            drops the oldest.
        max_events: Control events an inbox holds before it drops the oldest.
        resample_quality: soxr quality of the receivers' resampling (`QQ`, `LQ`, `MQ`,
            `HQ`, `VHQ`). A stream resampler holds audio back: with 20 ms frames the
            default `VHQ` (Pipecat's) delays a stream by about 37 ms for 2:1 and 12 ms
            for 3:2 rate changes; `QQ` (cubic interpolation, no anti-aliasing) by none.
    """

    def __init__(
        self,
        *,
        auto_delete_empty: bool = False,
        max_audio_secs: float = DEFAULT_MAX_AUDIO_SECS,
        max_events: int = DEFAULT_MAX_EVENTS,
        resample_quality: str = "VHQ",
    ):
        if max_audio_secs <= 0 or max_events <= 0:
            raise ValueError("max_audio_secs and max_events must be positive")
        self._rooms: dict[str, MemoryRoom] = {}
        self._connections: set[MemoryConnection] = set()
        self._auto_delete_empty = auto_delete_empty
        #: Called with `(room, identity, kind, reason)` whenever a participant leaves a
        #: room for good (not when moved): the emulator's agent dispatch listens here.
        self.departure_listeners: list[Callable[[str, str, str, str], None]] = []
        self._max_audio_secs = max_audio_secs
        self._max_events = max_events
        self.resample_quality = resample_quality

    # Rooms

    def create_room(self, name: str, *, metadata: str = "") -> MemoryRoom:
        """Create a room, or return the existing one of that name (like CreateRoom)."""
        if not name:
            raise ValueError("a room name is required")
        room = self._rooms.get(name)
        if room is None:
            room = MemoryRoom(name=name, metadata=metadata)
            self._rooms[name] = room
        return room

    def get_room(self, name: str) -> MemoryRoom | None:
        """The room of that name, or None."""
        return self._rooms.get(name)

    def list_rooms(self) -> list[str]:
        """Names of the rooms that exist."""
        return list(self._rooms)

    def delete_room(self, name: str) -> bool:
        """Disconnect everyone in the room (reason `room_deleted`) and delete it.

        Returns:
            Whether the room existed (a missing room is not an error).
        """
        room = self._rooms.pop(name, None)
        if room is None:
            return False
        for connection in list(room._connections.values()):
            room._connections.pop(connection.identity, None)
            self._connections.discard(connection)
            connection._close("room_deleted")
            self._departed(name, connection, "room_deleted")
        return True

    # Participants

    def connect(
        self,
        room: str,
        identity: str,
        kind: str = "standard",
        *,
        sample_rate: int | None = None,
        attributes: dict[str, str] | None = None,
    ) -> MemoryConnection:
        """Join a participant to a room (created when missing), as a client connect does.

        A connection already in the room with the same identity is replaced (it is
        disconnected with reason `duplicate_identity`), as LiveKit does.

        Args:
            room: The room name.
            identity: The participant identity.
            kind: `standard`, `sip` or `agent`.
            sample_rate: Rate to resample received audio to (None: as published).
            attributes: The participant's attributes as it joins.

        Returns:
            The open connection; its inbox starts with a `ParticipantJoined(reason=
            "present")` for everyone already in the room.
        """
        if not identity:
            raise ValueError("an identity is required")
        if kind not in PARTICIPANT_KINDS:
            raise ValueError(f"kind must be one of {PARTICIPANT_KINDS}")
        if sample_rate is not None and sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        target = self.create_room(room)
        existing = target._connections.get(identity)
        if existing is not None:
            self._drop(existing, own_reason="duplicate_identity", peer_reason="duplicate_identity")
            target = self.create_room(room)
        connection = MemoryConnection(
            self, room, identity, kind, sample_rate, self._max_audio_secs, self._max_events
        )
        connection._attributes = {k: str(v) for k, v in (attributes or {}).items() if v}
        for peer in target._connections.values():
            connection._deliver(ParticipantJoined(peer.identity, peer.kind, "present"))
            peer._deliver(ParticipantJoined(identity, kind, "joined"))
        target._connections[identity] = connection
        self._connections.add(connection)
        logger.debug(f"MemoryRoomServer: {identity} ({kind}) joined {room}")
        return connection

    def move_participant(self, identity: str, from_room: str, to_room: str) -> None:
        """Move a participant to another room (created when missing), like MoveParticipant.

        Those left behind see `ParticipantLeft(reason="moved")`, those in the new room
        `ParticipantJoined(reason="moved")`; the moved connection gets `RoomMoved`, a
        `ParticipantLeft(reason="moved")` for each old peer and a `ParticipantJoined
        (reason="present")` for each new one.

        Raises:
            MemoryRoomError: The room or the participant does not exist.
        """
        source = self._rooms.get(from_room)
        if source is None:
            raise MemoryRoomError(f"room {from_room!r} not found")
        connection = source._connections.get(identity)
        if connection is None:
            raise MemoryRoomError(f"participant {identity!r} not found in room {from_room!r}")
        if from_room == to_room:
            return
        target = self.create_room(to_room)
        duplicate = target._connections.get(identity)
        if duplicate is not None:
            self._drop(duplicate, own_reason="duplicate_identity", peer_reason="duplicate_identity")
            target = self.create_room(to_room)
        del source._connections[identity]
        connection._deliver(RoomMoved(from_room, to_room))
        for peer in source._connections.values():
            peer._deliver(ParticipantLeft(identity, connection.kind, "moved"))
            connection._deliver(ParticipantLeft(peer.identity, peer.kind, "moved"))
        for peer in target._connections.values():
            peer._deliver(ParticipantJoined(identity, connection.kind, "moved"))
            connection._deliver(ParticipantJoined(peer.identity, peer.kind, "present"))
        target._connections[identity] = connection
        connection._room_name = to_room
        logger.debug(f"MemoryRoomServer: moved {identity} from {from_room} to {to_room}")
        self._maybe_auto_delete(source)

    def remove_participant(self, room: str, identity: str) -> None:
        """Disconnect a participant (reason `removed`), like RemoveParticipant.

        Raises:
            MemoryRoomError: The room or the participant does not exist.
        """
        target = self._rooms.get(room)
        if target is None:
            raise MemoryRoomError(f"room {room!r} not found")
        connection = target._connections.get(identity)
        if connection is None:
            raise MemoryRoomError(f"participant {identity!r} not found in room {room!r}")
        self._drop(connection, own_reason="removed", peer_reason="removed")

    def vanish(self, connection: MemoryConnection, after: float) -> asyncio.TimerHandle | None:
        """The client behind a connection died: it sends nothing more, not even a leave.

        The connection stays in the room, silent, until the server gives up on it after
        `after` seconds (LiveKit: its ICE and disconnect timeouts) and removes it; the
        others then see `ParticipantLeft(reason="connection_timeout")`. A later
        `disconnect()` by the dead client is ignored.

        Returns:
            The timer of the removal (None when the connection was already closed).
        """
        if not connection.connected or connection._vanished:
            return None
        connection._vanished = True

        def remove() -> None:
            if connection.connected:
                self._drop(
                    connection, own_reason="connection_timeout", peer_reason="connection_timeout"
                )

        return asyncio.get_running_loop().call_later(max(0.0, after), remove)

    def open_connections(self) -> list[MemoryConnection]:
        """The connections still open, in any room (leak checks name each)."""
        return list(self._connections)

    def leftovers(self) -> dict[str, int]:
        """What is still open: `{"rooms": n, "participants": n, "connections": n}`."""
        return {
            "rooms": len(self._rooms),
            "participants": sum(len(room) for room in self._rooms.values()),
            "connections": len(self._connections),
        }

    def close(self) -> None:
        """Delete every room (everyone is disconnected with reason `room_deleted`)."""
        for name in list(self._rooms):
            self.delete_room(name)
        for connection in list(self._connections):
            connection._close("room_deleted")
        self._connections.clear()

    # Internals

    def _peers(self, connection: MemoryConnection) -> list[MemoryConnection]:
        room = self._rooms.get(connection.room_name)
        if room is None:
            return []
        return [c for c in room._connections.values() if c is not connection]

    def _drop(self, connection: MemoryConnection, *, own_reason: str, peer_reason: str) -> None:
        room = self._rooms.get(connection.room_name)
        if room is not None and room._connections.get(connection.identity) is connection:
            del room._connections[connection.identity]
            for peer in room._connections.values():
                peer._deliver(ParticipantLeft(connection.identity, connection.kind, peer_reason))
        self._connections.discard(connection)
        connection._close(own_reason)
        logger.debug(
            f"MemoryRoomServer: {connection.identity} left {connection.room_name} ({own_reason})"
        )
        if room is not None:
            self._departed(room.name, connection, peer_reason)
            self._maybe_auto_delete(room)

    def _departed(self, room: str, connection: MemoryConnection, reason: str) -> None:
        for listener in list(self.departure_listeners):
            listener(room, connection.identity, connection.kind, reason)

    def _maybe_auto_delete(self, room: MemoryRoom) -> None:
        if self._auto_delete_empty and not room._connections and self._rooms.get(room.name) is room:
            del self._rooms[room.name]


def pcm_duration(audio: bytes, sample_rate: int) -> float:
    """Seconds of mono int16 PCM."""
    return len(audio) / (2 * sample_rate)


def to_mono(audio: bytes, channels: int) -> bytes:
    """Average interleaved int16 PCM of `channels` channels down to mono."""
    if channels <= 1:
        return audio
    samples = np.frombuffer(audio, dtype=np.int16)
    usable = samples.size - samples.size % channels
    frames = samples[:usable].reshape(-1, channels).astype(np.int32)
    return frames.mean(axis=1).round().astype(np.int16).tobytes()
