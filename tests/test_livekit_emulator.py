"""LiveKitEmulator: Twirp over loopback HTTP with the real livekit-api client (no mocks).

Every row of `FIDELITY` is checked by at least one test here (`COVERAGE` at the end maps
each row to its tests): with the real `livekit.api.LiveKitAPI` client, and with raw
aiohttp requests where the exact wire bytes matter (Content-Type, text/plain refusals,
JSON success answers, the 313-byte 486 body).
"""

import asyncio
import base64
import contextlib
import datetime
import importlib.util
import json
import re
import time
from pathlib import Path

import aiohttp
import jwt
import numpy as np
import pytest
from google.protobuf import any_pb2
from livekit import api
from livekit.api import AccessToken, SipCallError, SIPGrants, VideoGrants
from livekit.protocol import models
from livekit.protocol import sip as sip_proto
from livekit.protocol.sip import CreateSIPParticipantRequest, SIPOutboundConfig
from protobuf_wire import proto_fields

from pipecat_warm_transfer.audio.metrics import dominant_frequency
from pipecat_warm_transfer.testing import (
    AudioReceived,
    HumanScript,
    MemoryRoomServer,
    ParticipantAttributesChanged,
    ParticipantJoined,
    ParticipantLeft,
)
from pipecat_warm_transfer.testing.livekit_emulator import (
    DEFAULT_TRUNK_ID,
    FIDELITY,
    LiveKitEmulator,
    OutboundTrunk,
    TwirpError,
    default_humans,
    serve_forever,
    sip_twirp_code,
)

KEY = "APIemulatorkey"
SECRET = "emulator-secret-0123456789abcdef0123"
OTHER_SECRET = "another-secret-0123456789abcdef0123"
TRUNK = "ST_test"
ZERO = {"rooms": 0, "participants": 0, "connections": 0}
NUMBER = "+15550100"  # answers after 50 ms
BUSY = "+15550101"  # 486 after 30 ms (180 Ringing after 10 ms)
NO_ANSWER = "+15550102"  # never answers: LiveKit's own ring-out ends it
HANGS_UP = "+15550103"  # answers after 20 ms, hangs up 150 ms later
OTHER = "+15550177"  # scripted per test
TRUNK_NUMBER = "+15550199"  # OutboundTrunk's default caller id
TRUNK_HOST = "sip.offline.test"  # OutboundTrunk's default address
ID_CHARS = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
TEXT_PLAIN = "text/plain; charset=utf-8"
TIMED_OUT = "twirp error unknown: sip request timed out"
EXACT_486 = (
    b'{"code":"resource_exhausted","msg":"twirp error unknown: INVITE failed: sip status: 486:'
    b' Busy Here","meta":{"error_details":"CAgSKUlOVklURSBmYWlsZWQ6IHNpcCBzdGF0dXM6IDQ4NjogQnV'
    b"zeSBIZXJlGjcKJXR5cGUuZ29vZ2xlYXBpcy5jb20vbGl2ZWtpdC5TSVBTdGF0dXMSDgjmAxIJQnVzeSBIZXJl"
    b'","sip_status":"Busy Here","sip_status_code":"486"}}'
)
DEFAULT_CODECS = [
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
]


# Fixtures and helpers


@pytest.fixture
async def no_leftover_tasks():
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


def scripted_humans() -> dict[str, HumanScript]:
    return {
        NUMBER: HumanScript(answer_after=0.05),
        BUSY: HumanScript(outcome="busy", answer_after=0.03, ringing_after=0.01),
        NO_ANSWER: HumanScript(outcome="no_answer"),
        HANGS_UP: HumanScript(answer_after=0.02, hang_up_after=0.15),
    }


@contextlib.asynccontextmanager
async def running(**kwargs):
    """An emulator with the test key, `ST_test` and the scripted humans; nothing left after."""
    kwargs.setdefault("humans", scripted_humans())
    kwargs.setdefault("trunks", [TRUNK])
    async with LiveKitEmulator(KEY, SECRET, **kwargs) as emulator:
        try:
            yield emulator
        finally:
            for name in list(emulator.rooms.list_rooms()):
                emulator.rooms.delete_room(name)
        assert await emulator.settle() == ZERO


@pytest.fixture
async def lk(no_leftover_tasks):
    async with running() as emulator:
        yield emulator


@contextlib.asynccontextmanager
async def client(emulator, key=KEY, secret=SECRET):
    lkapi = api.LiveKitAPI(emulator.url, key, secret)
    try:
        yield lkapi
    finally:
        await lkapi.aclose()


def dial(number=NUMBER, room="consult", identity="human", wait=True, ring=None, **kw):
    request = CreateSIPParticipantRequest(
        sip_trunk_id=TRUNK,
        sip_call_to=number,
        room_name=room,
        participant_identity=identity,
        wait_until_answered=wait,
        **kw,
    )
    if ring is not None:
        request.ringing_timeout.FromNanoseconds(int(ring * 1e9))
    return request


def token(*, video=None, sip=None, key=KEY, secret=SECRET, ttl=None, identity="tester"):
    tok = AccessToken(key, secret).with_identity(identity)
    if video is not None:
        tok.with_grants(video)
    if sip is not None:
        tok.with_sip_grants(sip)
    if ttl is not None:
        tok.with_ttl(ttl)
    return tok.to_jwt()


def hand_made_token(*, key=KEY, secret=SECRET, alg="HS256", exp_in=600, nbf_in=0, drop=()):
    """A JWT built field by field (what AccessToken cannot make: other algs, no exp, ...)."""
    now = int(time.time())
    claims = {
        "iss": key,
        "sub": "tester",
        "nbf": now + nbf_in,
        "exp": now + exp_in,
        "video": {"roomList": True},
    }
    for name in drop:
        claims.pop(name)
    return jwt.encode(claims, None if alg == "none" else secret, algorithm=alg)


class Answer:
    """A raw HTTP answer."""

    def __init__(self, resp: aiohttp.ClientResponse, body: bytes):
        self.status = resp.status
        self.reason = resp.reason
        self.content_type = resp.headers.get("Content-Type")
        self.headers = resp.headers
        self.body = body

    def json(self):
        return json.loads(self.body)


async def post(
    emulator,
    path,
    body=b"{}",
    *,
    content_type="application/json",
    auth=None,
    authorization=None,
    headers=None,
    method="POST",
) -> Answer:
    """A raw request: `auth` is a token (sent as `Bearer <token>`), `authorization` a raw header."""
    sent = {"Content-Type": content_type}
    if auth is not None:
        sent["Authorization"] = f"Bearer {auth}"
    if authorization is not None:
        sent["Authorization"] = authorization
    sent.update(headers or {})
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.request(
            method, f"{emulator.url}{path}", data=body, headers=sent
        ) as resp:
            return Answer(resp, await resp.read())


def is_id(value: str, prefix: str) -> bool:
    return re.fullmatch(f"{prefix}[{ID_CHARS}]{{12}}", value) is not None


async def until(predicate, timeout=2.0, step=0.005):
    """Wait (bounded) until `predicate()` is true."""
    for _ in range(int(timeout / step) + 1):
        if predicate():
            return
        await asyncio.sleep(step)
    raise TimeoutError(f"still false after {timeout} s")


async def next_event(connection, kind, timeout=2.0, match=None):
    """The next event of `kind` (matching `match`) on a memory connection, bounded."""
    async with asyncio.timeout(timeout):
        while True:
            event = await connection.recv()
            if isinstance(event, kind) and (match is None or match(event)):
                return event


async def events_until_left(connection, identity, timeout=3.0):
    """The control events about `identity` up to and including its `ParticipantLeft`."""
    seen = []
    async with asyncio.timeout(timeout):
        while True:
            event = await connection.recv()
            if isinstance(event, AudioReceived) or getattr(event, "identity", None) != identity:
                continue
            seen.append(event)
            if isinstance(event, ParticipantLeft):
                return seen


def status_names(call) -> list[str]:
    return [status for _, status in call.statuses]


def decode_error_details(value: str) -> tuple[int, str, str, sip_proto.SIPStatus]:
    """`error_details` meta: (gRPC code, message, detail type URL, the SIPStatus detail)."""
    fields = dict(proto_fields(base64.b64decode(value)))
    detail = any_pb2.Any.FromString(fields[3])
    return (
        fields[1],
        fields[2].decode(),
        detail.type_url,
        sip_proto.SIPStatus.FromString(detail.value),
    )


def raw_dial(number, **fields) -> bytes:
    """A CreateSIPParticipant JSON body as LiveKit's Node SDK writes it (camelCase)."""
    body = {
        "sipTrunkId": TRUNK,
        "sipCallTo": number,
        "roomName": "consult",
        "participantIdentity": "human",
        "waitUntilAnswered": True,
    }
    body.update(fields)
    return json.dumps(body).encode()


SIP_CALL = {"sip": SIPGrants(call=True)}


# The emulator itself


async def test_url_is_loopback_and_leftovers_count_rooms(lk):
    assert lk.url.startswith("http://127.0.0.1:")
    assert lk.leftovers() == ZERO
    lk.rooms.create_room("x")
    assert lk.leftovers() == {"rooms": 1, "participants": 0, "connections": 0}
    assert sorted(lk.trunks) == [TRUNK]


def test_new_emulator_knows_only_the_default_trunk():
    assert DEFAULT_TRUNK_ID == "ST_offline_trunk"
    assert list(LiveKitEmulator().trunks) == [DEFAULT_TRUNK_ID]
    assert list(LiveKitEmulator(trunks=["ST_a", OutboundTrunk("ST_b")]).trunks) == [
        "ST_a",
        "ST_b",
    ]


# Auth middleware: text/plain 401s before any Twirp routing


