#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The LiveKit SIP backend: dial the human with `CreateSIPParticipant`, brief in a consult room.

`LiveKitSipBackend` opens one `LiveKitConsultLeg` per transfer. The leg:

1. `dial()` — optionally `CreateRoom` for the consult room (so it can be recorded), then
   `CreateSIPParticipant` with `wait_until_answered` and the ring timeout. LiveKit, not
   the HTTP client, decides when ringing ends: LiveKit's own deadline for the request
   (`X-Twirp-Timeout-Ms`) is the ring timeout plus `dial_grace` (LiveKit starts its ring
   clock only once the SIP participant joined), the HTTP client waits a second longer,
   and the dial is sent once, never replayed by the client's region failover. A failed
   call becomes a `DialError` from its SIP status (486/600 busy; 408/480/487 no answer;
   603 declined; others dial_failed with the status kept); LiveKit's own ring-out
   (`canceled`, no SIP status) is `no_answer`; a slow, unreachable or failing API is
   `dial_failed`. While it rings, the SIP participant's `sip.callStatus` is read
   (`GetParticipant`) so the leg can report `ringing`.
2. `transport` — a Pipecat transport on the consult room for the briefing pipeline
   (Pipecat's `LiveKitTransport` by default), with a token that may join that one room
   only. The human leaving that room is reported through `on_human_left`.
3. `move_to(caller_room)` — `MoveParticipant` (LiveKit Cloud). Open-source LiveKit
   answers 500 `unknown` "not implemented" (or `unimplemented`): that raises
   `MoveUnsupportedError` and, with `supports_move=None`, turns `move` off for the backend,
   so `auto` bridges straight away next time. LiveKit Cloud refusing this participant
   (412 `failed_precondition`) raises `MoveUnsupportedError` for this transfer only.
4. `find_sip_caller()` / `refer_caller()` (`refer` mode) — the caller's SIP participant
   (`GetParticipant`, or `ListParticipants` for the room's one SIP call), then
   `TransferSIPParticipant`: LiveKit's SIP service REFERs the caller's call to the human's
   number (`tel:` for a phone number) and answers once the human picked up; the caller's
   call then leaves the room. Sent once, without region failover, LiveKit's deadline being
   the ring timeout. The carrier refusing the REFER, or the human's line failing in the
   NOTIFY, raises `ReferError` with the SIP status (its meaning from the DESIGN §2 map).
5. `hang_up()` / `close()` — `RemoveParticipant` (unless moved), `DeleteRoom`, and the
   leg's HTTP session closed; a missing room or participant is not an error, teardown
   is idempotent and never raises, and a dial cancelled mid-request leaves nothing.

Every API call is made with `livekit-api`, which signs each request with only the grant
it needs; the API secret and the tokens never appear in logs or errors.

Example::

    backend = LiveKitSipBackend(trunk_id="ST_xxx", caller_id="+15550000000")  # LIVEKIT_*
    transfer = WarmTransfer(backend=backend, target=TransferTarget("+15551234567"), ...)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
from livekit.api import AccessToken, LiveKitAPI, ServerError, SIPGrants, VideoGrants
from livekit.api.twirp_client import TwirpClient
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    MoveParticipantRequest,
    RoomParticipantIdentity,
)
from livekit.protocol.sip import (
    CreateSIPParticipantRequest,
    SIPOutboundConfig,
    SIPParticipantInfo,
    SIPTransferReason,
    SIPTransferStatus,
    TransferSIPParticipantRequest,
    TransferSIPParticipantResponse,
)
from loguru import logger
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipecat_warm_transfer.consult_leg import (
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    MoveUnsupportedError,
    ReferError,
    ReferUnsupportedError,
    TransferBackend,
    TransferTarget,
    validate_destination,
)
from pipecat_warm_transfer.types import (
    FailureReason,
    TransferConfigError,
    reason_for_sip_status,
)

#: Builds the consult-room transport: `(url, token, room_name, identity, params)`.
TransportFactory = Callable[[str, str, str, str, TransportParams], BaseTransport]

_NOT_FOUND = "not_found"
#: The SIP participant's call status attribute, and the values that mean "it rang".
CALL_STATUS_ATTRIBUTE = "sip.callStatus"
#: The attribute LiveKit's SIP service gives its participants; TransferSIPParticipant
#: refers the call it names.
CALL_ID_ATTRIBUTE = "sip.callID"
_RANG = frozenset({"ringing", "automation", "active"})
#: Seconds the dial's HTTP request may outlast the leg's bound on it.
_DIAL_SLACK_SECS = 1.0
#: Seconds LiveKit's SIP service takes to play one `dtmf` digit or `w` pause after the
#: answer (livekit/media-sdk dtmf: a 250 ms tone and a 250 ms gap).
DTMF_DIGIT_SECS = 0.5
#: The Twirp header that sets LiveKit's own deadline for a request (xtwirp
#: `ServerPassTimeout`): a waiting dial, its room join and its ringing end there.
DEADLINE_HEADER = "X-Twirp-Timeout-Ms"
#: Seconds between looks for the SIP participant of a dial LiveKit never answered.
ABANDONED_DIAL_POLL_SECS = 0.5
#: Tries of a teardown call (hang-up, DeleteRoom) before giving up, and the backoff unit.
TEARDOWN_ATTEMPTS = 3
TEARDOWN_BACKOFF_SECS = 0.2
_JWT = re.compile(r"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_URL_SCHEMES = ("wss://", "ws://", "https://", "http://")


def livekit_transport_factory(
    url: str, token: str, room_name: str, identity: str, params: TransportParams
) -> BaseTransport:
    """Build Pipecat's `LiveKitTransport` on the consult room (the default factory).

    Args:
        url: The LiveKit server URL (`wss://...`).
        token: The join token (it names the identity).
        room_name: The consult room.
        identity: The bot's identity (carried by the token).
        params: Transport parameters (converted to `LiveKitParams` when needed).

    Returns:
        The transport.
    """
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

    if not isinstance(params, LiveKitParams):
        params = LiveKitParams(
            **{name: getattr(params, name) for name in type(params).model_fields}
        )
    return LiveKitTransport(url, token, room_name, params=params)


def default_consult_params(sample_rate: int = 16000) -> TransportParams:
    """Default consult transport parameters: audio in and out at `sample_rate`.

    Args:
        sample_rate: The briefing pipeline's audio rate.

    Returns:
        The parameters (no end silence: the consult room is torn down anyway).
    """
    return TransportParams(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=sample_rate,
        audio_out_sample_rate=sample_rate,
        audio_out_end_silence_secs=0,
    )


class HumanPhase(enum.Enum):
    """Where the human's call stands, as the leg knows it (one phase instead of flags)."""

    NOT_DIALED = "not_dialed"
    #: The dial is sent and LiveKit has not answered: its SIP participant may join and
    #: ring at any moment, even after the leg stopped waiting.
    RINGING = "ringing"
    ANSWERED = "answered"  # in the consult room
    MOVING = "moving"
    MOVED = "moved"  # in the caller's room
    HANGING_UP = "hanging_up"  # our own RemoveParticipant is under way
    HUNG_UP = "hung_up"  # removed by this leg
    GONE = "gone"  # left by themselves, or the dial failed


#: Phases in which the human may be in a room (a hang-up has something to remove).
_PRESENT = (HumanPhase.RINGING, HumanPhase.ANSWERED, HumanPhase.MOVING, HumanPhase.MOVED)


class LiveKitConsultLeg(ConsultLeg):
    """One transfer's consult room on LiveKit and the SIP participant dialed into it."""

    def __init__(self, backend: LiveKitSipBackend, request: DialRequest, trunk_id: str | None):
        """Create the leg (no call is placed until `dial()`).

        Args:
            backend: The backend that opened the leg.
            request: What to dial.
            trunk_id: The outbound trunk id (None: the backend's inline trunk).
        """
        super().__init__(request)
        self._backend = backend
        self._trunk_id = trunk_id
        self._api: LiveKitAPI | None = None
        self._api_closed = False
        self._transport: BaseTransport | None = None
        self._dial_task: asyncio.Task | None = None
        self._teardown_task: asyncio.Task | None = None
        self._hang_up_task: asyncio.Task | None = None
        self._phase = HumanPhase.NOT_DIALED
        # The human left while the dial or a move was still settling: reported after it.
        self._pending_left: str | None = None
        self._room_may_exist = False
        self._dial_started_at = 0.0
        self.participant: SIPParticipantInfo | None = None
        self.dial_error: DialError | None = None
        self.moved_to: str | None = None
        #: The caller's room, once their call was referred to the human.
        self.referred_from: str | None = None

    def __repr__(self) -> str:
        return f"LiveKitConsultLeg({self.room_name!r})"

    @property
    def phase(self) -> HumanPhase:
        """Where the human's call stands."""
        return self._phase

    @property
    def answered(self) -> bool:
        """Whether the human answered (LiveKit returned their SIP participant)."""
        return self.participant is not None

    @property
    def hung_up(self) -> bool:
        """Whether the human was hung up by this leg."""
        return self._phase == HumanPhase.HUNG_UP

    # The transport

    @property
    def transport(self) -> BaseTransport:
        """The bot's transport on the consult room (joins when its pipeline starts).

        Its token grants `roomJoin` for the consult room only, as the bot's identity.
        """
        if self._transport is None:
            backend = self._backend
            token = backend.consult_token(self.room_name, self.request.bot_identity)
            transport = backend.transport_factory(
                backend.rtc_url,
                token,
                self.room_name,
                self.request.bot_identity,
                backend.transport_params.model_copy(),
            )
            self._watch(transport)
            self._transport = transport
        return self._transport

    def _watch(self, transport: BaseTransport) -> None:
        @transport.event_handler("on_participant_left")
        async def _on_left(_transport, participant_id, reason=None):
            await self._participant_gone(participant_id, str(reason or "disconnected"))

        @transport.event_handler("on_participant_disconnected")
        async def _on_disconnected(_transport, participant_id):
            # `on_participant_left` (with a reason) is queued right after this event:
            # let it report first; this one only covers transports without it.
            await asyncio.sleep(0)
            await self._participant_gone(participant_id, "disconnected")

    async def _participant_gone(self, identity: str, reason: str) -> None:
        if identity != self.human_identity or self._closed:
            return
        phase = self._phase
        if phase in (HumanPhase.RINGING, HumanPhase.MOVING):
            # The dial's answer (a failure reports itself) or the move decides first.
            self._pending_left = reason
            return
        if phase != HumanPhase.ANSWERED:
            return  # our own hang-up, gone already, or moved (the caller room watches then)
        self._phase = HumanPhase.GONE
        logger.debug(f"{self}: the human left ({reason})")
        try:
            await self._notify_human_left(reason)
        except Exception as e:
            logger.error(f"{self}: human-left handler failed: {e!r}")

    # Dial

    async def dial(self) -> None:
        """Dial the human into the consult room and return once they answered.

        Raises:
            DialError: Busy, no answer, declined, failed (with the SIP status when the
                server reported one), the API failed or timed out (`dial_failed`), or
                the leg was closed meanwhile (`cancelled`).
        """
        if self._closed:
            raise DialError(FailureReason.CANCELLED, detail="the leg is closed")
        if self._phase != HumanPhase.NOT_DIALED or self.dial_error or self._dial_task:
            raise DialError(FailureReason.DIAL_FAILED, detail="the leg was already dialed")
        try:
            await self._ensure_room()
            self.participant = await self._create_sip_participant()
        except DialError as e:
            self.dial_error = e
            logger.info(f"{self}: dial failed: {e.reason} (SIP {e.sip_status}): {e.detail}")
            raise
        logger.debug(f"{self}: {self.human_identity} answered")
        pending, self._pending_left = self._pending_left, None
        if pending is not None:
            await self._participant_gone(self.human_identity, pending)

    async def open_transport(self) -> BaseTransport:
        """The bot's consult-room transport, the room created first when configured.

        LiveKit creates a room when the first participant joins; `create_consult_room`
        creates it ahead with the backend's `empty_timeout`.
        """
        if self._closed:
            raise DialError(FailureReason.CANCELLED, detail="the leg is closed")
        await self._ensure_room()
        return self.transport

    async def _ensure_room(self) -> None:
        if self._room_may_exist:
            return
        self._room_may_exist = True
        if self._backend.create_consult_room:
            await self._create_room()

    async def _create_room(self) -> None:
        request = CreateRoomRequest(
            name=self.room_name, empty_timeout=self._backend.consult_room_empty_timeout
        )

        def failed(error: ServerError) -> DialError:
            return DialError(FailureReason.DIAL_FAILED, detail=f"CreateRoom: {_describe(error)}")

        async def create() -> None:
            async with self._client() as api:
                await api.room.create_room(request)

        await self._dial_step("CreateRoom", create, self._backend.api_timeout, failed)

    def _sip_request(self) -> CreateSIPParticipantRequest:
        backend = self._backend
        target = self.request.target
        request = CreateSIPParticipantRequest(
            sip_call_to=sip_call_to(target.number),
            room_name=self.room_name,
            participant_identity=self.human_identity,
            participant_name=target.display_name or "",
            sip_number=target.caller_id or backend.caller_id or "",
            headers=dict(target.headers),
            dtmf=target.dtmf or "",
            wait_until_answered=True,
            krisp_enabled=backend.krisp_enabled,
            play_dialtone=backend.play_dialtone,
        )
        if self._trunk_id:
            request.sip_trunk_id = self._trunk_id
        elif backend.outbound_trunk is not None:
            request.trunk.CopyFrom(backend.outbound_trunk)
        request.ringing_timeout.FromNanoseconds(int(round(self._ring_timeout * 1e9)))
        return request

    @property
    def _ring_timeout(self) -> float:
        return max(0.0, float(self.request.ring_timeout))

    @property
    def _request_timeout(self) -> float:
        """LiveKit's deadline for the dial: past its own ring-out, the join included.

        LiveKit answers a waiting dial only once the `dtmf` digits were played after the
        answer (0.5 s a digit or pause), so they count too.
        """
        digits = len(self.request.target.dtmf or "")
        return self._ring_timeout + self._backend.dial_grace + DTMF_DIGIT_SECS * digits

    @property
    def dial_timeout(self) -> float:
        """The core's bound on `dial()`: past the leg's own bound, so LiveKit's answer wins."""
        return self._request_timeout + 3 * _DIAL_SLACK_SECS + self._backend.api_timeout

    async def _create_sip_participant(self) -> SIPParticipantInfo:
        request = self._sip_request()
        ring = self._ring_timeout

        def failed(error: ServerError) -> DialError:
            # LiveKit answered: its SIP participant has left the room with the failure.
            self._phase = HumanPhase.GONE
            self._pending_left = None
            return _dial_error(error, ring)

        # Sent once, on its own livekit-api Twirp client without region failover: a
        # replayed CreateSIPParticipant would ring the phone a second time (LiveKit does
        # not dedupe requests). LiveKit's deadline for it is the leg's own, so nothing
        # joins or rings after the leg stopped waiting; the HTTP client waits a little
        # longer, so that LiveKit's answer (and its reason) always arrives.
        deadline = self._request_timeout
        session = aiohttp.ClientSession()
        client = TwirpClient(session, self._backend.url, "livekit", failover=False)
        headers = {
            "authorization": f"Bearer {self._backend.sip_call_token(deadline)}",
            DEADLINE_HEADER: str(int(deadline * 1000)),
        }
        timeout = aiohttp.ClientTimeout(total=deadline + _DIAL_SLACK_SECS)
        watcher = asyncio.create_task(self._watch_call_status(), name=f"{self}::call-status")
        # Until LiveKit answers, its SIP participant may still join and ring.
        self._phase = HumanPhase.RINGING
        self._dial_started_at = asyncio.get_running_loop().time()
        try:
            info = await self._dial_step(
                "CreateSIPParticipant",
                lambda: client.request(
                    "SIP",
                    "CreateSIPParticipant",
                    request,
                    headers,
                    SIPParticipantInfo,
                    timeout=timeout,
                ),
                deadline + 2 * _DIAL_SLACK_SECS,
                failed,
            )
            if self._phase == HumanPhase.RINGING:
                self._phase = HumanPhase.ANSWERED
            return info
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await session.close()

    async def _watch_call_status(self) -> None:
        """Read the SIP participant's `sip.callStatus` while it rings; report `ringing` once.

        The participant is in the consult room from the start of the dial (LiveKit's SIP
        service joins it before it sends the INVITE); its status turns `ringing` on the
        carrier's 180. Bounded by the dial: this task is cancelled when the dial ends.
        """
        interval = self._backend.status_poll_interval
        if not interval:
            return
        request = RoomParticipantIdentity(room=self.room_name, identity=self.human_identity)
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._client() as api:
                    info: ParticipantInfo = await asyncio.wait_for(
                        api.room.get_participant(request), self._backend.api_timeout
                    )
            except ServerError as e:
                if e.code != _NOT_FOUND:  # not joined yet: keep looking
                    logger.debug(f"{self}: call status unavailable: {_describe(e)}")
                continue
            except (aiohttp.ClientError, TimeoutError) as e:
                logger.debug(f"{self}: call status unavailable: {type(e).__name__}")
                continue
            if info.attributes.get(CALL_STATUS_ATTRIBUTE) in _RANG:
                await self._notify_ringing()
                return

    async def _dial_step(
        self,
        method: str,
        call: Callable[[], Awaitable[Any]],
        bound: float,
        failed: Callable[[ServerError], DialError],
    ) -> Any:
        """Run one API call of the dial, bounded, and cancellable by `close()`."""
        if self._closed:
            raise DialError(FailureReason.CANCELLED, detail="the dial was cancelled")
        task = asyncio.create_task(call(), name=f"{self}::{method}")
        self._dial_task = task
        try:
            async with asyncio.timeout(bound):
                return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closed and (current is None or not current.cancelling()):
                raise DialError(FailureReason.CANCELLED, detail="the dial was cancelled") from None
            raise
        except ServerError as e:
            raise failed(e) from None
        except TimeoutError:
            raise DialError(
                FailureReason.DIAL_FAILED,
                detail=f"{method}: LiveKit did not answer within {bound:g} s",
            ) from None
        except aiohttp.ClientError as e:
            raise DialError(
                FailureReason.DIAL_FAILED, detail=f"{method}: {type(e).__name__}"
            ) from None
        finally:
            if not task.done():
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._dial_task = None

    # Move

    async def move_to(self, caller_room: str) -> None:
        """Move the human into the caller's room (`MoveParticipant`).

        Raises:
            MoveUnsupportedError: The server has no MoveParticipant (`unimplemented`), or
                the backend knows it has none.
            ConnectError: The leg is closed, the human is gone, or the move failed.
        """
        backend = self._backend
        if not backend.supports_move:
            raise MoveUnsupportedError("this server does not support MoveParticipant")
        if self._closed:
            raise ConnectError("the leg is closed")
        if self._moved:
            if self.moved_to == caller_room:
                return
            raise ConnectError(f"the human was already moved to {self.moved_to!r}")
        if self._phase != HumanPhase.ANSWERED:
            raise ConnectError("the human is not in the consult room")
        request = MoveParticipantRequest(
            room=self.room_name, identity=self.human_identity, destination_room=caller_room
        )
        self._phase = HumanPhase.MOVING
        try:
            async with self._client() as api:
                await api.room.move_participant(request)
        except ServerError as e:
            if _move_not_implemented(e):
                backend._move_unimplemented()
                raise MoveUnsupportedError("this server does not support MoveParticipant") from None
            if e.code == "failed_precondition":
                raise MoveUnsupportedError(
                    f"LiveKit cannot move this participant: {_describe(e)}"
                ) from None
            raise ConnectError(f"MoveParticipant failed: {_describe(e)}") from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConnectError(f"MoveParticipant failed: {type(e).__name__}") from None
        else:
            self._moved = True
            self.moved_to = caller_room
            logger.debug(f"{self}: moved {self.human_identity} to {caller_room}")
        finally:
            if self._phase == HumanPhase.MOVING:
                self._phase = HumanPhase.MOVED if self._moved else HumanPhase.ANSWERED
            pending, self._pending_left = self._pending_left, None
            if pending is not None and not self._moved:
                await self._participant_gone(self.human_identity, pending)

    # Refer

    async def find_sip_caller(self, caller_room: str, caller_identity: str | None) -> str:
        """The caller's SIP participant in their room (`GetParticipant`/`ListParticipants`).

        Raises:
            ReferUnsupportedError: Not in the room, not a SIP call (a WebRTC caller), or
                several SIP calls there and no identity given.
            ConnectError: The room service failed.
        """
        if self._closed:
            raise ConnectError("the leg is closed")
        try:
            async with self._client() as api:
                if caller_identity:
                    request = RoomParticipantIdentity(room=caller_room, identity=caller_identity)
                    found = [await api.room.get_participant(request)]
                else:
                    listed = await api.room.list_participants(
                        ListParticipantsRequest(room=caller_room)
                    )
                    found = [p for p in listed.participants if _is_sip_call(p)]
        except ServerError as e:
            if e.code == _NOT_FOUND:
                raise ReferUnsupportedError("the caller is not in their room") from None
            raise ConnectError(f"finding the caller failed: {_describe(e)}") from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConnectError(f"finding the caller failed: {type(e).__name__}") from None
        if not found:
            raise ReferUnsupportedError("the caller's room has no SIP call to refer")
        if len(found) > 1:
            raise ReferUnsupportedError(
                "the caller's room has several SIP calls: give the caller's identity"
            )
        if not _is_sip_call(found[0]):
            raise ReferUnsupportedError("the caller is not a SIP call (WebRTC cannot be referred)")
        return found[0].identity

    async def refer_caller(self, caller_room: str, caller_identity: str, to: str) -> None:
        """Transfer the caller's call to the human (`TransferSIPParticipant`, a SIP REFER).

        LiveKit answers once the human picked up; its deadline is the ring timeout.

        Raises:
            ReferUnsupportedError: LiveKit has no SIP call for the caller.
            ReferError: The carrier refused the REFER, the human's line failed (with the
                SIP status), or nobody answered within the ring timeout.
            ConnectError: The leg is closed, or the request failed otherwise.
        """
        if self._closed:
            raise ConnectError("the leg is closed")
        ring = self._ring_timeout
        request = TransferSIPParticipantRequest(
            room_name=caller_room,
            participant_identity=caller_identity,
            transfer_to=refer_uri(to),
            play_dialtone=self._backend.refer_dialtone,
        )
        request.ringing_timeout.FromNanoseconds(int(round(ring * 1e9)))
        # Sent once (no region failover): a replay after a failure would REFER again.
        api = self._backend.new_api(failover=False)
        try:
            async with asyncio.timeout(ring + 2 * _DIAL_SLACK_SECS + self._backend.api_timeout):
                response = await api.sip.transfer_sip_participant(
                    request, timeout=ring + _DIAL_SLACK_SECS
                )
        except ServerError as e:
            raise _refer_error(e, ring) from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ConnectError(f"TransferSIPParticipant failed: {type(e).__name__}") from None
        finally:
            await api.aclose()
        failure = _refer_failure(response)
        if failure is not None:
            raise failure
        self.referred_from = caller_room
        logger.debug(f"{self}: the caller's call was referred to the human")

    # Hang-up and teardown

    async def hang_up(self) -> None:
        """Hang the human up (`RemoveParticipant`, in the caller's room after a move).

        Idempotent; a participant that is already gone is not an error. Transient
        failures are retried (a phone left connected to an empty room is the worst leak);
        a final failure is logged and a later call may retry.
        """
        task = self._hang_up_task
        if task is None or task.done():
            if self._phase not in _PRESENT:
                return
            task = asyncio.create_task(self._hang_up(), name=f"{self}::hang-up")
            self._hang_up_task = task
        # Whoever asks while a hang-up is under way waits for it; a caller cancelled
        # meanwhile (the pipeline ending) does not cut it short.
        await asyncio.shield(task)

    async def _hang_up(self) -> None:
        phase = self._phase
        room = self.moved_to if self._moved and self.moved_to else self.room_name
        self._phase = HumanPhase.HANGING_UP
        if not await self._with_retries("hang-up", lambda: self._remove_participant(room)):
            self._phase = phase  # a later call may retry
            return
        self._phase = HumanPhase.HUNG_UP

    async def _remove_participant(self, room: str) -> bool:
        """`RemoveParticipant`; whether the participant was there (not_found is no error)."""
        request = RoomParticipantIdentity(room=room, identity=self.human_identity)
        try:
            async with self._client() as api:
                await api.room.remove_participant(request)
        except ServerError as e:
            if e.code != _NOT_FOUND:
                raise
            return False
        logger.debug(f"{self}: removed {self.human_identity} from {room}")
        return True

    async def _hang_up_abandoned_dial(self) -> bool:
        """Hang up a dial LiveKit never answered: its SIP participant may join later.

        LiveKit passes no cancel to its SIP service, so a dial whose request was dropped
        (the caller hung up, the leg gave up) rings on, and its SIP participant may not
        have joined yet. Look for it until the request itself would have given up (ring
        timeout + `dial_grace` from the dial's start) and remove it once there.

        Returns:
            Whether it was removed (False: it never showed up within the bound).
        """
        loop = asyncio.get_running_loop()
        deadline = self._dial_started_at + self._request_timeout + _DIAL_SLACK_SECS
        present = False

        async def remove() -> None:
            nonlocal present
            present = await self._remove_participant(self.room_name)

        while True:
            if not await self._with_retries("hang-up", remove):
                return False
            if present:
                return True
            if loop.time() >= deadline:
                logger.debug(f"{self}: the abandoned dial's participant never joined")
                return True
            await asyncio.sleep(ABANDONED_DIAL_POLL_SECS)

    async def close(self) -> None:
        """Tear the leg down: cancel a dial, hang up unless moved, delete the consult room.

        The leg's HTTP session is closed last. Idempotent and never raises (errors are
        logged); if the caller is cancelled meanwhile, the teardown still completes.
        """
        if self._closed:
            task = self._teardown_task
            if task is not None and not task.done():
                await asyncio.shield(task)
            return
        self._closed = True
        task = asyncio.create_task(self._teardown(), name=f"{self}::teardown")
        self._teardown_task = task
        await asyncio.shield(task)

    async def _teardown(self) -> None:
        try:
            dial = self._dial_task
            if dial is not None and not dial.done():
                dial.cancel()
                await asyncio.wait([dial], timeout=self._backend.api_timeout)
            hanging_up = self._hang_up_task
            if hanging_up is not None and not hanging_up.done():
                await asyncio.wait([hanging_up])  # its session is closed below
            phase = self._phase
            if phase in (HumanPhase.RINGING, HumanPhase.ANSWERED, HumanPhase.MOVING):
                self._phase = HumanPhase.HANGING_UP
                if phase == HumanPhase.RINGING:
                    removed = await self._hang_up_abandoned_dial()
                else:
                    removed = await self._with_retries(
                        "hang-up", lambda: self._remove_participant(self.room_name)
                    )
                self._phase = HumanPhase.HUNG_UP if removed else phase
            if self._room_may_exist:
                await self._with_retries("DeleteRoom", self._delete_room)
        except Exception as e:
            logger.error(f"{self}: teardown error: {_describe(e)}")
        finally:
            await self._close_api()
        logger.debug(f"{self}: closed (moved={self._moved})")

    async def _delete_room(self) -> None:
        try:
            async with self._client() as api:
                await api.room.delete_room(DeleteRoomRequest(room=self.room_name))
        except ServerError as e:
            if e.code != _NOT_FOUND:
                raise

    async def _with_retries(self, what: str, operation) -> bool:
        """Run a teardown call, retrying transient failures (5xx, dropped connections).

        A teardown call that fails once would leave a room or a phone call behind, so it
        is tried `TEARDOWN_ATTEMPTS` times with a short backoff; 4xx answers are final.
        """
        for attempt in range(1, TEARDOWN_ATTEMPTS + 1):
            try:
                await operation()
                return True
            except ServerError as e:
                final = e.status is not None and e.status < 500 or attempt == TEARDOWN_ATTEMPTS
                logger.warning(f"{self}: {what} failed (try {attempt}): {_describe(e)}")
                if final:
                    return False
            except Exception as e:
                logger.warning(f"{self}: {what} failed (try {attempt}): {_describe(e)}")
                if attempt == TEARDOWN_ATTEMPTS:
                    return False
            await asyncio.sleep(TEARDOWN_BACKOFF_SECS * attempt)
        return False

    async def _close_api(self) -> None:
        api, self._api = self._api, None
        self._api_closed = True
        if api is not None:
            try:
                await api.aclose()
            except Exception as e:
                logger.warning(f"{self}: closing the API session failed: {e!r}")

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[LiveKitAPI]:
        """The leg's API client; after `close()`, a one-call client closed right after."""
        if not self._api_closed:
            if self._api is None:
                self._api = self._backend.new_api()
            yield self._api
            return
        api = self._backend.new_api()
        try:
            yield api
        finally:
            await api.aclose()


class LiveKitSipBackend(TransferBackend):
    """Dials humans over LiveKit SIP into consult rooms (`CreateSIPParticipant`).

    Parameters:
        url: LiveKit server URL (default: `LIVEKIT_URL`).
        api_key: API key (default: `LIVEKIT_API_KEY`).
        api_secret: API secret (default: `LIVEKIT_API_SECRET`).
        trunk_id: Outbound SIP trunk id (default: `LIVEKIT_SIP_OUTBOUND_TRUNK`); a
            target's own `route` wins.
        caller_id: Number shown to the human (default: `LIVEKIT_SIP_NUMBER`); a target's
            own `caller_id` wins.
        outbound_trunk: Inline outbound trunk settings, used when no trunk id is given.
        krisp_enabled: Krisp noise cancellation on the SIP participant.
        play_dialtone: Play a dial tone into the consult room while it rings.
        create_consult_room: `CreateRoom` before dialing (e.g. to record or egress it).
        consult_room_empty_timeout: `empty_timeout` (s) of a pre-created consult room.
        supports_move: Whether `MoveParticipant` works; None (auto): yes until the server
            answers that it has none (open-source LiveKit's "not implemented") once.
        transport_factory: Builds the consult transport from `(url, token, room_name,
            identity, params)` (default: Pipecat's `LiveKitTransport`).
        transport_params: Consult transport parameters (default: audio in and out at
            `sample_rate`).
        sample_rate: Audio rate of the default consult transport parameters.
        api_timeout: Seconds bound on each room service call.
        dial_grace: Seconds the dial request may run beyond the ring timeout. LiveKit starts
            its ring clock only once the SIP participant joined the room, so the client
            waits that much longer and LiveKit ends the ringing (and says why).
        status_poll_interval: Seconds between reads of the ringing participant's
            `sip.callStatus` (for the `ringing` event); 0 turns them off.
        token_ttl: Lifetime (s) of the consult-room join token.
        hang_up_moved_on_close: Whether `close()` also hangs up humans moved into the
            caller's room (False: they stay on the call with the caller).
        refer_dialtone: In `refer` mode, whether the caller hears a ring tone while the
            human's phone rings (LiveKit's `play_dialtone` of TransferSIPParticipant).
        failover: `livekit-api` region failover (LiveKit Cloud only) for the room service
            calls; never for the dial.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        api_secret: str | None = None,
        *,
        trunk_id: str | None = None,
        caller_id: str | None = None,
        outbound_trunk: SIPOutboundConfig | None = None,
        krisp_enabled: bool = False,
        play_dialtone: bool = False,
        create_consult_room: bool = False,
        consult_room_empty_timeout: int = 60,
        supports_move: bool | None = None,
        transport_factory: TransportFactory | None = None,
        transport_params: TransportParams | None = None,
        sample_rate: int = 16000,
        api_timeout: float = 10.0,
        dial_grace: float = 10.0,
        status_poll_interval: float = 0.5,
        token_ttl: float = 600.0,
        hang_up_moved_on_close: bool = False,
        failover: bool = True,
        refer_dialtone: bool = True,
    ):
        """Create the backend (settings are checked here, before any call is placed).

        Raises:
            TransferConfigError: A required setting is missing or invalid (one line
                naming it; secrets are never echoed).
        """
        self.url = _setting(url, "LIVEKIT_URL", "url")
        self.api_key = _setting(api_key, "LIVEKIT_API_KEY", "api_key")
        self._api_secret = _setting(api_secret, "LIVEKIT_API_SECRET", "api_secret")
        if not self.url.lower().startswith(_URL_SCHEMES):
            raise TransferConfigError("url: must start with wss://, ws://, https:// or http://")
        self.trunk_id = trunk_id or os.getenv("LIVEKIT_SIP_OUTBOUND_TRUNK") or None
        caller_id = caller_id or os.getenv("LIVEKIT_SIP_NUMBER") or None
        self.caller_id = validate_destination(caller_id, "caller_id") if caller_id else None
        if outbound_trunk is not None and not isinstance(outbound_trunk, SIPOutboundConfig):
            raise TransferConfigError("outbound_trunk: must be a livekit SIPOutboundConfig")
        if outbound_trunk is not None and not outbound_trunk.hostname:
            raise TransferConfigError("outbound_trunk.hostname: the trunk's host is required")
        self.outbound_trunk = outbound_trunk
        self.krisp_enabled = bool(krisp_enabled)
        self.play_dialtone = bool(play_dialtone)
        self.create_consult_room = bool(create_consult_room)
        self.consult_room_empty_timeout = _positive_int(
            consult_room_empty_timeout, "consult_room_empty_timeout"
        )
        self._supports_move = supports_move
        self.transport_factory: TransportFactory = transport_factory or livekit_transport_factory
        if sample_rate <= 0:
            raise TransferConfigError("sample_rate: must be positive")
        self.transport_params = transport_params or default_consult_params(sample_rate)
        self.api_timeout = _positive(api_timeout, "api_timeout")
        self.dial_grace = _positive(dial_grace, "dial_grace")
        if status_poll_interval != 0:
            status_poll_interval = _positive(status_poll_interval, "status_poll_interval")
        self.status_poll_interval = float(status_poll_interval)
        self.token_ttl = _positive(token_ttl, "token_ttl")
        self.hang_up_moved_on_close = hang_up_moved_on_close
        self.failover = failover
        self.refer_dialtone = bool(refer_dialtone)
        self.legs: list[LiveKitConsultLeg] = []

    def __repr__(self) -> str:
        return f"LiveKitSipBackend({self.url!r})"

    @property
    def supports_move(self) -> bool:
        """Whether `move` may be tried (False once the server answered `unimplemented`)."""
        return self._supports_move is not False

    def _move_unimplemented(self) -> None:
        if self._supports_move is None:
            logger.info(f"{self}: MoveParticipant is unimplemented here; bridging from now on")
            self._supports_move = False

    @property
    def rtc_url(self) -> str:
        """The server URL for the media connection (`ws(s)://`)."""
        url = self.url
        if url.lower().startswith("https://"):
            return "wss://" + url[len("https://") :]
        if url.lower().startswith("http://"):
            return "ws://" + url[len("http://") :]
        return url

    def new_api(self, *, failover: bool | None = None) -> LiveKitAPI:
        """A new `LiveKitAPI` client (its own HTTP session; the caller closes it).

        Args:
            failover: Region failover (None: the backend's setting); off for a request
                that must not be replayed.

        Returns:
            The client, bounded by `api_timeout` per request. Dials do not use it: they
            are sent once, without region failover, with LiveKit's deadline set.
        """
        return LiveKitAPI(
            self.url,
            self.api_key,
            self._api_secret,
            timeout=aiohttp.ClientTimeout(total=self.api_timeout),
            failover=self.failover if failover is None else failover,
        )

    def sip_call_token(self, ttl: float) -> str:
        """An API token for placing one call: the `sip.call` grant only.

        Args:
            ttl: Seconds the dial may take (the token outlives it by a minute).

        Returns:
            The signed JWT (never log it).
        """
        return (
            AccessToken(self.api_key, self._api_secret)
            .with_sip_grants(SIPGrants(call=True))
            .with_ttl(timedelta(seconds=ttl + 60))
            .to_jwt()
        )

    def consult_token(self, room_name: str, identity: str) -> str:
        """A join token for one consult room: `roomJoin` for that room only.

        Args:
            room_name: The consult room.
            identity: The bot's identity in it.

        Returns:
            The signed JWT (never log it).
        """
        return (
            AccessToken(self.api_key, self._api_secret)
            .with_identity(identity)
            .with_name(identity)
            .with_ttl(timedelta(seconds=self.token_ttl))
            .with_grants(
                VideoGrants(
                    room_join=True,
                    room=room_name,
                    can_publish=True,
                    can_subscribe=True,
                    can_publish_data=True,
                )
            )
            .to_jwt()
        )

    def check_target(self, target: TransferTarget) -> None:
        """Refuse a target LiveKit cannot dial, or one with no outbound trunk.

        Raises:
            TransferConfigError: A full SIP URI (LiveKit dials a number or SIP user through
                a trunk), no outbound trunk, or an inline trunk without a caller id.
        """
        if "@" in sip_call_to(target.number):
            raise TransferConfigError(
                "target.number: LiveKit dials a phone number or SIP user through a trunk, "
                "not a full SIP URI (user@host): put the host in the outbound trunk"
            )
        if (
            not (target.route or self.trunk_id)
            and self.outbound_trunk is not None
            and not (target.caller_id or self.caller_id)
        ):
            raise TransferConfigError(
                "caller_id: an inline outbound trunk has no numbers of its own "
                "(pass caller_id= or set LIVEKIT_SIP_NUMBER)"
            )
        if not (target.route or self.trunk_id) and self.outbound_trunk is None:
            raise TransferConfigError(
                "trunk_id: no outbound SIP trunk (pass trunk_id= or outbound_trunk=, "
                "or set LIVEKIT_SIP_OUTBOUND_TRUNK)"
            )

    async def open_leg(self, request: DialRequest) -> LiveKitConsultLeg:
        """Create the consult leg for one transfer (no call is placed yet).

        Args:
            request: What to dial.

        Returns:
            The leg.

        Raises:
            TransferConfigError: No outbound trunk is configured.
        """
        self.check_target(request.target)
        trunk_id = request.target.route or self.trunk_id
        self.legs = [leg for leg in self.legs if self._keep(leg)]
        leg = LiveKitConsultLeg(self, request, trunk_id)
        self.legs.append(leg)
        return leg

    def _keep(self, leg: LiveKitConsultLeg) -> bool:
        """Whether `close()` still has something to do for a leg."""
        if not leg.closed:
            return True
        return leg.moved and self.hang_up_moved_on_close and not leg.hung_up

    async def close(self) -> None:
        """Close every leg still open (and hang up moved humans if configured).

        Idempotent, never raises.
        """
        legs, self.legs = self.legs, []
        for leg in legs:
            try:
                await leg.close()
                if leg.moved and self.hang_up_moved_on_close:
                    await leg.hang_up()
            except Exception as e:
                logger.error(f"{self}: error closing {leg}: {_describe(e)}")


def _setting(value: str | None, env: str, name: str) -> str:
    value = value or os.getenv(env)
    if not value or not value.strip():
        raise TransferConfigError(f"{name}: not set (pass {name}= or set {env})")
    return value.strip()


def _positive(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TransferConfigError(f"{name}: must be a number of seconds") from None
    if not number > 0:
        raise TransferConfigError(f"{name}: must be positive")
    return number


def _positive_int(value: int, name: str) -> int:
    if not isinstance(value, int) or value <= 0:
        raise TransferConfigError(f"{name}: must be a positive whole number of seconds")
    return value


def _sip_status(error: ServerError) -> int | None:
    raw = (error.metadata or {}).get("sip_status_code")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def sip_call_to(number: str) -> str:
    """What LiveKit's `sip_call_to` takes for a target: a number or a SIP user.

    `tel:+15551234567` becomes `+15551234567` and `sip:alice` becomes `alice`; a full
    `sip:user@host` keeps its `@` (LiveKit refuses it: the host belongs in the trunk).
    """
    lowered = number.lower()
    for scheme in ("tel:", "sips:", "sip:"):
        if lowered.startswith(scheme):
            return number[len(scheme) :].split(";")[0]
    return number


def _dial_error(error: ServerError, ring_timeout: float) -> DialError:
    """The `DialError` of a failed `CreateSIPParticipant` answer, saying what happened."""
    status = _sip_status(error)
    if status is not None:
        phrase = _clean((error.metadata or {}).get("sip_status", ""))
        return DialError.from_sip_status(status, f"SIP {status} {phrase}".strip())
    if error.code == "canceled":
        # LiveKit's own ringing timeout (or the participant removed while it rang).
        return DialError(
            FailureReason.NO_ANSWER,
            None,
            f"nobody answered: LiveKit ended the ringing ({ring_timeout:g} s ring timeout)",
        )
    if error.code == "deadline_exceeded":
        return DialError(
            FailureReason.NO_ANSWER, None, "nobody answered before LiveKit's dial deadline"
        )
    if error.status == 401:
        what = (
            "the API key has no SIP call grant"
            if error.code == "unauthenticated"
            else ("the API key or secret was refused")
        )
        return DialError(FailureReason.DIAL_FAILED, None, f"CreateSIPParticipant: {what}")
    return DialError(FailureReason.DIAL_FAILED, None, f"CreateSIPParticipant: {_describe(error)}")


def refer_uri(number: str) -> str:
    """What TransferSIPParticipant takes for a target: a `tel:` or `sip:` URI.

    LiveKit refuses a bare number (`transfer_to must be a valid SIP(s) or TEL URI`), so
    `+15551234567` becomes `tel:+15551234567`; URIs are kept.
    """
    if number.lower().startswith(("tel:", "sip:", "sips:")):
        return number
    return f"tel:{number}"


def _is_sip_call(participant: ParticipantInfo) -> bool:
    """Whether LiveKit's SIP service placed this participant (it has a call to refer)."""
    return (
        participant.kind == ParticipantInfo.Kind.SIP and CALL_ID_ATTRIBUTE in participant.attributes
    )


def _sip_phrase(status: int, error: ServerError) -> str:
    phrase = _clean((error.metadata or {}).get("sip_status", ""))
    text = f"SIP {status} {phrase}".strip()
    reason = reason_for_sip_status(status)
    return text if reason == FailureReason.DIAL_FAILED else f"{text}, {reason}"


def _refer_error(error: ServerError, ring_timeout: float) -> Exception:
    """The error of a failed TransferSIPParticipant answer, saying what happened."""
    status = _sip_status(error)
    if status is not None:
        if "call transfer failed" in (error.message or ""):
            return ReferError(
                f"the human's line did not take the transferred call ({_sip_phrase(status, error)})",
                status,
            )
        return ReferError(
            f"the caller's carrier refused the REFER ({_sip_phrase(status, error)})", status
        )
    if error.code == "deadline_exceeded":
        return ReferError(
            f"the transferred call was not answered within {ring_timeout:g} s (LiveKit's deadline)"
        )
    if error.code == "invalid_argument" and "no SIP session" in (error.message or ""):
        return ReferUnsupportedError("the caller is not a SIP call")
    if error.code == "unimplemented":
        return ReferUnsupportedError(f"LiveKit cannot transfer this call: {_describe(error)}")
    if error.status == 401 and error.code == "unauthenticated":
        return ConnectError(
            "TransferSIPParticipant: the API key has no SIP call grant or room admin"
        )
    return ConnectError(f"TransferSIPParticipant failed: {_describe(error)}")


def _refer_failure(response: TransferSIPParticipantResponse) -> ReferError | None:
    """A failure LiveKit reports in a 200 answer (a SIP service with transfer outcomes).

    The SIP service of today answers an empty response, status `ongoing`: success.
    """
    if response.status != SIPTransferStatus.STS_TRANSFER_FAILED:
        return None
    why = SIPTransferReason.Name(response.reason).removeprefix("STR_").lower()
    status = response.sip_status.code if response.HasField("sip_status") else None
    if status:
        sip_text = f"SIP {status} {_clean(response.sip_status.status)}".strip()
        return ReferError(f"the transfer failed ({why}, {sip_text})", status)
    return ReferError(f"the transfer failed ({why})")


def _move_not_implemented(error: ServerError) -> bool:
    """Whether a MoveParticipant error says the server has no MoveParticipant at all.

    Open-source LiveKit's room manager returns a plain "not implemented" error, which
    reaches the client as 500 `unknown` "twirp error unknown: not implemented".
    """
    if error.code == "unimplemented":
        return True
    return error.code == "unknown" and "not implemented" in (error.message or "").lower()


def _describe(error: BaseException) -> str:
    """A short description of an API error, without tokens or secrets."""
    if isinstance(error, ServerError):
        text = f"{error.code} (HTTP {error.status})"
        if error.code not in ("unauthenticated", "permission_denied") and error.message:
            text += f": {_clean(error.message)}"
        return text
    return type(error).__name__


def _clean(text: Any) -> str:
    """One line of server text, with anything token-like removed, at most 160 characters."""
    line = " ".join(str(text).split())
    return _JWT.sub("[redacted]", line)[:160]
