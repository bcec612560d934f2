#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""LiveKit's signal endpoint `GET /rtc`, as the emulator serves it: presence only.

A client joins a room of the emulator's `MemoryRoomServer` over a WebSocket, with a join
token, and is told what LiveKit tells it about the room: the join response, the other
participants joining and leaving, and the server's leave when it is removed. So a process
that cannot share the emulator's memory (a worker process under test) can still be a
participant, and be seen to leave, or to die without leaving.

Minimal on purpose: no media, no SDP, no tracks, no data. A participant joined here is
taken to be connected and publishing as soon as it joins (the others see it `ACTIVE`), so
a socket that drops without a leave is a client whose media died with it: the server
removes it only after `stale_participant_secs` (`LiveKitEmulator.vanish`). Of the query
parameters only `access_token` and `protocol` are read (no `join_request`, `reconnect`,
`publish`, `attributes`); room moves, speaker, quality and room updates are not sent.

The server side read for this is livekit/livekit `pkg/service/rtcservice.go` (the
endpoint), `pkg/rtc/room.go` and `pkg/rtc/participant*.go` (what a participant is told);
each behaviour is a row of the emulator's `FIDELITY` table.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import jwt
from aiohttp import WSMsgType, web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models, rtc
from loguru import logger

from pipecat_warm_transfer.testing.livekit_agent_dispatch import SERVER_PROTOCOL, SERVER_VERSION
from pipecat_warm_transfer.testing.memory_room import (
    Disconnected,
    MemoryConnection,
    ParticipantAttributesChanged,
    ParticipantJoined,
    ParticipantLeft,
)

if TYPE_CHECKING:
    from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator

#: pkg/config/config.go DefaultConfig: Limit.MaxRoomNameLength, MaxParticipantIdentityLength.
MAX_NAME_LENGTH = 256
#: pkg/rtc/participant.go PingIntervalSeconds, PingTimeoutSeconds.
PING_INTERVAL_SECS = 5
PING_TIMEOUT_SECS = 15
#: pkg/service/roommanager.go tokenDefaultTTL (the refreshed token's shortest life).
TOKEN_DEFAULT_TTL = timedelta(minutes=10)

# The refusals of validateInternal/ValidateConnectRequest, as HandleError writes them.
_NO_PERMISSION = "no permissions to access the room"  # pkg/rtc/errors.go ErrPermissionDenied
_PERMISSIONS_DENIED = "permissions denied"  # pkg/service/auth.go ErrPermissionDenied
_IDENTITY_EMPTY = "identity cannot be empty"  # pkg/service/errors.go ErrIdentityEmpty
_NO_ROOM_NAME = "no room name"  # pkg/service/errors.go ErrNoRoomName

_Reason = models.DisconnectReason

#: What the others are told when a participant leaves (the memory room's reason).
_PEER_REASONS = {
    "disconnected": _Reason.CLIENT_INITIATED,
    "removed": _Reason.PARTICIPANT_REMOVED,
    "room_deleted": _Reason.ROOM_DELETED,
    "duplicate_identity": _Reason.DUPLICATE_IDENTITY,
    "connection_timeout": _Reason.CONNECTION_TIMEOUT,
    "user_rejected": _Reason.USER_REJECTED,
    "user_unavailable": _Reason.USER_UNAVAILABLE,
    "agent_error": _Reason.AGENT_ERROR,
}

#: The server's leave to a participant it closed (the memory connection's reason).
_OWN_REASONS = {
    "removed": _Reason.PARTICIPANT_REMOVED,
    "room_deleted": _Reason.ROOM_DELETED,
    "duplicate_identity": _Reason.DUPLICATE_IDENTITY,
    "connection_timeout": _Reason.CONNECTION_TIMEOUT,
}

#: signalhandler.go SignalRequest_Leave: the reasons a client may leave with (the rest
#: are CLIENT_INITIATED), and the memory room's name of each for the others.
_LEAVE_REASONS = {
    _Reason.CLIENT_INITIATED: "disconnected",
    _Reason.USER_UNAVAILABLE: "user_unavailable",
    _Reason.USER_REJECTED: "user_rejected",
    _Reason.AGENT_ERROR: "agent_error",
}


