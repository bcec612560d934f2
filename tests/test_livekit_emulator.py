"""LiveKitEmulator: Twirp over loopback HTTP with the real livekit-api client (no mocks)."""

import asyncio
import contextlib
import datetime
import json
import time

import aiohttp
import pytest
from livekit import api
from livekit.api import AccessToken, SipCallError, SIPGrants, VideoGrants
from livekit.protocol.sip import CreateSIPParticipantRequest

from pipecat_warm_transfer.testing import HumanScript, MemoryRoomServer, ParticipantLeft
from pipecat_warm_transfer.testing.livekit_emulator import (
    LiveKitEmulator,
    TwirpError,
    default_humans,
    serve_forever,
    sip_twirp_code,
)

KEY = "APIemulatorkey"
SECRET = "emulator-secret-0123456789abcdef0123"
ZERO = {"rooms": 0, "participants": 0, "connections": 0}
NUMBER = "+15550100"


@pytest.fixture
async def no_leftover_tasks():
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


@pytest.fixture
async def lk(no_leftover_tasks):
    humans = {
        NUMBER: HumanScript(answer_after=0.05),
        "+15550101": HumanScript(outcome="busy", answer_after=0.02),
        "+15550102": HumanScript(outcome="no_answer"),
        "+15550103": HumanScript(answer_after=0.02, hang_up_after=0.15),
    }
    async with LiveKitEmulator(KEY, SECRET, humans=humans) as emulator:
        yield emulator
        for name in list(emulator.rooms.list_rooms()):
            emulator.rooms.delete_room(name)
        assert await emulator.settle() == ZERO


@contextlib.asynccontextmanager
async def client(emulator, key=KEY, secret=SECRET):
    lkapi = api.LiveKitAPI(emulator.url, key, secret)
    try:
        yield lkapi
    finally:
        await lkapi.aclose()


def dial(number=NUMBER, room="consult", identity="human", wait=True, ring=None, **kw):
    request = CreateSIPParticipantRequest(
        sip_trunk_id="ST_test",
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


async def post(emulator, path, body, *, content_type="application/json", auth=None):
    headers = {"Content-Type": content_type}
    if auth:
        headers["Authorization"] = f"Bearer {auth}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{emulator.url}{path}", data=body, headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


# Authentication and grants


async def test_url_is_loopback_and_leftovers_count(lk):
    assert lk.url.startswith("http://127.0.0.1:")
    assert lk.leftovers() == ZERO
    lk.rooms.create_room("x")
    assert lk.leftovers()["rooms"] == 1


@pytest.mark.parametrize(
    ("key", "secret", "message"),
    [
        (KEY, "another-secret-0123456789abcdef0123", "bad signature"),
        ("APIotherkey", SECRET, "invalid API key"),
    ],
)
async def test_wrong_key_or_secret_is_unauthenticated(lk, key, secret, message):
    async with client(lk, key, secret) as bad:
        with pytest.raises(api.ServerError) as info:
            await bad.room.list_rooms(api.ListRoomsRequest())
    assert info.value.code == "unauthenticated" and info.value.status == 401
    assert message in info.value.message
    assert secret not in str(info.value) and SECRET not in str(info.value)


async def test_expired_and_missing_token_are_unauthenticated(lk):
    expired = token(video=VideoGrants(room_list=True), ttl=datetime.timedelta(minutes=-5))
    async with api.LiveKitAPI.with_token(expired, lk.url) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
    assert (info.value.code, info.value.status) == ("unauthenticated", 401)
    assert "expired" in info.value.message
    status, _, body = await post(lk, "/twirp/livekit.RoomService/ListRooms", b"{}")
    assert status == 401 and json.loads(body)["code"] == "unauthenticated"
    status, _, body = await post(lk, "/twirp/livekit.RoomService/ListRooms", b"{}", auth="x.y.z")
    assert status == 401 and json.loads(body)["code"] == "unauthenticated"


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
    ],
)
async def test_missing_grant_is_permission_denied(lk, grants, call):
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
        }
        with pytest.raises(api.ServerError) as info:
            await calls[call]()
    assert (info.value.code, info.value.status) == ("permission_denied", 403)
    assert lk.rooms.get_room("consult") is not None and lk.rooms.get_room("r") is None