@pytest.mark.parametrize(
    ("authorization", "text"),
    [
        (lambda: "Token abc", "invalid authorization header. Must start with Bearer "),
        (
            lambda: "bearer " + hand_made_token(),
            "invalid authorization header. Must start with Bearer ",
        ),
        # HTTP trims a header's trailing blanks (Go's textproto and aiohttp alike), so an
        # empty `Bearer ` arrives as `Bearer` and fails the prefix check.
        (lambda: "Bearer ", "invalid authorization header. Must start with Bearer "),
        (lambda: "Bearer x.y.z", "invalid authorization token"),
        (lambda: "Bearer " + hand_made_token(key="APIotherkey"), "invalid API key"),
        (lambda: "Bearer " + hand_made_token(drop=("iss",)), "invalid API key"),
        (
            lambda: "Bearer " + hand_made_token(secret=OTHER_SECRET),
            "invalid authorization token: token signature is invalid: signature is invalid",
        ),
        (
            lambda: "Bearer " + hand_made_token(secret=OTHER_SECRET, exp_in=-600),
            "invalid authorization token: token signature is invalid: signature is invalid",
        ),
        (
            lambda: "Bearer " + hand_made_token(alg="HS512", secret=SECRET * 2, exp_in=-600),
            "invalid authorization token: token signature is invalid: signing method HS512 "
            "is invalid",
        ),
        (
            lambda: "Bearer " + hand_made_token(alg="none"),
            "invalid authorization token: token signature is invalid: signing method none "
            "is invalid",
        ),
        (
            lambda: "Bearer " + hand_made_token(exp_in=-120),
            "invalid authorization token: token has invalid claims: token is expired",
        ),
        (
            lambda: "Bearer " + hand_made_token(nbf_in=120),
            "invalid authorization token: token has invalid claims: token is not valid yet",
        ),
        (
            lambda: "Bearer " + hand_made_token(drop=("exp",)),
            "invalid authorization token: token has invalid claims: token is missing required "
            "claim: exp claim is required",
        ),
    ],
    ids=[
        "not-bearer",
        "lowercase-bearer",
        "empty-bearer",
        "not-a-jwt",
        "unknown-key",
        "no-issuer",
        "bad-signature",
        "bad-signature-before-expiry",
        "hs512",
        "alg-none",
        "expired",
        "not-yet-valid",
        "no-exp",
    ],
)
async def test_auth_refusal_is_text_plain_401_with_the_middleware_text(lk, authorization, text):
    # A bad route too: the middleware answers before any Twirp routing.
    for path in ("/twirp/livekit.RoomService/ListRooms", "/twirp/livekit.RoomService/Nope"):
        answer = await post(lk, path, authorization=authorization())
        assert (answer.status, answer.reason) == (401, "Unauthorized")
        assert answer.content_type == TEXT_PLAIN
        assert answer.body == text.encode()
    assert lk.request_grants == []


@pytest.mark.parametrize("case", ["bad-secret", "unknown-key", "expired", "not-a-jwt"])
async def test_python_client_sees_a_text_plain_refusal_as_unknown_401_without_message(lk, case):
    if case == "bad-secret":
        lkapi = api.LiveKitAPI(lk.url, KEY, OTHER_SECRET)
    elif case == "unknown-key":
        lkapi = api.LiveKitAPI(lk.url, "APIotherkey", SECRET)
    elif case == "expired":
        expired = token(video=VideoGrants(room_list=True), ttl=datetime.timedelta(minutes=-5))
        lkapi = api.LiveKitAPI.with_token(expired, lk.url)
    else:
        lkapi = api.LiveKitAPI.with_token("x.y.z", lk.url)
    async with lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    error = info.value
    assert (error.code, error.status, error.message, error.metadata) == ("unknown", 401, "", {})
    assert SECRET not in str(error) and OTHER_SECRET not in str(error)


async def test_token_leeway_is_60_seconds_on_exp_and_nbf(lk):
    grants = VideoGrants(room_list=True)
    lately = token(video=grants, ttl=datetime.timedelta(seconds=-30))
    async with api.LiveKitAPI.with_token(lately, lk.url) as lkapi:
        assert list((await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms) == []
    too_late = token(video=grants, ttl=datetime.timedelta(seconds=-120))
    async with api.LiveKitAPI.with_token(too_late, lk.url) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert (info.value.code, info.value.status, info.value.message) == ("unknown", 401, "")
    early = hand_made_token(nbf_in=30)
    assert (await post(lk, "/twirp/livekit.RoomService/ListRooms", auth=early)).body == (
        b'{"rooms":[]}'
    )
    too_early = await post(
        lk, "/twirp/livekit.RoomService/ListRooms", auth=hand_made_token(nbf_in=120)
    )
    assert (too_early.status, too_early.content_type) == (401, TEXT_PLAIN)


async def test_missing_authorization_header_passes_the_middleware_then_permissions_denied(lk):
    answer = await post(lk, "/twirp/livekit.RoomService/ListRooms")
    assert (answer.status, answer.reason, answer.content_type) == (
        401,
        "Unauthorized",
        "application/json",
    )
    assert answer.body == b'{"code":"unauthenticated","msg":"permissions denied"}'
    # It did pass the middleware: Twirp routing runs before the permission check.
    routed = await post(lk, "/twirp/livekit.RoomService/Nope")
    assert (routed.status, routed.json()["code"]) == (404, "bad_route")
    dial_answer = await post(lk, "/twirp/livekit.SIP/CreateSIPParticipant", raw_dial(NUMBER))
    assert dial_answer.json() == {"code": "unauthenticated", "msg": "permissions denied"}
    assert lk.calls == []


async def test_access_token_query_parameter_authenticates_without_a_header(lk):
    good = token(video=VideoGrants(room_list=True))
    answer = await post(lk, f"/twirp/livekit.RoomService/ListRooms?access_token={good}")
    assert (answer.status, answer.body) == (200, b'{"rooms":[]}')


@pytest.mark.parametrize(
    ("grants", "call"),
    [
        ({"video": VideoGrants(room_list=True)}, "create_room"),
        ({"video": VideoGrants(room_create=True)}, "list_rooms"),
        ({"video": VideoGrants(room_admin=True, room="other")}, "remove"),
        ({"video": VideoGrants(room_create=True)}, "remove"),
        ({"video": VideoGrants(room_admin=True, room="consult")}, "move"),
        ({"video": VideoGrants(room_admin=True, room="consult")}, "dial"),
        ({"sip": SIPGrants(admin=True)}, "dial"),
        ({"video": VideoGrants(room_admin=True, room="consult")}, "delete"),
        ({"video": VideoGrants(room_admin=True, room="other")}, "list_participants"),
    ],
)
async def test_missing_grant_is_401_unauthenticated_permissions_denied(lk, grants, call):
    lk.rooms.create_room("consult")
    async with api.LiveKitAPI.with_token(token(**grants), lk.url) as lkapi:
        calls = {
            "create_room": lambda: lkapi.room.create_room(api.CreateRoomRequest(name="r")),
            "list_rooms": lambda: lkapi.room.list_rooms(api.ListRoomsRequest()),
            "remove": lambda: lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room="consult", identity="human")
            ),
            # The client itself adds destination_room to the token it signs; a hand-made
            # token without it must be refused.
            "move": lambda: lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room="consult", identity="human", destination_room="call"
                )
            ),
            "dial": lambda: lkapi.sip.create_sip_participant(dial()),
            "delete": lambda: lkapi.room.delete_room(api.DeleteRoomRequest(room="consult")),
            "list_participants": lambda: lkapi.room.list_participants(
                api.ListParticipantsRequest(room="consult")
            ),
        }
        with pytest.raises(api.ServerError) as info:
            await calls[call]()
    error = info.value
    assert not isinstance(error, SipCallError)
    assert (error.code, error.status, error.message, error.metadata) == (
        "unauthenticated",
        401,
        "permissions denied",
        {},
    )
    assert lk.rooms.list_rooms() == ["consult"] and lk.calls == []


async def test_missing_grant_answer_is_exact_json_without_meta(lk):
    answer = await post(
        lk,
        "/twirp/livekit.RoomService/DeleteRoom",
        b'{"room": "consult"}',
        auth=token(video=VideoGrants(room_list=True)),
    )
    assert (answer.status, answer.reason, answer.content_type) == (
        401,
        "Unauthorized",
        "application/json",
    )
    assert answer.body == b'{"code":"unauthenticated","msg":"permissions denied"}'


async def test_body_over_10_mib_is_413_text_plain_before_auth(lk):
    answer = await post(
        lk,
        "/twirp/livekit.RoomService/ListRooms",
        b"x" * ((10 << 20) + 1),
        authorization="Token not-even-bearer",
    )
    assert (answer.status, answer.reason, answer.content_type) == (
        413,
        "Request Entity Too Large",
        TEXT_PLAIN,
    )
    assert answer.body == b"request body too large"
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.create_room(api.CreateRoomRequest(name="a", metadata="m" * (11 << 20)))
    assert (info.value.code, info.value.status, info.value.message) == ("unknown", 413, "")
    assert lk.rooms.list_rooms() == [] and lk.requests == []


async def test_body_between_1_and_10_mib_is_decoded(lk):
    answer = await post(
        lk,
        "/twirp/livekit.RoomService/ListRooms",
        b" " * (2 << 20),
        auth=token(video=VideoGrants(room_list=True)),
    )
    assert (answer.status, answer.body) == (
        400,
        b'{"code":"malformed","msg":"the json request could not be decoded"}',
    )


# Twirp routing and encoding


@pytest.mark.parametrize(
    "path", ["/twirp/livekit.Nope/Method", "/twirp/other.RoomService/ListRooms", "/nope"]
)
async def test_path_of_no_registered_service_is_go_404_page(lk, path):
    answer = await post(lk, path, auth=token(video=VideoGrants(room_list=True)))
    assert (answer.status, answer.reason, answer.content_type) == (404, "Not Found", TEXT_PLAIN)
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.body == b"404 page not found\n"


async def test_python_client_sees_the_404_page_as_unknown_without_message(lk):
    async with client(lk) as lkapi:
        headers = lkapi.room._auth_header(VideoGrants(room_list=True))
        with pytest.raises(api.ServerError) as info:
            await lkapi.room._client.request(
                "Nope", "ListRooms", api.ListRoomsRequest(), headers, api.ListRoomsResponse
            )
    assert (info.value.code, info.value.status, info.value.message) == ("unknown", 404, "")


