#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A LiveKit server API emulator: Twirp over HTTP on loopback, rooms in memory.

`LiveKitEmulator` serves the part of LiveKit's server API a warm transfer uses, so the
real `livekit.api.LiveKitAPI` client runs against it unchanged:

- `POST /twirp/livekit.SIP/CreateSIPParticipant`
- `POST /twirp/livekit.RoomService/{CreateRoom, DeleteRoom, ListRooms, ListParticipants,
  RemoveParticipant, MoveParticipant}`

Requests and answers are protobuf (`application/protobuf`) or protobuf JSON
(`application/json`, snake_case or camelCase keys). The bearer JWT is verified as
LiveKit does (HS256 with the API secret, issuer = API key, expiry and not-before), and
each method checks its grant: `sip.call` for CreateSIPParticipant, `roomCreate` for
CreateRoom and DeleteRoom, `roomList` for ListRooms, `roomAdmin` on the named room for
the participant calls (and `destinationRoom` for MoveParticipant). A bad token is
answered with Twirp `unauthenticated` (HTTP 401), a missing grant with
`permission_denied` (HTTP 403). Errors are Twirp JSON, `{"code", "msg", "meta"}`; a
failed SIP call carries `meta.sip_status_code` and `meta.sip_status`, with the Twirp
code LiveKit derives from the SIP status (486 → `resource_exhausted`, 603 →
`permission_denied`, ...), which `livekit-api` surfaces as a `SipCallError`.

Rooms and participants live in a `MemoryRoomServer`: a dialed number is looked up in
`humans` and, when its `HumanScript` answers, joins the room as a `ScriptedParty` of
kind `sip` (busy, no answer, decline and failures end the call with the script's SIP
status; an unknown number with 404). MoveParticipant moves the memory connection
(`oss=True` answers `unimplemented`, as an open-source server does). Faults can be
scripted per method: `fail_next`, `latency`, `drop_next`.

Example::

    async with LiveKitEmulator(humans={"+15550100": HumanScript(answer_after=0.5)}) as lk:
        api = LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
        await api.sip.create_sip_participant(CreateSIPParticipantRequest(...))
        await api.aclose()
        assert await lk.settle() == {"rooms": 1, "participants": 1, "connections": 0}
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api.access_token import Claims, TokenVerifier
from livekit.protocol import models, room, sip
from loguru import logger
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipecat_warm_transfer.testing.memory_room import MemoryRoomError, MemoryRoomServer
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport
from pipecat_warm_transfer.testing.scripted_party import HumanScript, ScriptedParty, tone

#: Default API key and secret (LiveKit's dev-mode key; a long secret of our own).
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "secret-of-the-offline-livekit-emulator"

#: HTTP status of each Twirp error code (the Twirp specification).
TWIRP_HTTP_STATUS = {
    "canceled": 408,
    "unknown": 500,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
}

#: The Twirp code a bare HTTP status stands for (for `fail_next(method, 503)`).
HTTP_TWIRP_CODE = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "deadline_exceeded",
    409: "aborted",
    412: "failed_precondition",
    429: "resource_exhausted",
    500: "internal",
    501: "unimplemented",
    502: "unavailable",
    503: "unavailable",
    504: "deadline_exceeded",
}

#: SIP reason phrases (RFC 3261 and friends) for the statuses a dial can end with.
SIP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    480: "Temporarily Unavailable",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",
    608: "Rejected",
}

# The Twirp code LiveKit gives a failed SIP call, from its SIP status (livekit/protocol's
# SIP-to-gRPC mapping, gRPC codes spelled as Twirp codes).
_SIP_TWIRP_CODE = {
    401: "permission_denied",
    402: "permission_denied",
    403: "permission_denied",
    404: "not_found",
    407: "unauthenticated",
    408: "deadline_exceeded",
    409: "failed_precondition",
    410: "not_found",
    480: "resource_exhausted",
    481: "not_found",
    482: "failed_precondition",
    483: "failed_precondition",
    486: "resource_exhausted",
    487: "aborted",
    491: "aborted",
    500: "failed_precondition",
    501: "failed_precondition",
    502: "failed_precondition",
    503: "failed_precondition",
    504: "deadline_exceeded",
    600: "resource_exhausted",
    603: "permission_denied",
    604: "not_found",
    607: "permission_denied",
    608: "permission_denied",
}

