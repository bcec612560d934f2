#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A LiveKit server API emulator: Twirp over HTTP on loopback, rooms in memory.

`LiveKitEmulator` answers the part of LiveKit's server API a warm transfer uses exactly as
LiveKit's own server does, so the real `livekit.api.LiveKitAPI` client (and LiveKit's Node
SDK) run against it unchanged:

- `POST /twirp/livekit.SIP/CreateSIPParticipant`
- `POST /twirp/livekit.SIP/TransferSIPParticipant`: a REFER of a SIP participant's call,
  answered by a scripted carrier (see `livekit_sip_transfer`)
- `POST /twirp/livekit.RoomService/{CreateRoom, DeleteRoom, ListRooms, ListParticipants,
  GetParticipant, RemoveParticipant, MoveParticipant}`
- `GET /agent`: the agent worker WebSocket of LiveKit's agent dispatch (`agents`), which
  gives rooms created by inbound SIP calls (`add_dispatch_rule`, `inbound_call`) to the
  registered workers (see `livekit_agent_dispatch`)
- `GET /rtc`: the signal WebSocket a client joins a room with: presence only, no media
  (see `livekit_signal`), for participants in other processes

Every behaviour follows LiveKit's source; `FIDELITY` below lists each one with the file and
function it was read from (livekit/livekit, livekit/sip, livekit/protocol, livekit/psrpc,
twitchtv/twirp), so the table can be re-checked when LiveKit changes. Rooms and
participants live in a `MemoryRoomServer`; each dial is an `OutboundCall` that joins the
room as a SIP participant at once and rings a scripted `HumanScript`.

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
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
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

from pipecat_warm_transfer.testing.livekit_agent_dispatch import (
    STALE_PARTICIPANT_SECS,
    AgentDispatch,
    InboundCall,
    SipInbound,
)
from pipecat_warm_transfer.testing.livekit_signal import SignalService
from pipecat_warm_transfer.testing.livekit_sip_line import (
    DEFAULT_RINGING_TIMEOUT,
    OutboundCall,
    OutboundTrunk,
    new_id,
)
from pipecat_warm_transfer.testing.livekit_sip_transfer import SipTransfers
from pipecat_warm_transfer.testing.livekit_wire import (
    HTTP_TWIRP_CODE,
    SIP_REASONS,
    TWIRP_HTTP_STATUS,
    AuthRefusal,
    TwirpError,
    go_json,
    go_quote,
    not_found_page,
    sip_status_error,
    sip_twirp_code,
)
from pipecat_warm_transfer.testing.memory_room import MemoryConnection, MemoryRoomServer
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport
from pipecat_warm_transfer.testing.scripted_party import HumanScript, ScriptedParty, tone

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_API_SECRET",
    "DEFAULT_TRUNK_ID",
    "FIDELITY",
    "HTTP_TWIRP_CODE",
    "SIP_REASONS",
    "TWIRP_HTTP_STATUS",
    "Fidelity",
    "LiveKitEmulator",
    "OutboundTrunk",
    "TwirpError",
    "default_humans",
    "serve_forever",
    "sip_twirp_code",
]

#: Default API key and secret (LiveKit's dev-mode key; a long secret of our own).
DEFAULT_API_KEY = "devkey"
DEFAULT_API_SECRET = "secret-of-the-offline-livekit-emulator"

#: The outbound trunk a new emulator knows when none is given.
DEFAULT_TRUNK_ID = "ST_offline_trunk"


@dataclass(frozen=True)
class Fidelity:
    """One behaviour of the real server, what the emulator answers, and where it was read.

    Parameters:
        behaviour: The situation.
        answer: What goes on the wire (status, Twirp code, message, meta, timing, room).
        source: `repo path function`, at the commit the note names.
    """

    behaviour: str
    answer: str
    source: str