@pytest.mark.parametrize(
    ("method", "path", "content_type", "msg"),
    [
        (
            "POST",
            "/twirp/livekit.RoomService/Nope",
            "application/json",
            'no handler for path "/twirp/livekit.RoomService/Nope"',
        ),
        (
            "POST",
            "/twirp/livekit.SIP/CreateRoom",
            "application/json",
            'no handler for path "/twirp/livekit.SIP/CreateRoom"',
        ),
        (
            "POST",
            "/twirp/livekit.RoomService/ListRooms/extra",
            "application/json",
            'no handler for path "/twirp/livekit.RoomService/ListRooms/extra"',
        ),
        (
            "GET",
            "/twirp/livekit.RoomService/ListRooms",
            "application/json",
            'unsupported method "GET" (only POST is allowed)',
        ),
        (
            "PUT",
            "/twirp/livekit.SIP/CreateSIPParticipant",
            "application/json",
            'unsupported method "PUT" (only POST is allowed)',
        ),
        (
            "POST",
            "/twirp/livekit.RoomService/ListRooms",
            "text/plain",
            'unexpected Content-Type: "text/plain"',
        ),
        (
            "POST",
            "/twirp/livekit.RoomService/ListRooms",
            "application/x-protobuf; v=1",
            'unexpected Content-Type: "application/x-protobuf; v=1"',
        ),
    ],
)
async def test_bad_route_is_404_bad_route_with_the_route_in_meta(
    lk, method, path, content_type, msg
):
    # With no token at all: routing comes before the permission check.
    answer = await post(lk, path, content_type=content_type, method=method)
    assert (answer.status, answer.reason, answer.content_type) == (
        404,
        "Not Found",
        "application/json",
    )
    assert answer.json() == {
        "code": "bad_route",
        "msg": msg,
        "meta": {"twirp_invalid_route": f"{method} {path}"},
    }
    assert lk.requests == []


async def test_python_client_sees_an_unknown_method_as_bad_route(lk):
    async with client(lk) as lkapi:
        headers = lkapi.room._auth_header(VideoGrants(room_list=True))
        with pytest.raises(api.ServerError) as info:
            await lkapi.room._client.request(
                "RoomService", "Nope", api.ListRoomsRequest(), headers, api.ListRoomsResponse
            )
    error = info.value
    assert (error.code, error.status) == ("bad_route", 404)
    assert error.message == 'no handler for path "/twirp/livekit.RoomService/Nope"'
    assert error.metadata == {"twirp_invalid_route": "POST /twirp/livekit.RoomService/Nope"}


@pytest.mark.parametrize(
    ("body", "content_type", "msg"),
    [
        (b"", "application/json", "the json request could not be decoded"),
        (b"{nope", "application/json", "the json request could not be decoded"),
        *[
            pytest.param(
                body,
                "application/json",
                "the json request could not be decoded",
                id=f"not-an-object-{body.decode()}",
            )
            for body in (b"[]", b'"x"')
        ],
        (b'{"names": 5}', "application/json", "the json request could not be decoded"),
        (b"\xff\xff\xff", "application/protobuf", "the protobuf request could not be decoded"),
    ],
)
async def test_undecodable_body_is_400_malformed(lk, body, content_type, msg):
    answer = await post(
        lk,
        "/twirp/livekit.RoomService/ListRooms",
        body,
        content_type=content_type,
        auth=token(video=VideoGrants(room_list=True)),
    )
    assert (answer.status, answer.reason, answer.content_type) == (
        400,
        "Bad Request",
        "application/json",
    )
    assert (
        answer.body == json.dumps({"code": "malformed", "msg": msg}, separators=(",", ":")).encode()
    )
    assert lk.methods_called() == ["ListRooms"]


async def test_empty_protobuf_body_is_an_empty_request(lk):
    answer = await post(
        lk,
        "/twirp/livekit.RoomService/ListRooms",
        b"",
        content_type="application/protobuf",
        auth=token(video=VideoGrants(room_list=True)),
    )
    assert (answer.status, answer.content_type, answer.body) == (200, "application/protobuf", b"")


async def test_error_answers_are_compact_json_with_exact_content_type_and_reason_phrase(lk):
    lk.add_trunk(OutboundTrunk("ST_empty", numbers=()))
    lk.fail_next("ListRooms", "internal", msg="a<b>&c")
    admin = token(video=VideoGrants(room_admin=True, room="consult", destination_room="consult"))
    cases = [
        (
            "/twirp/livekit.RoomService/DeleteRoom",
            b'{"room": "never"}',
            token(video=VideoGrants(room_create=True)),
            404,
            "Not Found",
            b'{"code":"not_found","msg":"twirp error unknown: requested room does not exist"}',
        ),
        (
            "/twirp/livekit.RoomService/MoveParticipant",
            b'{"room": "consult", "identity": "h", "destinationRoom": "consult"}',
            admin,
            400,
            "Bad Request",
            b'{"code":"invalid_argument","msg":"destination room cannot be the same as source '
            b'room ","meta":{"argument":"destination room cannot be the same as source room"}}',
        ),
        (
            "/twirp/livekit.SIP/CreateSIPParticipant",
            raw_dial(NUMBER, sipTrunkId="ST_empty"),
            token(**SIP_CALL),
            412,
            "Precondition Failed",
            b'{"code":"failed_precondition","msg":"twirp error unknown: no numbers on outbound '
            b'trunk"}',
        ),
        (
            "/twirp/livekit.RoomService/ListRooms",
            b"{}",
            token(video=VideoGrants(room_list=True)),
            500,
            "Internal Server Error",
            # Go's encoding/json escapes <, > and &.
            b'{"code":"internal","msg":"twirp error unknown: a\\u003cb\\u003e\\u0026c"}',
        ),
    ]
    for path, body, auth, status, reason, expected in cases:
        answer = await post(lk, path, body, auth=auth)
        assert (answer.status, answer.reason, answer.content_type) == (
            status,
            reason,
            "application/json",
        ), path
        assert answer.body == expected
        assert answer.headers["Content-Length"] == str(len(expected))


async def test_busy_answer_is_the_exact_313_byte_body_with_sorted_meta(lk):
    answer = await post(
        lk, "/twirp/livekit.SIP/CreateSIPParticipant", raw_dial(BUSY), auth=token(**SIP_CALL)
    )
    assert (answer.status, answer.reason, answer.content_type) == (
        429,
        "Too Many Requests",
        "application/json",
    )
    assert len(EXACT_486) == 313
    assert answer.body == EXACT_486
    assert answer.headers["Content-Length"] == "313"


async def test_psrpc_errors_carry_the_prefix_and_the_grpc_code(lk):
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="never"))
        assert (info.value.code, info.value.status, info.value.message) == (
            "not_found",
            404,
            "twirp error unknown: requested room does not exist",
        )
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.create_room(api.CreateRoomRequest(name="r" * 257))
        assert (info.value.code, info.value.status, info.value.message) == (
            "invalid_argument",
            400,
            "twirp error unknown: room name length exceeds limits: max length 256",
        )
        # Twirp errors made by the handler itself carry no prefix.
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(dial(), trunk_id="ST_unknown")
        assert info.value.message == "requested sip trunk does not exist"
    assert lk.rooms.list_rooms() == []


async def test_json_success_answers_emit_every_default_in_snake_case(lk):
    auth = token(
        video=VideoGrants(room_create=True, room_list=True, room_admin=True, room="nobody")
    )
    # Unknown fields are ignored; the Node SDK's `application/json;charset=UTF-8` is JSON.
    created = await post(
        lk,
        "/twirp/livekit.RoomService/CreateRoom",
        b'{"name": "a", "emptyTimeout": 7, "bogus": 1}',
        content_type="application/json;charset=UTF-8",
        auth=auth,
    )
    assert (created.status, created.content_type) == (200, "application/json")
    room = created.json()
    assert room["name"] == "a" and room["empty_timeout"] == 7 and room["departure_timeout"] == 20
    assert room["max_participants"] == 0 and room["metadata"] == ""
    assert room["num_participants"] == 0 and room["num_publishers"] == 0
    assert room["active_recording"] is False
    assert isinstance(room["creation_time"], str) and isinstance(room["creation_time_ms"], str)
    assert int(room["creation_time_ms"]) // 1000 == int(room["creation_time"])
    assert room["enabled_codecs"][0] == {"mime": "audio/PCMU", "fmtp_line": ""}
    assert not {"emptyTimeout", "creationTime", "enabledCodecs"} & set(room)
    assert lk.requests[0][1] == {"name": "a", "empty_timeout": 7}
    snake = await post(
        lk, "/twirp/livekit.RoomService/CreateRoom", b'{"name": "b", "empty_timeout": 9}', auth=auth
    )
    assert (snake.status, snake.json()["empty_timeout"]) == (200, 9)

    listed = await post(
        lk, "/twirp/livekit.RoomService/ListRooms", b'{"names": ["a", "zzz"]}', auth=auth
    )
    assert [r["sid"] for r in listed.json()["rooms"]] == [room["sid"]]
    empty = await post(
        lk, "/twirp/livekit.RoomService/ListParticipants", b'{"room": "nobody"}', auth=auth
    )
    assert (empty.status, empty.body) == (200, b'{"participants":[]}')
    deleted = await post(lk, "/twirp/livekit.RoomService/DeleteRoom", b'{"room": "a"}', auth=auth)
    assert (deleted.status, deleted.content_type, deleted.body) == (200, "application/json", b"{}")
    lk.rooms.connect("nobody", "guest")
    removed = await post(
        lk,
        "/twirp/livekit.RoomService/RemoveParticipant",
        b'{"room": "nobody", "identity": "guest"}',
        auth=auth,
    )
    assert (removed.status, removed.body) == (200, b"{}")

    dialed = await post(
        lk,
        "/twirp/livekit.SIP/CreateSIPParticipant",
        raw_dial(NUMBER, waitUntilAnswered=False),
        auth=token(**SIP_CALL),
    )
    info = dialed.json()
    assert set(info) == {"participant_id", "participant_identity", "room_name", "sip_call_id"}
    assert (info["participant_identity"], info["room_name"]) == ("human", "consult")
    assert is_id(info["participant_id"], "PA_") and is_id(info["sip_call_id"], "SCL_")


async def test_json_room_answer_has_every_field_including_null_version(lk):
    created = await post(
        lk,
        "/twirp/livekit.RoomService/CreateRoom",
        b'{"name": "a"}',
        auth=token(video=VideoGrants(room_create=True)),
    )
    room = created.json()
    assert set(room) == {field.name for field in models.Room.DESCRIPTOR.fields}
    assert room["version"] is None