class SignalRefusal(Exception):
    """A refused `/rtc` request: `HandleError`'s status and text body."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status
        self.text = text

    def response(self) -> web.Response:
        """The answer (net/http sniffs the body as `text/plain; charset=utf-8`)."""
        return web.Response(
            status=self.status,
            body=self.text.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )


class SignalService:
    """The emulator's `/rtc` endpoint (RTCService.serve).

    Parameters:
        emulator: The emulator whose rooms, tokens and participant details are used.

    Attributes:
        sessions: Open signal sessions by connection (for inspection).
    """

    def __init__(self, emulator: LiveKitEmulator):
        self.emulator = emulator
        self.sessions: dict[MemoryConnection, _Session] = {}
        self._claims: dict[MemoryConnection, Claims] = {}

    async def serve(self, request: web.BaseRequest, claims: Claims | None) -> web.StreamResponse:
        """Validate, join, then relay the participant's signal until it ends."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404)  # websocket.IsWebSocketUpgrade
        try:
            token, expires_at = self._validate(request, claims)
        except SignalRefusal as e:
            return e.response()
        assert claims is not None
        connection = self.emulator.join(token, claims.video.room, claims.identity)
        session = _Session(self, request, connection, claims, expires_at)
        self.sessions[connection] = session
        self._claims[connection] = claims
        try:
            return await session.run()
        finally:
            self.sessions.pop(connection, None)
            self._claims.pop(connection, None)

    def _validate(self, request: web.BaseRequest, claims: Claims | None) -> tuple[str, float]:
        """The checks of validateInternal and ValidateConnectRequest; the token and its expiry."""
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header else request.query.get("access_token")
        # Go's grants have no video grant when the token has no `video` claim at all.
        raw = jwt.decode(token, options={"verify_signature": False}) if token else {}
        if claims is None or "video" not in raw:
            raise SignalRefusal(401, _NO_PERMISSION)
        if not claims.video.room_join:
            raise SignalRefusal(401, _PERMISSIONS_DENIED)  # EnsureJoinPermission
        if not claims.identity:
            raise SignalRefusal(400, _IDENTITY_EMPTY)
        if len(claims.identity) > MAX_NAME_LENGTH:
            raise SignalRefusal(
                400,
                f"participant identity length exceeds limits: max length {MAX_NAME_LENGTH}",
            )
        if not claims.video.room:
            raise SignalRefusal(400, _NO_ROOM_NAME)
        if len(claims.video.room) > MAX_NAME_LENGTH:
            raise SignalRefusal(
                400, f"room name length exceeds limits: max length {MAX_NAME_LENGTH}"
            )
        return token, float(raw.get("exp", 0))

    def participant_info(
        self, connection: MemoryConnection, state: int = models.ParticipantInfo.State.ACTIVE
    ) -> models.ParticipantInfo:
        """ParticipantImpl.ToProto of a participant in a memory room."""
        info = self.emulator._participant_message(connection)
        info.state = state
        claims = self._claims.get(connection)
        if claims is not None:
            video = claims.video
            info.permission.CopyFrom(
                models.ParticipantPermission(
                    can_publish=video.can_publish,
                    can_publish_data=video.can_publish_data,
                    can_subscribe=video.can_subscribe,
                    can_update_metadata=bool(video.can_update_own_metadata),
                    hidden=bool(video.hidden),
                    recorder=bool(video.recorder),
                    agent=bool(video.agent),
                )
            )
        return info

    def hidden(self, connection: MemoryConnection | None) -> bool:
        """Whether a participant joined with the `hidden` grant (never announced)."""
        claims = self._claims.get(connection) if connection is not None else None
        return bool(claims is not None and claims.video.hidden)

    def refreshed_token(self, claims: Claims, expires_at: float) -> str:
        """RoomManager.refreshToken: the same grants, expiring no sooner than the token."""
        ttl = max(TOKEN_DEFAULT_TTL, timedelta(seconds=expires_at - time.time()))
        return (
            api.AccessToken(self.emulator.api_key, self.emulator.api_secret)
            .with_identity(claims.identity)
            .with_name(claims.name or "")
            .with_kind(claims.kind or "standard")
            .with_ttl(ttl)
            .with_metadata(claims.metadata or "")
            .with_attributes(dict(claims.attributes or {}))
            .with_grants(claims.video)
            .to_jwt()
        )


