#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A Pipecat transport on a `MemoryRoom`, mirroring `LiveKitTransport`.

`MemoryTransport(server, room_name, identity, params)` joins the room when its input or
output processor starts, and leaves it when both have stopped (ended, cancelled or
cleaned up), so a pipeline never leaves a connection behind.

- Input: every remote participant's audio is pushed as a `UserAudioRawFrame` with
  `user_id` set to the publisher identity (LiveKit's `audio_in_user_tracks=True`), at the
  input sample rate; DTMF becomes an `InputDTMFFrame` and an `on_dtmf_event`.
- Output: audio is published to the room and paced in real time, as a sound device or a
  WebRTC audio source would (the output mixer path relies on the write to block); DTMF
  frames are sent as DTMF events.

Event handlers, with LiveKit's names and arguments: `on_connected`, `on_disconnected`,
`on_before_disconnect` (sync), `on_participant_connected(participant_id)`,
`on_participant_disconnected(participant_id)`, `on_participant_left(participant_id,
reason)`, `on_first_participant_joined(participant_id)`, `on_client_connected(client)`,
`on_client_disconnected(client)`, `on_dtmf_event(data)`; plus
`on_room_moved(from_room, to_room)` when the room service moves this participant.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotConnectedFrame,
    CancelFrame,
    ClientConnectedFrame,
    EndFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    OutputDTMFUrgentFrame,
    StartFrame,
    UserAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.utils.asyncio.task_manager import BaseTaskManager

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
    pcm_duration,
    to_mono,
)

#: How far (seconds) the output may fall behind its clock before it resyncs to now.
_MAX_OUTPUT_LAG_SECS = 0.2


class _MemoryClient:
    """The transport's connection to the room, shared by its input and output.

    Like LiveKit's client it is reference counted: the first of input/output to start
    connects, and the connection closes when both have let go.
    """

    def __init__(
        self, transport: MemoryTransport, server: MemoryRoomServer, room: str, identity: str
    ):
        self._transport = transport
        self._server = server
        self._room_name = room
        self._identity = identity
        self._kind = transport.kind
        self._task_manager: BaseTaskManager | None = None
        self._connection: MemoryConnection | None = None
        self._receive_task: asyncio.Task | None = None
        self._holders: set[str] = set()
        self._lock = asyncio.Lock()
        self._other_participant_has_joined = False
        self._participants: dict[str, str] = {}

    @property
    def connection(self) -> MemoryConnection | None:
        return self._connection

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.connected

    @property
    def room_name(self) -> str:
        return self._room_name

    def setup(self, task_manager: BaseTaskManager) -> None:
        if self._task_manager is None:
            self._task_manager = task_manager

    async def connect(self, holder: str, sample_rate: int | None) -> None:
        async with self._lock:
            if sample_rate and self._connection is not None:
                self._connection.sample_rate = sample_rate
            if holder in self._holders:
                return
            self._holders.add(holder)
            if self._connection is not None:
                return
            logger.debug(f"{self._transport}: connecting to {self._room_name}")
            connection = self._server.connect(
                self._room_name, self._identity, self._kind, sample_rate=sample_rate or None
            )
            self._connection = connection
            assert self._task_manager is not None, "connect() before setup()"
            self._receive_task = self._task_manager.create_task(
                self._receive_loop(connection), f"{self._transport}::receive"
            )
        await self._transport._on_connected()

    async def disconnect(self, holder: str) -> None:
        async with self._lock:
            if holder not in self._holders:
                return
            self._holders.discard(holder)
            if self._holders or self._connection is None:
                return
            connection, self._connection = self._connection, None
            task, self._receive_task = self._receive_task, None
            was_connected = connection.connected
            if was_connected:
                await self._transport._on_before_disconnect()
            connection.disconnect()
            if task is not None and task is not asyncio.current_task():
                assert self._task_manager is not None
                await self._task_manager.cancel_task(task, timeout=1.0)
            self._participants.clear()
            self._other_participant_has_joined = False
            logger.debug(f"{self._transport}: disconnected from {self._room_name}")
        if was_connected:
            await self._transport._on_disconnected()

    def publish_audio(self, audio: bytes, sample_rate: int) -> bool:
        connection = self._connection
        if connection is None:
            return False
        return connection.publish_audio(audio, sample_rate)

    def send_dtmf(self, digit: str) -> bool:
        connection = self._connection
        if connection is None:
            return False
        if digit not in DTMF_DIGITS:
            logger.warning(f"{self._transport}: invalid DTMF digit {digit!r}")
            return False
        return connection.send_dtmf(digit)

    def get_participants(self) -> list[str]:
        return list(self._participants)

    async def _receive_loop(self, connection: MemoryConnection) -> None:
        transport = self._transport
        async for event in connection.events():
            if isinstance(event, AudioReceived):
                await transport._on_audio(event)
            elif isinstance(event, DtmfReceived):
                await transport._on_dtmf_event(
                    {"tone": event.digit, "digit": event.digit, "participant_id": event.identity}
                )
            elif isinstance(event, ParticipantJoined):
                self._participants[event.identity] = event.kind
                await transport._on_participant_connected(event.identity)
                if not self._other_participant_has_joined:
                    self._other_participant_has_joined = True
                    await transport._on_first_participant_joined(event.identity)
            elif isinstance(event, ParticipantLeft):
                self._participants.pop(event.identity, None)
                await transport._on_participant_disconnected(event.identity, event.reason)
                if not self._participants:
                    self._other_participant_has_joined = False
            elif isinstance(event, RoomMoved):
                self._room_name = event.to_room
                await transport._on_room_moved(event.from_room, event.to_room)
            elif isinstance(event, Disconnected):
                if event.reason != "client_initiated":
                    logger.info(
                        f"{transport}: disconnected from {self._room_name} ({event.reason})"
                    )
                    self._participants.clear()
                    await transport._on_disconnected()