#: LiveKit's ring window when a request does not set `ringing_timeout`.
DEFAULT_RINGING_TIMEOUT = 30.0

#: SIP status of a call that rang past the ring window (LiveKit: no answer).
RING_TIMEOUT_SIP_STATUS = 480

_MAX_BODY_BYTES = 1 << 20
_MAX_LOGGED_REQUESTS = 10_000
_MAX_ACTIVE_CALLS = 256
_MAX_PARTIES = 1_000
_MAX_FAULTS = 1_000
_MAX_LATENCY_SECS = 600.0
_LOOPBACK_NAMES = ("localhost",)

_KINDS = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
}


def sip_twirp_code(status: int) -> str:
    """The Twirp error code LiveKit answers a SIP call that failed with `status`.

    Args:
        status: The SIP final status (4xx, 5xx or 6xx).

    Returns:
        The Twirp code (e.g. `resource_exhausted` for 486 Busy Here).
    """
    code = _SIP_TWIRP_CODE.get(status)
    if code is not None:
        return code
    return "failed_precondition" if 500 <= status < 600 else "invalid_argument"


class TwirpError(Exception):
    """A Twirp error answer (raised inside a handler, written as Twirp JSON).

    Parameters:
        code: The Twirp error code (`not_found`, `unauthenticated`, ...).
        msg: A short message (never a token or a secret).
        meta: String metadata (`sip_status_code`, `sip_status`, ...).
        http_status: The HTTP status (default: the code's, per the Twirp spec).
    """

    def __init__(
        self,
        code: str,
        msg: str,
        meta: dict[str, str] | None = None,
        http_status: int | None = None,
    ):
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg
        self.meta = dict(meta or {})
        self.http_status = http_status or TWIRP_HTTP_STATUS.get(code, 500)

    @classmethod
    def sip(cls, status: int, msg: str | None = None) -> TwirpError:
        """The error of a SIP call that ended with `status`, as LiveKit reports it."""
        reason = SIP_REASONS.get(status, f"SIP {status}")
        return cls(
            sip_twirp_code(status),
            msg or f"sip status {status}: {reason}",
            {"sip_status_code": str(status), "sip_status": reason},
        )

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return body


@dataclass
class _Fault:
    code: str
    msg: str
    meta: dict[str, str]
    http_status: int


@dataclass
class _Method:
    request_type: type[Message]
    handler: Callable[[Message, Claims], Awaitable[Message]]