# RoomService


async def test_create_room_of_a_new_room_has_lk_defaults_unless_given(lk):
    async with client(lk) as lkapi:
        before = time.time()
        plain = await lkapi.room.create_room(api.CreateRoomRequest(name="a"))
        assert is_id(plain.sid, "RM_")
        assert (plain.empty_timeout, plain.departure_timeout, plain.max_participants) == (
            300,
            20,
            0,
        )
        assert [codec.mime for codec in plain.enabled_codecs] == DEFAULT_CODECS
        assert int(before) <= plain.creation_time <= time.time() + 1
        assert plain.creation_time_ms // 1000 == plain.creation_time
        given = await lkapi.room.create_room(
            api.CreateRoomRequest(
                name="b", empty_timeout=30, departure_timeout=5, max_participants=3, metadata="m"
            )
        )
        assert (
            given.empty_timeout,
            given.departure_timeout,
            given.max_participants,
            given.metadata,
        ) == (30, 5, 3, "m")
        assert given.sid != plain.sid
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert sorted(r.name for r in listed.rooms) == ["a", "b"]
        only_b = await lkapi.room.list_rooms(api.ListRoomsRequest(names=["b", "zzz"]))
        assert [r.sid for r in only_b.rooms] == [given.sid]


async def test_create_room_of_an_existing_room_returns_it_unchanged(lk):
    async with client(lk) as lkapi:
        first = await lkapi.room.create_room(
            api.CreateRoomRequest(name="a", metadata="m", empty_timeout=7)
        )
        lk.rooms.connect("a", "guest")
        again = await lkapi.room.create_room(
            api.CreateRoomRequest(
                name="a",
                metadata="other",
                empty_timeout=99,
                departure_timeout=5,
                max_participants=4,
            )
        )
    assert (again.sid, again.creation_time, again.creation_time_ms) == (
        first.sid,
        first.creation_time,
        first.creation_time_ms,
    )
    assert (again.metadata, again.empty_timeout, again.departure_timeout) == ("m", 7, 20)
    assert (again.max_participants, again.num_participants) == (0, 1)
    assert lk.rooms.get_room("a").metadata == "m"


async def test_delete_missing_room_is_404_requested_room_does_not_exist(lk):
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="never"))
    error = info.value
    assert (error.code, error.status, error.message, error.metadata) == (
        "not_found",
        404,
        "twirp error unknown: requested room does not exist",
        {},
    )


async def test_list_participants_of_a_missing_room_is_empty(lk):
    async with client(lk) as lkapi:
        empty = await lkapi.room.list_participants(api.ListParticipantsRequest(room="zzz"))
    assert list(empty.participants) == []
    assert lk.rooms.list_rooms() == []


@pytest.mark.parametrize(
    ("method", "room", "identity"),
    [
        ("get", "consult", "nobody"),
        ("get", "never", "guest"),
        ("remove", "consult", "nobody"),
        ("remove", "never", "guest"),
    ],
)
async def test_get_or_remove_missing_participant_is_404_participant_does_not_exist(
    lk, method, room, identity
):
    guest = lk.rooms.connect("consult", "guest")
    async with client(lk) as lkapi:
        request = api.RoomParticipantIdentity(room=room, identity=identity)
        call = lkapi.room.get_participant if method == "get" else lkapi.room.remove_participant
        with pytest.raises(api.ServerError) as info:
            await call(request)
    error = info.value
    assert (error.code, error.status, error.message, error.metadata) == (
        "not_found",
        404,
        "twirp error unknown: participant does not exist",
        {},
    )
    assert guest.connected


async def test_remove_participant_removes_and_answers_empty(lk):
    guest = lk.rooms.connect("consult", "guest")
    async with client(lk) as lkapi:
        answer = await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room="consult", identity="guest")
        )
    assert answer == api.RemoveParticipantResponse()
    assert (guest.connected, guest.disconnect_reason) == (False, "removed")


async def test_move_participant_moves_a_connected_sip_party_on_cloud(lk):
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial())
        caller = lk.rooms.connect("call", "caller")
        await lkapi.room.move_participant(
            api.MoveParticipantRequest(room="consult", identity="human", destination_room="call")
        )
        assert lk.rooms.get_room("call").participants == ["caller", "human"]
        assert (
            lk.parties["human"].room == "call" and lk.rooms.get_room("consult").participants == []
        )
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="call"))
        assert caller.disconnect_reason == "room_deleted"


async def test_move_participant_into_the_same_room_is_400_with_trailing_space(lk):
    lk.rooms.connect("consult", "guest")
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room="consult", identity="guest", destination_room="consult"
                )
            )
    error = info.value
    assert (error.code, error.status) == ("invalid_argument", 400)
    assert error.message == "destination room cannot be the same as source room "
    assert error.metadata == {"argument": "destination room cannot be the same as source room"}


async def test_move_participant_on_open_source_server_is_500_not_implemented(no_leftover_tasks):
    async with running(oss=True) as emulator:
        guest = emulator.rooms.connect("consult", "guest")
        async with client(emulator) as lkapi:
            started = time.monotonic()
            with pytest.raises(api.ServerError) as info:
                await lkapi.room.move_participant(
                    api.MoveParticipantRequest(
                        room="consult", identity="guest", destination_room="call"
                    )
                )
            took = time.monotonic() - started
        error = info.value
        assert (error.code, error.status, error.message, error.metadata) == (
            "unknown",
            500,
            "twirp error unknown: not implemented",
            {},
        )
        assert took < 1.0  # a single attempt: no failover on a loopback host
        assert guest.room_name == "consult" and emulator.rooms.get_room("call") is None


async def test_move_participant_not_connected_is_503_no_response_after_3_s(lk):
    lk.rooms.connect("consult", "guest")
    async with client(lk) as lkapi:
        started = time.monotonic()
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room="consult", identity="nobody", destination_room="call"
                )
            )
        took = time.monotonic() - started
    error = info.value
    assert (error.code, error.status, error.message) == (
        "unavailable",
        503,
        "twirp error unknown: no response from servers",
    )
    assert 3.0 <= took < 3.8
    assert lk.rooms.get_room("call") is None


async def test_participant_info_of_a_sip_participant_and_a_plain_one(lk):
    async with client(lk) as lkapi:
        before = time.time()
        info = await lkapi.sip.create_sip_participant(
            dial(
                participant_name="Dana",
                participant_metadata='{"team": "billing"}',
                participant_attributes={"role": "expert"},
            )
        )
        lk.rooms.connect("consult", "bot", "agent", attributes={"a": "1"})
        got = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="consult"))
    assert got.sid == info.participant_id and is_id(got.sid, "PA_")
    assert (got.identity, got.name, got.metadata) == ("human", "Dana", '{"team": "billing"}')
    assert got.kind == api.ParticipantInfo.Kind.SIP
    assert got.state == api.ParticipantInfo.State.ACTIVE
    assert got.attributes["role"] == "expert" and got.attributes["sip.callStatus"] == "active"
    assert int(before) <= got.joined_at <= time.time() + 1
    assert got.joined_at_ms // 1000 == got.joined_at
    by_identity = {p.identity: p for p in listed.participants}
    assert sorted(by_identity) == ["bot", "human"]
    bot = by_identity["bot"]
    assert bot.kind == api.ParticipantInfo.Kind.AGENT and dict(bot.attributes) == {"a": "1"}
    assert is_id(bot.sid, "PA_") and bot.sid != got.sid
    assert by_identity["human"].sid == got.sid


# CreateSIPParticipant: checks, in order


async def test_sip_grant_is_checked_before_the_request(lk):
    async with api.LiveKitAPI.with_token(token(video=VideoGrants(room_admin=True)), lk.url) as c:
        with pytest.raises(api.ServerError) as info:
            await c.sip.create_sip_participant(CreateSIPParticipantRequest())
    assert (info.value.code, info.value.message) == ("unauthenticated", "permissions denied")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sip_trunk_id": ""}, "missing sip trunk id and sip number"),
        ({"sip_call_to": ""}, "missing sip callee number"),
        (
            {"sip_call_to": "alice@example.com"},
            "SipCallTo should be a phone number or SIP user, not a full SIP URI",
        ),
        ({"room_name": ""}, "missing room name"),
        ({"headers": {"from": "x"}}, "invalid header name: header name from not supported"),
        (
            {"headers": {"X Bad": "1"}},
            "invalid header name: header name X Bad contains invalid characters: char 32 not "
            "allowed",
        ),
        (
            {"headers": {"X-Ok": "a\x01b"}},
            "invalid header value for X-Ok: header X-Ok: value: char 1 not allowed",
        ),
        (
            {"headers": {"X-Ok": "v" * 1025}},
            "invalid header value for X-Ok: header X-Ok: value too long (max 1024 characters)",
        ),
        (
            {"sip_trunk_id": "", "trunk": SIPOutboundConfig(hostname="")},
            "no outbound hostname specified",
        ),
        (
            {"sip_trunk_id": "", "trunk": SIPOutboundConfig(hostname="sip:carrier.test")},
            "trunk hostname should be a hostname or IP, not SIP URI",
        ),
        # Validation comes before the trunk look-up: an unknown trunk is not reported.
        ({"sip_trunk_id": "ST_unknown", "room_name": ""}, "missing room name"),
    ],
)
async def test_invalid_sip_request_is_400_invalid_argument_with_the_raw_message(
    lk, changes, message
):
    request = dial()
    for name, value in changes.items():
        if name == "headers":
            request.headers.update(value)
        elif name == "trunk":
            request.trunk.SetInParent()
            request.trunk.MergeFrom(value)
        else:
            setattr(request, name, value)
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(request)
    error = info.value
    assert not isinstance(error, SipCallError)
    assert (error.code, error.status, error.message, error.metadata) == (
        "invalid_argument",
        400,
        message,
        {},
    )
    assert lk.calls == [] and lk.rooms.list_rooms() == []