class MemoryInputTransport(BaseInputTransport):
    """Receives the room's audio and DTMF as Pipecat frames."""

    def __init__(
        self, transport: MemoryTransport, client: _MemoryClient, params: TransportParams, **kwargs
    ):
        """Initialize the input transport.

        Args:
            transport: The parent transport.
            client: The shared room client.
            params: Transport parameters.
            **kwargs: Passed to `BaseInputTransport`.
        """
        super().__init__(params, **kwargs)
        self._transport = transport
        self._client = client
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the input has started and accepts frames."""
        return self._ready

    async def setup(self, setup: FrameProcessorSetup):
        """Set up the processor and the shared client.

        Args:
            setup: The frame processor setup.
        """
        await super().setup(setup)
        self._client.setup(setup.task_manager)

    async def start(self, frame: StartFrame):
        """Join the room (if the output has not) and start pushing its audio.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        await self.set_transport_ready(frame)
        self._ready = True
        await self._client.connect("input", self.sample_rate)

    async def stop(self, frame: EndFrame):
        """Stop, and leave the room once the output has stopped too.

        Args:
            frame: The end frame.
        """
        self._ready = False
        await super().stop(frame)
        await self._client.disconnect("input")

    async def cancel(self, frame: CancelFrame):
        """Cancel, and leave the room once the output has stopped too.

        Args:
            frame: The cancel frame.
        """
        self._ready = False
        await super().cancel(frame)
        await self._client.disconnect("input")

    async def cleanup(self):
        """Release resources; the connection is closed on every exit."""
        self._ready = False
        await super().cleanup()
        await self._client.disconnect("input")
        await self._transport.cleanup()


