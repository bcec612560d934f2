#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""An outbound SIP call as LiveKit's SIP service places it, from room join to hang-up.

`OutboundCall` plays livekit/sip's `outboundCall` against a `MemoryRoomServer` and a
`HumanScript` standing for the phone at the other end:

1. After the script's `join_delay` the SIP participant joins the room (kind SIP) with its
   `sip.*` attributes and `sip.callStatus = dialing`. Only then does the ring clock start.
2. The INVITE goes out; the carrier's 180 (`ringing_after`) sets `sip.callStatus = ringing`.
3. The phone answers, or the carrier refuses with a final status, or nobody answers and
   LiveKit's own ringing timeout cancels the INVITE (`canceled`, no SIP status), or the
   dial context ends (the participant removed, the room deleted, the RPC deadline).
4. On answer: `sip.callTag`/`sip.callIDFull`, then `automation` while the `dtmf` digits
   play, then `active`; the script's `ScriptedParty` takes over the participant.
5. On failure the participant leaves the room with LiveKit's reason (`user_rejected`,
   `user_unavailable`, or `disconnected`); on the human's BYE, `sip.callStatus = hangup`.

Nothing is cancelled by the HTTP client giving up: LiveKit passes no cancel to the SIP
service, so a dial rings on until one of the ends above.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from livekit.protocol import sip
from loguru import logger

from pipecat_warm_transfer.testing.livekit_wire import TwirpError, sip_status_error
from pipecat_warm_transfer.testing.memory_room import (
    Disconnected,
    MemoryConnection,
    MemoryRoomServer,
)
from pipecat_warm_transfer.testing.scripted_party import HumanScript, ScriptedParty

#: livekit/sip `defaultRingingTimeout`: how long a phone rings when the request sets none.
DEFAULT_RINGING_TIMEOUT = 180.0

#: livekit/sip `maxCallDuration`: the default and the cap of a call's length.
MAX_CALL_DURATION = 24 * 3600.0

#: SIP status a number nobody scripted answers with.
UNKNOWN_NUMBER_STATUS = 404

#: media-sdk DTMF timing: each digit is a 250 ms tone and a 250 ms gap; `w` pauses 500 ms.
DTMF_DIGIT_SECS = 0.5

#: ETSI ringing tone (media-sdk `tones.ETSIRinging`): 425 Hz, 1 s on, 4 s off, half volume.
DIAL_TONE_HZ = 425.0
DIAL_TONE_ON_SECS = 1.0
DIAL_TONE_PERIOD_SECS = 5.0

_BASE57 = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_FRAME_SECS = 0.02

# Final statuses after which the participant leaves as USER_UNAVAILABLE (livekit/sip
# `classifyInviteError`: callUnavailable); other 4xx and 6xx as USER_REJECTED, 5xx and 3xx
# with UNKNOWN_REASON, which the server records as CLIENT_INITIATED.
_UNAVAILABLE = frozenset({404, 408, 480})

#: The error of a dial that ended without an answer or a final status (livekit/sip
#: `sipResponse`: psrpc `canceled`, `ErrSIPRequestTimeout`).
RING_TIMEOUT_MESSAGE = "sip request timed out"


def new_id(prefix: str) -> str:
    """A LiveKit id: the prefix and 12 characters of the shortuuid alphabet (`guid.New`)."""
    return prefix + "".join(secrets.choice(_BASE57) for _ in range(12))


def answered_sip_call() -> dict[str, str]:
    """The attributes of an answered inbound SIP call that a REFER needs.

    LiveKit's SIP service gives its participant a new `sip.callID` and, once answered,
    `sip.callStatus = active`; `TransferSIPParticipant` finds the call by that id.
    """
    return {"sip.callID": new_id("SCL_"), "sip.callStatus": "active"}


def leave_reason(status: int | None) -> str:
    """The reason a SIP participant leaves with after a failed dial (None: no answer)."""
    if status is None or status in _UNAVAILABLE:
        return "user_unavailable"
    if 400 <= status < 500 or status >= 600:
        return "user_rejected"
    return "disconnected"