async def test_unknown_trunk_is_404_requested_sip_trunk_does_not_exist(lk):
    async with client(lk) as lkapi:
        for request in (dial(), dial(sip_number="+15550000")):
            request.sip_trunk_id = "ST_offline_trunk"  # known to a default emulator, not this one
            with pytest.raises(api.ServerError) as info:
                await lkapi.sip.create_sip_participant(request)
            assert (info.value.code, info.value.status, info.value.message) == (
                "not_found",
                404,
                "requested sip trunk does not exist",
            )
    assert lk.calls == [] and lk.rooms.list_rooms() == []


async def test_trunk_without_numbers_needs_a_sip_number(lk):
    lk.add_trunk(OutboundTrunk("ST_empty", numbers=()))
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(dial(), trunk_id="ST_empty")
        assert (info.value.code, info.value.status, info.value.message) == (
            "failed_precondition",
            412,
            "twirp error unknown: no numbers on outbound trunk",
        )
        info = await lkapi.sip.create_sip_participant(
            dial(sip_number="+15550111"), trunk_id="ST_empty"
        )
        got = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
    assert got.attributes["sip.trunkPhoneNumber"] == "+15550111"
    assert got.attributes["sip.trunkID"] == "ST_empty" and info.participant_identity == "human"


# The SIP participant, its statuses and the ring clock


async def test_sip_participant_joins_at_dial_start_with_its_sip_attributes(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.3, ringing_after=0.1)
    async with client(lk) as lkapi:
        info = await lkapi.sip.create_sip_participant(
            dial(
                OTHER,
                identity="",
                wait=False,
                participant_attributes={"role": "expert", "sip.callID": "mine"},
            )
        )
        assert info.participant_identity == f"sip_{OTHER}"
        ask = api.RoomParticipantIdentity(room="consult", identity=f"sip_{OTHER}")
        dialing = await lkapi.room.get_participant(ask)
        assert dict(dialing.attributes) == {
            "role": "expert",
            "sip.callID": info.sip_call_id,
            "sip.trunkID": TRUNK,
            "sip.phoneNumber": OTHER,
            "sip.hostname": TRUNK_HOST,
            "sip.trunkPhoneNumber": TRUNK_NUMBER,
            "sip.callStatus": "dialing",
        }
        assert dialing.kind == api.ParticipantInfo.Kind.SIP and dialing.sid == info.participant_id
        (call,) = lk.ringing()
        assert call.call_id == info.sip_call_id and call.identity == f"sip_{OTHER}"
        await until(lambda: call.status == "ringing")
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="consult"))
        assert [(p.identity, p.attributes["sip.callStatus"]) for p in listed.participants] == [
            (f"sip_{OTHER}", "ringing")
        ]
        await until(lambda: call.outcome == "answered")
        active = await lkapi.room.get_participant(ask)
        assert active.attributes["sip.callStatus"] == "active"
        assert active.attributes["sip.callTag"] and active.attributes["sip.callIDFull"]
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


async def test_hidden_phone_number_leaves_out_number_host_and_caller_id(lk):
    lk.humans[OTHER] = HumanScript(answer_after=2)
    async with client(lk) as lkapi:
        info = await lkapi.sip.create_sip_participant(
            dial(OTHER, identity="", hide_phone_number=True, wait=False)
        )
        got = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room="consult", identity=f"sip_{OTHER}")
        )
    assert info.participant_identity == f"sip_{OTHER}"
    assert set(got.attributes) == {"sip.callID", "sip.trunkID", "sip.callStatus"}


async def test_wait_until_answered_false_returns_after_the_join_before_the_answer(lk):
    lk.humans[OTHER] = HumanScript(join_delay=0.2, ringing_after=0.2, answer_after=0.5)
    async with client(lk) as lkapi:
        started = time.monotonic()
        info = await lkapi.sip.create_sip_participant(dial(OTHER, wait=False))
        took = time.monotonic() - started
        (call,) = lk.calls
        assert 0.2 <= took < 0.45
        assert (call.status, call.outcome, lk.ringing()) == ("dialing", None, [call])
        assert (info.participant_identity, info.room_name) == ("human", "consult")
        assert is_id(info.participant_id, "PA_") and is_id(info.sip_call_id, "SCL_")
        assert lk.rooms.get_room("consult").participants == ["human"]
        assert "human" not in lk.parties
        await until(lambda: call.outcome == "answered")
        assert lk.parties["human"].connected
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


async def test_ring_clock_starts_after_the_join_and_defaults_to_3_minutes(lk):
    lk.humans[OTHER] = HumanScript(outcome="no_answer", join_delay=0.3)
    async with client(lk) as lkapi:
        started = time.monotonic()
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(dial(OTHER, ring=0.3))
        took = time.monotonic() - started
        assert info.value.message == TIMED_OUT
        assert 0.6 <= took < 1.1
        ((joined_at, status), *_) = lk.calls[0].statuses
        assert status == "dialing" and lk.calls[0].ring_timeout == pytest.approx(0.3)

        # Unset: LiveKit's 3 minutes (the Python client pins 30 s when it waits).
        await lkapi.sip.create_sip_participant(dial(NO_ANSWER, identity="a", wait=False))
        await lkapi.sip.create_sip_participant(dial(identity="b"))
        assert [call.ring_timeout for call in lk.calls[1:]] == [180.0, 30.0]
        assert lk.requests[-1][1]["ringing_timeout"] == "30s"
        assert [call.identity for call in lk.ringing()] == ["a"]
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))
    await until(lambda: lk.calls[1].outcome is not None)
    assert lk.ringing() == [] and lk.calls[1].outcome == "cancelled"


async def test_call_status_goes_dialing_ringing_automation_active(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.1, ringing_after=0.03)
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        started = time.monotonic()
        await lkapi.sip.create_sip_participant(dial(OTHER, dtmf="1"))
        took = time.monotonic() - started
    (call,) = lk.calls
    assert status_names(call) == ["dialing", "ringing", "automation", "active"]
    times = dict((status, at) for at, status in call.statuses)
    assert 0.45 <= times["active"] - times["automation"] < 0.7  # 0.5 s a digit
    assert 0.03 <= times["ringing"] - times["dialing"] < 0.09
    assert took >= 0.6 and call.dtmf_sent == "1" and call.outcome == "answered"
    joined = await next_event(watcher, ParticipantJoined)
    assert joined == ParticipantJoined("human", "sip", "joined")
    seen = []
    while len(seen) < 3:
        event = await next_event(
            watcher,
            ParticipantAttributesChanged,
            match=lambda e: "sip.callStatus" in e.changed,
        )
        seen.append(event.changed["sip.callStatus"])
    assert seen == ["ringing", "automation", "active"]


async def test_failed_dial_keeps_its_last_status_no_hangup(lk):
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        with pytest.raises(SipCallError):
            await lkapi.sip.create_sip_participant(dial(BUSY))
    (call,) = lk.calls
    assert status_names(call) == ["dialing", "ringing"]
    events = await events_until_left(watcher, "human")
    statuses = [
        e.changed["sip.callStatus"]
        for e in events
        if isinstance(e, ParticipantAttributesChanged) and "sip.callStatus" in e.changed
    ]
    assert statuses == ["ringing"]
    assert events[-1] == ParticipantLeft("human", "sip", "user_rejected")


async def test_human_hang_up_sets_call_status_hangup_then_leaves(lk):
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial(HANGS_UP))
        events = await events_until_left(watcher, "human")
    *_, hangup, left = events
    assert isinstance(hangup, ParticipantAttributesChanged)
    assert hangup.changed == {"sip.callStatus": "hangup"}
    assert hangup.attributes["sip.callStatus"] == "hangup"
    assert left == ParticipantLeft("human", "sip", "disconnected")
    assert lk.parties["human"].end_reason == "hung_up" and lk.calls[0].outcome == "answered"
    assert lk.rooms.get_room("consult").participants == ["watcher"]


async def test_dial_answers_with_a_sip_party_in_the_room(lk):
    async with client(lk) as lkapi:
        started = time.monotonic()
        info = await lkapi.sip.create_sip_participant(dial(participant_name="Dana"))
        took = time.monotonic() - started
        assert 0.05 <= took < 0.5
        assert info.participant_identity == "human" and info.room_name == "consult"
        assert is_id(info.participant_id, "PA_") and is_id(info.sip_call_id, "SCL_")
        assert lk.rooms.get_room("consult").kind_of("human") == "sip"
        assert lk.parties["human"].connected and lk.ringing() == []
        (participant,) = (
            await lkapi.room.list_participants(api.ListParticipantsRequest(room="consult"))
        ).participants
        assert (participant.identity, participant.name, participant.sid) == (
            "human",
            "Dana",
            info.participant_id,
        )
        assert participant.attributes["sip.callID"] == info.sip_call_id
        assert participant.attributes["sip.callStatus"] == "active"
        await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
        assert lk.parties["human"].end_reason == "removed"
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room="consult", identity="human")
            )
        assert info.value.message == "twirp error unknown: participant does not exist"
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


# Failed dials


async def test_ring_out_is_408_canceled_sip_request_timed_out_without_meta(lk):
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        started = time.monotonic()
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(dial(NO_ANSWER, ring=0.2))
        took = time.monotonic() - started
    error = info.value
    assert type(error) is api.ServerError  # no SIP status: not a SipCallError
    assert (error.code, error.status, error.message, error.metadata) == (
        "canceled",
        408,
        TIMED_OUT,
        {},
    )
    assert 0.2 <= took < 0.6
    (call,) = lk.calls
    assert (call.outcome, call.sip_status) == ("ringing_timeout", None)
    events = await events_until_left(watcher, "human")
    assert events[-1] == ParticipantLeft("human", "sip", "user_unavailable")


async def test_answer_after_the_ring_timeout_is_a_ring_out(lk):
    lk.humans[OTHER] = HumanScript(answer_after=5)
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.sip.create_sip_participant(dial(OTHER, ring=0.1))
    assert (info.value.code, info.value.message, info.value.metadata) == ("canceled", TIMED_OUT, {})
    assert lk.calls[0].outcome == "ringing_timeout" and "human" not in lk.parties


