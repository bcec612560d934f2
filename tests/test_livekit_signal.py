"""The emulator's `/rtc` signal endpoint, against LiveKit's server source (presence only).

Raw aiohttp WebSockets speak LiveKit's `SignalRequest`/`SignalResponse` to it; the other
side of each room is a memory connection (a SIP caller) or another signal client.
"""

import asyncio
import time

import aiohttp
import pytest
from livekit import api
from livekit.protocol import models, rtc

from pipecat_warm_transfer.runner.agent_worker import AgentWorker, CallAssignment, WorkerOptions
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator
from pipecat_warm_transfer.testing.memory_room import ParticipantJoined, ParticipantLeft
from pipecat_warm_transfer.testing.signal_call import SignalRoomCall, rtc_url

State = models.ParticipantInfo.State
Kind = models.ParticipantInfo.Kind
Reason = models.DisconnectReason


def join_token(lk: LiveKitEmulator, room: str, identity: str, **options) -> str:
    kind = options.pop("kind", None)
    token = api.AccessToken(lk.api_key, lk.api_secret).with_identity(identity)
    token = token.with_grants(api.VideoGrants(room_join=True, room=room, **options))
    if kind:
        token = token.with_kind(kind)
    return token.to_jwt()


async def connect(session, lk, token, **params) -> aiohttp.ClientWebSocketResponse:
    query = {"access_token": token, **{k: str(v) for k, v in params.items()}}
    return await session.ws_connect(rtc_url(lk.url), params=query)


async def receive(ws, timeout: float = 2.0) -> rtc.SignalResponse:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    return rtc.SignalResponse.FromString(message.data)


async def joined(ws) -> rtc.JoinResponse:
    first = await receive(ws)
    assert first.WhichOneof("message") == "join"
    refresh = await receive(ws)
    assert refresh.WhichOneof("message") == "refresh_token"
    return first.join