class MemoryOutputTransport(BaseOutputTransport):
    """Publishes audio (paced in real time) and DTMF to the room."""

    def __init__(
        self, transport: MemoryTransport, client: _MemoryClient, params: TransportParams, **kwargs
    ):
        """Initialize the output transport.

        Args:
            transport: The parent transport.
            client: The shared room client.
            params: Transport parameters.
            **kwargs: Passed to `BaseOutputTransport`.
        """
        super().__init__(params, **kwargs)
        self._transport = transport
        self._client = client
        self._next_write_time: float | None = None

    async def setup(self, setup: FrameProcessorSetup):
        """Set up the processor and the shared client.

        Args:
            setup: The frame processor setup.
        """
        await super().setup(setup)
        self._client.setup(setup.task_manager)

    async def start(self, frame: StartFrame):
        """Join the room (if the input has not) and get ready to send.

        Args:
            frame: The start frame.
        """
        await super().start(frame)
        await self._client.connect("output", None)
        await self.set_transport_ready(frame)

    async def stop(self, frame: EndFrame):
        """Send what is queued, then leave the room once the input has stopped too.

        Args:
            frame: The end frame.
        """
        await super().stop(frame)
        await self._client.disconnect("output")

    async def cancel(self, frame: CancelFrame):
        """Cancel, and leave the room once the input has stopped too.

        Args:
            frame: The cancel frame.
        """
        await super().cancel(frame)
        await self._client.disconnect("output")

    async def cleanup(self):
        """Release resources; the connection is closed on every exit."""
        await super().cleanup()
        await self._client.disconnect("output")
        await self._transport.cleanup()

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        """Publish audio to the room, then block until it has "played" in real time.

        Args:
            frame: The audio to send.

        Returns:
            Whether the room took the audio (False once disconnected; pacing goes on).
        """
        audio = to_mono(frame.audio, frame.num_channels)
        await self._wait_queued_audio()
        sent = self._client.publish_audio(audio, frame.sample_rate) if audio else False
        await self._pace(pcm_duration(audio, frame.sample_rate) if audio else 0.0)
        return sent

    async def _wait_queued_audio(self) -> None:
        """Let audio written ahead of the clock (`write_audio_nowait`) play first.

        A frame is published when it starts to play; after the shared hold engine has
        written a frame that is still playing, the next one waits for it.
        """
        if self._next_write_time is None:
            return
        ahead = self._next_write_time - asyncio.get_running_loop().time()
        if ahead > 0:
            await asyncio.sleep(ahead)

    def write_audio_nowait(self, audio: bytes) -> bool:
        """Publish mono audio at the output rate without pacing (the caller is the clock).

        The shared hold engine writes parked calls this way; the pacing clock still
        advances, so the transport's own next write waits until this audio has played.

        Args:
            audio: Mono 16-bit PCM at `sample_rate`.

        Returns:
            Whether the room took the audio.
        """
        sent = self._client.publish_audio(audio, self.sample_rate) if audio else False
        self._advance_clock(pcm_duration(audio, self.sample_rate) if audio else 0.0)
        return sent

    def write_audio_lag(self) -> float:
        """Seconds the output's pacing clock is behind real time (0 when on time).

        A write delayed by a busy event loop leaves the clock behind; the paced write
        catches up, and so does the shared hold engine when it takes the call over.
        """
        if self._next_write_time is None:
            return 0.0
        lag = asyncio.get_running_loop().time() - self._next_write_time
        return lag if 0.0 < lag <= _MAX_OUTPUT_LAG_SECS else 0.0

    def _advance_clock(self, duration: float) -> float:
        """Move the pacing clock on by `duration`; return how long until it is due."""
        now = asyncio.get_running_loop().time()
        if self._next_write_time is None or now - self._next_write_time > _MAX_OUTPUT_LAG_SECS:
            self._next_write_time = now
        self._next_write_time += duration
        return self._next_write_time - now

    async def _pace(self, duration: float) -> None:
        """Sleep so that writes advance at one second of audio per second of wall time."""
        delay = self._advance_clock(duration)
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)

    def _supports_native_dtmf(self) -> bool:
        return True

    async def _write_dtmf_native(self, frame: OutputDTMFFrame | OutputDTMFUrgentFrame):
        for button in frame.buttons or []:
            self._client.send_dtmf(button.value)