@pytest.mark.parametrize(
    ("script", "status", "code", "http", "message", "reason"),
    [
        (
            HumanScript(outcome="busy", answer_after=0.02),
            486,
            "resource_exhausted",
            429,
            "INVITE failed: sip status: 486: Busy Here",
            "user_rejected",
        ),
        (
            HumanScript(outcome="busy", sip_status=600),
            600,
            "resource_exhausted",
            429,
            "unexpected status from INVITE response: sip status: 600: Busy Everywhere",
            "user_rejected",
        ),
        (
            HumanScript(outcome="decline", answer_after=0.02),
            603,
            "permission_denied",
            403,
            "unexpected status from INVITE response: sip status: 603: Decline",
            "user_rejected",
        ),
        (
            HumanScript(outcome="no_answer", sip_status=480, answer_after=0.02),
            480,
            "resource_exhausted",
            429,
            "INVITE failed: sip status: 480: Temporarily Unavailable",
            "user_unavailable",
        ),
        (
            HumanScript(outcome="no_answer", sip_status=408),
            408,
            "deadline_exceeded",
            408,
            "unexpected status from INVITE response: sip status: 408: Request Timeout",
            "user_unavailable",
        ),
        (
            HumanScript(outcome="fail"),
            500,
            "failed_precondition",
            412,
            "unexpected status from INVITE response: sip status: 500: Server Internal Error",
            "disconnected",
        ),
        (
            HumanScript(outcome="fail", sip_status=503),
            503,
            "failed_precondition",
            412,
            "unexpected status from INVITE response: sip status: 503: Service Unavailable",
            "disconnected",
        ),
        (
            HumanScript(outcome="fail", sip_status=487),
            487,
            "aborted",
            409,
            "unexpected status from INVITE response: sip status: 487: Request Terminated",
            "user_rejected",
        ),
        (
            HumanScript(outcome="fail", sip_status=488),
            488,
            "invalid_argument",
            400,
            "INVITE failed: sip status: 488: Not Acceptable Here",
            "user_rejected",
        ),
        (
            None,
            404,
            "not_found",
            404,
            "INVITE failed: sip status: 404: Not Found",
            "user_unavailable",
        ),
    ],
    ids=["486", "600", "603", "480", "408", "500", "503", "487", "488", "404-unscripted"],
)
async def test_carrier_final_status_maps_to_code_message_meta_and_leave_reason(
    lk, script, status, code, http, message, reason
):
    if script is not None:
        lk.humans[OTHER] = script
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(dial(OTHER, ring=2))
    error = info.value
    assert (error.code, error.status, error.sip_status_code) == (code, http, status)
    assert error.code == sip_twirp_code(status)
    assert error.message == "twirp error unknown: " + message
    assert set(error.metadata) == {"sip_status_code", "sip_status", "error_details"}
    grpc_code, detail_message, type_url, detail = decode_error_details(
        error.metadata["error_details"]
    )
    grpc_codes = {
        "invalid_argument": 3,
        "deadline_exceeded": 4,
        "not_found": 5,
        "permission_denied": 7,
        "resource_exhausted": 8,
        "failed_precondition": 9,
        "aborted": 10,
    }
    assert (grpc_code, detail_message, type_url) == (
        grpc_codes[code],
        message,
        "type.googleapis.com/livekit.SIPStatus",
    )
    assert (detail.code, detail.status) == (status, error.sip_status)
    (call,) = lk.calls
    assert (call.outcome, call.sip_status) == ("failed", status)
    assert "hangup" not in status_names(call) and "human" not in lk.parties
    events = await events_until_left(watcher, "human")
    assert events[-1] == ParticipantLeft("human", "sip", reason)
    assert lk.rooms.get_room("consult").participants == ["watcher"]


# Server deadlines and clients that give up


async def test_waiting_dial_hits_the_server_deadline_and_stops_ringing(no_leftover_tasks):
    humans = {OTHER: HumanScript(answer_after=5, ringing_after=0.02)}
    async with running(humans=humans, sip_wait_timeout=0.3) as emulator:
        watcher = emulator.rooms.connect("consult", "watcher")
        async with client(emulator) as lkapi:
            started = time.monotonic()
            with pytest.raises(api.ServerError) as info:
                await lkapi.sip.create_sip_participant(dial(OTHER, ring=5))
            took = time.monotonic() - started
        error = info.value
        assert (error.code, error.status, error.message, error.metadata) == (
            "deadline_exceeded",
            408,
            "twirp error unknown: request timed out",
            {},
        )
        assert 0.3 <= took < 0.8
        (call,) = emulator.calls
        await until(lambda: call.outcome is not None)
        assert call.outcome == "cancelled" and emulator.ringing() == []
        events = await events_until_left(watcher, "human")
        assert events[-1] == ParticipantLeft("human", "sip", "user_unavailable")


async def test_x_twirp_timeout_ms_header_sets_the_server_deadline(lk):
    lk.humans[OTHER] = HumanScript(answer_after=5)
    started = time.monotonic()
    answer = await post(
        lk,
        "/twirp/livekit.SIP/CreateSIPParticipant",
        raw_dial(OTHER),
        auth=token(**SIP_CALL),
        headers={"X-Twirp-Timeout-Ms": "250"},
    )
    took = time.monotonic() - started
    assert (answer.status, answer.reason, answer.content_type) == (
        408,
        "Request Timeout",
        "application/json",
    )
    assert (
        answer.body
        == b'{"code":"deadline_exceeded","msg":"twirp error unknown: request timed out"}'
    )
    assert 0.25 <= took < 0.7
    (call,) = lk.calls
    await until(lambda: call.outcome is not None)
    assert call.outcome == "cancelled" and lk.ringing() == []
    assert lk.rooms.get_room("consult").participants == []


async def test_dial_not_waiting_is_not_placed_when_its_join_outlasts_the_deadline(
    no_leftover_tasks,
):
    humans = {OTHER: HumanScript(join_delay=0.3, answer_after=0.05)}
    async with running(humans=humans, sip_request_timeout=0.1) as emulator:
        async with client(emulator) as lkapi:
            with pytest.raises(api.ServerError) as info:
                await lkapi.sip.create_sip_participant(dial(OTHER, wait=False))
        assert (info.value.code, info.value.status) == ("deadline_exceeded", 408)
        await asyncio.sleep(0.5)
        room = emulator.rooms.get_room("consult")
        assert room is None or room.participants == []
        assert emulator.ringing() == [] and "human" not in emulator.parties


async def test_client_that_gives_up_leaves_the_phone_ringing_until_answered(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.6, ringing_after=0.05)
    async with client(lk) as lkapi:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await lkapi.sip.create_sip_participant(dial(OTHER))
        (call,) = lk.ringing()
        assert call.status == "ringing" and call.outcome is None
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="consult"))
        assert [(p.identity, p.attributes["sip.callStatus"]) for p in listed.participants] == [
            ("human", "ringing")
        ]
        await until(lambda: call.outcome is not None)
        assert call.outcome == "answered" and lk.ringing() == []
        assert time.monotonic() - started >= 0.6
        assert lk.parties["human"].connected
        assert lk.rooms.get_room("consult").participants == ["human"]
        got = await lkapi.room.get_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
        assert got.attributes["sip.callStatus"] == "active"
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


async def test_remove_participant_while_ringing_cancels_the_waiting_dial(lk):
    lk.humans[OTHER] = HumanScript(answer_after=5, ringing_after=0.02)
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        task = asyncio.create_task(lkapi.sip.create_sip_participant(dial(OTHER, ring=5)))
        await until(lambda: lk.calls and lk.calls[0].status == "ringing")
        (call,) = lk.ringing()
        await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
        with pytest.raises(api.ServerError) as info:
            async with asyncio.timeout(2):
                await task
    error = info.value
    assert type(error) is api.ServerError
    assert (error.code, error.status, error.message, error.metadata) == (
        "canceled",
        408,
        TIMED_OUT,
        {},
    )
    assert call.outcome == "cancelled" and lk.ringing() == [] and "human" not in lk.parties
    events = await events_until_left(watcher, "human")
    assert events[-1] == ParticipantLeft("human", "sip", "removed")


async def test_delete_room_while_ringing_ends_a_call_nobody_waits_for(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.5)
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial(OTHER, wait=False))
        (call,) = lk.ringing()
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))
        await until(lambda: call.outcome is not None)
    assert call.outcome == "cancelled" and lk.ringing() == []
    await asyncio.sleep(0.6)  # past the answer it would have had
    assert "human" not in lk.parties and lk.rooms.list_rooms() == []


# The dial tone


async def test_dial_tone_is_425_hz_one_second_on_until_the_answer(lk):
    lk.humans[OTHER] = HumanScript(answer_after=1.3)
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial(OTHER, play_dialtone=True))
    (call,) = lk.calls
    answered_at = dict((status, at) for at, status in call.statuses)["active"]
    tone_frames, after = [], []
    async with asyncio.timeout(2):
        while len(after) < 5:
            event = await watcher.recv()
            if isinstance(event, AudioReceived) and event.identity == "human":
                (tone_frames if event.sent_at < answered_at else after).append(event)
    samples = [np.frombuffer(e.audio, dtype=np.int16) for e in tone_frames]
    assert all(e.sample_rate == 16000 for e in tone_frames)
    assert 60 <= len(samples) <= 66  # 20 ms frames for 1.3 s
    on, off = np.concatenate(samples[:50]), np.concatenate(samples[50:60])
    assert dominant_frequency(on, 16000) == pytest.approx(425, abs=3)
    assert min(np.abs(frame).max() for frame in samples[:50]) > 4000
    assert not off.any()  # 4 s of silence after 1 s of tone
    assert not any(np.frombuffer(e.audio, dtype=np.int16).any() for e in after)


async def test_dial_tone_is_at_half_volume(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.3)
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial(OTHER, play_dialtone=True))
    event = await next_event(watcher, AudioReceived, match=lambda e: e.identity == "human")
    assert 16300 <= np.abs(np.frombuffer(event.audio, dtype=np.int16)).max() <= 16383


async def test_dial_tone_plays_on_during_dtmf_automation(lk):
    lk.humans[OTHER] = HumanScript(answer_after=0.1)
    watcher = lk.rooms.connect("consult", "watcher")
    async with client(lk) as lkapi:
        await lkapi.sip.create_sip_participant(dial(OTHER, play_dialtone=True, dtmf="1"))
    (call,) = lk.calls
    times = dict((status, at) for at, status in call.statuses)
    frames = []
    async with asyncio.timeout(2):
        while not frames or frames[-1].sent_at < times["active"]:
            event = await watcher.recv()
            if isinstance(event, AudioReceived) and event.identity == "human":
                frames.append(event)
    during = [
        np.frombuffer(e.audio, dtype=np.int16)
        for e in frames
        if times["automation"] + 0.05 <= e.sent_at < times["active"] - 0.05
    ]
    assert len(during) >= 15 and all(frame.any() for frame in during)


