#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A dispatched call that is only a presence in the caller's room, over LiveKit's signal.

`SignalRoomCall` is a `ServedCall` for test workers that run in their own processes and
so cannot share the emulator's memory rooms: it joins the job's room on the server's
`/rtc` WebSocket with the token LiveKit minted for the job, and stays until the caller
(a SIP participant) is reported gone, the server sends a leave, or it is stopped (then
it leaves, as a client does). No media: what a test counts is who was in which room,
when.

Example::

    worker = AgentWorker(url, key, secret, options, make_call=SignalRoomCall)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from livekit.protocol import models, rtc
from loguru import logger

from pipecat_warm_transfer.runner.agent_worker import CallAssignment

#: The client protocol announced (`protocol` query parameter), as LiveKit's SDKs send it.
CLIENT_PROTOCOL = 16
#: How long a leaving client waits for the server's leave before closing anyway.
LEAVE_TIMEOUT_SECS = 5.0

_SIP = models.ParticipantInfo.Kind.SIP
_DISCONNECTED = models.ParticipantInfo.State.DISCONNECTED


def rtc_url(url: str) -> str:
    """The `/rtc` WebSocket URL of a LiveKit server URL (`http(s)`/`ws(s)`)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/rtc", "", ""))


class SignalRoomCall:
    """One dispatched call: a participant in the caller's room until the caller leaves.

    Parameters:
        served: The assignment (its url, room, identity and join token).
        on_event: Called with `(name, fields)` for `joined` and `left` (e.g. to print).

    Attributes:
        joined_at: Wall-clock time the join response arrived (None: not joined).
        left_at: Wall-clock time the call ended (None: still running).
        end_reason: `caller_left`, `server_leave:<REASON>`, `stopped:<reason>` or
            `socket_closed`.
        participant_sid: The bot's participant sid, from the join response.
    """

    def __init__(
        self,
        served: CallAssignment,
        *,
        on_event: Callable[[str, dict], None] | None = None,
    ):
        self.served = served
        self._on_event = on_event
        self.joined_at: float | None = None
        self.left_at: float | None = None
        self.end_reason: str | None = None
        self.participant_sid = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._stop_reason: str | None = None
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        """Join the room and stay until the caller leaves, the server ends it, or stop()."""
        params = {"access_token": self.served.token, "protocol": str(CLIENT_PROTOCOL)}
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(rtc_url(self.served.url), params=params) as ws:
                self._ws = ws
                try:
                    await self._join(ws)
                    await self._serve(ws)
                finally:
                    self._ws = None
                    self.left_at = time.time()
                    self._emit("left", reason=self.end_reason)

    async def stop(self, reason: str) -> None:
        """Leave the room (the server answers with its own leave and closes)."""
        self._stop_reason = reason
        self._stopped.set()

    async def _join(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        message = await ws.receive(timeout=10.0)
        if message.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError(f"/rtc answered the join with {message.type.name}")
        response = rtc.SignalResponse.FromString(message.data)
        if response.WhichOneof("message") != "join":
            raise ConnectionError("the first signal message was not the join response")
        self.joined_at = time.time()
        self.participant_sid = response.join.participant.sid
        self._emit("joined", others=[p.identity for p in response.join.other_participants])

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        stopper = asyncio.create_task(self._stopped.wait())
        try:
            while True:
                receiver = asyncio.create_task(ws.receive())
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not receiver.done():
                    receiver.cancel()
                    await asyncio.gather(receiver, return_exceptions=True)
                    await self._leave(ws, f"stopped:{self._stop_reason}")
                    return
                message = receiver.result()
                if message.type != aiohttp.WSMsgType.BINARY:
                    self.end_reason = self.end_reason or "socket_closed"
                    return
                response = rtc.SignalResponse.FromString(message.data)
                which = response.WhichOneof("message")
                if which == "leave":
                    reason = models.DisconnectReason.Name(response.leave.reason)
                    self.end_reason = f"server_leave:{reason}"
                    return
                if which == "update" and self._caller_left(response.update):
                    await self._leave(ws, "caller_left")
                    return
        finally:
            stopper.cancel()

    @staticmethod
    def _caller_left(update: rtc.ParticipantUpdate) -> bool:
        return any(
            p.kind == _SIP and p.identity.startswith("sip_") and p.state == _DISCONNECTED
            for p in update.participants
        )

    async def _leave(self, ws: aiohttp.ClientWebSocketResponse, reason: str) -> None:
        """Send a leave and wait (bounded) for the server's leave and close."""
        self.end_reason = reason
        leave = rtc.LeaveRequest(
            reason=models.DisconnectReason.CLIENT_INITIATED,
            action=rtc.LeaveRequest.Action.DISCONNECT,
        )
        try:
            await ws.send_bytes(rtc.SignalRequest(leave=leave).SerializeToString())
            async with asyncio.timeout(LEAVE_TIMEOUT_SECS):
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.BINARY:
                        break
        except (TimeoutError, ConnectionError, aiohttp.ClientError) as e:
            logger.debug(f"call {self.served.job_id}: leaving: {type(e).__name__}")

    def _emit(self, name: str, **fields) -> None:
        if self._on_event is not None:
            self._on_event(
                name,
                {
                    "room": self.served.room,
                    "job_id": self.served.job_id,
                    "identity": self.served.identity,
                    "at": time.time(),
                    **fields,
                },
            )