class MemoryTransport(BaseTransport):
    """A Pipecat transport on an in-memory room, with `LiveKitTransport`'s events.

    Every `participant_id` is the participant identity, as with LiveKit.

    Example::

        server = MemoryRoomServer()
        transport = MemoryTransport(
            server, "caller-room", "bot",
            params=TransportParams(audio_in_enabled=True, audio_out_enabled=True),
        )

        @transport.event_handler("on_first_participant_joined")
        async def on_first_participant_joined(transport, participant_id):
            ...

        pipeline = Pipeline([transport.input(), ..., transport.output()])
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        room_name: str,
        identity: str,
        params: TransportParams | None = None,
        *,
        kind: str = "standard",
        name: str | None = None,
        input_name: str | None = None,
        output_name: str | None = None,
    ):
        """Initialize the transport.

        Args:
            server: The in-memory room server.
            room_name: The room to join (created on join when missing).
            identity: This participant's identity.
            params: Transport parameters (audio in/out, sample rates, mixer, ...).
            kind: The participant kind (`standard`, `sip` or `agent`).
            name: Optional name of the transport.
            input_name: Optional name of the input processor.
            output_name: Optional name of the output processor.
        """
        super().__init__(name=name, input_name=input_name, output_name=output_name)
        self._server = server
        self._identity = identity
        self._kind = kind
        self._params = params or TransportParams()
        self._client = _MemoryClient(self, server, room_name, identity)
        self._input: MemoryInputTransport | None = None
        self._output: MemoryOutputTransport | None = None

        self._register_event_handler("on_connected")
        self._register_event_handler("on_disconnected")
        self._register_event_handler("on_before_disconnect", sync=True)
        self._register_event_handler("on_participant_connected")
        self._register_event_handler("on_participant_disconnected")
        self._register_event_handler("on_participant_left")
        self._register_event_handler("on_first_participant_joined")
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")
        self._register_event_handler("on_dtmf_event")
        self._register_event_handler("on_room_moved")

    @property
    def server(self) -> MemoryRoomServer:
        """The room server."""
        return self._server

    @property
    def kind(self) -> str:
        """The participant kind this transport joins as."""
        return self._kind

    @property
    def participant_id(self) -> str:
        """This participant's identity."""
        return self._identity

    @property
    def room_name(self) -> str:
        """The room the transport is (or will be) in."""
        return self._client.room_name

    @property
    def connection(self) -> MemoryConnection | None:
        """The open room connection (None before start and after stop)."""
        return self._client.connection

    @property
    def connected(self) -> bool:
        """Whether the transport is in the room."""
        return self._client.connected

    def get_client_id(self, client: Any) -> str:
        """The id of a client, as passed to `on_client_connected`.

        Args:
            client: The client dict.

        Returns:
            The participant's identity.
        """
        return client["id"]

    def input(self) -> MemoryInputTransport:
        """The input processor (room audio and DTMF in).

        Returns:
            The input transport.
        """
        if self._input is None:
            self._input = MemoryInputTransport(
                self, self._client, self._params, name=self._input_name
            )
        return self._input

    def output(self) -> MemoryOutputTransport:
        """The output processor (audio and DTMF out, real-time paced).

        Returns:
            The output transport.
        """
        if self._output is None:
            self._output = MemoryOutputTransport(
                self, self._client, self._params, name=self._output_name
            )
        return self._output

    def get_participants(self) -> list[str]:
        """Identities of the other participants in the room.

        Returns:
            The participant identities.
        """
        return self._client.get_participants()

    async def send_dtmf(self, digit: str) -> bool:
        r"""Send a DTMF digit to the room now (ahead of queued audio).

        Args:
            digit: One of 0-9, \*, #, A-D.

        Returns:
            Whether it was sent (False when not connected or invalid).
        """
        return self._client.send_dtmf(digit)

    # Callbacks from the client.

    async def _on_connected(self):
        await self._call_event_handler("on_connected")
        if self._input is not None and self._input.ready:
            await self._input.push_frame(BotConnectedFrame())

    async def _on_disconnected(self):
        await self._call_event_handler("on_disconnected")

    async def _on_before_disconnect(self):
        await self._call_event_handler("on_before_disconnect")

    async def _on_participant_connected(self, participant_id: str):
        await self._call_event_handler("on_participant_connected", participant_id)
        await self._call_event_handler("on_client_connected", {"id": participant_id})
        if self._input is not None and self._input.ready:
            await self._input.push_frame(ClientConnectedFrame())

    async def _on_participant_disconnected(self, participant_id: str, reason: str):
        await self._call_event_handler("on_participant_disconnected", participant_id)
        await self._call_event_handler("on_participant_left", participant_id, reason)
        await self._call_event_handler("on_client_disconnected", {"id": participant_id})

    async def _on_first_participant_joined(self, participant_id: str):
        await self._call_event_handler("on_first_participant_joined", participant_id)

    async def _on_room_moved(self, from_room: str, to_room: str):
        await self._call_event_handler("on_room_moved", from_room, to_room)

    async def _on_audio(self, event: AudioReceived):
        if self._input is None or not self._input.ready or not event.audio:
            return
        await self._input.push_audio_frame(
            UserAudioRawFrame(
                user_id=event.identity,
                audio=event.audio,
                sample_rate=event.sample_rate,
                num_channels=1,
            )
        )

    async def _on_dtmf_event(self, data: dict):
        await self._call_event_handler("on_dtmf_event", data)
        tone = data.get("tone")
        if tone is None or self._input is None or not self._input.ready:
            return
        try:
            button = KeypadEntry(tone)
        except ValueError:
            logger.warning(f"{self}: ignoring unsupported DTMF tone {tone!r}")
            return
        await self._input.push_frame(InputDTMFFrame(button=button))