class LiveKitEmulator:
    """LiveKit's server API (SIP + room service) over HTTP on loopback, in memory.

    Parameters:
        api_key: The API key tokens must be issued by.
        api_secret: The secret tokens must be signed with.
        oss: Behave as open-source LiveKit: MoveParticipant answers `unimplemented`.
        rooms: The room server to use (default: a new `MemoryRoomServer`). It may be
            replaced (`emulator.rooms = server`) before the first request.
        humans: The scripted human behind each number (`sip_call_to`).
        sample_rate: Rate the humans send and record at.
        t0: Event-loop time of sample 0 of the humans' recordings (default: answer).
        host: Loopback address to listen on.
        port: Port to listen on (0: any free port).
        token_leeway: Seconds of clock leeway when checking `exp`/`nbf`.

    Attributes:
        requests: `(method, fields, headers)` of each request (fields as protobuf JSON
            with proto names, headers without `Authorization`), oldest first.
        request_grants: `(method, grants)` of each authenticated request: the token's
            identity and its non-empty video and SIP grants.
        parties: The scripted humans that answered, by identity (the latest of each).
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        oss: bool = False,
        *,
        rooms: MemoryRoomServer | None = None,
        humans: dict[str, HumanScript] | None = None,
        sample_rate: int = 16000,
        t0: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_leeway: float = 1.0,
    ):
        """Create the emulator (it listens once entered, or after `start()`)."""
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are required")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        _check_loopback(host)
        self.api_key = api_key
        self.api_secret = api_secret
        self.oss = oss
        self.rooms = rooms if rooms is not None else MemoryRoomServer()
        self.humans: dict[str, HumanScript] = dict(humans or {})
        self.sample_rate = sample_rate
        self.t0 = t0
        self.requests: list[tuple[str, dict, dict]] = []
        self.request_grants: list[tuple[str, dict]] = []
        self.parties: dict[str, ScriptedParty] = {}
        self._host = host
        self._port = port
        self._verifier = TokenVerifier(
            api_key, api_secret, leeway=timedelta(seconds=max(0.0, token_leeway))
        )
        self._methods: dict[tuple[str, str], _Method] = {
            ("SIP", "CreateSIPParticipant"): _Method(
                sip.CreateSIPParticipantRequest, self._create_sip_participant
            ),
            ("RoomService", "CreateRoom"): _Method(room.CreateRoomRequest, self._create_room),
            ("RoomService", "DeleteRoom"): _Method(room.DeleteRoomRequest, self._delete_room),
            ("RoomService", "ListRooms"): _Method(room.ListRoomsRequest, self._list_rooms),
            ("RoomService", "ListParticipants"): _Method(
                room.ListParticipantsRequest, self._list_participants
            ),
            ("RoomService", "RemoveParticipant"): _Method(
                room.RoomParticipantIdentity, self._remove_participant
            ),
            ("RoomService", "MoveParticipant"): _Method(
                room.MoveParticipantRequest, self._move_participant
            ),
        }
        self._faults: dict[str, list[_Fault]] = {}
        self._drops: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        self._handlers: set[asyncio.Task] = set()
        self._calls: set[asyncio.Task] = set()
        self._all_parties: list[ScriptedParty] = []
        self._room_info: dict[str, dict[str, Any]] = {}
        self._participant_info: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"LiveKitEmulator({self._url or 'stopped'}, oss={self.oss})"

    # Life cycle

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (only while running)."""
        if self._url is None:
            raise RuntimeError("the emulator is not running")
        return self._url

    @property
    def running(self) -> bool:
        """Whether the emulator is listening."""
        return self._runner is not None

    async def start(self) -> LiveKitEmulator:
        """Listen on the loopback address. Idempotent.

        Returns:
            The emulator.
        """
        if self._runner is not None:
            return self
        server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        runner = web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        port = runner.addresses[0][1]
        self._server, self._runner = server, runner
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._url = f"http://{host}:{port}"
        logger.debug(f"{self}: listening")
        return self

    async def stop(self) -> None:
        """Stop listening, end every call in progress and hang up every human. Idempotent."""
        runner, self._runner = self._runner, None
        tasks = [t for t in (*self._calls, *self._handlers) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if runner is not None:
            await runner.cleanup()
        parties, self._all_parties = self._all_parties, []
        for party in parties:
            await party.close()
        self._server = None
        if self._url is not None:
            logger.debug(f"{self}: stopped")
        self._url = None

    async def __aenter__(self) -> LiveKitEmulator:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # Inspection

    def http_connections(self) -> int:
        """Open HTTP connections (client keep-alive connections included)."""
        return len(self._server.connections) if self._server is not None else 0

    def leftovers(self) -> dict[str, int]:
        """What is still open: `{"rooms": n, "participants": n, "connections": n}`.

        Rooms and participants are the room server's; connections are the open HTTP
        connections plus the room server's open media connections.
        """
        memory = self.rooms.leftovers()
        return {
            "rooms": memory["rooms"],
            "participants": memory["participants"],
            "connections": self.http_connections() + memory["connections"],
        }

    async def settle(self, timeout: float = 2.0) -> dict[str, int]:
        """Wait (bounded) until no request is in progress and clients closed their connections.

        A client that closed its session has closed its sockets, but the server hears
        of it a moment later.

        Args:
            timeout: Most seconds to wait.

        Returns:
            `leftovers()` afterwards.
        """
        step = 0.005
        for _ in range(int(max(0.0, timeout) / step) + 1):
            busy = any(not t.done() for t in self._handlers)
            if not busy and not self.http_connections():
                break
            await asyncio.sleep(step)
        await asyncio.sleep(0)
        return self.leftovers()

    def methods_called(self) -> list[str]:
        """The method of each logged request, oldest first."""
        return [method for method, _, _ in self.requests]

    def transport_factory(
        self,
    ) -> Callable[[str, str, str, str, TransportParams], BaseTransport]:
        """A `LiveKitSipBackend` transport factory joining this emulator's memory rooms.

        Like a LiveKit server it checks the join token first: signed by this API key
        and secret, unexpired, with `roomJoin` for exactly that room and the identity.

        Returns:
            `factory(url, token, room_name, identity, params) -> MemoryTransport`.

        Raises (from the factory):
            PermissionError: The token does not allow joining that room as that identity.
        """

        def factory(
            url: str, token: str, room_name: str, identity: str, params: TransportParams
        ) -> BaseTransport:
            self.check_join_token(token, room_name, identity)
            return MemoryTransport(self.rooms, room_name, identity, params=params)

        return factory

    def check_join_token(self, token: str, room_name: str, identity: str) -> Claims:
        """Check a join token the way LiveKit does when a client connects.

        Args:
            token: The JWT.
            room_name: The room the client joins.
            identity: The identity it joins as.

        Returns:
            The token's claims.

        Raises:
            PermissionError: Bad signature, expired, or no `roomJoin` for that room and
                identity.
        """
        try:
            claims = self._verify(token)
        except TwirpError as e:
            raise PermissionError(e.msg) from None
        video = claims.video
        if video is None or not video.room_join:
            raise PermissionError("the token has no roomJoin grant")
        if video.room != room_name:
            raise PermissionError(f"the token does not grant joining room {room_name!r}")
        if claims.identity != identity:
            raise PermissionError(f"the token is not for identity {identity!r}")
        return claims

    # Fault injection

    def fail_next(
        self,
        method: str,
        code: str | int = "internal",
        *,
        msg: str | None = None,
        sip_status: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next `times` calls of `method` with an error (after authentication).

        Args:
            method: The method name, e.g. `CreateSIPParticipant` or `DeleteRoom`.
            code: A Twirp code (`unavailable`) or an HTTP status (503; 5xx with no Twirp
                code of its own answers `internal` with that HTTP status).
            msg: The error message.
            sip_status: Answer as a SIP call failure with this status (its Twirp code
                unless `code` names another, and `meta.sip_status_code`).
            times: How many calls fail.
        """
        self._check_method(method)
        meta: dict[str, str] = {}
        if sip_status is not None:
            base = TwirpError.sip(sip_status)
            meta = base.meta
            if code == "internal":
                code = base.code
            msg = msg or base.msg
        if isinstance(code, int):
            http_status = code
            twirp_code = HTTP_TWIRP_CODE.get(code, "internal" if code >= 500 else "unknown")
        else:
            if code not in TWIRP_HTTP_STATUS:
                raise ValueError(f"unknown Twirp code {code!r}")
            twirp_code, http_status = code, TWIRP_HTTP_STATUS[code]
        queue = self._faults.setdefault(method, [])
        for _ in range(max(0, times)):
            if len(queue) >= _MAX_FAULTS:
                raise ValueError(f"at most {_MAX_FAULTS} scripted faults per method")
            queue.append(_Fault(twirp_code, msg or "injected failure", meta, http_status))

    def latency(self, method: str, secs: float) -> None:
        """Delay every call of `method` by `secs` before answering (0 to stop).

        Args:
            method: The method name.
            secs: Seconds (at most 600).
        """
        self._check_method(method)
        if not 0 <= secs <= _MAX_LATENCY_SECS:
            raise ValueError(f"latency must be within 0..{_MAX_LATENCY_SECS:g} s")
        self._latency[method] = float(secs)

    def drop_next(self, method: str, times: int = 1) -> None:
        """Close the connection of the next `times` calls of `method` without answering.

        Args:
            method: The method name.
            times: How many calls are dropped.
        """
        self._check_method(method)
        self._drops[method] = min(_MAX_FAULTS, self._drops.get(method, 0) + max(0, times))

    def clear_faults(self) -> None:
        """Forget every scripted failure, drop and latency."""
        self._faults.clear()
        self._drops.clear()
        self._latency.clear()

    def _check_method(self, method: str) -> None:
        if not any(name == method for _, name in self._methods):
            names = sorted(name for _, name in self._methods)
            raise ValueError(f"unknown method {method!r}; one of {names}")

    # HTTP

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            return await self._dispatch(request)
        except TwirpError as e:
            return _twirp_error_response(e)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as e:
            logger.exception(f"{self}: internal error")
            return _twirp_error_response(TwirpError("internal", type(e).__name__))
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        parts = request.path.split("/")
        if len(parts) != 4 or parts[0] or parts[1] != "twirp" or "." not in parts[2]:
            raise TwirpError("bad_route", f"no handler for path {request.path[:200]!r}")
        package, _, service = parts[2].partition(".")
        name = parts[3]
        method = self._methods.get((service, name)) if package == "livekit" else None
        if method is None:
            raise TwirpError("bad_route", f"no handler for path {request.path[:200]!r}")
        if request.method != "POST":
            raise TwirpError("bad_route", f"unsupported method {request.method[:16]} (only POST)")
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type not in ("application/protobuf", "application/json"):
            raise TwirpError("bad_route", f"unexpected Content-Type: {content_type[:64]!r}")

        body = await _read_body(request)
        message: Message | None = None
        parse_error: str | None = None
        if body is None:
            parse_error = "the request body is too large"
        else:
            try:
                message = _parse(method.request_type, body, content_type)
            except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as e:
                parse_error = f"the request body is not a valid {content_type} message"
                logger.debug(f"{self}: {name}: {type(e).__name__}")
        self._log_request(name, message, request)

        if self._drops.get(name):
            self._drops[name] -= 1
            logger.debug(f"{self}: {name}: dropping the connection (scripted)")
            transport = request.transport
            request.protocol.force_close()
            if transport is not None:
                transport.abort()
            return web.Response(status=204)
        delay = self._latency.get(name, 0.0)
        if delay > 0:
            await asyncio.sleep(delay)

        claims = self._authenticate(request.headers.get("Authorization"))
        self._log_grants(name, claims)
        if message is None:
            raise TwirpError("malformed", parse_error or "the request body is not valid")
        faults = self._faults.get(name)
        if faults:
            fault = faults.pop(0)
            raise TwirpError(fault.code, fault.msg, fault.meta, fault.http_status)
        answer = await method.handler(message, claims)
        return _answer(answer, content_type)

    def _log_request(self, name: str, message: Message | None, request: web.BaseRequest):
        fields = {}
        if message is not None:
            fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.requests.append((name, fields, headers))
        if len(self.requests) > _MAX_LOGGED_REQUESTS:
            del self.requests[: len(self.requests) - _MAX_LOGGED_REQUESTS]

    def _log_grants(self, name: str, claims: Claims) -> None:
        grants: dict[str, Any] = {"identity": claims.identity}
        if claims.video is not None:
            grants["video"] = {k: v for k, v in vars(claims.video).items() if v}
        if claims.sip is not None:
            grants["sip"] = {k: v for k, v in vars(claims.sip).items() if v}
        self.request_grants.append((name, grants))
        if len(self.request_grants) > _MAX_LOGGED_REQUESTS:
            del self.request_grants[: len(self.request_grants) - _MAX_LOGGED_REQUESTS]

    # Authentication and grants

    def _authenticate(self, header: str | None) -> Claims:
        if not header:
            raise TwirpError("unauthenticated", "missing authorization header")
        if not header.startswith("Bearer "):
            raise TwirpError(
                "unauthenticated", "invalid authorization header. Must start with Bearer "
            )
        return self._verify(header[len("Bearer ") :].strip())

    def _verify(self, token: str) -> Claims:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise TwirpError("unauthenticated", "invalid authorization token") from None
        if unverified.get("iss") != self.api_key:
            raise TwirpError("unauthenticated", "invalid API key")
        try:
            return self._verifier.verify(token)
        except jwt.ExpiredSignatureError:
            raise TwirpError("unauthenticated", "invalid token: the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TwirpError(
                "unauthenticated", "invalid token: the token is not valid yet"
            ) from None
        except jwt.InvalidSignatureError:
            raise TwirpError("unauthenticated", "invalid token: bad signature") from None
        except jwt.PyJWTError as e:
            raise TwirpError("unauthenticated", f"invalid token: {type(e).__name__}") from None

    @staticmethod
    def _require(allowed: bool, what: str) -> None:
        if not allowed:
            raise TwirpError("permission_denied", f"permissions denied: {what}")

    def _require_admin(self, claims: Claims, room_name: str) -> None:
        video = claims.video
        self._require(
            video is not None and bool(video.room_admin) and video.room == room_name,
            f"roomAdmin for room {room_name!r} is required",
        )

    # SIP

    async def _create_sip_participant(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, sip.CreateSIPParticipantRequest)
        self._require(claims.sip is not None and claims.sip.call, "the sip.call grant is required")
        if not req.sip_trunk_id and not req.HasField("trunk"):
            raise TwirpError("invalid_argument", "a SIP trunk id or an outbound trunk is required")
        if req.HasField("trunk") and not req.trunk.hostname:
            raise TwirpError("invalid_argument", "no outbound hostname specified")
        if not req.sip_call_to:
            raise TwirpError("invalid_argument", "sip_call_to is required")
        if not req.room_name:
            raise TwirpError("invalid_argument", "room_name is required")
        if len(self._calls) >= _MAX_ACTIVE_CALLS:
            raise TwirpError("resource_exhausted", "too many calls in progress")
        identity = req.participant_identity or f"sip_{req.sip_call_to}"
        ring = DEFAULT_RINGING_TIMEOUT
        if req.HasField("ringing_timeout"):
            ring = req.ringing_timeout.ToNanoseconds() / 1e9 or DEFAULT_RINGING_TIMEOUT
        ring = min(max(0.0, ring), 3600.0)
        # The SIP service joins the room as soon as it dials (the room is created).
        self.rooms.create_room(req.room_name)
        self._room_details(req.room_name)
        info = sip.SIPParticipantInfo(
            participant_id=self._participant_details(req.room_name, identity, req)["sid"],
            participant_identity=identity,
            room_name=req.room_name,
            sip_call_id=f"SCL_{secrets.token_hex(6)}",
        )
        call = asyncio.create_task(
            self._ring(req, identity, ring), name=f"{self}::call::{req.room_name}/{identity}"
        )
        self._calls.add(call)
        call.add_done_callback(self._call_done)
        if not req.wait_until_answered:
            return info
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            # The client gave up (or the emulator stops): the call is abandoned.
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise
        return info

    def _call_done(self, task: asyncio.Task) -> None:
        self._calls.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            if not isinstance(error, TwirpError):
                logger.error(f"{self}: call failed: {error!r}")

    async def _ring(self, req: sip.CreateSIPParticipantRequest, identity: str, ring: float):
        number = req.sip_call_to
        room_name = req.room_name
        script = self.humans.get(number)
        if script is None:
            raise TwirpError.sip(404, f"sip status 404: Not Found ({_mask(number)})")
        if script.outcome == "no_answer" or script.answer_after > ring:
            await asyncio.sleep(ring)
            status = script.default_sip_status() if script.outcome == "no_answer" else None
            raise TwirpError.sip(status or RING_TIMEOUT_SIP_STATUS)
        await asyncio.sleep(script.answer_after)
        if script.outcome != "answer":
            raise TwirpError.sip(script.default_sip_status() or 500)
        if self.rooms.get_room(room_name) is None:
            raise TwirpError.sip(487, "sip status 487: Request Terminated (room deleted)")
        loop = asyncio.get_running_loop()
        t0 = self.t0 if self.t0 is not None else loop.time()
        party = ScriptedParty(
            self.rooms, room_name, identity, sample_rate=self.sample_rate, t0=t0, kind="sip"
        )
        script.apply(party, loop.time() - t0)
        self._adopt(party)
        await party.start()
        logger.debug(f"{self}: {identity} answered in {room_name}")

    def _adopt(self, party: ScriptedParty) -> None:
        self.parties[party.identity] = party
        if len(self._all_parties) >= _MAX_PARTIES:
            self._all_parties = [p for p in self._all_parties if not p.ended]
            if len(self._all_parties) >= _MAX_PARTIES:
                raise TwirpError("resource_exhausted", "too many SIP participants")
        self._all_parties.append(party)

    # Room service

    async def _create_room(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.CreateRoomRequest)
        self._require(claims.video is not None and claims.video.room_create, "roomCreate")
        if not req.name:
            raise TwirpError("invalid_argument", "a room name is required")
        self.rooms.create_room(req.name, metadata=req.metadata)
        details = self._room_details(req.name)
        details["empty_timeout"] = req.empty_timeout
        details["departure_timeout"] = req.departure_timeout
        details["max_participants"] = req.max_participants
        return self._room_message(req.name)

    async def _delete_room(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.DeleteRoomRequest)
        self._require(claims.video is not None and claims.video.room_create, "roomCreate")
        if not self.rooms.delete_room(req.room):
            raise TwirpError("not_found", "requested room does not exist")
        self._room_info.pop(req.room, None)
        for key in [k for k in self._participant_info if k[0] == req.room]:
            del self._participant_info[key]
        return room.DeleteRoomResponse()

    async def _list_rooms(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.ListRoomsRequest)
        self._require(claims.video is not None and claims.video.room_list, "roomList")
        names = self.rooms.list_rooms()
        if req.names:
            names = [name for name in names if name in set(req.names)]
        return room.ListRoomsResponse(rooms=[self._room_message(name) for name in names])

    async def _list_participants(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.ListParticipantsRequest)
        self._require_admin(claims, req.room)
        memory_room = self.rooms.get_room(req.room)
        if memory_room is None:
            return room.ListParticipantsResponse()
        participants = []
        for identity in memory_room.participants:
            details = self._participant_details(req.room, identity)
            participants.append(
                models.ParticipantInfo(
                    sid=details["sid"],
                    identity=identity,
                    name=details.get("name", ""),
                    state=models.ParticipantInfo.State.ACTIVE,
                    kind=_KINDS.get(memory_room.kind_of(identity) or "", 0),
                    joined_at=int(details["joined_at"]),
                    joined_at_ms=int(details["joined_at"] * 1000),
                )
            )
        return room.ListParticipantsResponse(participants=participants)

    async def _remove_participant(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.RoomParticipantIdentity)
        self._require_admin(claims, req.room)
        try:
            self.rooms.remove_participant(req.room, req.identity)
        except MemoryRoomError:
            raise TwirpError("not_found", "participant not found") from None
        self._participant_info.pop((req.room, req.identity), None)
        return room.RemoveParticipantResponse()

    async def _move_participant(self, req: Message, claims: Claims) -> Message:
        assert isinstance(req, room.MoveParticipantRequest)
        video = claims.video
        self._require(
            video is not None
            and bool(video.room_admin)
            and video.room == req.room
            and video.destination_room == req.destination_room,
            f"roomAdmin for {req.room!r} with destinationRoom {req.destination_room!r}",
        )
        if req.room == req.destination_room:
            raise TwirpError("invalid_argument", "destination room is the same as the source")
        if self.oss:
            raise TwirpError("unimplemented", "MoveParticipant is not available on this server")
        try:
            self.rooms.move_participant(req.identity, req.room, req.destination_room)
        except MemoryRoomError:
            raise TwirpError("not_found", "participant not found") from None
        details = self._participant_info.pop((req.room, req.identity), None)
        if details is not None:
            self._participant_info[(req.destination_room, req.identity)] = details
        self._room_details(req.destination_room)
        return room.MoveParticipantResponse()

    # Details the memory server does not keep (sids, names, times)

    def _room_details(self, name: str) -> dict[str, Any]:
        details = self._room_info.get(name)
        if details is None:
            if len(self._room_info) >= _MAX_LOGGED_REQUESTS:
                existing = set(self.rooms.list_rooms())
                self._room_info = {k: v for k, v in self._room_info.items() if k in existing}
            details = {"sid": f"RM_{next(self._ids):06d}", "created": time.time()}
            self._room_info[name] = details
        return details

    def _participant_details(
        self, room_name: str, identity: str, req: sip.CreateSIPParticipantRequest | None = None
    ) -> dict[str, Any]:
        key = (room_name, identity)
        details = self._participant_info.get(key)
        if details is None or req is not None:
            if len(self._participant_info) >= _MAX_LOGGED_REQUESTS:
                self._participant_info.clear()
            details = {"sid": f"PA_{next(self._ids):06d}", "joined_at": time.time()}
            if req is not None:
                details["name"] = req.participant_name
            self._participant_info[key] = details
        return details

    def _room_message(self, name: str) -> models.Room:
        details = self._room_details(name)
        memory_room = self.rooms.get_room(name)
        return models.Room(
            sid=details["sid"],
            name=name,
            empty_timeout=details.get("empty_timeout", 0),
            departure_timeout=details.get("departure_timeout", 0),
            max_participants=details.get("max_participants", 0),
            creation_time=int(details["created"]),
            creation_time_ms=int(details["created"] * 1000),
            metadata=memory_room.metadata if memory_room is not None else "",
            num_participants=len(memory_room) if memory_room is not None else 0,
        )


async def _read_body(request: web.BaseRequest) -> bytes | None:
    """The request body, or None when it is over the size limit (the rest is discarded)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(1 << 16):
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(message_type: type[Message], body: bytes, content_type: str) -> Message:
    message = message_type()
    if content_type == "application/json":
        json_format.Parse(body.decode("utf-8") or "{}", message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(body)
    return message


def _answer(message: Message, content_type: str) -> web.Response:
    if content_type == "application/json":
        text = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
        return web.Response(body=text.encode(), content_type="application/json")
    return web.Response(body=message.SerializeToString(), content_type="application/protobuf")


def _twirp_error_response(error: TwirpError) -> web.Response:
    return web.json_response(error.body(), status=error.http_status)


def _mask(number: str) -> str:
    return number if len(number) <= 4 else "…" + number[-4:]


def _check_loopback(host: str) -> None:
    if host in _LOOPBACK_NAMES:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"the emulator listens on loopback only, not {host!r}")


def default_humans(sample_rate: int = 16000) -> dict[str, HumanScript]:
    """A small directory of scripted humans for the command-line emulator.

    - `+15550100` answers after 1 s, greets, presses 1 after 3 s, hangs up after 120 s.
    - `+15550101` is busy (486); `+15550102` does not answer (480);
      `+15550103` declines (603); `+15550104` fails (500).

    Args:
        sample_rate: Rate of the greeting.

    Returns:
        The scripts by number.
    """
    greeting = tone(660, 0.6, sample_rate, -20.0)
    return {
        "+15550100": HumanScript(answer_after=1.0, greeting=greeting, hang_up_after=120.0).dtmf(
            3.0, "1"
        ),
        "+15550101": HumanScript(outcome="busy", answer_after=1.0),
        "+15550102": HumanScript(outcome="no_answer"),
        "+15550103": HumanScript(outcome="decline", answer_after=2.0),
        "+15550104": HumanScript(outcome="fail", answer_after=0.5),
    }


async def serve_forever(
    host: str = "127.0.0.1",
    port: int = 7880,
    *,
    api_key: str = DEFAULT_API_KEY,
    api_secret: str = DEFAULT_API_SECRET,
    oss: bool = False,
    humans: dict[str, HumanScript] | None = None,
    on_ready: Callable[[LiveKitEmulator], None] | None = None,
) -> None:
    """Run the emulator until cancelled (the `pipecat-warm-transfer emulator` command).

    Args:
        host: Loopback address to listen on.
        port: Port to listen on (LiveKit's default 7880; 0 for any).
        api_key: The API key clients must use.
        api_secret: The API secret clients must sign with.
        oss: Answer MoveParticipant with `unimplemented` (open-source LiveKit).
        humans: Scripted humans by number (default: `default_humans()`).
        on_ready: Called with the running emulator (e.g. to print its URL).
    """
    humans = default_humans() if humans is None else humans
    async with LiveKitEmulator(
        api_key, api_secret, oss, humans=humans, host=host, port=port
    ) as emulator:
        logger.info(
            f"LiveKit emulator on {emulator.url} (api key {api_key!r}, "
            f"{len(humans)} scripted numbers, {'open-source' if oss else 'cloud'} mode)"
        )
        if on_ready is not None:
            on_ready(emulator)
        await asyncio.Event().wait()