async def test_requests_and_grants_are_logged_without_the_token(lk):
    async with client(lk) as lkapi:
        await lkapi.room.create_room(api.CreateRoomRequest(name="consult", empty_timeout=30))
        await lkapi.sip.create_sip_participant(
            dial(ring=2.5, headers={"X-Reason": "billing"}, dtmf="ww12", krisp_enabled=True)
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
    assert fields["sip_call_to"] == NUMBER and fields["sip_trunk_id"] == "ST_test"
    assert fields["ringing_timeout"] == "2.500s" and fields["headers"] == {"X-Reason": "billing"}
    assert fields["dtmf"] == "ww12" and fields["krisp_enabled"] is True
    assert all(k.lower() != "authorization" for _, _, h in lk.requests for k in h)
    assert headers["Content-Type"] == "application/protobuf"
    grants = dict(lk.request_grants)
    assert grants["CreateSIPParticipant"]["sip"] == {"call": True}
    assert not {"room_admin", "room_create", "room_join"} & set(
        grants["CreateSIPParticipant"]["video"]
    )
    move = grants["MoveParticipant"]["video"]
    assert move["room_admin"] and move["room"] == "consult" and move["destination_room"] == "call"
    assert (
        grants["DeleteRoom"]["video"].get("room_create")
        and "room_admin" not in (grants["DeleteRoom"]["video"])
    )


# JSON and protobuf, Twirp routing errors


async def test_json_requests_snake_or_camel_case(lk):
    auth = token(video=VideoGrants(room_create=True, room_list=True))
    status, ctype, body = await post(
        lk, "/twirp/livekit.RoomService/CreateRoom", b'{"name": "a", "emptyTimeout": 7}', auth=auth
    )
    assert status == 200 and ctype.startswith("application/json")
    created = json.loads(body)
    assert created["name"] == "a" and created["empty_timeout"] == 7 and created["sid"]
    status, _, body = await post(
        lk, "/twirp/livekit.RoomService/CreateRoom", b'{"name": "b", "empty_timeout": 9}', auth=auth
    )
    assert status == 200 and json.loads(body)["empty_timeout"] == 9
    status, _, body = await post(
        lk, "/twirp/livekit.RoomService/ListRooms", b'{"names": ["b"]}', auth=auth
    )
    assert [r["name"] for r in json.loads(body)["rooms"]] == ["b"]
    assert lk.requests[0][1] == {"name": "a", "empty_timeout": 7}


async def test_sip_failure_as_twirp_json_with_meta(lk):
    auth = token(sip=SIPGrants(call=True))
    body = json.dumps(
        {
            "sip_trunk_id": "ST_1",
            "sipCallTo": "+15550101",
            "roomName": "consult",
            "participantIdentity": "h",
            "waitUntilAnswered": True,
        }
    ).encode()
    status, ctype, raw = await post(lk, "/twirp/livekit.SIP/CreateSIPParticipant", body, auth=auth)
    assert status == 429 and ctype.startswith("application/json")
    assert json.loads(raw) == {
        "code": "resource_exhausted",
        "msg": "sip status 486: Busy Here",
        "meta": {"sip_status_code": "486", "sip_status": "Busy Here"},
    }


@pytest.mark.parametrize(
    ("path", "body", "content_type", "status", "code"),
    [
        ("/twirp/livekit.RoomService/Nope", b"{}", "application/json", 404, "bad_route"),
        ("/twirp/livekit.Egress/ListEgress", b"{}", "application/json", 404, "bad_route"),
        ("/rtc/validate", b"{}", "application/json", 404, "bad_route"),
        ("/twirp/livekit.RoomService/ListRooms", b"{}", "text/plain", 404, "bad_route"),
        ("/twirp/livekit.RoomService/ListRooms", b"{nope", "application/json", 400, "malformed"),
        (
            "/twirp/livekit.RoomService/ListRooms",
            b" " * (1 << 21),
            "application/json",
            400,
            "malformed",
        ),
        (
            "/twirp/livekit.RoomService/ListRooms",
            b"\xff\xff\xff",
            "application/protobuf",
            400,
            "malformed",
        ),
    ],
)
async def test_twirp_routing_and_malformed_errors(lk, path, body, content_type, status, code):
    auth = token(video=VideoGrants(room_list=True))
    got, ctype, raw = await post(lk, path, body, content_type=content_type, auth=auth)
    assert got == status and ctype.startswith("application/json")
    assert json.loads(raw)["code"] == code


async def test_get_is_a_bad_route(lk):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{lk.url}/twirp/livekit.RoomService/ListRooms") as resp:
            assert resp.status == 404 and (await resp.json())["code"] == "bad_route"


# SIP calls


async def test_dial_answers_with_a_sip_party_in_the_room(lk):
    async with client(lk) as lkapi:
        started = time.monotonic()
        info = await lkapi.sip.create_sip_participant(dial(participant_name="Dana"))
        took = time.monotonic() - started
        assert 0.04 <= took < 0.5
        assert info.participant_identity == "human" and info.room_name == "consult"
        assert info.participant_id.startswith("PA_") and info.sip_call_id.startswith("SCL_")
        assert lk.rooms.get_room("consult").kind_of("human") == "sip"
        assert lk.parties["human"].connected
        listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room="consult"))
        (participant,) = listed.participants
        assert participant.identity == "human" and participant.name == "Dana"
        assert participant.kind == api.ParticipantInfo.Kind.SIP
        assert participant.sid == info.participant_id
        await lkapi.room.remove_participant(
            api.RoomParticipantIdentity(room="consult", identity="human")
        )
        assert lk.parties["human"].end_reason == "removed"
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room="consult", identity="human")
            )
        assert info.value.code == "not_found"
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