#: Read at livekit/livekit 788d4c35, livekit/sip be5d3f57, livekit/protocol 17c16cf4 and
#: d74e7cdb, livekit/psrpc 220fe5f9, twitchtv/twirp v8.1.3, livekit-api 1.2.2 and
#: livekit-server-sdk 2.19.2 (the versions in use in December 2026).
FIDELITY: tuple[Fidelity, ...] = (
    # The auth middleware (runs before any Twirp routing)
    Fidelity(
        "Authorization header without `Bearer `",
        "401 text/plain `invalid authorization header. Must start with Bearer `",
        "livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware.ServeHTTP; utils.go HandleError",
    ),
    Fidelity(
        "token that is not a JWT",
        "401 text/plain `invalid authorization token`",
        "livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware.ServeHTTP (auth.ParseAPIToken)",
    ),
    Fidelity(
        "token issued by an unknown API key",
        "401 text/plain `invalid API key`",
        "livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware.ServeHTTP (GetSecret)",
    ),
    Fidelity(
        "bad signature, other algorithm than HS256, expired, not yet valid, no exp",
        "401 text/plain `invalid authorization token: token signature is invalid: signature is "
        "invalid` / `...: token has invalid claims: token is expired` (60 s leeway on exp/nbf)",
        "livekit/protocol auth/verifier.go APIKeyTokenVerifier.Verify (tokenLeeway, "
        "WithExpirationRequired); golang-jwt/jwt v5 errors.go",
    ),
    Fidelity(
        "no Authorization header (a token may come as the `access_token` query parameter)",
        "without any token: passes the middleware with no grants; the method then answers "
        "401 `unauthenticated` `permissions denied`",
        "livekit/livekit pkg/service/auth.go APIKeyAuthMiddleware.ServeHTTP",
    ),
    Fidelity(
        "valid token without the method's grant",
        "401 application/json `unauthenticated` `permissions denied`, no meta",
        "livekit/livekit pkg/service/auth.go EnsureAdminPermission, EnsureCreatePermission, "
        "EnsureListPermission, EnsureSIPCallPermission, EnsureDestRoomPermission, twirpAuthError",
    ),
    Fidelity(
        "request body over 10 MiB (Content-Length)",
        "413 text/plain `request body too large`, before auth",
        "livekit/livekit pkg/service/server.go NewLivekitServer (NewRequestBodyLimiter)",
    ),
    # Twirp routing and encoding
    Fidelity(
        "path of no registered service",
        "404 text/plain `404 page not found` (Go http.NotFound)",
        "livekit/livekit pkg/service/server.go NewLivekitServer (mux)",
    ),
    Fidelity(
        "unknown method, method other than POST, wrong Content-Type",
        '404 `bad_route`, `no handler for path "..."` / `unsupported method "GET" (only POST '
        'is allowed)` / `unexpected Content-Type: "text/plain"`, meta `twirp_invalid_route`',
        "livekit/protocol livekit/livekit_room.twirp.go roomServiceServer.ServeHTTP, serveX",
    ),
    Fidelity(
        "body that does not decode (an empty JSON body too)",
        "400 `malformed` `the json request could not be decoded` / `the protobuf request could "
        "not be decoded`",
        "livekit/protocol livekit/livekit_room.twirp.go serveXJSON, serveXProtobuf",
    ),
    Fidelity(
        "every error answer",
        "Content-Type exactly `application/json`; body `{code, msg[, meta]}` compact, meta "
        "sorted and left out when empty; the status's standard reason phrase",
        "livekit/protocol livekit/cloud_replay.twirp.go writeError, marshalErrorToJSON; "
        "twitchtv/twirp errors.go ServerHTTPStatusFromErrorCode",
    ),
    Fidelity(
        "an error that crossed LiveKit's internal RPC (psrpc) or carries a SIP status",
        "message prefixed `twirp error unknown: `; code from the gRPC status",
        "livekit/protocol utils/xtwirp/errors.go ToError, WithDetailsFrom; livekit/psrpc "
        "errors.go GRPCStatus",
    ),
    Fidelity(
        "JSON success answer",
        "snake_case field names, every field emitted (defaults too), int64 as strings; "
        "`{}` for an empty answer",
        "livekit/protocol livekit/livekit_room.twirp.go (protojson UseProtoNames, EmitUnpopulated)",
    ),
    # RoomService
    Fidelity(
        "CreateRoom of a new room",
        "Room with sid `RM_` + 12, empty_timeout 300, departure_timeout 20 unless given, the "
        "default codecs",
        "livekit/livekit pkg/service/roomallocator.go CreateRoom, applyDefaultRoomConfig; "
        "pkg/config/config.go DefaultConfig",
    ),
    Fidelity(
        "CreateRoom of a room that exists",
        "the stored room unchanged (the request's fields are ignored)",
        "livekit/livekit pkg/rtc/roommanager.go getOrCreateRoom",
    ),
    Fidelity(
        "DeleteRoom of a missing room",
        "404 `not_found` `twirp error unknown: requested room does not exist`",
        "livekit/livekit pkg/service/roomservice.go DeleteRoom (ErrRoomNotFound)",
    ),
    Fidelity(
        "ListParticipants of a missing room",
        '200 `{"participants": []}`',
        "livekit/livekit pkg/service/roomservice.go ListParticipants (LocalStore)",
    ),
    Fidelity(
        "GetParticipant / RemoveParticipant of a missing participant or room",
        "404 `not_found` `twirp error unknown: participant does not exist`",
        "livekit/livekit pkg/service/roomservice.go RemoveParticipant, GetParticipant "
        "(ErrParticipantNotFound)",
    ),
    Fidelity(
        "MoveParticipant into the same room",
        "400 `invalid_argument` `destination room cannot be the same as source room ` (trailing "
        "space), meta `argument`",
        "livekit/livekit pkg/service/roomservice.go MoveParticipant (twirp.InvalidArgumentError)",
    ),
    Fidelity(
        "MoveParticipant on an open-source server",
        "500 `unknown` `twirp error unknown: not implemented`",
        "livekit/livekit pkg/rtc/roommanager.go RoomManager.MoveParticipant; livekit/psrpc "
        "pkg/server/rpc.go sendResponse",
    ),
    Fidelity(
        "MoveParticipant of a participant not connected",
        "after 3 s (3 tries of 1 s) 503 `unavailable` `twirp error unknown: no response from "
        "servers`",
        "livekit/protocol rpc/typed_api.go DefaultPSRPCConfig; livekit/psrpc pkg/client/rpc.go "
        "selectServer (ErrNoResponse)",
    ),
    Fidelity(
        "ParticipantInfo",
        "sid `PA_` + 12, state ACTIVE, kind, name, metadata, attributes, joined_at(_ms)",
        "livekit/protocol livekit_models.proto ParticipantInfo; livekit/livekit "
        "pkg/rtc/participant.go ToProto",
    ),
    # SIP
    Fidelity(
        "CreateSIPParticipant checks, in order",
        "`sip.call` grant (401 `permissions denied`) → request validation (400 "
        "`invalid_argument`, raw message: `missing sip trunk id and sip number`, `missing sip "
        "callee number`, `missing room name`, `invalid header name: ...`, `invalid header value "
        "for X: ...`) → trunk (404 `not_found` `requested sip trunk does not exist`)",
        "livekit/livekit pkg/service/sip.go CreateSIPParticipant, CreateSIPParticipantRequest; "
        "livekit/protocol livekit/sip.go ValidateResult, livekit/sip_validation.go",
    ),
    Fidelity(
        "the SIP participant",
        "joins the room as soon as the dial starts (kind SIP, identity `sip_<number>` by "
        "default) with `sip.callID`, `sip.trunkID`, `sip.phoneNumber`, `sip.hostname`, "
        "`sip.trunkPhoneNumber`, `sip.callStatus=dialing`",
        "livekit/sip pkg/sip/outbound.go newCall, connectToRoom; livekit/protocol rpc/sip.go "
        "NewCreateSIPParticipantRequestResult; livekit/attrs.go",
    ),
    Fidelity(
        "the ring clock",
        "starts only after the SIP participant joined; default 3 min when unset",
        "livekit/sip pkg/sip/outbound.go sipSignal; pkg/sip/participant.go defaultRingingTimeout",
    ),
    Fidelity(
        "`sip.callStatus`",
        "dialing → ringing (180) → automation (while `dtmf` plays, 0.5 s a digit) → active; "
        "hangup only when the human hangs up (BYE); failed dials keep dialing/ringing",
        "livekit/sip pkg/sip/outbound.go sipSignal, dialSIP, close; pkg/sip/participant.go "
        "CallStatus.Attribute; livekit/media-sdk dtmf/dtmf.go",
    ),
    Fidelity(
        "wait_until_answered=false",
        "answers right after the join, before the INVITE: participant_id, identity, room_name, "
        "sip_call_id `SCL_` + 12",
        "livekit/sip pkg/sip/client.go createSIPParticipant; livekit/livekit pkg/service/sip.go",
    ),
    Fidelity(
        "nobody answers before ringing_timeout (LiveKit's own ring-out)",
        "408 `canceled` `twirp error unknown: sip request timed out`, no meta, no SIP status; "
        "the participant leaves as USER_UNAVAILABLE",
        "livekit/sip pkg/sip/outbound.go sipResponse (ErrSIPRequestTimeout); pkg/sip/errors.go "
        "classifyInviteError",
    ),
    Fidelity(
        "the carrier answers a final status (486, 603, 480, 404, 5xx, ...)",
        "code from the SIP status (486/480/600 `resource_exhausted` 429, 603 "
        "`permission_denied` 403, 404 `not_found`, 5xx `failed_precondition` 412...), "
        "`twirp error unknown: INVITE failed: sip status: 486: Busy Here`, meta "
        "`sip_status_code`, `sip_status`, `error_details`; leaves USER_REJECTED (4xx, 6xx), "
        "USER_UNAVAILABLE (404, 408, 480) or CLIENT_INITIATED (5xx)",
        "livekit/sip pkg/sip/outbound.go sipOutbound.Invite; pkg/errors/errors.go "
        "ApplySIPStatus; livekit/protocol livekit/sip.go sipCodeToGRPCCode, TwirpErrorMeta",
    ),
    Fidelity(
        "a waiting dial's server deadline",
        "30 s (80 s with wait_until_answered), or the `X-Twirp-Timeout-Ms` header; then 408 "
        "`deadline_exceeded` `twirp error unknown: request timed out`, and the ringing stops",
        "livekit/livekit pkg/service/sip.go CreateSIPParticipantRequest; livekit/psrpc "
        "pkg/client/rpc.go (ErrRequestTimedOut)",
    ),
    Fidelity(
        "the HTTP client gives up on a waiting dial",
        "the phone rings on (no cancel reaches the SIP service) until answered, refused, rung "
        "out, the server deadline, the participant removed or the room deleted",
        "livekit/psrpc pkg/server/rpc.go handleRequest; livekit/sip pkg/sip/outbound.go sipSignal",
    ),
    Fidelity(
        "participant removed or room deleted while ringing",
        "the INVITE is cancelled; a waiting request gets `canceled` `... sip request timed out`",
        "livekit/sip pkg/sip/outbound.go sipSignal (room watcher), sipResponse",
    ),
    Fidelity(
        "the human hangs up",
        "`sip.callStatus=hangup`, then the participant leaves (CLIENT_INITIATED)",
        "livekit/sip pkg/sip/client.go onBye; pkg/sip/outbound.go close",
    ),
    Fidelity(
        "play_dialtone",
        "425 Hz, 1 s on / 4 s off, half volume, into the room until answered or failed",
        "livekit/sip pkg/sip/outbound.go dialSIP; livekit/media-sdk tones/tones.go ETSIRinging",
    ),
    # SIP transfer (TransferSIPParticipant: a REFER of the caller's call)
    Fidelity(
        "TransferSIPParticipant checks, in order",
        "no room name / no identity: 400 `invalid_argument` `twirp error unknown: Missing room "
        "name` / `...: Missing participant identity`, before the grants → `sip.call` grant and "
        "`roomAdmin` for that room (401 `permissions denied`) → validation (400 "
        "`invalid_argument`, raw: `missing transfer to`, `transfer_to must be a valid SIP(s) or "
        "TEL URI (sip:, sips: or tel:)`, header problems) → the participant (404 `not_found` "
        "`twirp error unknown: participant does not exist`) → its `sip.callID` (400 "
        "`invalid_argument` `twirp error unknown: no SIP session associated with participant`)",
        "livekit/livekit pkg/service/sip.go TransferSIPParticipant, "
        "transferSIPParticipantRequest; livekit/protocol livekit/sip.go "
        "TransferSIPParticipantRequest.ValidateResult, validateHeaders",
    ),
    Fidelity(
        "a transfer's deadline",
        "`ringing_timeout` (30 s when unset), or `X-Twirp-Timeout-Ms` when sooner; then 408 "
        "`deadline_exceeded` `twirp error unknown: request timed out` and the call stays; an "
        "HTTP client that gives up does not stop the transfer",
        "livekit/livekit pkg/service/sip.go TransferSIPParticipant; livekit/psrpc "
        "pkg/client/rpc.go (ErrRequestTimedOut); livekit/sip pkg/sip/service.go "
        "transferSIPParticipant (context.WithoutCancel)",
    ),
    Fidelity(
        "a `sip.callID` no SIP call owns (the attribute on a participant of another kind)",
        "no SIP service serves the call's topic: 408 at the deadline",
        "livekit/sip pkg/sip/client.go RegisterTransferSIPParticipant, inbound.go joinRoom; "
        "livekit/psrpc pkg/client/rpc.go newRPC",
    ),
    Fidelity(
        "transferring a dial that is not answered yet",
        "412 `failed_precondition` `twirp error unknown: can't transfer non established call`",
        "livekit/sip pkg/sip/outbound.go connectToRoom (registered at join), "
        "sipOutbound.transferCall; inbound.go sipInbound.newReferReq",
    ),
    Fidelity(
        "a second transfer of a call being transferred",
        "to the same `transfer_to`: waits for the same outcome; elsewhere: 400 "
        "`invalid_argument` `twirp error unknown: call already being transferred elsewhere`",
        "livekit/sip pkg/sip/service.go transferSIPParticipant, getOrCreatePendingTransfer",
    ),
    Fidelity(
        "the carrier refuses the REFER (a final status but 200/202)",
        "code from the SIP status (603 `permission_denied`, 405 `invalid_argument`, 501 "
        "`failed_precondition`...), `twirp error unknown: sip status: 603: Decline`, meta "
        "`sip_status_code`, `sip_status`, `error_details`; the call stays",
        "livekit/sip pkg/sip/protocol.go sendRefer; pkg/errors/errors.go ApplySIPStatus; "
        "livekit/protocol livekit/sip.go SIPStatus.Error, GRPCStatus, TwirpErrorMeta",
    ),
    Fidelity(
        "the carrier accepts, then the NOTIFY reports the target failed (486, 480, 603...)",
        "code from that SIP status, `twirp error unknown: call transfer failed: sip status: 486: "
        "Busy Here`, the same meta; 1xx NOTIFYs are progress only; the call stays",
        "livekit/sip pkg/sip/protocol.go handleReferNotify, parseNotifyBody; pkg/sip/service.go "
        "TransferSIPParticipant (ApplySIPStatus)",
    ),
    Fidelity(
        "the NOTIFY reports 200 (the target answered)",
        "200 at once, an empty TransferSIPParticipantResponse (JSON status "
        "`STS_TRANSFER_ONGOING`: the SIP service still answers Empty); then at the carrier's BYE, "
        "or after 1 s LiveKit's own hang-up: `sip.callStatus=hangup`, the participant leaves "
        "(CLIENT_INITIATED)",
        "livekit/sip pkg/sip/service.go TransferSIPParticipant (emptypb.Empty); inbound.go "
        "inboundCall.transferCall (referByeTimeout), closeWithHangup, close; outbound.go "
        "outboundCall.transferCall; pkg/sip/room.go Room.CloseWithReason; livekit/livekit "
        "pkg/service/sip.go; pkg/rtc/signalling/signalhandler.go (SignalRequest_Leave)",
    ),
    Fidelity(
        "the call ends while the target rings (hang-up, participant removed, room deleted)",
        "200, no error: livekit/sip reports the REFER's acceptance as the outcome",
        "livekit/sip pkg/sip/inbound.go sipInbound.TransferCall (callDone); outbound.go "
        "sipOutbound.transferCall",
    ),
    Fidelity(
        "TransferSIPParticipant's play_dialtone",
        "kept in the transfer's record; from before the REFER the caller's phone stops hearing "
        "the room and hears the ETSI ringing tone instead (425 Hz, 1 s on, 4 s off, half "
        "scale, 20 ms frames, silence as zeros), nothing into the room; a failed transfer "
        "gives the room's audio back, one that went through leaves it off",
        "livekit/sip pkg/sip/inbound.go inboundCall.transferCall (SwapOutput(nil), tones.Play "
        "with ETSIRinging at MaxInt16/2, SwapOutput(w) on error else w.Close()); "
        "livekit/media-sdk tones/tones.go ETSIRinging, Play",
    ),
    # Agent dispatch (the /agent WebSocket) and inbound SIP calls
    Fidelity(
        "`/agent` without a WebSocket upgrade / with a token lacking the `agent` grant",
        "404 with no body / 401 text/plain `no permissions to access the room`",
        "livekit/livekit pkg/service/agentservice.go AgentSocketUpgrader.Upgrade; "
        "pkg/rtc/errors.go ErrPermissionDenied",
    ),
    Fidelity(
        "a worker's first messages",
        "pings answered with WorkerPong (last_timestamp, now in ms); the first Register "
        "answered with worker_id `AW_`+12 and server_info (agent_protocol 1); any other "
        "message, an unknown job type, or no Register within 10 s closes the socket",
        "livekit/livekit pkg/service/agentservice.go HandshakeAgentWorker; pkg/agent/worker.go "
        "WorkerRegisterer.HandleRegister, WorkerPingHandler.HandlePing, RegisterTimeout",
    ),
    Fidelity(
        "a registered worker's messages",
        "UpdateWorkerStatus sets status (if given) and load; UpdateJobStatus updates a running "
        "job and forgets it once SUCCESS/FAILED (unknown jobs ignored); SimulateJob offers a "
        "new job (room, or publisher with a participant) to that worker alone; MigrateJob "
        "ignored (open source); a second Register or unknown message closes the socket",
        "livekit/livekit pkg/agent/worker.go Worker.HandleUpdateWorker, UpdateJobStatus, "
        "HandleSimulateJob, HandleMigrateJob; DispatchWorkerSignal",
    ),
    Fidelity(
        "a room created with agents in its room config (a SIP dispatch rule's)",
        "one job per dispatch, launched as the room is created; no agents: one dispatch "
        "with an empty agent name (automatic dispatch)",
        "livekit/livekit pkg/rtc/room.go NewRoom, createAgentDispatchesFromRoomAgent, "
        "launchRoomAgents",
    ),
    Fidelity(
        "choosing the worker of a job",
        "random among AVAILABLE workers of that agent name, weighted by max(0, 1 - load); "
        "a decline or a closed worker moves on to the next, never the same one twice; an "
        "answer later than 10 s fails the job (not retried); nobody left: no job "
        "(ResourceExhausted, only logged)",
        "livekit/livekit pkg/service/agentservice.go AgentHandler.JobRequest, "
        "selectWorkerWeightedByLoad; pkg/agent/worker.go Worker.AssignJob, AssignJobTimeout",
    ),
    Fidelity(
        "an accepted job",
        "JobAssignment with the job (state RUNNING, worker_id, participant_identity) and a "
        "1 h token: roomJoin + agent for that room, kind agent, the worker's permissions, "
        "attributes with `lk.agent_name`; no url (the worker's own)",
        "livekit/livekit pkg/agent/worker.go Worker.AssignJob; livekit/protocol agent/token.go "
        "BuildAgentToken",
    ),
    Fidelity(
        "the agent's participant leaves the room (or is removed, or the room deleted)",
        "JobTermination{job_id} to its worker and the job FAILED `agent worker left the room`;"
        " nothing when the worker already ended the job or is gone",
        "livekit/livekit pkg/rtc/room.go RemoveParticipant (AGENT_LEFT_ROOM); "
        "pkg/agent/worker.go Worker.TerminateJob; agentservice.go JobTerminate",
    ),
    Fidelity(
        "a worker's socket drops",
        "the worker is deregistered and its jobs forgotten (no status change); its "
        "participants stay until their own connections time out",
        "livekit/livekit pkg/service/agentservice.go deregisterWorker, deregisterJob",
    ),
    Fidelity(
        "a participant whose client died without leaving",
        "removed after 20 s (ICE disconnected 10 s + failed 5 s + disconnect cleanup 5 s); "
        "the others see it leave with CONNECTION_TIMEOUT",
        "livekit/livekit pkg/rtc/transport.go iceDisconnectedTimeout, iceFailedTimeout; "
        "pkg/rtc/participant.go setupDisconnectTimer; pkg/rtc/types/interfaces.go "
        "ToDisconnectReason",
    ),
    # The signal endpoint (/rtc): a participant's presence and its signal, no media
    Fidelity(
        "`/rtc` refusals",
        "no WebSocket upgrade: 404 with no body; then text/plain (HandleError): no token or "
        "no video claim 401 `no permissions to access the room`, no roomJoin 401 "
        "`permissions denied`, no identity 400 `identity cannot be empty`, no room 400 `no "
        "room name`, identity or room over 256 400 `... length exceeds limits: max length "
        "256`; bad tokens get the auth middleware's 401 first",
        "livekit/livekit pkg/service/rtcservice.go RTCService.serve, validateInternal; "
        "pkg/service/utils.go ValidateConnectRequest, HandleError; auth.go "
        "EnsureJoinPermission; pkg/service/errors.go; pkg/config/config.go Limit",
    ),
    Fidelity(
        "a client joins over `/rtc`",
        "SignalResponse{join}: room, participant (JOINING, sid `PA_`, kind and permission "
        "from the token), other_participants (not hidden), server_info and server_version, "
        "ping_interval 5, ping_timeout 15; then SignalResponse{refresh_token} (same grants, "
        "expiring no sooner than 10 min); the participant is in the room (an agent token's "
        "kind is agent)",
        "livekit/livekit pkg/rtc/room.go Room.Join, createJoinResponseLocked, "
        "GetOtherParticipantInfo; pkg/rtc/participant.go ToProtoWithVersion, "
        "PingIntervalSeconds; participant_signal.go SendJoinResponse; pkg/service/"
        "roommanager.go NewLocalRoomManager (serverInfo), rtcSessionWorker, refreshToken",
    ),
    Fidelity(
        "another participant joins or leaves while a client is connected",
        "SignalResponse{update: ParticipantUpdate} with its ParticipantInfo: ACTIVE on join "
        "(a publisher: sent at once), new attributes on a change, DISCONNECTED with "
        "disconnect_reason on leave; hidden participants never announced; a DUPLICATE_"
        "IDENTITY leave not told to clients of protocol > 11",
        "livekit/livekit pkg/rtc/room.go broadcastParticipantState, PushAndDequeueUpdates, "
        "SendParticipantUpdates, RemoveParticipant; pkg/rtc/participant.go Close; "
        "pkg/rtc/types/protocol_version.go SupportsIdentityBasedReconnection",
    ),
    Fidelity(
        "the client sends SignalRequest{leave}",
        "removed with its reason (CLIENT_INITIATED, or USER_UNAVAILABLE, USER_REJECTED, "
        "AGENT_ERROR as given); the others see it leave; the server answers with its own "
        "leave of that reason and closes the socket (1000)",
        "livekit/livekit pkg/rtc/signalling/signalhandler.go (SignalRequest_Leave); "
        "pkg/rtc/room.go onLeave, RemoveParticipant; pkg/rtc/participant.go Close(sendLeave)",
    ),
    Fidelity(
        "the server removes a signal participant (RemoveParticipant, DeleteRoom, same identity)",
        "SignalResponse{leave: LeaveRequest{reason PARTICIPANT_REMOVED / ROOM_DELETED / "
        "DUPLICATE_IDENTITY, action DISCONNECT}} (protocol <= 12: can_reconnect false, no "
        "action), then the socket closes (1000)",
        "livekit/livekit pkg/service/roommanager.go RemoveParticipant, DeleteRoom, "
        "StartSession; pkg/rtc/room.go Close; participant_signal.go sendLeaveRequest; "
        "pkg/rtc/types/interfaces.go ToDisconnectReason; pkg/service/wsprotocol.go "
        "CloseWithReason",
    ),
    Fidelity(
        "ping, ping_req and text frames on `/rtc`",
        "ping answered with pong (now in ms), ping_req with pong_resp{last_ping_timestamp, "
        "timestamp}; a text frame switches the connection to protojson both ways; an "
        "undecodable frame ends the signal connection",
        "livekit/livekit pkg/service/rtcservice.go RTCService.serve; pkg/service/"
        "wsprotocol.go ReadRequest, WriteResponse",
    ),
    Fidelity(
        "a signal socket that drops without a leave (the client's process died)",
        "the participant stays in the room, silent (its media, connected as it joined, "
        "died with it), until the stale-participant timeout removes it with "
        "CONNECTION_TIMEOUT; an agent's job is not terminated by the drop itself",
        "livekit/livekit pkg/service/roommanager.go rtcSessionWorker; pkg/rtc/participant.go "
        "HandleSignalSourceClose (kept once ICE connected), setupDisconnectTimer",
    ),
    Fidelity(
        "an inbound SIP call and its dispatch rule",
        "individual rule: room `PREFIX_<from>_<random>`; callee: `PREFIX_<to>`; caller "
        "`sip_<from>` named `Phone <from>` with sip.callID, sip.trunkID, sip.phoneNumber, "
        "sip.hostname, sip.trunkPhoneNumber, sip.ruleID; hide_phone_number: sha256 identity",
        "livekit/protocol sip/sip.go EvaluateDispatchRule",
    ),
)