# Logging and fault injection


async def test_requests_and_grants_are_logged_without_the_token(lk):
    async with client(lk) as lkapi:
        await lkapi.room.create_room(api.CreateRoomRequest(name="consult", empty_timeout=30))
        await lkapi.sip.create_sip_participant(
            dial(ring=2.5, headers={"X-Reason": "billing"}, dtmf="1", krisp_enabled=True)
        )
        await lkapi.room.move_participant(
            api.MoveParticipantRequest(room="consult", identity="human", destination_room="call")
        )
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))
        await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room="call", identity="human")
        )
    lk.rooms.delete_room("call")
    assert lk.methods_called() == [
        "CreateRoom",
        "CreateSIPParticipant",
        "MoveParticipant",
        "DeleteRoom",
        "RemoveParticipant",
    ]
    method, fields, headers = lk.requests[1]
    assert fields["sip_call_to"] == NUMBER and fields["sip_trunk_id"] == TRUNK
    assert fields["ringing_timeout"] == "2.500s" and fields["headers"] == {"X-Reason": "billing"}
    assert fields["dtmf"] == "1" and fields["krisp_enabled"] is True
    assert all(k.lower() != "authorization" for _, _, h in lk.requests for k in h)
    assert headers["Content-Type"] == "application/protobuf"
    assert headers["User-Agent"].startswith("livekit-server-sdk-python/")
    grants = dict(lk.request_grants)
    assert grants["CreateSIPParticipant"]["sip"] == {"call": True}
    assert not {"room_admin", "room_create", "room_join"} & set(
        grants["CreateSIPParticipant"]["video"]
    )
    move = grants["MoveParticipant"]["video"]
    assert move["room_admin"] and move["room"] == "consult" and move["destination_room"] == "call"
    assert grants["DeleteRoom"]["video"].get("room_create")
    assert "room_admin" not in grants["DeleteRoom"]["video"]


async def test_fail_next_prefixes_messages_latency_and_drop(lk):
    lk.fail_next("ListRooms", 503)
    lk.fail_next("DeleteRoom", "internal", msg="boom", times=2)
    lk.fail_next("CreateSIPParticipant", sip_status=486)
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert (info.value.code, info.value.status, info.value.message) == (
            "unavailable",
            503,
            "twirp error unknown: no response from servers",
        )
        await lkapi.room.list_rooms(api.ListRoomsRequest())  # only the next one failed
        for _ in range(2):
            with pytest.raises(api.ServerError) as info:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room="x"))
            assert (info.value.code, info.value.status, info.value.message) == (
                "internal",
                500,
                "twirp error unknown: boom",
            )
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="x"))
        assert info.value.message == "twirp error unknown: requested room does not exist"
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(dial())
        assert (info.value.sip_status_code, info.value.code, info.value.status) == (
            486,
            "resource_exhausted",
            429,
        )
        assert (
            info.value.message == "twirp error unknown: INVITE failed: sip status: 486: Busy Here"
        )
        assert set(info.value.metadata) == {"sip_status_code", "sip_status", "error_details"}
        assert "human" not in lk.parties and lk.calls == []

        lk.latency("ListRooms", 0.2)
        started = time.monotonic()
        await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert 0.2 <= time.monotonic() - started < 0.5
        lk.latency("ListRooms", 0)

        lk.drop_next("ListRooms")
        with pytest.raises(aiohttp.ClientError):
            await lkapi.room.list_rooms(api.ListRoomsRequest())
        await lkapi.room.list_rooms(api.ListRoomsRequest())

    with pytest.raises(ValueError, match="unknown method"):
        lk.fail_next("NoSuchMethod")
    with pytest.raises(ValueError, match="latency"):
        lk.latency("ListRooms", 10_000)


async def test_fail_next_answers_after_auth(lk):
    lk.fail_next("ListRooms", 500)
    async with client(lk, secret=OTHER_SECRET) as bad:
        with pytest.raises(api.ServerError) as info:
            await bad.room.list_rooms(api.ListRoomsRequest())
    assert (info.value.code, info.value.status, info.value.message) == ("unknown", 401, "")
    async with client(lk) as good:
        with pytest.raises(api.ServerError) as info:
            await good.room.list_rooms(api.ListRoomsRequest())
    assert (info.value.code, info.value.status, info.value.message) == (
        "internal",
        500,
        "twirp error unknown: failed",
    )


# Join tokens, loopback, helpers, the command


async def test_transport_factory_checks_the_join_token(lk):
    factory = lk.transport_factory()
    good = token(video=VideoGrants(room_join=True, room="consult"), identity="bot")
    transport = factory(lk.url, good, "consult", "bot", None)
    assert transport.room_name == "consult"
    with pytest.raises(PermissionError, match="room 'call'"):
        factory(lk.url, good, "call", "bot", None)
    with pytest.raises(PermissionError, match="identity"):
        factory(lk.url, good, "consult", "caller", None)
    admin = token(video=VideoGrants(room_admin=True, room="consult"), identity="bot")
    with pytest.raises(PermissionError, match="roomJoin"):
        factory(lk.url, admin, "consult", "bot", None)
    forged = token(
        video=VideoGrants(room_join=True, room="consult"), identity="bot", secret=OTHER_SECRET
    )
    with pytest.raises(PermissionError, match="signature is invalid"):
        factory(lk.url, forged, "consult", "bot", None)


def test_twirp_error_helpers_build_livekit_sip_errors():
    assert sip_twirp_code(486) == "resource_exhausted"
    assert sip_twirp_code(603) == "permission_denied"
    assert sip_twirp_code(599) == "failed_precondition"
    assert sip_twirp_code(499) == "invalid_argument"
    assert sip_twirp_code(150) == "unknown"
    error = TwirpError.sip(486)
    assert (error.code, error.http_status) == ("resource_exhausted", 429)
    assert json.dumps(error.body(), separators=(",", ":")).encode() == EXACT_486
    assert TwirpError.psrpc("not_found", "x").msg == "twirp error unknown: x"