def server_info() -> models.ServerInfo:
    """NewLocalRoomManager's server info (the same the agent service gives workers)."""
    return models.ServerInfo(
        edition=models.ServerInfo.Edition.Standard,
        version=SERVER_VERSION,
        protocol=SERVER_PROTOCOL,
        agent_protocol=1,
        node_id="ND_emulator",
    )


class _Session:
    """One participant's signal connection: its WebSocket and its memory connection."""

    def __init__(
        self,
        service: SignalService,
        request: web.BaseRequest,
        connection: MemoryConnection,
        claims: Claims,
        expires_at: float,
    ):
        self.service = service
        self.request = request
        self.connection = connection
        self.claims = claims
        self.expires_at = expires_at
        try:
            self.protocol = int(request.query.get("protocol", "0"))  # ParseClientInfo
        except ValueError:
            self.protocol = 0
        self.ws = web.WebSocketResponse()
        self.use_json = False
        self.leave_reason: int | None = None
        self._known: dict[str, models.ParticipantInfo] = {}
        self._send_lock = asyncio.Lock()

    async def run(self) -> web.WebSocketResponse:
        join = self._join_response()  # before any await: the room as the client joined it
        await self.ws.prepare(self.request)
        pump = asyncio.create_task(self._pump(), name=f"signal-{self.connection.identity}")
        lost = True
        try:
            await self._send(rtc.SignalResponse(join=join))
            await self._send(
                rtc.SignalResponse(
                    refresh_token=self.service.refreshed_token(self.claims, self.expires_at)
                )
            )
            lost = await self._read()
        finally:
            self._socket_gone(lost)  # first: the handler may be cancelled (connection lost)
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            if not self.ws.closed:
                try:
                    await self.ws.close()
                except (ConnectionError, RuntimeError):
                    pass
        return self.ws

    def _join_response(self) -> rtc.JoinResponse:
        """Room.createJoinResponseLocked; the participant is still JOINING when it is sent."""
        service, connection = self.service, self.connection
        memory_room = service.emulator.rooms.get_room(connection.room_name)
        others = []
        for peer in memory_room.connections() if memory_room else []:
            if peer is connection or service.hidden(peer):
                continue
            info = service.participant_info(peer)
            self._known[peer.identity] = info
            others.append(info)
        me = service.participant_info(connection, models.ParticipantInfo.State.JOINING)
        me.is_publisher = False  # no track yet
        info = server_info()
        return rtc.JoinResponse(
            room=service.emulator._room_message(connection.room_name),
            participant=me,
            other_participants=others,
            server_info=info,
            server_version=info.version,
            ping_interval=PING_INTERVAL_SECS,
            ping_timeout=PING_TIMEOUT_SECS,
        )

    async def _read(self) -> bool:
        """The client's requests until its socket closes; True when it went without a leave."""
        while True:
            try:
                raw = await self.ws.receive()
            except (ConnectionError, RuntimeError):
                return self.leave_reason is None
            if raw.type == WSMsgType.BINARY:
                try:
                    request = rtc.SignalRequest.FromString(raw.data)
                except DecodeError:
                    return self.leave_reason is None  # a read error ends the connection
            elif raw.type == WSMsgType.TEXT:
                self.use_json = True  # json encoded, also write back JSON
                try:
                    request = json_format.Parse(raw.data, rtc.SignalRequest())
                except json_format.ParseError:
                    return self.leave_reason is None
            else:
                return self.leave_reason is None  # closed, closing or failed
            await self._handle(request)

    async def _handle(self, request: rtc.SignalRequest) -> None:
        which = request.WhichOneof("message")
        now_ms = int(time.time() * 1000)
        if which == "ping":
            await self._send(rtc.SignalResponse(pong=now_ms))
        elif which == "ping_req":
            pong = rtc.Pong(last_ping_timestamp=request.ping_req.timestamp, timestamp=now_ms)
            await self._send(rtc.SignalResponse(pong_resp=pong))
        elif which == "leave":
            reason = request.leave.reason
            if reason not in _LEAVE_REASONS:
                reason = _Reason.CLIENT_INITIATED
            self.leave_reason = reason
            self.connection.disconnect(_LEAVE_REASONS[reason])
        # Everything else is media or data: not emulated.

    async def _pump(self) -> None:
        """What the room tells this participant, until the server closes it."""
        service, connection = self.service, self.connection
        while True:
            try:
                event = await connection.recv()
            except ConnectionError:
                return
            if isinstance(event, ParticipantJoined):
                if event.reason == "present":
                    continue  # in the join response already
                memory_room = service.emulator.rooms.get_room(connection.room_name)
                peer = memory_room.connection(event.identity) if memory_room else None
                if peer is None or service.hidden(peer):
                    continue
                info = service.participant_info(peer)
                self._known[event.identity] = info
                await self._update(info)
            elif isinstance(event, ParticipantAttributesChanged):
                info = self._known.get(event.identity)
                if info is not None:
                    info.attributes.clear()
                    info.attributes.update(event.attributes)
                    await self._update(info)
            elif isinstance(event, ParticipantLeft):
                info = self._known.pop(event.identity, None)
                if info is None:
                    continue
                if event.reason == "duplicate_identity" and self.protocol > 11:
                    continue  # SendParticipantUpdates: IsCloseNotifySkippable
                info.state = models.ParticipantInfo.State.DISCONNECTED
                info.disconnect_reason = _PEER_REASONS.get(event.reason, _Reason.UNKNOWN_REASON)
                await self._update(info)
            elif isinstance(event, Disconnected):
                await self._leave(event.reason)
                return

    async def _update(self, info: models.ParticipantInfo) -> None:
        update = rtc.ParticipantUpdate(participants=[info])
        await self._send(rtc.SignalResponse(update=update))

    async def _leave(self, reason: str) -> None:
        """Participant.Close(sendLeave=true): the leave, then the socket closes."""
        if reason == "client_initiated":
            code = self.leave_reason if self.leave_reason is not None else _Reason.CLIENT_INITIATED
        else:
            code = _OWN_REASONS.get(reason, _Reason.UNKNOWN_REASON)
        if self.protocol > 12:  # SupportsRegionsInLeaveRequest
            leave = rtc.LeaveRequest(reason=code, action=rtc.LeaveRequest.Action.DISCONNECT)
        else:
            leave = rtc.LeaveRequest(reason=code, can_reconnect=False)
        await self._send(rtc.SignalResponse(leave=leave))
        await self.ws.close()  # CloseWithReason: 1000, no reason

    async def _send(self, response: rtc.SignalResponse) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            try:
                if self.use_json:
                    await self.ws.send_str(json_format.MessageToJson(response, indent=None))
                else:
                    await self.ws.send_bytes(response.SerializeToString())
            except (ConnectionError, RuntimeError) as e:
                logger.debug(f"/rtc {self.connection.identity}: send failed: {type(e).__name__}")

    def _socket_gone(self, lost: bool) -> None:
        """The signal ended: a client that left is gone; one that did not has died."""
        connection = self.connection
        if not connection.connected:
            return
        if not self.service.emulator.running:
            connection.disconnect()  # the emulator is stopping
        elif lost:
            logger.debug(f"/rtc {connection.identity}: socket lost without a leave")
            self.service.emulator.vanish(connection)