@pytest.mark.parametrize(
    ("script", "status", "code", "ring"),
    [
        (HumanScript(outcome="busy"), 486, "resource_exhausted", None),
        (HumanScript(outcome="busy", sip_status=600), 600, "resource_exhausted", None),
        (HumanScript(outcome="decline", answer_after=0.02), 603, "permission_denied", None),
        (HumanScript(outcome="fail"), 500, "failed_precondition", None),
        (HumanScript(outcome="fail", sip_status=503), 503, "failed_precondition", None),
        (HumanScript(outcome="fail", sip_status=487), 487, "aborted", None),
        (HumanScript(outcome="no_answer"), 480, "resource_exhausted", 0.1),
        (HumanScript(outcome="no_answer", sip_status=408), 408, "deadline_exceeded", 0.1),
        (HumanScript(answer_after=5), 480, "resource_exhausted", 0.1),
        (None, 404, "not_found", None),
    ],
)
async def test_dial_failures_carry_the_sip_status(lk, script, status, code, ring):
    number = "+15550177"
    if script is not None:
        lk.humans[number] = script
    async with client(lk) as lkapi:
        started = time.monotonic()
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(dial(number, ring=ring))
        took = time.monotonic() - started
    error = info.value
    assert error.sip_status_code == status and error.code == code
    assert error.metadata["sip_status"] and error.status < 500  # 4xx: no client retry
    assert error.code == sip_twirp_code(status)
    if ring:
        assert ring - 0.02 <= took < ring + 0.3
    assert lk.rooms.get_room("consult").participants == []


async def test_dial_without_waiting_returns_at_once_and_hangs_up_later(lk):
    async with client(lk) as lkapi:
        started = time.monotonic()
        info = await lkapi.sip.create_sip_participant(dial("+15550103", wait=False))
        assert time.monotonic() - started < 0.02 + 0.05
        assert info.participant_identity == "human"
        assert lk.rooms.get_room("consult").participants == []  # still ringing
        watcher = lk.rooms.connect("consult", "bot")
        async with asyncio.timeout(2):
            while True:
                event = await watcher.recv()
                if isinstance(event, ParticipantLeft):
                    break
        assert event == ParticipantLeft("human", "sip", "disconnected")  # hung up
        watcher.disconnect()
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))


async def test_a_client_that_gives_up_abandons_the_call(lk):
    lk.humans["+15550188"] = HumanScript(answer_after=1.0)
    async with client(lk) as lkapi:
        task = asyncio.create_task(lkapi.sip.create_sip_participant(dial("+15550188")))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await lk.settle()
    await asyncio.sleep(1.1)
    assert "human" not in lk.parties and lk.rooms.get_room("consult").participants == []


# Room service


async def test_move_participant_and_oss_mode():
    rooms = MemoryRoomServer()
    async with LiveKitEmulator(KEY, SECRET, rooms=rooms, humans={NUMBER: HumanScript()}) as lk:
        async with client(lk) as lkapi:
            await lkapi.sip.create_sip_participant(dial())
            caller = rooms.connect("call", "caller")
            await lkapi.room.move_participant(
                api.MoveParticipantRequest(
                    room="consult", identity="human", destination_room="call"
                )
            )
            assert rooms.get_room("call").participants == ["caller", "human"]
            assert lk.parties["human"].room == "call"
            with pytest.raises(api.ServerError) as info:
                await lkapi.room.move_participant(
                    api.MoveParticipantRequest(
                        room="consult", identity="human", destination_room="call"
                    )
                )
            assert info.value.code == "not_found"
            lk.oss = True
            with pytest.raises(api.ServerError) as info:
                await lkapi.room.move_participant(
                    api.MoveParticipantRequest(
                        room="call", identity="human", destination_room="consult"
                    )
                )
            assert (info.value.code, info.value.status) == ("unimplemented", 501)
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="call"))
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="consult"))
            assert caller.disconnect_reason == "room_deleted"
        assert await lk.settle() == ZERO