async def send(ws, request: rtc.SignalRequest) -> None:
    await ws.send_bytes(request.SerializeToString())


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def refusal(session, lk, token: str | None) -> tuple[int, str]:
    """A WebSocket upgrade request, answered before the upgrade (status and body)."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    params = {"access_token": token} if token else {}
    async with session.get(lk.url + "/rtc", headers=headers, params=params) as response:
        return response.status, await response.text()


def raw_token(lk: LiveKitEmulator, **claims) -> str:
    """A signed token the SDK would refuse to mint (no video claim, no identity...)."""
    import jwt

    payload = {"iss": lk.api_key, "exp": int(time.time()) + 60, **claims}
    return jwt.encode(payload, lk.api_secret, algorithm="HS256")


async def test_rtc_refuses_as_livekit_does():
    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        async with session.get(lk.url + "/rtc") as response:
            assert response.status == 404  # not a WebSocket upgrade
        no_video = raw_token(lk, sub="u")
        no_join = raw_token(lk, sub="u", video={"roomList": True})
        no_identity = raw_token(lk, video={"roomJoin": True, "room": "r"})
        no_room = raw_token(lk, sub="u", video={"roomJoin": True})
        cases = [
            (None, 401, "no permissions to access the room"),
            (no_video, 401, "no permissions to access the room"),
            (no_join, 401, "permissions denied"),
            (no_identity, 400, "identity cannot be empty"),
            (
                join_token(lk, "r", "u" * 257),
                400,
                "participant identity length exceeds limits: max length 256",
            ),
            (no_room, 400, "no room name"),
            (
                join_token(lk, "r" * 257, "u"),
                400,
                "room name length exceeds limits: max length 256",
            ),
            ("not-a-jwt", 401, "invalid authorization token"),  # the auth middleware
        ]
        for token, status, text in cases:
            assert await refusal(session, lk, token) == (status, text), text
        assert lk.rooms.list_rooms() == []


async def test_the_join_response_then_participants_joining_and_leaving():
    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        caller = lk.rooms.connect("call-1", "sip_+15550100", "sip")
        token = join_token(lk, "call-1", "bot", kind="agent", agent=True)
        ws = await connect(session, lk, token, protocol=16)
        join = await joined(ws)
        assert join.room.name == "call-1" and join.room.sid.startswith("RM_")
        me = join.participant
        assert (me.identity, me.kind, me.state) == ("bot", Kind.AGENT, State.JOINING)
        assert me.sid.startswith("PA_") and me.permission.agent and me.permission.can_publish
        (other,) = join.other_participants
        assert (other.identity, other.kind, other.state) == (
            "sip_+15550100",
            Kind.SIP,
            State.ACTIVE,
        )
        assert join.server_info.version == join.server_version and join.server_info.protocol
        assert (join.ping_interval, join.ping_timeout) == (5, 15)
        # The caller sees the bot join, as an agent.
        event = await asyncio.wait_for(caller.recv(), 1)
        assert event == ParticipantJoined("bot", "agent", "joined")
        # Someone joins over /rtc and leaves: the bot is told, with the reason.
        guest = await connect(session, lk, join_token(lk, "call-1", "guest"), protocol=16)
        await joined(guest)
        update = (await receive(ws)).update
        (info,) = update.participants
        assert (info.identity, info.state, info.kind) == ("guest", State.ACTIVE, Kind.STANDARD)
        guest_sid = info.sid
        await send(guest, rtc.SignalRequest(leave=rtc.LeaveRequest(reason=Reason.CLIENT_INITIATED)))
        (info,) = (await receive(ws)).update.participants
        assert (info.sid, info.state, info.disconnect_reason) == (
            guest_sid,
            State.DISCONNECTED,
            Reason.CLIENT_INITIATED,
        )
        # A change of attributes is told with the participant's info.
        caller.set_attributes({"sip.callStatus": "active"})
        (info,) = (await receive(ws)).update.participants
        assert (info.identity, dict(info.attributes)) == (
            "sip_+15550100",
            {"sip.callStatus": "active"},
        )
        # A hidden participant is never announced.
        hidden = await connect(session, lk, join_token(lk, "call-1", "spy", hidden=True))
        spy_join = await joined(hidden)
        assert {p.identity for p in spy_join.other_participants} == {"sip_+15550100", "bot"}
        caller.disconnect()
        (info,) = (await receive(ws)).update.participants
        assert (info.identity, info.state) == ("sip_+15550100", State.DISCONNECTED)
        await ws.close()
        await hidden.close()
        await guest.close()


async def test_a_client_leave_is_answered_with_the_servers_leave_and_a_close():
    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        caller = lk.rooms.connect("call-2", "sip_+15550200", "sip")
        ws = await connect(session, lk, join_token(lk, "call-2", "bot"), protocol=16)
        await joined(ws)
        await send(ws, rtc.SignalRequest(leave=rtc.LeaveRequest(reason=Reason.USER_REJECTED)))
        leave = (await receive(ws)).leave
        assert (leave.reason, leave.action) == (Reason.USER_REJECTED, rtc.LeaveRequest.DISCONNECT)
        closed = await ws.receive(timeout=2)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1000
        assert (await caller.recv()).identity == "bot"  # joined
        assert await caller.recv() == ParticipantLeft("bot", "standard", "user_rejected")
        # An old client (protocol <= 12) gets a leave without an action.
        old = await connect(session, lk, join_token(lk, "call-2", "old"))
        await joined(old)
        await send(old, rtc.SignalRequest(leave=rtc.LeaveRequest()))
        leave = (await receive(old)).leave
        assert leave.reason == Reason.CLIENT_INITIATED and not leave.can_reconnect
        caller.disconnect()


@pytest.mark.parametrize(
    "how, reason",
    [
        ("remove", Reason.PARTICIPANT_REMOVED),
        ("delete", Reason.ROOM_DELETED),
        ("duplicate", Reason.DUPLICATE_IDENTITY),
    ],
)
async def test_the_server_removing_a_participant_sends_leave_and_closes(how, reason):
    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        token = join_token(lk, "call-3", "bot")
        ws = await connect(session, lk, token, protocol=16)
        await joined(ws)
        if how == "duplicate":
            second = await connect(session, lk, token, protocol=16)
            await joined(second)
        else:
            lkapi = api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
            try:
                if how == "remove":
                    await lkapi.room.remove_participant(
                        api.RoomParticipantIdentity(room="call-3", identity="bot")
                    )
                else:
                    await lkapi.room.delete_room(api.DeleteRoomRequest(room="call-3"))
            finally:
                await lkapi.aclose()
        leave = (await receive(ws)).leave
        assert (leave.reason, leave.action) == (reason, rtc.LeaveRequest.DISCONNECT)
        closed = await ws.receive(timeout=2)
        assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 1000
        if how == "duplicate":
            await second.close()


async def test_pings_are_answered_and_text_frames_switch_to_json():
    from google.protobuf import json_format

    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        ws = await connect(session, lk, join_token(lk, "call-4", "bot"), protocol=16)
        await joined(ws)
        before = int(time.time() * 1000)
        await send(ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=1234)))
        pong = (await receive(ws)).pong_resp
        assert pong.last_ping_timestamp == 1234 and pong.timestamp >= before
        await send(ws, rtc.SignalRequest(ping=42))
        assert (await receive(ws)).pong >= before
        await ws.send_str(
            json_format.MessageToJson(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=7)))
        )
        text = await ws.receive(timeout=2)
        assert text.type == aiohttp.WSMsgType.TEXT
        assert json_format.Parse(text.data, rtc.SignalResponse()).pong_resp.last_ping_timestamp == 7
        # A frame that does not decode ends the signal (the participant is left to time out).
        await ws.send_bytes(b"\x0a\xff")
        closed = await ws.receive(timeout=2)
        assert closed.type == aiohttp.WSMsgType.CLOSE
        assert "bot" in lk.rooms.get_room("call-4")


async def test_a_dropped_socket_stays_until_the_stale_timeout():
    async with LiveKitEmulator(stale_participant_secs=0.3) as lk:
        caller = lk.rooms.connect("call-5", "sip_+15550500", "sip")
        async with aiohttp.ClientSession() as session:
            watcher = await connect(session, lk, join_token(lk, "call-5", "watch"), protocol=16)
            await joined(watcher)
            session_b = aiohttp.ClientSession()
            ws = await connect(session_b, lk, join_token(lk, "call-5", "bot", kind="agent"))
            await joined(ws)
            await receive(watcher)  # the bot's ACTIVE update
            ws._response.connection.transport.abort()  # the process died: no leave
            await session_b.close()
            dropped_at = time.monotonic()
            await asyncio.sleep(0.1)
            assert "bot" in lk.rooms.get_room("call-5")  # still there, silent
            (info,) = (await receive(watcher)).update.participants
            waited = time.monotonic() - dropped_at
            assert (info.identity, info.state, info.disconnect_reason) == (
                "bot",
                State.DISCONNECTED,
                Reason.CONNECTION_TIMEOUT,
            )
            assert 0.25 <= waited < 1.5
            events = [await caller.recv() for _ in range(3)]
            assert events[-1] == ParticipantLeft("bot", "agent", "connection_timeout")
            assert caller.connected  # LiveKit does not hang the caller up
            await watcher.close()
        caller.disconnect()


async def test_signal_room_call_serves_a_dispatched_call_until_the_caller_leaves():
    from livekit.protocol import agent_dispatch, room, sip

    async with LiveKitEmulator(dispatch_seed=1) as lk:
        lk.add_dispatch_rule(
            sip.SIPDispatchRuleInfo(
                rule=sip.SIPDispatchRule(
                    dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="call")
                ),
                room_config=room.RoomConfiguration(
                    agents=[agent_dispatch.RoomAgentDispatch(agent_name="acme")]
                ),
            )
        )
        events, calls = [], []

        def make_call(served: CallAssignment) -> SignalRoomCall:
            call = SignalRoomCall(served, on_event=lambda name, f: events.append((name, f)))
            calls.append(call)
            return call

        options = WorkerOptions(agent_name="acme", identity="acme-bot")
        worker = AgentWorker(lk.url, lk.api_key, lk.api_secret, options, make_call)
        run = asyncio.create_task(worker.run())
        await until(lambda: worker.registered)
        first = lk.inbound_call("+15550600001")
        second = lk.inbound_call("+15550600002")
        await until(lambda: len([e for e in events if e[0] == "joined"]) == 2)
        for call in (first, second):
            kinds = sorted(c.kind for c in lk.rooms.get_room(call.room).connections())
            assert kinds == ["agent", "sip"]
        first.hang_up()
        await until(lambda: worker.active_calls == 1)
        (left,) = [f for name, f in events if name == "left"]
        assert left["room"] == first.room and left["reason"] == "caller_left"
        await worker.close()  # stops the other call: it leaves
        await run
        assert [c.end_reason for c in calls if c.served.room == second.room] == [
            "stopped:worker closed"
        ]
        assert [c.kind for c in lk.rooms.get_room(second.room).connections()] == ["sip"]
        second.hang_up()


async def test_a_replaced_session_is_told_only_to_old_clients():
    async with LiveKitEmulator() as lk, aiohttp.ClientSession() as session:
        new_client = await connect(session, lk, join_token(lk, "call-7", "new"), protocol=16)
        old_client = await connect(session, lk, join_token(lk, "call-7", "old"), protocol=9)
        await joined(new_client)
        await joined(old_client)
        assert (await receive(new_client)).update.participants[0].identity == "old"
        token = join_token(lk, "call-7", "bot")
        first = await connect(session, lk, token, protocol=16)
        await joined(first)
        for ws in (new_client, old_client):
            (info,) = (await receive(ws)).update.participants
            assert (info.identity, info.state) == ("bot", State.ACTIVE)
            first_sid = info.sid
        second = await connect(session, lk, token, protocol=16)
        await joined(second)
        (info,) = (await receive(new_client)).update.participants
        assert (info.identity, info.state) == ("bot", State.ACTIVE) and info.sid != first_sid
        gone, back = [(await receive(old_client)).update.participants[0] for _ in range(2)]
        assert (gone.sid, gone.state, gone.disconnect_reason) == (
            first_sid,
            State.DISCONNECTED,
            Reason.DUPLICATE_IDENTITY,
        )
        assert (back.sid, back.state) == (info.sid, State.ACTIVE)
        for ws in (new_client, old_client, first, second):
            await ws.close()
