#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""LiveKit's SIP transfer (`TransferSIPParticipant`): a REFER of a SIP participant's call.

`SipTransfers` answers `POST /twirp/livekit.SIP/TransferSIPParticipant` for a
`LiveKitEmulator` as LiveKit's server and its SIP service do (livekit/livekit
`pkg/service/sip.go`, livekit/sip `pkg/sip/service.go`, `inbound.go`, `outbound.go`,
`protocol.go`):

1. Checks, in this order: a room name and an identity (400, before the grants), the
   `sip.call` grant and `roomAdmin` for that room (401), the request's validation
   (`transfer_to` a `sip:`, `sips:` or `tel:` URI; the headers), the participant (404),
   its `sip.callID` attribute (400: not a SIP participant).
2. The SIP service sends a REFER to the carrier of that call, scripted by a `ReferScript`:
   the carrier refuses it (any final status but 200/202: the error carries the status) or
   accepts it and reports the transfer target's final status in a NOTIFY (200: the call is
   transferred; any other: `call transfer failed: ...`).
   With `play_dialtone`, the caller stops hearing the room while it lasts and hears
   LiveKit's ringing tone instead (`ringback`); a transfer that fails gives the room back.
3. Transferred, the API answers at once (an empty `TransferSIPParticipantResponse`); the
   carrier's BYE, or LiveKit's own hang-up one second later, ends the call:
   `sip.callStatus = hangup`, then the participant leaves the room (CLIENT_INITIATED).
4. The deadline is the request's `ringing_timeout` (30 s when unset) or the
   `X-Twirp-Timeout-Ms` header's, whichever is sooner: then 408 `deadline_exceeded`, and the
   call stays. An HTTP client that gives up does not stop the transfer.

Example::

    emulator.sip_transfers.scripts["+15550100"] = ReferScript.target_fails(486)
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from livekit.protocol import sip
from loguru import logger

from pipecat_warm_transfer.testing.livekit_sip_line import OutboundCall
from pipecat_warm_transfer.testing.livekit_wire import TwirpError, sip_status_error
from pipecat_warm_transfer.testing.memory_room import MemoryConnection, MemoryRoomServer

#: livekit/livekit `TransferSIPParticipant`: the deadline when the request sets no
#: `ringing_timeout`.
DEFAULT_TRANSFER_TIMEOUT = 30.0

#: livekit/sip `referByeTimeout`: after a transfer, LiveKit hangs up itself if the carrier
#: has not sent its BYE by then.
REFER_BYE_SECS = 1.0

#: livekit/media-sdk `tones.ETSIRinging`, as livekit/sip plays it into a call being
#: transferred with `play_dialtone`: 425 Hz for 1 s, then 4 s of silence, at half scale
#: (`math.MaxInt16 / 2`), in 20 ms frames (`rtp.DefFrameDur`).
RINGBACK_HZ = 425
RINGBACK_ON_SECS = 1.0
RINGBACK_OFF_SECS = 4.0
RINGBACK_AMPLITUDE = 32767 // 2
RINGBACK_FRAME_SECS = 0.02
#: The source the caller's recording names the ringing tone by (not a room participant).
RINGBACK_SOURCE = "livekit-sip-ringback"

_ACCEPTED = (200, 202)
_MAX_RECORDS = 10_000
_PERMISSION_DENIED = "permissions denied"