async def test_delete_missing_room_is_not_found(lk):
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.delete_room(api.DeleteRoomRequest(room="never"))
    assert (info.value.code, info.value.status) == ("not_found", 404)


async def test_create_and_list_rooms(lk):
    async with client(lk) as lkapi:
        first = await lkapi.room.create_room(api.CreateRoomRequest(name="a", metadata="m"))
        again = await lkapi.room.create_room(api.CreateRoomRequest(name="a"))
        assert first.sid == again.sid and first.metadata == "m"
        await lkapi.room.create_room(api.CreateRoomRequest(name="b"))
        listed = await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert sorted(r.name for r in listed.rooms) == ["a", "b"]
        empty = await lkapi.room.list_participants(api.ListParticipantsRequest(room="zzz"))
        assert list(empty.participants) == []


# Fault injection


async def test_fail_next_latency_and_drop(lk):
    lk.fail_next("ListRooms", 503)
    lk.fail_next("DeleteRoom", "internal", msg="boom", times=2)
    lk.fail_next("CreateSIPParticipant", sip_status=486)
    async with client(lk) as lkapi:
        with pytest.raises(api.ServerError) as info:
            await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert (info.value.code, info.value.status) == ("unavailable", 503)
        await lkapi.room.list_rooms(api.ListRoomsRequest())  # only the next one failed
        for _ in range(2):
            with pytest.raises(api.ServerError) as info:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room="x"))
            assert info.value.message == "boom"
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(dial())
        assert info.value.sip_status_code == 486
        assert "human" not in lk.parties

        lk.latency("ListRooms", 0.2)
        started = time.monotonic()
        await lkapi.room.list_rooms(api.ListRoomsRequest())
        assert 0.2 <= time.monotonic() - started < 0.5
        lk.latency("ListRooms", 0)

        lk.drop_next("ListRooms")
        with pytest.raises(aiohttp.ClientError):
            await lkapi.room.list_rooms(api.ListRoomsRequest())
        await lkapi.room.list_rooms(api.ListRoomsRequest())

    with pytest.raises(ValueError):
        lk.fail_next("NoSuchMethod")
    with pytest.raises(ValueError):
        lk.latency("ListRooms", 10_000)


async def test_fail_next_checks_auth_first(lk):
    lk.fail_next("ListRooms", 500)
    async with client(lk, secret="another-secret-0123456789abcdef0123") as bad:
        with pytest.raises(api.ServerError) as info:
            await bad.room.list_rooms(api.ListRoomsRequest())
    assert info.value.code == "unauthenticated"


# Join tokens, loopback, the command


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
        video=VideoGrants(room_join=True, room="consult"),
        identity="bot",
        secret="another-secret-0123456789abcdef0123",
    )
    with pytest.raises(PermissionError):
        factory(lk.url, forged, "consult", "bot", None)


def test_twirp_error_helpers():
    assert sip_twirp_code(486) == "resource_exhausted"
    assert sip_twirp_code(603) == "permission_denied"
    assert sip_twirp_code(599) == "failed_precondition"
    assert sip_twirp_code(499) == "invalid_argument"
    error = TwirpError.sip(486)
    assert error.http_status == 429
    assert error.body()["meta"] == {"sip_status_code": "486", "sip_status": "Busy Here"}


def test_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        LiveKitEmulator(host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        LiveKitEmulator(host="example.com")
    LiveKitEmulator(host="::1")
    LiveKitEmulator(host="localhost")


async def test_serve_forever_until_cancelled(no_leftover_tasks):
    ready = asyncio.Event()
    seen = {}

    def on_ready(emulator):
        seen["url"] = emulator.url
        seen["emulator"] = emulator
        ready.set()

    task = asyncio.create_task(serve_forever(port=0, on_ready=on_ready))
    async with asyncio.timeout(5):
        await ready.wait()
    emulator = seen["emulator"]
    async with client(emulator, emulator.api_key, emulator.api_secret) as lkapi:
        with pytest.raises(SipCallError) as info:
            await lkapi.sip.create_sip_participant(dial("+15550104", room="r"))
        assert info.value.sip_status_code == 500
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="r"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not emulator.running
    assert set(default_humans()) >= {"+15550100", "+15550101", "+15550102"}
    with pytest.raises(ValueError, match="loopback"):
        await serve_forever(host="10.1.2.3")