def test_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        LiveKitEmulator(host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        LiveKitEmulator(host="example.com")
    assert LiveKitEmulator(host="::1").running is False
    assert LiveKitEmulator(host="localhost").running is False


async def test_serve_forever_until_cancelled(no_leftover_tasks):
    ready = asyncio.Event()
    seen = {}

    def on_ready(emulator):
        seen["emulator"] = emulator
        ready.set()

    task = asyncio.create_task(serve_forever(port=0, on_ready=on_ready))
    async with asyncio.timeout(5):
        await ready.wait()
    emulator = seen["emulator"]
    assert list(emulator.trunks) == [DEFAULT_TRUNK_ID]
    async with client(emulator, emulator.api_key, emulator.api_secret) as lkapi:
        request = dial("+15550104", room="r")
        request.sip_trunk_id = DEFAULT_TRUNK_ID
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(request)
        assert (info.value.sip_status_code, info.value.code) == (500, "failed_precondition")
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="r"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not emulator.running
    assert set(default_humans()) == {
        "+15550100",
        "+15550101",
        "+15550102",
        "+15550103",
        "+15550104",
    }
    with pytest.raises(ValueError, match="loopback"):
        await serve_forever(host="10.1.2.3")


async def test_a_given_room_server_is_used(no_leftover_tasks):
    rooms = MemoryRoomServer()
    async with running(rooms=rooms) as emulator:
        async with client(emulator) as lkapi:
            await lkapi.sip.create_sip_participant(dial())
        assert emulator.rooms is rooms and rooms.get_room("consult").participants == ["human"]


# Every FIDELITY row has its tests

COVERAGE = {
    "Authorization header without `Bearer `": [
        "test_auth_refusal_is_text_plain_401_with_the_middleware_text",
    ],
    "token that is not a JWT": [
        "test_auth_refusal_is_text_plain_401_with_the_middleware_text",
        "test_python_client_sees_a_text_plain_refusal_as_unknown_401_without_message",
    ],
    "token issued by an unknown API key": [
        "test_auth_refusal_is_text_plain_401_with_the_middleware_text",
        "test_python_client_sees_a_text_plain_refusal_as_unknown_401_without_message",
    ],
    "bad signature, other algorithm than HS256, expired, not yet valid, no exp": [
        "test_auth_refusal_is_text_plain_401_with_the_middleware_text",
        "test_python_client_sees_a_text_plain_refusal_as_unknown_401_without_message",
        "test_token_leeway_is_60_seconds_on_exp_and_nbf",
    ],
    "no Authorization header (a token may come as the `access_token` query parameter)": [
        "test_missing_authorization_header_passes_the_middleware_then_permissions_denied",
        "test_auth_refusal_is_text_plain_401_with_the_middleware_text",
    ],
    "valid token without the method's grant": [
        "test_missing_grant_is_401_unauthenticated_permissions_denied",
        "test_missing_grant_answer_is_exact_json_without_meta",
    ],
    "request body over 10 MiB (Content-Length)": [
        "test_body_over_10_mib_is_413_text_plain_before_auth",
    ],
    "path of no registered service": [
        "test_path_of_no_registered_service_is_go_404_page",
        "test_python_client_sees_the_404_page_as_unknown_without_message",
    ],
    "unknown method, method other than POST, wrong Content-Type": [
        "test_bad_route_is_404_bad_route_with_the_route_in_meta",
        "test_python_client_sees_an_unknown_method_as_bad_route",
    ],
    "body that does not decode (an empty JSON body too)": [
        "test_undecodable_body_is_400_malformed",
    ],
    "every error answer": [
        "test_error_answers_are_compact_json_with_exact_content_type_and_reason_phrase",
        "test_busy_answer_is_the_exact_313_byte_body_with_sorted_meta",
    ],
    "an error that crossed LiveKit's internal RPC (psrpc) or carries a SIP status": [
        "test_psrpc_errors_carry_the_prefix_and_the_grpc_code",
        "test_carrier_final_status_maps_to_code_message_meta_and_leave_reason",
        "test_fail_next_prefixes_messages_latency_and_drop",
    ],
    "JSON success answer": [
        "test_json_success_answers_emit_every_default_in_snake_case",
    ],
    "CreateRoom of a new room": [
        "test_create_room_of_a_new_room_has_lk_defaults_unless_given",
    ],
    "CreateRoom of a room that exists": [
        "test_create_room_of_an_existing_room_returns_it_unchanged",
    ],
    "DeleteRoom of a missing room": [
        "test_delete_missing_room_is_404_requested_room_does_not_exist",
    ],
    "ListParticipants of a missing room": [
        "test_list_participants_of_a_missing_room_is_empty",
        "test_json_success_answers_emit_every_default_in_snake_case",
    ],
    "GetParticipant / RemoveParticipant of a missing participant or room": [
        "test_get_or_remove_missing_participant_is_404_participant_does_not_exist",
    ],
    "MoveParticipant into the same room": [
        "test_move_participant_into_the_same_room_is_400_with_trailing_space",
    ],
    "MoveParticipant on an open-source server": [
        "test_move_participant_on_open_source_server_is_500_not_implemented",
    ],
    "MoveParticipant of a participant not connected": [
        "test_move_participant_not_connected_is_503_no_response_after_3_s",
    ],
    "ParticipantInfo": [
        "test_participant_info_of_a_sip_participant_and_a_plain_one",
    ],
    "CreateSIPParticipant checks, in order": [
        "test_sip_grant_is_checked_before_the_request",
        "test_invalid_sip_request_is_400_invalid_argument_with_the_raw_message",
        "test_unknown_trunk_is_404_requested_sip_trunk_does_not_exist",
        "test_trunk_without_numbers_needs_a_sip_number",
    ],
    "the SIP participant": [
        "test_sip_participant_joins_at_dial_start_with_its_sip_attributes",
        "test_hidden_phone_number_leaves_out_number_host_and_caller_id",
    ],
    "the ring clock": [
        "test_ring_clock_starts_after_the_join_and_defaults_to_3_minutes",
    ],
    "`sip.callStatus`": [
        "test_call_status_goes_dialing_ringing_automation_active",
        "test_failed_dial_keeps_its_last_status_no_hangup",
        "test_human_hang_up_sets_call_status_hangup_then_leaves",
    ],
    "wait_until_answered=false": [
        "test_wait_until_answered_false_returns_after_the_join_before_the_answer",
    ],
    "nobody answers before ringing_timeout (LiveKit's own ring-out)": [
        "test_ring_out_is_408_canceled_sip_request_timed_out_without_meta",
        "test_answer_after_the_ring_timeout_is_a_ring_out",
    ],
    "the carrier answers a final status (486, 603, 480, 404, 5xx, ...)": [
        "test_carrier_final_status_maps_to_code_message_meta_and_leave_reason",
    ],
    "a waiting dial's server deadline": [
        "test_waiting_dial_hits_the_server_deadline_and_stops_ringing",
        "test_x_twirp_timeout_ms_header_sets_the_server_deadline",
    ],
    "the HTTP client gives up on a waiting dial": [
        "test_client_that_gives_up_leaves_the_phone_ringing_until_answered",
    ],
    "participant removed or room deleted while ringing": [
        "test_remove_participant_while_ringing_cancels_the_waiting_dial",
        "test_delete_room_while_ringing_ends_a_call_nobody_waits_for",
    ],
    "the human hangs up": [
        "test_human_hang_up_sets_call_status_hangup_then_leaves",
    ],
    "play_dialtone": [
        "test_dial_tone_is_425_hz_one_second_on_until_the_answer",
    ],
    # SIP transfer: the tests live in test_refer_mode.py.
    "TransferSIPParticipant checks, in order": [
        "test_refer_mode::test_room_and_identity_are_checked_before_the_grants",
        "test_refer_mode::test_missing_grants_are_401_permissions_denied",
        "test_refer_mode::test_transfer_to_must_be_a_sip_or_tel_uri",
        "test_refer_mode::test_bad_headers_are_refused_as_for_a_dial",
        "test_refer_mode::test_a_participant_that_is_not_a_sip_call_cannot_be_transferred",
    ],
    "a transfer's deadline": [
        "test_refer_mode::test_the_deadline_is_the_ringing_timeout_or_the_header_and_the_call_stays",
        "test_refer_mode::test_a_client_that_gives_up_does_not_stop_the_transfer",
    ],
    "a `sip.callID` no SIP call owns (the attribute on a participant of another kind)": [
        "test_refer_mode::test_a_call_id_no_sip_call_owns_is_never_answered",
    ],
    "transferring a dial that is not answered yet": [
        "test_refer_mode::test_a_dial_that_still_rings_cannot_be_transferred",
    ],
    "a second transfer of a call being transferred": [
        "test_refer_mode::test_a_second_transfer_waits_for_the_same_outcome_or_is_refused_elsewhere",
    ],
    "the carrier refuses the REFER (a final status but 200/202)": [
        "test_refer_mode::test_a_refer_the_carrier_refuses_carries_its_sip_status",
        "test_refer_mode::test_a_sip_uri_is_sent_in_angle_brackets_and_a_script_matches_its_user",
    ],
    "the carrier accepts, then the NOTIFY reports the target failed (486, 480, 603...)": [
        "test_refer_mode::test_a_target_that_fails_is_reported_by_the_notify",
        "test_refer_mode::test_the_exact_body_of_a_busy_target",
    ],
    "the NOTIFY reports 200 (the target answered)": [
        "test_refer_mode::test_a_transfer_answers_once_the_target_answers_then_the_caller_leaves",
        "test_refer_mode::test_without_the_carriers_bye_livekit_hangs_up_after_one_second",
        "test_refer_mode::test_the_json_answer_of_a_transfer_is_an_empty_response_with_every_field",
    ],
    "the call ends while the target rings (hang-up, participant removed, room deleted)": [
        "test_refer_mode::test_a_call_that_ends_while_the_target_rings_is_answered_as_success",
    ],
    "TransferSIPParticipant's play_dialtone": [
        "test_refer_mode::test_a_transfer_answers_once_the_target_answers_then_the_caller_leaves",
        "test_refer_mode::test_the_caller_hears_livekits_ringing_tone_not_the_room_while_referred",
    ],
    # Agent dispatch: the tests live in test_agent_dispatch.py.
    "`/agent` without a WebSocket upgrade / with a token lacking the `agent` grant": [
        "test_agent_dispatch::test_the_agent_socket_answers_as_livekit_does",
    ],
    "a worker's first messages": [
        "test_agent_dispatch::test_the_agent_socket_answers_as_livekit_does",
        "test_agent_dispatch::test_worker_messages_after_registration",
    ],
    "a registered worker's messages": [
        "test_agent_dispatch::test_worker_messages_after_registration",
    ],
    "a room created with agents in its room config (a SIP dispatch rule's)": [
        "test_agent_dispatch::test_two_workers_serve_each_call_exactly_once",
        "test_agent_dispatch::test_a_room_config_without_agents_dispatches_to_unnamed_workers",
    ],
    "choosing the worker of a job": [
        "test_agent_dispatch::test_a_full_worker_declines_and_the_other_takes_the_call",
        "test_agent_dispatch::test_no_worker_for_the_agent_leaves_the_caller_alone_as_livekit_does",
    ],
    "an accepted job": [
        "test_agent_dispatch::test_the_job_token_is_livekits_agent_token",
    ],
    "the agent's participant leaves the room (or is removed, or the room deleted)": [
        "test_agent_dispatch::test_livekit_terminates_the_job_when_its_bot_is_removed",
    ],
    "a worker's socket drops": [
        "test_agent_dispatch::test_a_killed_worker_is_forgotten_and_new_calls_go_to_the_survivor",
        "test_agent_dispatch::test_a_worker_reregisters_when_livekit_drops_it_and_its_calls_go_on",
    ],
    "a participant whose client died without leaving": [
        "test_agent_dispatch::test_a_killed_worker_is_forgotten_and_new_calls_go_to_the_survivor",
    ],
    # The signal endpoint: the tests live in test_livekit_signal.py.
    "`/rtc` refusals": [
        "test_livekit_signal::test_rtc_refuses_as_livekit_does",
    ],
    "a client joins over `/rtc`": [
        "test_livekit_signal::test_the_join_response_then_participants_joining_and_leaving",
        "test_dispatch_processes::test_two_worker_processes_kill_and_drain",
    ],
    "another participant joins or leaves while a client is connected": [
        "test_livekit_signal::test_the_join_response_then_participants_joining_and_leaving",
        "test_livekit_signal::test_a_replaced_session_is_told_only_to_old_clients",
    ],
    "the client sends SignalRequest{leave}": [
        "test_livekit_signal::test_a_client_leave_is_answered_with_the_servers_leave_and_a_close",
        "test_livekit_signal::test_signal_room_call_serves_a_dispatched_call_until_the_caller_leaves",
    ],
    "the server removes a signal participant (RemoveParticipant, DeleteRoom, same identity)": [
        "test_livekit_signal::test_the_server_removing_a_participant_sends_leave_and_closes",
    ],
    "ping, ping_req and text frames on `/rtc`": [
        "test_livekit_signal::test_pings_are_answered_and_text_frames_switch_to_json",
    ],
    "a signal socket that drops without a leave (the client's process died)": [
        "test_livekit_signal::test_a_dropped_socket_stays_until_the_stale_timeout",
        "test_dispatch_processes::test_two_worker_processes_kill_and_drain",
    ],
    "an inbound SIP call and its dispatch rule": [
        "test_agent_dispatch::test_dispatch_rules_name_rooms_and_callers_as_livekit_does",
    ],
}


def test_every_fidelity_row_has_a_test():
    assert list(COVERAGE) == [row.behaviour for row in FIDELITY]
    other_modules = {}
    for names in COVERAGE.values():
        for name in names:
            module_name, _, function = name.rpartition("::")
            if not module_name:
                assert callable(globals().get(name)), name
                continue
            if module_name not in other_modules:
                path = Path(__file__).with_name(module_name + ".py")
                spec = importlib.util.spec_from_file_location(f"_coverage_{module_name}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                other_modules[module_name] = module
            assert callable(getattr(other_modules[module_name], function, None)), name