@dataclass(frozen=True)
class ReferScript:
    """What the caller's carrier does with a REFER (the default: it transfers the call).

    Parameters:
        refer_status: The carrier's final answer to the REFER: 202 or 200 accept it; any
            other status refuses it (e.g. 403, 405, 501, 603).
        refer_reason: That answer's reason phrase (default: the standard one).
        refer_after: Seconds until the answer.
        notify_status: The final status the NOTIFY reports for the call to the transfer
            target: 200 the target answered (the call is transferred); any other failed
            (486 busy, 480, 603 ...); None: no final NOTIFY comes (the request times out).
        notify_reason: Its reason phrase (default: the standard one; `""`: none).
        notify_after: Seconds from the REFER's acceptance to that NOTIFY (the target rings).
        bye_after: Seconds from the successful NOTIFY to the carrier's BYE; None: no BYE,
            LiveKit hangs up after `REFER_BYE_SECS`.
    """

    refer_status: int = 202
    refer_reason: str | None = None
    refer_after: float = 0.05
    notify_status: int | None = 200
    notify_reason: str | None = None
    notify_after: float = 0.3
    bye_after: float | None = 0.1

    def __post_init__(self):
        if not 200 <= self.refer_status <= 699:
            raise ValueError("refer_status must be a final SIP status (200-699)")
        if self.notify_status is not None and not 200 <= self.notify_status <= 699:
            raise ValueError("notify_status must be a final SIP status (200-699) or None")
        for name in ("refer_after", "notify_after", "bye_after"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 3600:
                raise ValueError(f"{name} must be within 0..3600 s")

    @property
    def accepted(self) -> bool:
        """Whether the carrier accepts the REFER."""
        return self.refer_status in _ACCEPTED

    @classmethod
    def refused(cls, status: int = 603, reason: str | None = None) -> ReferScript:
        """The carrier refuses the REFER itself with `status` (no transfer is tried)."""
        if status in _ACCEPTED:
            raise ValueError("a refused REFER has a status other than 200/202")
        return cls(refer_status=status, refer_reason=reason, notify_status=None)

    @classmethod
    def target_fails(
        cls, status: int = 486, reason: str | None = None, after: float = 0.3
    ) -> ReferScript:
        """The carrier accepts the REFER, and the target's line fails with `status`."""
        if status == 200:
            raise ValueError("a failed transfer has a status other than 200")
        return cls(notify_status=status, notify_reason=reason, notify_after=after)


@dataclass
class SipTransfer:
    """One `TransferSIPParticipant` the SIP service worked on (for tests to read).

    Parameters:
        call_id: The transferred call's `sip.callID`.
        room: The room the participant was in.
        identity: The participant.
        transfer_to: The REFER's target, as LiveKit sends it (`<sip:...>` or `tel:...`).
        play_dialtone: Whether the request asked for a ring tone to the caller meanwhile
            (the caller's phone hears it; not played into the room).
        headers: The REFER's extra headers.
        timeout: The deadline LiveKit gave the transfer, in seconds.
        script: What the carrier did.
        outcome: `transferred`, `refused` (the REFER), `failed` (the NOTIFY), `call_ended`
            (the call ended while the target rang: LiveKit answers success),
            `not_established`, `timed_out`, or None while under way.
        sip_status: The carrier's status of a refusal or a failure.
        started_at: Event-loop time the SIP service took the transfer (the ringing tone,
            with `play_dialtone`, starts then).
    """

    call_id: str
    room: str
    identity: str
    transfer_to: str
    play_dialtone: bool
    headers: dict[str, str]
    timeout: float
    script: ReferScript
    outcome: str | None = None
    sip_status: int | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    started_at: float = 0.0


class SipTransfers:
    """The emulator's SIP transfers: `TransferSIPParticipant` and the carriers' REFERs.

    Parameters:
        rooms: Returns the emulator's room server (it may be replaced before a request).
        calls: Returns the emulator's outbound calls (a dialed human is a SIP call too).
        headers_problem: LiveKit's header validation: the first problem of a header map.

    Attributes:
        default: The carriers' behaviour for a target without a script of its own.
        scripts: Scripts by the number or SIP user the REFER sends the call to
            (`+15550100` matches `tel:+15550100` and `sip:+15550100@pbx.example.com`).
        transfers: Every transfer the SIP service worked on, oldest first.
    """

    def __init__(
        self,
        rooms: Callable[[], MemoryRoomServer],
        calls: Callable[[], list[OutboundCall]],
        headers_problem: Callable[[Mapping[str, str]], str | None],
    ):
        """Create the service (no transfer runs until a request comes)."""
        self._rooms = rooms
        self._calls = calls
        self._headers_problem = headers_problem
        self.default = ReferScript()
        self.scripts: dict[str, ReferScript] = {}
        self.transfers: list[SipTransfer] = []
        self._pending: dict[str, tuple[str, asyncio.Future]] = {}
        self._tasks: set[asyncio.Task] = set()

    def script_for(self, transfer_to: str) -> ReferScript:
        """The carrier's script for a REFER target (`default` when none matches)."""
        return self.scripts.get(refer_destination(transfer_to), self.default)

    async def stop(self) -> None:
        """Stop every transfer and pending hang-up (the emulator stops)."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()

    # The API (livekit/livekit pkg/service/sip.go)

    async def serve(
        self,
        req: sip.TransferSIPParticipantRequest,
        sip_call: bool,
        room_admin_of: str | None,
        header_deadline: float | None,
    ) -> sip.TransferSIPParticipantResponse:
        """Answer one `TransferSIPParticipant` request as LiveKit does.

        Args:
            req: The request.
            sip_call: Whether the token has the `sip.call` grant.
            room_admin_of: The room the token is `roomAdmin` of (None: none).
            header_deadline: Seconds of the request's `X-Twirp-Timeout-Ms` (None: none).

        Returns:
            The answer of a transfer that went through (or whose call ended meanwhile).

        Raises:
            TwirpError: What LiveKit answers otherwise.
        """
        if not req.room_name:
            raise TwirpError.psrpc("invalid_argument", "Missing room name")
        if not req.participant_identity:
            raise TwirpError.psrpc("invalid_argument", "Missing participant identity")
        if not sip_call or room_admin_of != req.room_name:
            raise TwirpError("unauthenticated", _PERMISSION_DENIED)
        problem, transfer_to = validate_transfer(req, self._headers_problem)
        if problem:
            raise TwirpError("invalid_argument", problem)
        room = self._rooms().get_room(req.room_name)
        connection = room.connection(req.participant_identity) if room else None
        if connection is None:
            raise TwirpError.psrpc("not_found", "participant does not exist")
        call_id = connection.attributes.get("sip.callID")
        if not call_id:
            raise TwirpError.psrpc("invalid_argument", "no SIP session associated with participant")

        timeout = DEFAULT_TRANSFER_TIMEOUT
        if req.HasField("ringing_timeout") and req.ringing_timeout.ToNanoseconds() > 0:
            timeout = req.ringing_timeout.ToNanoseconds() / 1e9
        if header_deadline is not None:
            timeout = min(timeout, header_deadline)

        outcome = self._join_or_start(req, connection, call_id, transfer_to, timeout)
        try:
            # Shielded: the SIP service goes on when the HTTP client gives up.
            error = await asyncio.wait_for(asyncio.shield(outcome), timeout)
        except TimeoutError:
            raise TwirpError.psrpc("deadline_exceeded", "request timed out") from None
        if error is not None:
            raise error
        return sip.TransferSIPParticipantResponse()

    def _join_or_start(
        self,
        req: sip.TransferSIPParticipantRequest,
        connection: MemoryConnection,
        call_id: str,
        transfer_to: str,
        timeout: float,
    ) -> asyncio.Future:
        """The outcome of this call's transfer: a repeated request waits for the same one."""
        loop = asyncio.get_running_loop()
        if self._call_state(call_id, connection) is None:
            # No SIP service serves this call's topic: nobody ever answers the request.
            return loop.create_future()
        pending = self._pending.get(call_id)
        if pending is not None:
            target, outcome = pending
            if target != transfer_to:
                future = loop.create_future()
                future.set_result(
                    TwirpError.psrpc("invalid_argument", "call already being transferred elsewhere")
                )
                return future
            return outcome
        script = self.script_for(transfer_to)
        record = SipTransfer(
            call_id=call_id,
            room=req.room_name,
            identity=req.participant_identity,
            transfer_to=transfer_to,
            play_dialtone=req.play_dialtone,
            headers=dict(req.headers),
            timeout=timeout,
            script=script,
            started_at=loop.time(),
        )
        if len(self.transfers) >= _MAX_RECORDS:
            del self.transfers[: len(self.transfers) - _MAX_RECORDS + 1]
        self.transfers.append(record)
        outcome = loop.create_future()
        self._pending[call_id] = (transfer_to, outcome)
        self._spawn(self._transfer(record, connection, outcome), f"transfer {call_id}")
        return outcome

    # The SIP service (livekit/sip pkg/sip)

    async def _transfer(
        self, record: SipTransfer, connection: MemoryConnection, outcome: asyncio.Future
    ) -> None:
        """One call's REFER exchange; its outcome is an error, or None for success."""
        error: TwirpError | None = None
        try:
            error = await self._refer(record, connection)
        finally:
            self._pending.pop(record.call_id, None)
            if not outcome.done():
                outcome.set_result(error)
            logger.debug(
                f"SipTransfers: {record.call_id} {record.outcome} (SIP {record.sip_status})"
            )

    async def _refer(self, record: SipTransfer, connection: MemoryConnection) -> TwirpError | None:
        if self._call_state(record.call_id, connection) != "established":
            record.outcome = "not_established"
            return TwirpError.psrpc("failed_precondition", "can't transfer non established call")
        if not record.play_dialtone:
            return await self._refer_call(record, connection)
        # transferCall: the room's audio to the caller is swapped out for the ringing
        # tone; given back if the transfer fails, closed for good if it goes through.
        connection.room_audio_muted = True
        ringing = asyncio.create_task(ringback(connection), name=f"ringback {record.call_id}")
        error = None
        try:
            error = await self._refer_call(record, connection)
        finally:
            ringing.cancel()
            await asyncio.gather(ringing, return_exceptions=True)
            if error is not None:
                connection.room_audio_muted = False
        return error

    async def _refer_call(
        self, record: SipTransfer, connection: MemoryConnection
    ) -> TwirpError | None:
        """The REFER and its NOTIFY (livekit/sip `TransferCall`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + record.timeout
        script = record.script
        # sendRefer: the REFER's answer is awaited whatever the request's deadline.
        await asyncio.sleep(script.refer_after)
        self._note(record, f"REFER {script.refer_status}")
        if not script.accepted:
            record.outcome, record.sip_status = "refused", script.refer_status
            return sip_status_error(script.refer_status, script.refer_reason, lead="")
        # TransferCall: the final NOTIFY, the call's end, or the deadline, first.
        notify_at = None if script.notify_status is None else loop.time() + script.notify_after
        ended = await self._call_ends(connection, notify_at, deadline)
        if ended == "deadline":
            record.outcome = "timed_out"
            return TwirpError.psrpc("canceled", "refer canceled")
        if ended == "call":
            # REFER accepted, then the call ended first: livekit/sip reports no error.
            record.outcome = "call_ended"
            return None
        status = script.notify_status
        self._note(record, f"NOTIFY {status}")
        if status != 200:
            record.outcome, record.sip_status = "failed", status
            return sip_status_error(status, script.notify_reason, lead="call transfer failed")
        record.outcome = "transferred"
        bye = REFER_BYE_SECS if script.bye_after is None else min(script.bye_after, REFER_BYE_SECS)
        self._spawn(self._hang_up(record, connection, bye), f"after transfer {record.call_id}")
        return None

    def _call_state(self, call_id: str, connection: MemoryConnection) -> str | None:
        """`established`, `dialing` (a dial not answered), or None: no SIP call has that id.

        Every SIP participant of the emulator's rooms is a call of its SIP service (an
        inbound caller, or a dialed human); an id on any other participant is nobody's.
        """
        for call in self._calls():
            if call.call_id == call_id:
                return "established" if call.outcome == "answered" else "dialing"
        return "established" if connection.kind == "sip" else None

    async def _call_ends(
        self, connection: MemoryConnection, notify_at: float | None, deadline: float
    ) -> str:
        """Wait for the first of: `notify` (the final NOTIFY), `call` (ended), `deadline`."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            if not connection.connected:
                return "call"
            if notify_at is not None and now >= notify_at and notify_at <= deadline:
                return "notify"
            if now >= deadline:
                return "deadline"
            wake = deadline if notify_at is None else min(deadline, notify_at)
            await asyncio.sleep(min(max(0.0, wake - now), _POLL_SECS))

    async def _hang_up(self, record: SipTransfer, connection: MemoryConnection, after: float):
        """The carrier's BYE (or LiveKit's own hang-up): the transferred call leaves."""
        await asyncio.sleep(after)
        if connection.connected:
            connection.set_attributes({"sip.callStatus": "hangup"})
            connection.disconnect("disconnected")
            self._note(record, "BYE")

    def _note(self, record: SipTransfer, event: str) -> None:
        record.events.append((asyncio.get_running_loop().time(), event))

    def _spawn(self, coro, name: str) -> None:
        task = asyncio.create_task(coro, name=f"SipTransfers::{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


#: How often a transfer waiting for its NOTIFY looks at the call (it owns no connection
#: events: the participant's client reads them).
_POLL_SECS = 0.02


def validate_transfer(
    req: sip.TransferSIPParticipantRequest,
    headers_problem: Callable[[Mapping[str, str]], str | None],
) -> tuple[str | None, str]:
    """LiveKit's `TransferSIPParticipantRequest.ValidateResult`.

    Returns:
        The first problem (None: valid) and `transfer_to` as LiveKit sends it: a SIP URI
        in angle brackets, a `tel:` URI bare.
    """
    if not req.room_name:
        return "missing room name", ""
    if not req.participant_identity:
        return "missing participant identity", ""
    if not req.transfer_to:
        return "missing transfer to", ""
    inner = req.transfer_to
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    if not inner.startswith(("sip:", "sips:", "tel:")):
        return "transfer_to must be a valid SIP(s) or TEL URI (sip:, sips: or tel:)", ""
    transfer_to = f"<{inner}>" if inner.startswith(("sip:", "sips:")) else inner
    return headers_problem(req.headers), transfer_to


def refer_destination(transfer_to: str) -> str:
    """The number or SIP user a REFER target names (`<sip:+1555@host;x>` → `+1555`)."""
    text = transfer_to.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    for scheme in ("sips:", "sip:", "tel:"):
        if text.startswith(scheme):
            text = text[len(scheme) :]
            break
    return text.split(";")[0].split("@")[0]


async def ringback(connection: MemoryConnection) -> None:
    """Play LiveKit's ringing tone into a SIP participant's call until cancelled.

    livekit/media-sdk `tones.Play` with `ETSIRinging`: 20 ms frames, on a clock of their
    own, the tone and then silence (written as zeros, as LiveKit does). The tone's second
    holds whole cycles of 425 Hz, so each cycle's frames are the same: made once.
    """
    rate = connection.sample_rate or 48000
    frame = int(rate * RINGBACK_FRAME_SECS)
    on = int(round(RINGBACK_ON_SECS / RINGBACK_FRAME_SECS))
    off = int(round(RINGBACK_OFF_SECS / RINGBACK_FRAME_SECS))
    tone = RINGBACK_AMPLITUDE * np.sin(2 * np.pi * RINGBACK_HZ * np.arange(on * frame) / rate)
    pcm = tone.astype(np.int16).tobytes()
    cycle = [pcm[2 * k * frame : 2 * (k + 1) * frame] for k in range(on)] + [bytes(2 * frame)] * off
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index, audio in enumerate(itertools.cycle(cycle)):
        if not connection.hear(audio, rate, RINGBACK_SOURCE):
            return
        await asyncio.sleep(max(0.0, start + (index + 1) * RINGBACK_FRAME_SECS - loop.time()))