@dataclass(frozen=True)
class OutboundTrunk:
    """An outbound SIP trunk the emulated server knows (what `CreateSIPOutboundTrunk` made).

    Parameters:
        trunk_id: Its id (`ST_...`).
        address: The carrier's host (`sip.hostname` of the calls through it).
        numbers: Caller ids it may present (`sip.trunkPhoneNumber` when the request has
            no `sip_number`).
    """

    trunk_id: str
    address: str = "sip.offline.test"
    numbers: tuple[str, ...] = ("+15550199",)


@dataclass
class OutboundCall:
    """One call placed by `CreateSIPParticipant`, from room join to its end.

    Parameters:
        rooms: The room server the SIP participant joins.
        request: The request that placed the call.
        identity: The participant identity (`sip_<number>` when the request gave none).
        call_id: `SCL_...`, also `sip.callID`.
        trunk_id: `sip.trunkID` (`""` for an inline trunk).
        hostname: `sip.hostname`.
        caller_number: `sip.trunkPhoneNumber`.
        script: The phone at the other end (None: an unknown number, 404).
        ring_timeout: Seconds LiveKit lets it ring once the INVITE is out.
        dial_deadline: Event-loop time the dial context ends (the RPC's expiry for a
            waiting request; None for an asynchronous dial).
        join_deadline: Event-loop time by which the room join must be done (the RPC's
            expiry: the join runs on the request's context); None: no bound.
        sample_rate: Rate of the human's party.
        t0: Event-loop time of sample 0 of the human's recording (None: the answer).
        on_party: Called with the human's party once it is created.

    Attributes:
        statuses: `(loop time, sip.callStatus)` of each status set, oldest first.
        ended_at: Loop time a dial that was not answered ended.
        outcome: `answered`, `failed`, `ringing_timeout`, `cancelled` (the dial context
            ended: participant removed, room deleted, RPC deadline) or None while dialing.
        sip_status: The carrier's final status of a refused call.
        dtmf_sent: The digits played after the answer.
    """

    rooms: MemoryRoomServer
    request: sip.CreateSIPParticipantRequest
    identity: str
    call_id: str
    trunk_id: str
    hostname: str
    caller_number: str
    script: HumanScript | None
    ring_timeout: float
    dial_deadline: float | None
    join_deadline: float | None = None
    sample_rate: int = 16000
    t0: float | None = None
    on_party: Callable[[ScriptedParty], None] | None = None
    statuses: list[tuple[float, str]] = field(default_factory=list)
    outcome: str | None = None
    sip_status: int | None = None
    dtmf_sent: str = ""

    def __post_init__(self):
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[str] = loop.create_future()
        self.answered: asyncio.Future[None] = loop.create_future()
        self.party: ScriptedParty | None = None
        self.participant_sid: str | None = None
        self._connection: MemoryConnection | None = None
        self._task: asyncio.Task | None = None
        self.ended_at: float | None = None

    def __repr__(self) -> str:
        return f"OutboundCall({self.call_id}, {self.identity!r} in {self.request.room_name!r})"

    @property
    def room_name(self) -> str:
        """The room the SIP participant is dialed into."""
        return self.request.room_name

    @property
    def status(self) -> str | None:
        """The current `sip.callStatus` (None before the join)."""
        return self.statuses[-1][1] if self.statuses else None

    @property
    def ringing(self) -> bool:
        """Whether the phone is still being dialed (nobody answered, nothing ended it)."""
        return self.outcome is None and self._task is not None and not self._task.done()

    @property
    def task(self) -> asyncio.Task | None:
        """The task running the call's dial (done once it was answered or ended)."""
        return self._task

    def start(self) -> OutboundCall:
        """Start dialing (join, ring, answer or fail) in the background."""
        self._task = asyncio.create_task(self._run(), name=f"{self}::dial")
        self._task.add_done_callback(self._done)
        return self

    async def stop(self) -> None:
        """Cancel the dial (the emulator stops); the human's party is closed by its owner."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # The dial

    async def _run(self) -> None:
        script = self.script
        loop = asyncio.get_running_loop()
        if script is not None and script.join_delay > 0:
            join_at = loop.time() + script.join_delay
            if self.join_deadline is not None and join_at > self.join_deadline:
                # The request's context ended during the join: no call is placed.
                await asyncio.sleep(max(0.0, self.join_deadline - loop.time()))
                self.outcome = "cancelled"
                self._fail_waiters(TwirpError.psrpc("deadline_exceeded", "request timed out"))
                return
            await asyncio.sleep(script.join_delay)
        self._join()
        ring_end = loop.time() + self.ring_timeout
        rings_out = self.dial_deadline is None or ring_end <= self.dial_deadline
        deadline = ring_end if rings_out else self.dial_deadline
        # The dial tone plays into the room until the call is active or failed (dialSIP).
        tone = None
        if self.request.play_dialtone or self.request.play_ringtone:
            assert self._connection is not None
            tone = asyncio.create_task(self._dial_tone(self._connection), name=f"{self}::dialtone")
        try:
            status = await self._ring(
                script, deadline, "ringing_timeout" if rings_out else "cancelled"
            )
            if status is not None:
                self._fail("failed", status, sip_status_error(status))
                return
            await self._answer(tone)
        except _DialEnded as end:
            self._fail(end.outcome, None, TwirpError.psrpc("canceled", RING_TIMEOUT_MESSAGE))
        finally:
            if tone is not None:
                tone.cancel()
                await asyncio.gather(tone, return_exceptions=True)

    def _join(self) -> None:
        attributes = dict(self.request.participant_attributes)
        attributes.update(
            {
                "sip.callID": self.call_id,
                "sip.trunkID": self.trunk_id,
                "sip.callStatus": "dialing",
            }
        )
        if not self.request.hide_phone_number:
            attributes.update(
                {
                    "sip.phoneNumber": self.request.sip_call_to,
                    "sip.hostname": self.hostname,
                    "sip.trunkPhoneNumber": self.caller_number,
                }
            )
        self._connection = self.rooms.connect(
            self.room_name, self.identity, "sip", attributes=attributes
        )
        self._record_status("dialing")
        self.participant_sid = new_id("PA_")
        if not self.joined.done():
            self.joined.set_result(self.participant_sid)
        logger.debug(f"{self}: joined, dialing {_mask(self.request.sip_call_to)}")

    async def _ring(
        self, script: HumanScript | None, deadline: float, timeout_outcome: str
    ) -> int | None:
        """Wait for the carrier's answer; the SIP final status of a refusal, None on answer.

        Raises:
            _DialEnded: Nobody answered before the deadline, or the participant left.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        connection = self._connection
        assert connection is not None
        left = asyncio.create_task(self._left(connection), name=f"{self}::watch")
        try:
            if script is None:
                return UNKNOWN_NUMBER_STATUS
            final_at = None
            if script.outcome != "no_answer" or script.sip_status is not None:
                final_at = start + script.answer_after
            ringing_at = start + script.ringing_after
            while True:
                now = loop.time()
                if left.done():
                    raise _DialEnded("cancelled")
                if final_at is not None and now >= final_at and final_at <= deadline:
                    if script.outcome == "answer":
                        return None
                    return script.default_sip_status() or 500
                if now >= deadline:
                    raise _DialEnded(timeout_outcome)
                if self.status == "dialing" and now >= ringing_at:
                    self._set_status("ringing")
                wake = deadline if final_at is None else min(deadline, final_at)
                if self.status == "dialing":
                    wake = min(wake, ringing_at)
                await asyncio.wait([left], timeout=max(0.0, wake - loop.time()))
        finally:
            left.cancel()
            await asyncio.gather(left, return_exceptions=True)

    @staticmethod
    async def _left(connection: MemoryConnection) -> None:
        """Return once the participant's connection is closed (removed, room deleted)."""
        while True:
            event = await connection.recv()
            if isinstance(event, Disconnected):
                return

    async def _dial_tone(self, connection: MemoryConnection) -> None:
        loop = asyncio.get_running_loop()
        rate = self.sample_rate
        frame = int(rate * _FRAME_SECS)
        position = 0
        start = loop.time()
        while connection.connected:
            t = (position + np.arange(frame)) / rate
            on = (t % DIAL_TONE_PERIOD_SECS) < DIAL_TONE_ON_SECS
            samples = (32767 // 2) * np.sin(2 * np.pi * DIAL_TONE_HZ * t) * on
            connection.publish_audio(samples.astype(np.int16).tobytes(), rate)
            position += frame
            await asyncio.sleep(max(0.0, start + position / rate - loop.time()))

    async def _answer(self, tone: asyncio.Task | None) -> None:
        connection = self._connection
        script = self.script
        assert connection is not None and script is not None
        connection.set_attributes(
            {"sip.callTag": secrets.token_hex(4), "sip.callIDFull": _hashed_id(self.call_id)}
        )
        digits = self.request.dtmf
        if digits:
            self._set_status("automation")
            await asyncio.sleep(DTMF_DIGIT_SECS * len(digits))
            self.dtmf_sent = digits
        if not connection.connected:
            self._fail("cancelled", None, TwirpError.psrpc("canceled", RING_TIMEOUT_MESSAGE))
            return
        self._set_status("active")
        if tone is not None:
            tone.cancel()
            await asyncio.gather(tone, return_exceptions=True)
        loop = asyncio.get_running_loop()
        t0 = self.t0 if self.t0 is not None else loop.time()
        party = ScriptedParty(
            self.rooms,
            self.room_name,
            self.identity,
            sample_rate=self.sample_rate,
            t0=t0,
            kind="sip",
            on_hang_up=lambda c: c.set_attributes({"sip.callStatus": "hangup"}),
        )
        script.apply(party, loop.time() - t0)
        self.party = party
        if self.on_party is not None:
            self.on_party(party)
        await party.start(connection)
        self.outcome = "answered"
        if not self.answered.done():
            self.answered.set_result(None)
        logger.debug(f"{self}: answered")

    def _fail(self, outcome: str, status: int | None, error: TwirpError) -> None:
        self.outcome = outcome
        self.ended_at = asyncio.get_running_loop().time()
        self.sip_status = status
        connection = self._connection
        if connection is not None:
            connection.disconnect(leave_reason(status))
        self._fail_waiters(error)
        logger.debug(f"{self}: ended ({outcome}, SIP {status})")

    def _fail_waiters(self, error: TwirpError) -> None:
        """Answer whoever waits for the join or the answer with `error`."""
        for future in (self.joined, self.answered):
            if not future.done():
                future.set_exception(error)
                future.exception()  # the API may have stopped waiting: no warning

    def _set_status(self, status: str) -> None:
        connection = self._connection
        if connection is not None and connection.set_attributes({"sip.callStatus": status}):
            self._record_status(status)

    def _record_status(self, status: str) -> None:
        self.statuses.append((asyncio.get_running_loop().time(), status))

    def _done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            error = TwirpError.psrpc("canceled", "service shutting down")
        elif task.exception() is not None:
            logger.error(f"{self}: dial failed: {task.exception()!r}")
            error = TwirpError.psrpc("internal", "the SIP service failed")
        else:
            return
        self._fail_waiters(error)
        if self.outcome is None:
            self.outcome = "cancelled"
        connection = self._connection
        if connection is not None and self.party is None:
            connection.disconnect("disconnected")


class _DialEnded(Exception):
    def __init__(self, outcome: str):
        super().__init__(outcome)
        self.outcome = outcome


def _hashed_id(call_id: str) -> str:
    """livekit/sip's SIP Call-ID for a call id (`guid.HashedID`: base62 of its SHA-1)."""
    number = int.from_bytes(hashlib.sha1(call_id.encode()).digest(), "big")
    out = []
    while number:
        number, rest = divmod(number, 62)
        out.append(_BASE62[rest])
    return "".join(reversed(out)) or "0"


def _mask(number: str) -> str:
    return number if len(number) <= 4 else "…" + number[-4:]