#: LiveKit's token leeway on `exp` and `nbf`.
TOKEN_LEEWAY_SECS = 60.0

#: livekit/livekit `MaxAPIRequestBodySize`.
MAX_BODY_BYTES = 10 << 20

#: How long a psrpc call to a topic nobody serves takes to fail (3 tries of 1 s).
PSRPC_NO_RESPONSE_SECS = 3.0

#: Server deadlines of CreateSIPParticipant (livekit/livekit pkg/service/sip.go).
SIP_REQUEST_TIMEOUT = 30.0
SIP_WAIT_TIMEOUT = 80.0

# The bus hop between the SIP service's deadline and the API's: the API's fires first.
_BUS_SECS = 0.01

_MAX_ROOM_NAME = 256
_MAX_LOGGED_REQUESTS = 10_000
_MAX_ACTIVE_CALLS = 256
_MAX_PARTIES = 1_000
_MAX_FAULTS = 1_000
_MAX_LATENCY_SECS = 600.0
_LOOPBACK_NAMES = ("localhost",)
_SERVICES = ("RoomService", "SIP")
_PERMISSION_DENIED = "permissions denied"
_FORBIDDEN_HEADERS = frozenset(
    "accept accept-encoding accept-language allow allow-events call-id contact "
    "content-encoding content-length content-type cseq event expires from max-forwards "
    "record-route refer-to reply-to k l m o r t u v".split()
)
_HEADER_NAME_CHARS = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.!%*_+`'~"
)
_DEFAULT_CODECS = (
    "audio/PCMU",
    "audio/PCMA",
    "audio/opus",
    "audio/red",
    "video/VP8",
    "video/H264",
    "video/VP9",
    "video/AV1",
    "video/H265",
    "video/rtx",
)
_KINDS = {
    "standard": models.ParticipantInfo.Kind.STANDARD,
    "sip": models.ParticipantInfo.Kind.SIP,
    "agent": models.ParticipantInfo.Kind.AGENT,
}


@dataclass
class _Fault:
    code: str
    msg: str
    meta: dict[str, str]
    http_status: int


Handler = Callable[[Message, Claims | None, web.BaseRequest], Awaitable[Message]]


@dataclass
class _Method:
    request_type: type[Message]
    handler: Handler


class LiveKitEmulator:
    """LiveKit's server API (SIP + room service) over HTTP on loopback, in memory.

    Parameters:
        api_key: The API key tokens must be issued by.
        api_secret: The secret tokens must be signed with.
        oss: Behave as open-source LiveKit: MoveParticipant answers "not implemented".
        rooms: The room server to use (default: a new `MemoryRoomServer`). It may be
            replaced (`emulator.rooms = server`) before the first request.
        humans: The scripted phone behind each number (`sip_call_to`); an unscripted
            number answers 404 Not Found.
        trunks: The outbound trunks the server knows (ids or `OutboundTrunk`s; default:
            `DEFAULT_TRUNK_ID`). Any other trunk id is `not_found`.
        sample_rate: Rate the humans send and record at.
        t0: Event-loop time of sample 0 of the humans' recordings (default: answer).
        host: Loopback address to listen on.
        port: Port to listen on (0: any free port).
        token_leeway: Seconds of clock leeway on `exp`/`nbf` (LiveKit's: 60).
        sip_request_timeout: The server's deadline of a dial that does not wait (30 s).
        sip_wait_timeout: The server's deadline of a dial that waits for the answer (80 s).
        dispatch_seed: Seed of the agent dispatch's weighted random pick of a worker.
        stale_participant_secs: How long a participant whose client died (`vanish`)
            stays in its room before the server removes it (LiveKit: about 20 s).

    Attributes:
        requests: `(method, fields, headers)` of each request (fields as protobuf JSON
            with proto names, headers without `Authorization`), oldest first.
        request_grants: `(method, grants)` of each authenticated request: the token's
            identity and its non-empty video and SIP grants.
        parties: The scripted humans that answered, by identity (the latest of each).
        calls: Every dial placed, oldest first (`OutboundCall`: its statuses and outcome).
    """

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        oss: bool = False,
        *,
        rooms: MemoryRoomServer | None = None,
        humans: dict[str, HumanScript] | None = None,
        trunks: Iterable[str | OutboundTrunk] | None = None,
        sample_rate: int = 16000,
        t0: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        token_leeway: float = TOKEN_LEEWAY_SECS,
        sip_request_timeout: float = SIP_REQUEST_TIMEOUT,
        sip_wait_timeout: float = SIP_WAIT_TIMEOUT,
        dispatch_seed: int | None = None,
        stale_participant_secs: float = STALE_PARTICIPANT_SECS,
    ):
        """Create the emulator (it listens once entered, or after `start()`)."""
        if not api_key or not api_secret:
            raise ValueError("api_key and api_secret are required")
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        if sip_request_timeout <= 0 or sip_wait_timeout <= 0:
            raise ValueError("the SIP timeouts must be positive")
        _check_loopback(host)
        self.api_key = api_key
        self.api_secret = api_secret
        self.oss = oss
        self.rooms = rooms if rooms is not None else MemoryRoomServer()
        self.humans: dict[str, HumanScript] = dict(humans or {})
        self.trunks: dict[str, OutboundTrunk] = {}
        for trunk in trunks if trunks is not None else (DEFAULT_TRUNK_ID,):
            self.add_trunk(trunk)
        self.sample_rate = sample_rate
        self.t0 = t0
        self.sip_request_timeout = float(sip_request_timeout)
        self.sip_wait_timeout = float(sip_wait_timeout)
        self.requests: list[tuple[str, dict, dict]] = []
        self.request_grants: list[tuple[str, dict]] = []
        self.parties: dict[str, ScriptedParty] = {}
        self.calls: list[OutboundCall] = []
        self._host = host
        self._port = port
        self._leeway = max(0.0, float(token_leeway))
        self._verifier = TokenVerifier(api_key, api_secret, leeway=timedelta(seconds=self._leeway))
        self._methods: dict[tuple[str, str], _Method] = {
            ("SIP", "CreateSIPParticipant"): _Method(
                sip.CreateSIPParticipantRequest, self._create_sip_participant
            ),
            ("SIP", "TransferSIPParticipant"): _Method(
                sip.TransferSIPParticipantRequest, self._transfer_sip_participant
            ),
            ("RoomService", "CreateRoom"): _Method(room.CreateRoomRequest, self._create_room),
            ("RoomService", "DeleteRoom"): _Method(room.DeleteRoomRequest, self._delete_room),
            ("RoomService", "ListRooms"): _Method(room.ListRoomsRequest, self._list_rooms),
            ("RoomService", "ListParticipants"): _Method(
                room.ListParticipantsRequest, self._list_participants
            ),
            ("RoomService", "GetParticipant"): _Method(
                room.RoomParticipantIdentity, self._get_participant
            ),
            ("RoomService", "RemoveParticipant"): _Method(
                room.RoomParticipantIdentity, self._remove_participant
            ),
            ("RoomService", "MoveParticipant"): _Method(
                room.MoveParticipantRequest, self._move_participant
            ),
        }
        #: `TransferSIPParticipant`: the carriers' `ReferScript`s and every transfer.
        self.sip_transfers = SipTransfers(lambda: self.rooms, lambda: self.calls, _headers_problem)
        self._faults: dict[str, list[_Fault]] = {}
        self._drops: dict[str, int] = {}
        self._latency: dict[str, float] = {}
        #: Scripted faults that took effect, oldest first: (kind, method) with kind
        #: `fail`, `drop` or `latency` (armed faults a run never reached are not here).
        self.faults_fired: list[tuple[str, str]] = []
        self._server: web.Server | None = None
        self._runner: web.ServerRunner | None = None
        self._url: str | None = None
        self._handlers: set[asyncio.Task] = set()
        self._dispatch_seed = dispatch_seed
        self.stale_participant_secs = float(stale_participant_secs)
        self._agents: AgentDispatch | None = None
        self._sip_inbound: SipInbound | None = None
        self._signal_service: SignalService | None = None
        self._all_parties: list[ScriptedParty] = []
        self._room_info: dict[str, models.Room] = {}
        self._participant_info: weakref.WeakKeyDictionary[MemoryConnection, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

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

        def request_factory(message, payload, protocol, writer, task) -> web.BaseRequest:
            # LiveKit reads bodies up to its own limit (aiohttp's default is 1 MiB).
            return web.BaseRequest(
                message,
                payload,
                protocol,
                writer,
                task,
                asyncio.get_running_loop(),
                client_max_size=MAX_BODY_BYTES,
            )

        server = web.Server(
            self._handle,
            request_factory=request_factory,
            handler_cancellation=True,
            access_log=None,
        )
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
        tasks = [t for t in self._handlers if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for call in self.calls:
            await call.stop()
        await self.sip_transfers.stop()
        if self._agents is not None:
            await self._agents.close()
            self._agents = self._sip_inbound = None
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

    # Set-up

    def add_trunk(self, trunk: str | OutboundTrunk) -> OutboundTrunk:
        """Make an outbound trunk known (as `CreateSIPOutboundTrunk` would).

        Args:
            trunk: Its id, or the trunk.

        Returns:
            The trunk.
        """
        if isinstance(trunk, str):
            trunk = OutboundTrunk(trunk)
        if not trunk.trunk_id:
            raise ValueError("a trunk id is required")
        self.trunks[trunk.trunk_id] = trunk
        return trunk

    # Inspection

    def http_connections(self) -> int:
        """Open HTTP connections (client keep-alive connections included)."""
        return len(self._server.connections) if self._server is not None else 0

    def leftovers(self) -> dict[str, int]:
        """What is still open: `{"rooms": n, "participants": n, "connections": n}`.

        Rooms and participants are the room server's (a phone still ringing is a SIP
        participant in its room); connections are the open HTTP connections plus the
        room server's open media connections.
        """
        memory = self.rooms.leftovers()
        return {
            "rooms": memory["rooms"],
            "participants": memory["participants"],
            "connections": self.http_connections() + memory["connections"],
        }

    def ringing(self) -> list[OutboundCall]:
        """The dials still ringing (nobody answered, nothing ended them)."""
        return [call for call in self.calls if call.ringing]

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
        except AuthRefusal as e:
            raise PermissionError(e.text) from None
        video = claims.video
        if video is None or not video.room_join:
            raise PermissionError("the token has no roomJoin grant")
        if video.room != room_name:
            raise PermissionError(f"the token does not grant joining room {room_name!r}")
        if claims.identity != identity:
            raise PermissionError(f"the token is not for identity {identity!r}")
        return claims

    # Agent dispatch and inbound SIP calls

    @property
    def agents(self) -> AgentDispatch:
        """The agent dispatch: registered workers and every job launched (`.jobs`)."""
        if self._agents is None:
            self._agents = AgentDispatch(self.rooms, seed=self._dispatch_seed)
        return self._agents

    def add_dispatch_rule(self, rule: sip.SIPDispatchRuleInfo) -> sip.SIPDispatchRuleInfo:
        """Install a SIP dispatch rule (as `CreateSIPDispatchRule`); returns it with its id."""
        return self._inbound().add_rule(rule)

    def inbound_call(self, from_number: str, to_number: str = "+15550001000") -> InboundCall:
        """A phone call reaches LiveKit's SIP service and is dispatched by the first rule.

        The room is created with the rule's room config, its agents are dispatched, and
        the caller joins as a SIP participant (`sip_<number>`).
        """
        return self._inbound().call(from_number, to_number)

    def join(self, token: str, room_name: str, identity: str) -> MemoryConnection:
        """A client joins a room with a token, checked as LiveKit checks it.

        The participant's kind is the token's (`agent` for a dispatched job's token).
        """
        claims = self.check_join_token(token, room_name, identity)
        kind = claims.kind if claims.kind in _KINDS else "standard"
        connection = self.rooms.connect(room_name, identity, kind, attributes=claims.attributes)
        self._participant_info[connection] = {
            "sid": new_id("PA_"),
            "joined_at": time.time(),
            "name": claims.name or "",
            "metadata": claims.metadata or "",
        }
        return connection

    def vanish(self, connection: MemoryConnection) -> None:
        """The client behind a connection died (its process killed): no leave is sent.

        The server removes the participant after `stale_participant_secs` (LiveKit's ICE
        and disconnect timeouts), and an agent's job is then terminated.
        """
        self.rooms.vanish(connection, self.stale_participant_secs)

    def _signal(self) -> SignalService:
        if self._signal_service is None:
            self._signal_service = SignalService(self)
        return self._signal_service

    def _inbound(self) -> SipInbound:
        if self._sip_inbound is None:
            self._sip_inbound = SipInbound(self.rooms, self.agents, self._inbound_room)
        return self._sip_inbound

    def _inbound_room(self, name: str, config) -> models.Room:
        info = self._room_details(name)
        if config is not None:
            if config.empty_timeout > 0:
                info.empty_timeout = config.empty_timeout
            if config.departure_timeout > 0:
                info.departure_timeout = config.departure_timeout
        self.rooms.create_room(name)
        return self._room_message(name)

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
        """Answer the next `times` calls of `method` with a server-side error (after auth).

        The error is written as one that crossed LiveKit's internal RPC: its message gets
        the `twirp error unknown: ` prefix, as the real server's do.

        Args:
            method: The method name, e.g. `CreateSIPParticipant` or `DeleteRoom`.
            code: A Twirp code (`unavailable`) or an HTTP status (503: its Twirp code).
            msg: The message behind the prefix (default: the code's usual one).
            sip_status: Answer as the carrier's refusal with this SIP status: LiveKit's own
                code, message and meta for it (then `code` and `msg` are not given).
            times: How many calls fail.
        """
        self._check_method(method)
        if sip_status is not None:
            if code != "internal" or msg is not None:
                raise ValueError("a SIP refusal has LiveKit's own code and message")
            error = sip_status_error(sip_status)
        elif isinstance(code, int):
            twirp_code = HTTP_TWIRP_CODE.get(code, "internal" if code >= 500 else "unknown")
            error = TwirpError.psrpc(twirp_code, msg or _DEFAULT_MESSAGES.get(twirp_code, "failed"))
            error.http_status = code
        elif code in TWIRP_HTTP_STATUS:
            error = TwirpError.psrpc(code, msg or _DEFAULT_MESSAGES.get(code, "failed"))
        else:
            raise ValueError(f"unknown Twirp code {code!r}")
        queue = self._faults.setdefault(method, [])
        for _ in range(max(0, times)):
            if len(queue) >= _MAX_FAULTS:
                raise ValueError(f"at most {_MAX_FAULTS} scripted faults per method")
            queue.append(_Fault(error.code, error.msg, dict(error.meta), error.http_status))

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
            return e.response()
        except AuthRefusal as e:
            return e.response()
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            logger.exception(f"{self}: internal error")
            return TwirpError("internal", "Internal service panic").response()
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return web.Response(
                status=413,
                body=b"request body too large",
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
        refusal: AuthRefusal | None = None
        claims: Claims | None = None
        try:
            claims = self._authenticate(
                request.headers.get("Authorization"), request.query.get("access_token")
            )
        except AuthRefusal as e:
            refusal = e  # answered first, as the middleware does; the request is logged
        path = request.path
        parts = path.split("/")
        service = parts[2].removeprefix("livekit.") if len(parts) >= 3 else ""
        name = parts[3] if len(parts) == 4 else ""
        method = self._methods.get((service, name))
        if refusal is not None:
            if method is not None:
                self._log_request(name, None, request)
            raise refusal
        if path == "/agent":
            return await self._agent_socket(request, claims)
        if path == "/rtc":
            return await self._signal().serve(request, claims)
        if len(parts) < 3 or parts[1] != "twirp" or not parts[2].startswith("livekit."):
            return not_found_page()
        if service not in _SERVICES:
            return not_found_page()
        route = {"twirp_invalid_route": f"{request.method} {path}"}
        if request.method != "POST":
            raise TwirpError(
                "bad_route",
                f"unsupported method {go_quote(request.method)} (only POST is allowed)",
                route,
            )
        if method is None:
            raise TwirpError("bad_route", f"no handler for path {go_quote(path)}", route)
        raw_type = request.headers.get("Content-Type", "")
        content_type = raw_type.split(";")[0].strip().lower()
        if content_type not in ("application/protobuf", "application/json"):
            raise TwirpError("bad_route", f"unexpected Content-Type: {go_quote(raw_type)}", route)

        body = await request.read()
        message: Message | None = None
        try:
            message = _parse(method.request_type, body, content_type)
        except (DecodeError, json_format.ParseError, UnicodeDecodeError, ValueError) as e:
            logger.debug(f"{self}: {name}: {type(e).__name__}")
        self._log_request(name, message, request)
        self._log_grants(name, claims)
        if message is None:
            kind = "json" if content_type == "application/json" else "protobuf"
            raise TwirpError("malformed", f"the {kind} request could not be decoded")

        if self._drops.get(name):
            self._drops[name] -= 1
            self.faults_fired.append(("drop", name))
            logger.debug(f"{self}: {name}: dropping the connection (scripted)")
            transport = request.transport
            request.protocol.force_close()
            if transport is not None:
                transport.abort()
            return web.Response(status=204)
        delay = self._latency.get(name, 0.0)
        if delay > 0:
            self.faults_fired.append(("latency", name))
            await asyncio.sleep(delay)
        faults = self._faults.get(name)
        if faults:
            fault = faults.pop(0)
            self.faults_fired.append(("fail", name))
            raise TwirpError(fault.code, fault.msg, fault.meta, fault.http_status)
        answer = await method.handler(message, claims, request)
        return _answer(answer, content_type)

    async def _agent_socket(self, request: web.BaseRequest, claims: Claims | None):
        """`/agent` (AgentSocketUpgrader.Upgrade): a WebSocket with the `agent` grant."""
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.Response(status=404)
        if claims is None or claims.video is None or not claims.video.agent:
            return web.Response(
                status=401,
                text="no permissions to access the room",
                content_type="text/plain",
            )
        return await self.agents.serve(request, self.api_key, self.api_secret)

    def _log_request(self, name: str, message: Message | None, request: web.BaseRequest):
        fields = {}
        if message is not None:
            fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
        self.requests.append((name, fields, headers))
        if len(self.requests) > _MAX_LOGGED_REQUESTS:
            del self.requests[: len(self.requests) - _MAX_LOGGED_REQUESTS]

    def _log_grants(self, name: str, claims: Claims | None) -> None:
        if claims is None:
            return
        grants: dict[str, Any] = {"identity": claims.identity}
        if claims.video is not None:
            grants["video"] = {k: v for k, v in vars(claims.video).items() if v}
        if claims.sip is not None:
            grants["sip"] = {k: v for k, v in vars(claims.sip).items() if v}
        self.request_grants.append((name, grants))
        if len(self.request_grants) > _MAX_LOGGED_REQUESTS:
            del self.request_grants[: len(self.request_grants) - _MAX_LOGGED_REQUESTS]

    # Authentication and grants

    def _authenticate(self, header: str | None, query_token: str | None) -> Claims | None:
        """The middleware: the token's claims, None (no grants), or an `AuthRefusal`.

        The token comes from `Authorization: Bearer ...`, or without that header from the
        `access_token` query parameter.
        """
        if header:
            if not header.startswith("Bearer "):
                raise AuthRefusal("invalid authorization header. Must start with Bearer ")
            token = header[len("Bearer ") :]
        else:
            token = query_token or ""
        if not token:
            return None
        return self._verify(token)

    def _verify(self, token: str) -> Claims:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise AuthRefusal("invalid authorization token") from None
        if not unverified.get("iss") or unverified.get("iss") != self.api_key:
            raise AuthRefusal("invalid API key")
        prefix = "invalid authorization token: "
        if algorithm != "HS256":
            raise AuthRefusal(
                f"{prefix}token signature is invalid: signing method {algorithm} is invalid"
            )
        try:
            jwt.decode(
                token,
                self.api_secret,
                algorithms=["HS256"],
                leeway=self._leeway,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            raise AuthRefusal(f"{prefix}token signature is invalid: signature is invalid") from None
        except jwt.ExpiredSignatureError:
            raise AuthRefusal(f"{prefix}token has invalid claims: token is expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthRefusal(f"{prefix}token has invalid claims: token is not valid yet") from None
        except jwt.MissingRequiredClaimError:
            raise AuthRefusal(
                f"{prefix}token has invalid claims: token is missing required claim: "
                "exp claim is required"
            ) from None
        except jwt.PyJWTError:
            raise AuthRefusal(f"{prefix}token is malformed") from None
        try:
            return self._verifier.verify(token)
        except Exception:
            raise AuthRefusal(f"{prefix}token is malformed") from None

    @staticmethod
    def _require(allowed: bool) -> None:
        if not allowed:
            raise TwirpError("unauthenticated", _PERMISSION_DENIED)

    def _require_admin(self, claims: Claims | None, room_name: str) -> None:
        video = claims.video if claims is not None else None
        self._require(video is not None and bool(video.room_admin) and video.room == room_name)

    # SIP

    async def _create_sip_participant(
        self, req: Message, claims: Claims | None, request: web.BaseRequest
    ) -> Message:
        assert isinstance(req, sip.CreateSIPParticipantRequest)
        self._require(claims is not None and claims.sip is not None and bool(claims.sip.call))
        problem = _sip_request_problem(req)
        if problem:
            raise TwirpError("invalid_argument", problem)
        trunk = self._trunk_for(req)
        caller_number = req.sip_number or (trunk.numbers[0] if trunk.numbers else "")
        if not caller_number:
            raise TwirpError.psrpc("failed_precondition", "no numbers on outbound trunk")
        if len(self.ringing()) >= _MAX_ACTIVE_CALLS:
            raise TwirpError.psrpc("unavailable", "no servers available (received 1 responses)")
        loop = asyncio.get_running_loop()
        rpc_timeout = _twirp_timeout(request.headers.get("X-Twirp-Timeout-Ms"))
        if rpc_timeout is None:
            rpc_timeout = (
                self.sip_wait_timeout if req.wait_until_answered else (self.sip_request_timeout)
            )
        ring = DEFAULT_RINGING_TIMEOUT
        if req.HasField("ringing_timeout") and req.ringing_timeout.ToNanoseconds() > 0:
            ring = req.ringing_timeout.ToNanoseconds() / 1e9
        identity = req.participant_identity or f"sip_{req.sip_call_to}"
        call = OutboundCall(
            rooms=self.rooms,
            request=req,
            identity=identity,
            call_id=new_id("SCL_"),
            trunk_id=trunk.trunk_id,
            hostname=trunk.address,
            caller_number=caller_number,
            script=self.humans.get(req.sip_call_to),
            ring_timeout=ring,
            dial_deadline=loop.time() + rpc_timeout + _BUS_SECS
            if req.wait_until_answered
            else None,
            join_deadline=loop.time() + rpc_timeout + _BUS_SECS,
            sample_rate=self.sample_rate,
            t0=self.t0,
            on_party=self._adopt,
        )
        self._forget_ended_calls()
        self.calls.append(call.start())
        try:
            async with asyncio.timeout(rpc_timeout):
                participant_sid = await asyncio.shield(call.joined)
                self._remember_participant(call, participant_sid)
                if req.wait_until_answered:
                    await asyncio.shield(call.answered)
        except TimeoutError:
            raise TwirpError.psrpc("deadline_exceeded", "request timed out") from None
        return sip.SIPParticipantInfo(
            participant_id=participant_sid,
            participant_identity=identity,
            room_name=req.room_name,
            sip_call_id=call.call_id,
        )

    async def _transfer_sip_participant(
        self, req: Message, claims: Claims | None, request: web.BaseRequest
    ) -> Message:
        assert isinstance(req, sip.TransferSIPParticipantRequest)
        video = claims.video if claims is not None else None
        return await self.sip_transfers.serve(
            req,
            sip_call=claims is not None and claims.sip is not None and bool(claims.sip.call),
            room_admin_of=video.room if video is not None and video.room_admin else None,
            header_deadline=_twirp_timeout(request.headers.get("X-Twirp-Timeout-Ms")),
        )

    def _trunk_for(self, req: sip.CreateSIPParticipantRequest) -> OutboundTrunk:
        if req.sip_trunk_id:
            trunk = self.trunks.get(req.sip_trunk_id)
            if trunk is None:
                raise TwirpError("not_found", "requested sip trunk does not exist")
            return trunk
        if req.HasField("trunk"):
            return OutboundTrunk("", req.trunk.hostname, ())
        for trunk in self.trunks.values():
            if req.sip_number in trunk.numbers:
                return trunk
        raise TwirpError("not_found", "requested sip trunk does not exist")

    def _remember_participant(self, call: OutboundCall, sid: str) -> None:
        memory_room = self.rooms.get_room(call.room_name)
        connection = memory_room.connection(call.identity) if memory_room else None
        if connection is not None:
            req = call.request
            self._participant_info[connection] = {
                "sid": sid,
                "joined_at": time.time(),
                "name": req.participant_name,
                "metadata": req.participant_metadata,
            }

    def _forget_ended_calls(self) -> None:
        if len(self.calls) >= _MAX_LOGGED_REQUESTS:
            self.calls = [call for call in self.calls if call.ringing][-_MAX_LOGGED_REQUESTS:]

    def _adopt(self, party: ScriptedParty) -> None:
        self.parties[party.identity] = party
        if len(self._all_parties) >= _MAX_PARTIES:
            self._all_parties = [p for p in self._all_parties if not p.ended]
        self._all_parties.append(party)

    # Room service

    async def _create_room(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.CreateRoomRequest)
        self._require(claims is not None and claims.video is not None and claims.video.room_create)
        if len(req.name) > _MAX_ROOM_NAME:
            raise TwirpError.psrpc(
                "invalid_argument", f"room name length exceeds limits: max length {_MAX_ROOM_NAME}"
            )
        if self.rooms.get_room(req.name) is not None:
            return self._room_message(req.name)
        self.rooms.create_room(req.name, metadata=req.metadata)
        info = self._room_details(req.name)
        if req.empty_timeout > 0:
            info.empty_timeout = req.empty_timeout
        if req.departure_timeout > 0:
            info.departure_timeout = req.departure_timeout
        if req.max_participants > 0:
            info.max_participants = req.max_participants
        return self._room_message(req.name)

    async def _delete_room(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.DeleteRoomRequest)
        self._require(claims is not None and claims.video is not None and claims.video.room_create)
        if not self.rooms.delete_room(req.room):
            raise TwirpError.psrpc("not_found", "requested room does not exist")
        self._room_info.pop(req.room, None)
        return room.DeleteRoomResponse()

    async def _list_rooms(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.ListRoomsRequest)
        self._require(claims is not None and claims.video is not None and claims.video.room_list)
        names = self.rooms.list_rooms()
        if req.names:
            wanted = set(req.names)
            names = [name for name in names if name in wanted]
        return room.ListRoomsResponse(rooms=[self._room_message(name) for name in names])

    async def _list_participants(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.ListParticipantsRequest)
        self._require_admin(claims, req.room)
        memory_room = self.rooms.get_room(req.room)
        if memory_room is None:
            return room.ListParticipantsResponse()
        return room.ListParticipantsResponse(
            participants=[self._participant_message(c) for c in memory_room.connections()]
        )

    async def _get_participant(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.RoomParticipantIdentity)
        self._require_admin(claims, req.room)
        return self._participant_message(self._connection_of(req.room, req.identity))

    async def _remove_participant(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.RoomParticipantIdentity)
        self._require_admin(claims, req.room)
        self._connection_of(req.room, req.identity)
        self.rooms.remove_participant(req.room, req.identity)
        return room.RemoveParticipantResponse()

    async def _move_participant(self, req: Message, claims: Claims | None, _r) -> Message:
        assert isinstance(req, room.MoveParticipantRequest)
        video = claims.video if claims is not None else None
        self._require(
            video is not None
            and bool(video.room_admin)
            and video.room == req.room
            and video.destination_room == req.destination_room
        )
        if req.room == req.destination_room:
            argument = "destination room cannot be the same as source room"
            raise TwirpError("invalid_argument", argument + " ", {"argument": argument})
        memory_room = self.rooms.get_room(req.room)
        if memory_room is None or req.identity not in memory_room:
            # Nobody serves the participant's topic: psrpc retries, then gives up.
            await asyncio.sleep(PSRPC_NO_RESPONSE_SECS)
            raise TwirpError.psrpc("unavailable", "no response from servers")
        if self.oss:
            raise TwirpError.psrpc("unknown", "not implemented")
        self.rooms.move_participant(req.identity, req.room, req.destination_room)
        self._room_details(req.destination_room)
        return room.MoveParticipantResponse()

    def _connection_of(self, room_name: str, identity: str) -> MemoryConnection:
        memory_room = self.rooms.get_room(room_name)
        connection = memory_room.connection(identity) if memory_room else None
        if connection is None:
            raise TwirpError.psrpc("not_found", "participant does not exist")
        return connection

    # What the memory server does not keep (sids, times, timeouts)

    def _room_details(self, name: str) -> models.Room:
        info = self._room_info.get(name)
        if info is None:
            if len(self._room_info) >= _MAX_LOGGED_REQUESTS:
                existing = set(self.rooms.list_rooms())
                self._room_info = {k: v for k, v in self._room_info.items() if k in existing}
            now = time.time()
            info = models.Room(
                sid=new_id("RM_"),
                name=name,
                empty_timeout=300,
                departure_timeout=20,
                creation_time=int(now),
                creation_time_ms=int(now * 1000),
                enabled_codecs=[models.Codec(mime=mime) for mime in _DEFAULT_CODECS],
            )
            self._room_info[name] = info
        return info

    def _room_message(self, name: str) -> models.Room:
        message = models.Room()
        message.CopyFrom(self._room_details(name))
        memory_room = self.rooms.get_room(name)
        if memory_room is not None:
            message.metadata = memory_room.metadata
            message.num_participants = len(memory_room)
            message.num_publishers = len(memory_room)
        return message

    def _participant_message(self, connection: MemoryConnection) -> models.ParticipantInfo:
        details = self._participant_info.get(connection)
        if details is None:
            details = {"sid": new_id("PA_"), "joined_at": time.time(), "name": "", "metadata": ""}
            self._participant_info[connection] = details
        return models.ParticipantInfo(
            sid=details["sid"],
            identity=connection.identity,
            name=details["name"],
            metadata=details["metadata"],
            state=models.ParticipantInfo.State.ACTIVE,
            kind=_KINDS.get(connection.kind, 0),
            attributes=connection.attributes,
            joined_at=int(details["joined_at"]),
            joined_at_ms=int(details["joined_at"] * 1000),
            is_publisher=True,
        )


_DEFAULT_MESSAGES = {
    "unavailable": "no response from servers",
    "deadline_exceeded": "request timed out",
    "canceled": "request canceled",
    "not_found": "requested room does not exist",
}


def _sip_request_problem(req: sip.CreateSIPParticipantRequest) -> str | None:
    """The first problem `ValidateResult` finds in a request (its message), or None."""
    if not req.sip_trunk_id and not req.HasField("trunk") and not req.sip_number:
        return "missing sip trunk id and sip number"
    if req.HasField("trunk"):
        host = req.trunk.hostname
        if not host:
            return "no outbound hostname specified"
        if ";transport=" in host.lower():
            return "trunk hostname should not contain transport parameter"
        if host.lower().startswith(("sip:", "sips:")):
            return "trunk hostname should be a hostname or IP, not SIP URI"
    if not req.sip_call_to:
        return "missing sip callee number"
    if "@" in req.sip_call_to:
        return "SipCallTo should be a phone number or SIP user, not a full SIP URI"
    if not req.room_name:
        return "missing room name"
    return _headers_problem(req.headers)


def _headers_problem(headers) -> str | None:
    """The first problem livekit/protocol's `validateHeaders` finds, or None."""
    for name, value in headers.items():
        problem = _header_name_problem(name)
        if problem:
            return f"invalid header name: {problem}"
        problem = _header_value_problem(name, value)
        if problem:
            return f"invalid header value for {name}: {problem}"
    return None


def _header_name_problem(name: str) -> str | None:
    if not name:
        return "header name cannot be empty"
    if len(name) > 255:
        return "header name too long (max 255 characters)"
    for char in name:
        if char not in _HEADER_NAME_CHARS:
            return f"header name {name} contains invalid characters: char {ord(char)} not allowed"
    if name.lower() in _FORBIDDEN_HEADERS:
        return f"header name {name} not supported"
    return None


def _header_value_problem(name: str, value: str) -> str | None:
    if len(value) > 1024:
        return f"header {name}: value too long (max 1024 characters)"
    for char in value:
        code = ord(char)
        if not (0x20 <= code <= 0x7E or code == 0x09 or code >= 0x80):
            return f"header {name}: value: char {code} not allowed"
    return None


def _twirp_timeout(header: str | None) -> float | None:
    """Seconds of an `X-Twirp-Timeout-Ms` header (xtwirp `ServerPassTimeout`)."""
    if not header:
        return None
    try:
        millis = int(header)
    except ValueError:
        return None
    return millis / 1000 if millis > 0 else None


def _parse(message_type: type[Message], body: bytes, content_type: str) -> Message:
    message = message_type()
    if content_type == "application/json":
        text = body.decode("utf-8")
        if not text.lstrip().startswith("{"):
            raise ValueError("a JSON request must be an object")
        json_format.Parse(text, message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(body)
    return message


def _answer(message: Message, content_type: str) -> web.Response:
    if content_type == "application/json":
        return web.Response(
            body=go_json(_emit_unpopulated(message)), headers={"Content-Type": "application/json"}
        )
    return web.Response(
        body=message.SerializeToString(), headers={"Content-Type": "application/protobuf"}
    )


def _emit_unpopulated(message: Message) -> dict[str, Any]:
    """Protojson with EmitUnpopulated: every field, an unset message field as `null`."""
    fields = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _add_nulls(message, fields)
    return fields


def _add_nulls(message: Message, fields: dict[str, Any]) -> None:
    for descriptor in message.DESCRIPTOR.fields:
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        value = getattr(message, descriptor.name)
        if descriptor.label == descriptor.LABEL_REPEATED:
            for item, item_fields in zip(value, fields.get(descriptor.name, []), strict=False):
                if isinstance(item_fields, dict):
                    _add_nulls(item, item_fields)
        elif descriptor.name not in fields:
            fields[descriptor.name] = None
        elif isinstance(fields[descriptor.name], dict) and descriptor.message_type.fields:
            _add_nulls(value, fields[descriptor.name])


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
    """A small directory of scripted phones for the command-line emulator.

    - `+15550100` answers after 1 s, greets, presses 1 after 3 s, hangs up after 120 s.
    - `+15550101` is busy (486); `+15550102` is never answered (LiveKit's ring-out);
      `+15550103` declines (603); `+15550104` fails (500).

    Args:
        sample_rate: Rate of the greeting.

    Returns:
        The scripts by number.
    """
    greeting = tone(660, 0.6, sample_rate, -20.0)
    return {
        "+15550100": HumanScript(
            answer_after=1.0, ringing_after=0.3, greeting=greeting, hang_up_after=120.0
        ).dtmf(3.0, "1"),
        "+15550101": HumanScript(outcome="busy", answer_after=1.0, ringing_after=0.3),
        "+15550102": HumanScript(outcome="no_answer", ringing_after=0.3),
        "+15550103": HumanScript(outcome="decline", answer_after=2.0, ringing_after=0.3),
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
    trunks: Iterable[str | OutboundTrunk] | None = None,
    on_ready: Callable[[LiveKitEmulator], None] | None = None,
) -> None:
    """Run the emulator until cancelled (the `pipecat-warm-transfer emulator` command).

    Args:
        host: Loopback address to listen on.
        port: Port to listen on (LiveKit's default 7880; 0 for any).
        api_key: The API key clients must use.
        api_secret: The API secret clients must sign with.
        oss: Answer MoveParticipant as open-source LiveKit does ("not implemented").
        humans: Scripted phones by number (default: `default_humans()`).
        trunks: Outbound trunk ids it knows (default: `DEFAULT_TRUNK_ID`).
        on_ready: Called with the running emulator (e.g. to print its URL).
    """
    humans = default_humans() if humans is None else humans
    async with LiveKitEmulator(
        api_key, api_secret, oss, humans=humans, trunks=trunks, host=host, port=port
    ) as emulator:
        logger.info(
            f"LiveKit emulator on {emulator.url} (api key {api_key!r}, "
            f"trunks {sorted(emulator.trunks)}, {len(humans)} scripted numbers, "
            f"{'open-source' if oss else 'cloud'} mode)"
        )
        if on_ready is not None:
            on_ready(emulator)
        await asyncio.Event().wait()
