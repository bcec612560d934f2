#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A `TransferBackend` on in-memory rooms, with scripted humans instead of SIP phones.

`InMemoryBackend(server, humans)` dials a number by looking up its `HumanScript`: the
phone rings for `answer_after` seconds (bounded by the request's ring timeout), then the
call is answered, busy, declined or fails with the SIP status a LiveKit SIP call would
report. An answered human is a `ScriptedParty` (kind `sip`) in the consult room that
speaks and presses keys on cue and records what it hears; `backend.parties` keeps it,
so its recording can be read after a move or after teardown.

The leg follows the `ConsultLeg` life cycle: `dial()`, `transport` (a `MemoryTransport`
for the briefing pipeline), `move_to()` (`server.move_participant`, or
`MoveUnsupportedError` with `supports_move=False`), `hang_up()` and `close()`, which
always leaves the server as it found it (no room, participant or connection left).
`refer_caller()` plays the caller's carrier as the emulator's SIP service does, by the
backend's `ReferScript`: refused, the target's line failing, or transferred (the caller's
SIP participant then leaves the caller's room, `sip.callStatus = hangup`). It does not
play LiveKit's ringing tone meanwhile (the caller keeps hearing the room); the emulator
does (`livekit_sip_transfer.ringback`).
"""

from __future__ import annotations

import asyncio

from loguru import logger
from pipecat.transports.base_transport import TransportParams

from pipecat_warm_transfer.consult_leg import (
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    MoveUnsupportedError,
    ReferError,
    ReferUnsupportedError,
    TransferBackend,
)
from pipecat_warm_transfer.testing.livekit_sip_transfer import REFER_BYE_SECS, ReferScript
from pipecat_warm_transfer.testing.livekit_wire import SIP_REASONS
from pipecat_warm_transfer.testing.memory_room import (
    MemoryConnection,
    MemoryRoomError,
    MemoryRoomServer,
)
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport
from pipecat_warm_transfer.testing.scripted_party import HumanScript, ScriptedParty
from pipecat_warm_transfer.types import FailureReason

#: SIP status for a number nobody answers to (not in `humans`).
UNKNOWN_NUMBER_STATUS = 404

#: How often a REFER waiting for its NOTIFY looks at the caller's call.
_REFER_POLL_SECS = 0.02


def default_transport_params(sample_rate: int = 16000) -> TransportParams:
    """The consult transport's default parameters: audio in and out at `sample_rate`.

    No end silence is sent after an `EndFrame` (the consult room is torn down anyway).
    """
    return TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=sample_rate,
        audio_out_sample_rate=sample_rate,
        audio_out_end_silence_secs=0,
    )


class InMemoryLeg(ConsultLeg):
    """One transfer's consult room on a `MemoryRoomServer` and the scripted human in it."""

    def __init__(self, backend: InMemoryBackend, request: DialRequest):
        """Create the leg (no call is placed until `dial()`).

        Args:
            backend: The backend that opened the leg.
            request: What to dial.
        """
        super().__init__(request)
        self._backend = backend
        self._server = backend.server
        self._transport: MemoryTransport | None = None
        self._party: ScriptedParty | None = None
        self._watch_task: asyncio.Task | None = None
        self._closing = asyncio.Event()
        self._dialed = False
        self._hanging_up = False
        self.script: HumanScript | None = None
        self.answered_at: float | None = None
        self.voicemail = False
        self.dial_error: DialError | None = None
        self.moved_to: str | None = None
        self._leave: tuple[MemoryConnection, asyncio.Task] | None = None

    def __repr__(self) -> str:
        return f"InMemoryLeg({self.room_name!r}, {self.request.target.number!r})"

    @property
    def transport(self) -> MemoryTransport:
        """The bot's transport on the consult room (joins when its pipeline starts)."""
        if self._transport is None:
            self._transport = MemoryTransport(
                self._server,
                self.room_name,
                self.request.bot_identity,
                params=self._backend.transport_params.model_copy(),
            )
        return self._transport

    @property
    def party(self) -> ScriptedParty | None:
        """The human's scripted party, once answered."""
        return self._party

    async def dial(self) -> None:
        """Ring the scripted human and return once they answered.

        Raises:
            DialError: Busy (486), no answer (480, or the ring timeout), declined (603),
                failed (500), unknown number (404), or cancelled by `close()`.
        """
        if self._closed or self._closing.is_set():
            raise DialError(FailureReason.CANCELLED, detail="the leg is closed")
        if self._dialed:
            raise DialError(FailureReason.DIAL_FAILED, detail="the leg was already dialed")
        self._dialed = True
        try:
            await self._dial()
        except DialError as e:
            self.dial_error = e
            logger.debug(f"{self}: dial failed: {e.reason} ({e.sip_status})")
            raise

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        request = self.request
        self._server.create_room(self.room_name)
        await self._wait(self._backend.dial_latency)

        number = request.target.number
        script = self._backend.humans.get(number)
        if script is None:
            raise DialError.from_sip_status(UNKNOWN_NUMBER_STATUS, f"{number} is not reachable")
        self.script = script
        await self._notify_ringing()

        ring_timeout = max(0.0, float(request.ring_timeout))
        if script.outcome == "no_answer" or script.answer_after > ring_timeout:
            await self._wait(ring_timeout)
            status = script.default_sip_status() if script.outcome == "no_answer" else 480
            raise DialError.from_sip_status(status, f"no answer after {ring_timeout:g} s")
        await self._wait(script.answer_after)
        if script.outcome != "answer":
            status = script.default_sip_status()
            raise DialError.from_sip_status(status, f"call {script.outcome} ({status})")

        t0 = self._backend.t0 if self._backend.t0 is not None else loop.time()
        party = ScriptedParty(
            self._server,
            self.room_name,
            self.human_identity,
            sample_rate=self._backend.sample_rate,
            t0=t0,
            kind="sip",
        )
        self.answered_at = loop.time() - t0
        script.apply(party, self.answered_at)
        self._party = party
        self._backend._adopt(party)
        await party.start()
        self.voicemail = script.voicemail
        self._watch_task = asyncio.create_task(
            self._watch_human(party), name=f"{self}::watch_human"
        )
        logger.debug(f"{self}: {self.human_identity} answered")

    async def _wait(self, secs: float) -> None:
        """Sleep, unless the leg is closed meanwhile (then the dial is cancelled)."""
        try:
            await asyncio.wait_for(self._closing.wait(), timeout=max(0.0, secs))
        except TimeoutError:
            return
        raise DialError(FailureReason.CANCELLED, detail="the dial was cancelled")

    async def _watch_human(self, party: ScriptedParty) -> None:
        await party.wait_ended()
        reason = party.end_reason
        if self._hanging_up or reason == "closed":
            return
        # What the others in the room saw: the phone hung up, or the room service acted.
        reason = "disconnected" if reason == "hung_up" else str(reason)
        logger.debug(f"{self}: the human left ({reason})")
        try:
            await self._notify_human_left(reason)
        except Exception as e:
            logger.error(f"{self}: human-left handler failed: {e!r}")

    async def move_to(self, caller_room: str) -> None:
        """Move the human into the caller's room.

        Raises:
            MoveUnsupportedError: The backend was made with `supports_move=False`.
            ConnectError: The leg is closed, the human is gone or the room is missing.
        """
        if not self._backend.supports_move:
            raise MoveUnsupportedError("this server does not support MoveParticipant")
        if self._closed:
            raise ConnectError("the leg is closed")
        party = self._party
        if party is None or not party.connected:
            raise ConnectError("the human is not in the consult room")
        if self._server.get_room(caller_room) is None:
            raise ConnectError(f"room {caller_room!r} not found")
        try:
            self._server.move_participant(self.human_identity, party.room, caller_room)
        except MemoryRoomError as e:
            raise ConnectError(str(e)) from e
        self._moved = True
        self.moved_to = caller_room

    async def find_sip_caller(self, caller_room: str, caller_identity: str | None) -> str:
        """The caller's SIP participant (kind `sip`) in their room.

        Raises:
            ReferUnsupportedError: Not there, not a SIP call, or several and no identity.
        """
        room = self._server.get_room(caller_room)
        if caller_identity:
            connection = room.connection(caller_identity) if room is not None else None
            if connection is None:
                raise ReferUnsupportedError("the caller is not in their room")
            if connection.kind != "sip":
                raise ReferUnsupportedError("the caller is not a SIP call")
            return caller_identity
        calls = [c for c in room.connections() if c.kind == "sip"] if room is not None else []
        if len(calls) != 1:
            raise ReferUnsupportedError(f"the caller's room has {len(calls)} SIP calls, not one")
        return calls[0].identity

    async def refer_caller(self, caller_room: str, caller_identity: str, to: str) -> None:
        """Play the caller's carrier with the backend's `ReferScript` (see the module).

        Raises:
            ReferUnsupportedError: The caller's call is gone.
            ReferError: The REFER refused, the target failing, or no NOTIFY in time.
            ConnectError: The leg was closed meanwhile.
        """
        room = self._server.get_room(caller_room)
        caller = room.connection(caller_identity) if room is not None else None
        if caller is None or caller.kind != "sip":
            raise ReferUnsupportedError("the caller is not a SIP call in their room")
        script = self._backend.refer
        self._backend.referred.append((caller_room, caller_identity, to))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, float(self.request.ring_timeout))
        await self._refer_wait(script.refer_after)
        if not script.accepted:
            status = script.refer_status
            raise ReferError(f"the caller's carrier refused the REFER ({_sip(status)})", status)
        notify_at = None if script.notify_status is None else loop.time() + script.notify_after
        while True:
            now = loop.time()
            if not caller.connected:
                return  # the call ended while the target rang: LiveKit reports success
            if notify_at is not None and now >= notify_at and notify_at <= deadline:
                break
            if now >= deadline:
                ring = self.request.ring_timeout
                raise ReferError(f"the transferred call was not answered within {ring:g} s")
            wake = deadline if notify_at is None else min(deadline, notify_at)
            await self._refer_wait(min(_REFER_POLL_SECS, max(0.0, wake - now)))
        status = script.notify_status
        if status != 200:
            raise ReferError(
                f"the human's line did not take the transferred call ({_sip(status)})", status
            )
        bye = REFER_BYE_SECS if script.bye_after is None else min(script.bye_after, REFER_BYE_SECS)
        task = asyncio.create_task(self._caller_leaves(caller, bye), name=f"{self}::refer-bye")
        self._leave = (caller, task)

    async def _refer_wait(self, secs: float) -> None:
        try:
            await self._wait(secs)
        except DialError:
            raise ConnectError("the leg was closed during the REFER") from None

    @staticmethod
    async def _caller_leaves(caller: MemoryConnection, after: float) -> None:
        await asyncio.sleep(after)
        _hang_up_referred(caller)

    async def hang_up(self) -> None:
        """Hang the human up (they are removed from their room). Idempotent."""
        party = self._party
        if party is None or party.ended:
            return
        self._hanging_up = True
        self._remove_human(party)
        await party.close()

    async def close(self) -> None:
        """Hang up unless moved, disconnect everyone from the consult room and delete it.

        Idempotent and never raises (a dial in progress fails with `cancelled`).
        """
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        party = self._party
        try:
            # Server state first, synchronously, so a cancelled close leaves nothing.
            if party is not None and not self._moved:
                self._hanging_up = True
                self._remove_human(party)
            self._server.delete_room(self.room_name)
        except Exception as e:
            logger.error(f"{self}: teardown error: {e!r}")
        if not self._moved:
            await self._stop_tasks()
        logger.debug(f"{self}: closed (moved={self._moved})")

    async def _shutdown(self) -> None:
        """Close the leg and whatever it left running after a move (backend close)."""
        await self.close()
        party = self._party
        if party is not None and not party.ended:
            self._hanging_up = True
            self._remove_human(party)
        await self._stop_tasks()

    async def _stop_tasks(self) -> None:
        leave, self._leave = self._leave, None
        if leave is not None:
            # The carrier's BYE is due: the referred call leaves now, not never.
            caller, task = leave
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            _hang_up_referred(caller)
        try:
            if self._party is not None:
                await self._party.close()
            task = self._watch_task
            if task is not None and task is not asyncio.current_task() and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        except Exception as e:
            logger.error(f"{self}: teardown error: {e!r}")

    def _remove_human(self, party: ScriptedParty) -> None:
        if not party.connected:
            return
        try:
            self._server.remove_participant(party.room, self.human_identity)
        except MemoryRoomError:
            pass


def _sip(status: int) -> str:
    return f"SIP {status} {SIP_REASONS.get(status, '')}".strip()


def _hang_up_referred(caller: MemoryConnection) -> None:
    """The referred call ends here: `sip.callStatus = hangup`, then it leaves its room."""
    if caller.connected:
        caller.set_attributes({"sip.callStatus": "hangup"})
        caller.disconnect("disconnected")


class InMemoryBackend(TransferBackend):
    """Dials scripted humans into in-memory consult rooms.

    Parameters:
        server: The room server the consult rooms live on.
        humans: The scripted human of each number (`TransferTarget.number`).
        supports_move: Whether `move_to` works (False: an open-source LiveKit server).
        dial_latency: Seconds the "API call" takes before the phone rings.
        transport_params: Parameters of each consult transport (default: audio in and
            out at `sample_rate`, see `default_transport_params`).
        sample_rate: Rate the humans send and record at.
        t0: Event-loop time of sample 0 of the humans' recordings (default: the answer).
        refer: What the caller's carrier does with a REFER (default: transfers the call).

    Attributes:
        referred: `(caller_room, caller_identity, to)` of each REFER sent, oldest first.
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        humans: dict[str, HumanScript] | None = None,
        supports_move: bool = True,
        dial_latency: float = 0.0,
        *,
        transport_params: TransportParams | None = None,
        sample_rate: int = 16000,
        t0: float | None = None,
        refer: ReferScript | None = None,
    ):
        """Create the backend."""
        if dial_latency < 0:
            raise ValueError("dial_latency must not be negative")
        self.server = server
        self.humans: dict[str, HumanScript] = dict(humans or {})
        self.supports_move = supports_move
        self.dial_latency = dial_latency
        self.sample_rate = sample_rate
        self.transport_params = transport_params or default_transport_params(sample_rate)
        self.t0 = t0
        self.refer = refer or ReferScript()
        self.referred: list[tuple[str, str, str]] = []
        self.parties: dict[str, ScriptedParty] = {}
        self.legs: list[InMemoryLeg] = []
        self._all_parties: list[ScriptedParty] = []

    async def open_leg(self, request: DialRequest) -> InMemoryLeg:
        """Create the consult leg for one transfer (no call is placed yet).

        Args:
            request: What to dial.

        Returns:
            The leg.
        """
        self.legs = [leg for leg in self.legs if not (leg.closed and not leg.moved)]
        leg = InMemoryLeg(self, request)
        self.legs.append(leg)
        return leg

    def _adopt(self, party: ScriptedParty) -> None:
        self.parties[party.identity] = party
        self._all_parties.append(party)

    async def close(self) -> None:
        """Close every leg and hang up every human still on a call (also moved ones).

        The parties stay in `parties` (ended) so their recordings can still be read.
        Idempotent, never raises.
        """
        legs, self.legs = self.legs, []
        for leg in legs:
            try:
                await leg._shutdown()
            except Exception as e:
                logger.error(f"{self}: error closing {leg}: {e!r}")
        parties, self._all_parties = self._all_parties, []
        for party in parties:
            if party.connected:
                try:
                    self.server.remove_participant(party.room, party.identity)
                except MemoryRoomError:
                    pass
            await party.close()
