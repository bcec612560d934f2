"""SIP REFER (`connect_mode: refer`): LiveKit's `TransferSIPParticipant`, emulated and used.

The emulator's `TransferSIPParticipant` is driven with the real `livekit-api` client (and
raw HTTP where the wire bytes matter) on 127.0.0.1; then whole transfers run with
`connect_mode=refer` through the LiveKit backend against the emulator, and through the
in-memory backend.
"""

import asyncio
import base64
import contextlib
import json
import time

import aiohttp
import pytest
from google.protobuf import any_pb2
from livekit import api
from livekit.api import AccessToken, SipCallError, SIPGrants, VideoGrants
from livekit.protocol import sip as sip_proto
from livekit.protocol.sip import CreateSIPParticipantRequest, TransferSIPParticipantRequest
from pipecat.transports.base_transport import TransportParams
from protobuf_wire import proto_fields

from pipecat_warm_transfer import BriefingParams, TransferTarget, WarmTransfer, WarmTransferParams
from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs
from pipecat_warm_transfer.backends.livekit import LiveKitSipBackend, _refer_failure, refer_uri
from pipecat_warm_transfer.bridge import AudioBridge
from pipecat_warm_transfer.config import load_config, validate_config_file
from pipecat_warm_transfer.connect_modes import (
    Join,
    ModeUnavailableError,
    ReferStrategy,
    strategy_for,
)
from pipecat_warm_transfer.consult_leg import (
    ConsultLeg,
    DialRequest,
    ReferError,
    ReferUnsupportedError,
)
from pipecat_warm_transfer.params import REFER_CONNECTING_MESSAGE
from pipecat_warm_transfer.testing import (
    NO_LEAKS,
    HumanScript,
    InMemoryBackend,
    MemoryRoomServer,
    ParticipantAttributesChanged,
    ParticipantLeft,
    ScriptedToneTTSService,
    tone,
)
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness, fast_params
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator
from pipecat_warm_transfer.testing.livekit_sip_transfer import (
    REFER_BYE_SECS,
    RINGBACK_HZ,
    RINGBACK_SOURCE,
    ReferScript,
    refer_destination,
)
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TransferOutcome,
    TransferState,
)

KEY = "APIreferkey"
SECRET = "refer-secret-0123456789abcdef0123456789"
TRUNK = "ST_test"
ROOM = "caller-room"
CALLER = "sip_+15550142"
CALL_ID = "SCL_callerCall01"
HUMAN = "+15550100"
ZERO = {"rooms": 0, "participants": 0, "connections": 0}


# Helpers


@contextlib.asynccontextmanager
async def running(**kwargs):
    """An emulator with a SIP caller and the bot in `ROOM`; nothing left after."""
    kwargs.setdefault("humans", {HUMAN: HumanScript(answer_after=0.05)})
    kwargs.setdefault("trunks", [TRUNK])
    async with LiveKitEmulator(KEY, SECRET, **kwargs) as emulator:
        try:
            yield emulator
        finally:
            for name in list(emulator.rooms.list_rooms()):
                emulator.rooms.delete_room(name)
        assert await emulator.settle() == ZERO


def join_caller(emulator, identity=CALLER, call_id=CALL_ID, kind="sip"):
    """An answered inbound SIP call in `ROOM` (what LiveKit's SIP service joins)."""
    attributes = {"sip.callID": call_id, "sip.callStatus": "active"} if call_id else {}
    return emulator.rooms.connect(ROOM, identity, kind, attributes=attributes)


def join_bot(emulator):
    return emulator.rooms.connect(ROOM, "bot", "agent")


@contextlib.asynccontextmanager
async def client(emulator):
    lkapi = api.LiveKitAPI(emulator.url, KEY, SECRET)
    try:
        yield lkapi
    finally:
        await lkapi.aclose()


def transfer(to=f"tel:{HUMAN}", room=ROOM, identity=CALLER, ring=None, **kw):
    request = TransferSIPParticipantRequest(
        room_name=room, participant_identity=identity, transfer_to=to, **kw
    )
    if ring is not None:
        request.ringing_timeout.FromNanoseconds(int(ring * 1e9))
    return request


def token(*, video=None, sip=None):
    tok = AccessToken(KEY, SECRET).with_identity("tester")
    if video is not None:
        tok.with_grants(video)
    if sip is not None:
        tok.with_sip_grants(sip)
    return tok.to_jwt()


def both_grants(room=ROOM):
    return token(video=VideoGrants(room_admin=True, room=room), sip=SIPGrants(call=True))


async def post(emulator, body: dict, auth: str | None, headers=None):
    """A raw JSON TransferSIPParticipant: (status, content type, body bytes)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if auth is not None:
        sent["Authorization"] = f"Bearer {auth}"
    url = f"{emulator.url}/twirp/livekit.SIP/TransferSIPParticipant"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(url, data=json.dumps(body).encode(), headers=sent) as resp:
            return resp.status, resp.headers.get("Content-Type"), await resp.read()


def body(**fields):
    values = {"room_name": ROOM, "participant_identity": CALLER, "transfer_to": f"tel:{HUMAN}"}
    values.update(fields)
    return values


async def next_event(connection, kind, timeout=3.0, match=None):
    async with asyncio.timeout(timeout):
        while True:
            event = await connection.recv()
            if isinstance(event, kind) and (match is None or match(event)):
                return event


async def until(predicate, timeout=2.0, step=0.01):
    """Wait (bounded) until `predicate()` is true."""
    for _ in range(int(timeout / step) + 1):
        if predicate():
            return
        await asyncio.sleep(step)
    raise TimeoutError(f"still false after {timeout} s")


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


async def expect_error(emulator, request) -> api.ServerError:
    async with client(emulator) as lkapi:
        with pytest.raises(api.ServerError) as caught:
            await lkapi.sip.transfer_sip_participant(request)
    return caught.value


# The emulator's TransferSIPParticipant


async def test_a_transfer_answers_once_the_target_answers_then_the_caller_leaves():
    async with running() as lk:
        caller = join_caller(lk)
        bot = join_bot(lk)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with client(lk) as lkapi:
            answer = await lkapi.sip.transfer_sip_participant(transfer(play_dialtone=True))
        answered = loop.time() - started
        # Answered at the NOTIFY 200 (REFER 50 ms + target 300 ms), the call still up.
        assert 0.3 <= answered < 1.0, answered
        assert answer == sip_proto.TransferSIPParticipantResponse()
        assert answer.status == sip_proto.SIPTransferStatus.STS_TRANSFER_ONGOING
        assert caller.connected
        # The carrier's BYE 100 ms later: status hangup, then the participant leaves.
        changed = await next_event(
            bot, ParticipantAttributesChanged, match=lambda e: e.identity == CALLER
        )
        assert changed.changed == {"sip.callStatus": "hangup"}
        left = await next_event(bot, ParticipantLeft, match=lambda e: e.identity == CALLER)
        assert left.reason == "disconnected"  # CLIENT_INITIATED
        assert 0.05 <= loop.time() - started - answered < 0.6
        assert not caller.connected
        [record] = lk.sip_transfers.transfers
        assert (record.outcome, record.sip_status) == ("transferred", None)
        assert (record.call_id, record.transfer_to, record.play_dialtone) == (
            CALL_ID,
            f"tel:{HUMAN}",
            True,
        )
        assert record.timeout == 30.0  # livekit-api pins its default ring window
        grants = dict(lk.request_grants)["TransferSIPParticipant"]
        assert grants["video"]["room_admin"] and grants["video"]["room"] == ROOM
        assert grants["sip"] == {"call": True}


async def test_without_the_carriers_bye_livekit_hangs_up_after_one_second():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript(bye_after=None, notify_after=0.05)
        caller = join_caller(lk)
        bot = join_bot(lk)
        loop = asyncio.get_running_loop()
        async with client(lk) as lkapi:
            await lkapi.sip.transfer_sip_participant(transfer())
        answered = loop.time()
        changed = await next_event(
            bot, ParticipantAttributesChanged, match=lambda e: e.identity == CALLER
        )
        assert changed.changed == {"sip.callStatus": "hangup"}
        await next_event(bot, ParticipantLeft, match=lambda e: e.identity == CALLER)
        assert REFER_BYE_SECS - 0.05 <= loop.time() - answered < REFER_BYE_SECS + 0.5
        assert not caller.connected


async def test_the_json_answer_of_a_transfer_is_an_empty_response_with_every_field():
    async with running() as lk:
        join_caller(lk)
        status, content_type, raw = await post(lk, body(), both_grants())
    assert (status, content_type) == (200, "application/json")
    assert json.loads(raw) == {
        "transfer_id": "",
        "status": "STS_TRANSFER_ONGOING",
        "reason": "STR_UNSPECIFIED",
        "sip_status": None,
    }


@pytest.mark.parametrize(
    "status, code, http, reason",
    [
        (603, "permission_denied", 403, "Decline"),
        (405, "invalid_argument", 400, "Method Not Allowed"),
        (501, "failed_precondition", 412, "Not Implemented"),
    ],
)
async def test_a_refer_the_carrier_refuses_carries_its_sip_status(status, code, http, reason):
    async with running() as lk:
        lk.sip_transfers.scripts[HUMAN] = ReferScript.refused(status)
        caller = join_caller(lk)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await expect_error(lk, transfer())
        assert loop.time() - started < 0.5  # the REFER's own answer, no ringing
        assert isinstance(error, SipCallError)
        message = f"sip status: {status}: {reason}"
        assert (error.code, error.status, error.message) == (
            code,
            http,
            f"twirp error unknown: {message}",
        )
        assert error.sip_status_code == status and error.sip_status == reason
        grpc_code, detail_message, type_url, detail = decode_error_details(
            error.metadata["error_details"]
        )
        assert detail_message == message and type_url.endswith("livekit.SIPStatus")
        assert (detail.code, detail.status) == (status, reason)
        await asyncio.sleep(0.2)
        assert caller.connected  # the call stays with the bot
        [record] = lk.sip_transfers.transfers
        assert (record.outcome, record.sip_status) == ("refused", status)


@pytest.mark.parametrize(
    "status, code, reason",
    [(486, "resource_exhausted", "Busy Here"), (480, "resource_exhausted", None), (603, None, "")],
)
async def test_a_target_that_fails_is_reported_by_the_notify(status, code, reason):
    async with running() as lk:
        lk.sip_transfers.scripts[HUMAN] = ReferScript.target_fails(status, reason, after=0.2)
        caller = join_caller(lk)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await expect_error(lk, transfer())
        assert 0.2 <= loop.time() - started < 0.8
        assert isinstance(error, SipCallError) and error.sip_status_code == status
        if reason == "":  # a sipfrag without a reason phrase: LiveKit's own names
            assert (
                error.message
                == "twirp error unknown: call transfer failed: sip status: 603 (GLOBAL_DECLINE)"
            )
            assert error.sip_status == "SIP_STATUS_GLOBAL_DECLINE"
            assert error.code == "permission_denied"
        else:
            phrase = reason or "Temporarily Unavailable"
            assert error.message == (
                f"twirp error unknown: call transfer failed: sip status: {status}: {phrase}"
            )
            assert (error.code, error.status, error.sip_status) == (code, 429, phrase)
        assert caller.connected
        assert lk.sip_transfers.transfers[0].outcome == "failed"


async def test_the_exact_body_of_a_busy_target():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript.target_fails(486, after=0.05)
        join_caller(lk)
        status, content_type, raw = await post(lk, body(), both_grants())
    assert (status, content_type) == (429, "application/json")
    answer = json.loads(raw)
    assert list(answer) == ["code", "msg", "meta"]
    assert list(answer["meta"]) == ["error_details", "sip_status", "sip_status_code"]
    assert answer["code"] == "resource_exhausted"
    assert answer["msg"] == "twirp error unknown: call transfer failed: sip status: 486: Busy Here"
    assert (answer["meta"]["sip_status"], answer["meta"]["sip_status_code"]) == ("Busy Here", "486")
    assert decode_error_details(answer["meta"]["error_details"])[:2] == (
        8,  # gRPC ResourceExhausted
        "call transfer failed: sip status: 486: Busy Here",
    )


async def test_a_participant_that_is_not_a_sip_call_cannot_be_transferred():
    async with running() as lk:
        join_caller(lk, identity="web-caller", kind="standard", call_id=None)
        error = await expect_error(lk, transfer(identity="web-caller"))
        assert (error.code, error.status, error.message) == (
            "invalid_argument",
            400,
            "twirp error unknown: no SIP session associated with participant",
        )
        error = await expect_error(lk, transfer(identity="nobody"))
        assert (error.code, error.status, error.message) == (
            "not_found",
            404,
            "twirp error unknown: participant does not exist",
        )
        assert lk.sip_transfers.transfers == []


async def test_a_call_id_no_sip_call_owns_is_never_answered():
    async with running() as lk:
        join_caller(lk, identity="pretender", kind="standard", call_id="SCL_notACall001")
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await expect_error(lk, transfer(identity="pretender", ring=0.3))
        assert 0.3 <= loop.time() - started < 0.8
        assert (error.code, error.status, error.message) == (
            "deadline_exceeded",
            408,
            "twirp error unknown: request timed out",
        )


@pytest.mark.parametrize(
    "grants",
    [
        {"video": VideoGrants(room_admin=True, room=ROOM)},  # no sip.call
        {"sip": SIPGrants(call=True)},  # no room admin
        {"sip": SIPGrants(call=True), "video": VideoGrants(room_admin=True, room="other")},
        {"sip": SIPGrants(admin=True), "video": VideoGrants(room_admin=True, room=ROOM)},
    ],
    ids=["no-sip-call", "no-room-admin", "admin-of-another-room", "sip-admin-is-not-call"],
)
async def test_missing_grants_are_401_permissions_denied(grants):
    async with running() as lk:
        caller = join_caller(lk)
        status, content_type, raw = await post(lk, body(), token(**grants))
        assert (status, content_type) == (401, "application/json")
        assert json.loads(raw) == {"code": "unauthenticated", "msg": "permissions denied"}
        assert caller.connected and lk.sip_transfers.transfers == []


async def test_room_and_identity_are_checked_before_the_grants():
    async with running() as lk:
        status, _, raw = await post(lk, body(room_name=""), None)
        assert status == 400
        assert json.loads(raw) == {
            "code": "invalid_argument",
            "msg": "twirp error unknown: Missing room name",
        }
        status, _, raw = await post(lk, body(participant_identity=""), token())
        assert json.loads(raw)["msg"] == "twirp error unknown: Missing participant identity"


@pytest.mark.parametrize(
    "to, msg",
    [
        (HUMAN, "transfer_to must be a valid SIP(s) or TEL URI (sip:, sips: or tel:)"),
        ("", "missing transfer to"),
    ],
)
async def test_transfer_to_must_be_a_sip_or_tel_uri(to, msg):
    async with running() as lk:
        join_caller(lk)
        error = await expect_error(lk, transfer(to=to))
        assert (error.code, error.status, error.message) == ("invalid_argument", 400, msg)


async def test_bad_headers_are_refused_as_for_a_dial():
    async with running() as lk:
        join_caller(lk)
        error = await expect_error(lk, transfer(headers={"Refer-To": "sip:x@y"}))
        assert error.code == "invalid_argument"
        assert error.message == "invalid header name: header name Refer-To not supported"


async def test_a_sip_uri_is_sent_in_angle_brackets_and_a_script_matches_its_user():
    async with running() as lk:
        lk.sip_transfers.scripts[HUMAN] = ReferScript.refused(603)
        join_caller(lk)
        error = await expect_error(lk, transfer(to=f"sip:{HUMAN}@pbx.example.com"))
        assert error.message.endswith("sip status: 603: Decline")
        assert lk.sip_transfers.transfers[0].transfer_to == f"<sip:{HUMAN}@pbx.example.com>"
    assert refer_destination("<sips:alice@pbx;transport=tls>") == "alice"
    assert refer_destination("tel:+15550100;ext=12") == "+15550100"


async def test_the_deadline_is_the_ringing_timeout_or_the_header_and_the_call_stays():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript(notify_after=5.0)
        caller = join_caller(lk)
        loop = asyncio.get_running_loop()
        started = loop.time()
        error = await expect_error(lk, transfer(ring=0.4))
        assert 0.4 <= loop.time() - started < 0.9
        assert (error.code, error.status, error.message) == (
            "deadline_exceeded",
            408,
            "twirp error unknown: request timed out",
        )
        started = loop.time()
        status, _, raw = await post(lk, body(), both_grants(), {"X-Twirp-Timeout-Ms": "300"})
        assert status == 408 and 0.3 <= loop.time() - started < 0.8
        await asyncio.sleep(0.2)
        assert caller.connected
        assert [t.outcome for t in lk.sip_transfers.transfers] == ["timed_out", "timed_out"]


async def test_a_client_that_gives_up_does_not_stop_the_transfer():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript(notify_after=0.4)
        caller = join_caller(lk)
        async with client(lk) as lkapi:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(lkapi.sip.transfer_sip_participant(transfer()), 0.1)
        await until(lambda: not caller.connected, 3.0)
        assert lk.sip_transfers.transfers[0].outcome == "transferred"


async def test_a_dial_that_still_rings_cannot_be_transferred():
    async with running(humans={HUMAN: HumanScript(answer_after=5.0)}) as lk:
        async with client(lk) as lkapi:
            await lkapi.sip.create_sip_participant(
                CreateSIPParticipantRequest(
                    sip_trunk_id=TRUNK,
                    sip_call_to=HUMAN,
                    room_name="consult",
                    participant_identity="human",
                )
            )
            with pytest.raises(api.ServerError) as caught:
                await lkapi.sip.transfer_sip_participant(
                    TransferSIPParticipantRequest(
                        room_name="consult", participant_identity="human", transfer_to="tel:+1555"
                    )
                )
        error = caught.value
        assert (error.code, error.status, error.message) == (
            "failed_precondition",
            412,
            "twirp error unknown: can't transfer non established call",
        )


async def test_a_second_transfer_waits_for_the_same_outcome_or_is_refused_elsewhere():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript(notify_after=0.3)
        caller = join_caller(lk)
        async with client(lk) as lkapi:
            first = asyncio.create_task(lkapi.sip.transfer_sip_participant(transfer()))
            await asyncio.sleep(0.1)
            with pytest.raises(api.ServerError) as caught:
                await lkapi.sip.transfer_sip_participant(transfer(to="tel:+15550177"))
            assert (caught.value.code, caught.value.message) == (
                "invalid_argument",
                "twirp error unknown: call already being transferred elsewhere",
            )
            again = await lkapi.sip.transfer_sip_participant(transfer())
            assert first.done() and await first == again
        assert len(lk.sip_transfers.transfers) == 1
        await until(lambda: not caller.connected, 2.0)


async def test_a_call_that_ends_while_the_target_rings_is_answered_as_success():
    async with running() as lk:
        lk.sip_transfers.default = ReferScript(notify_after=2.0)
        caller = join_caller(lk)
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, caller.disconnect)
        started = loop.time()
        async with client(lk) as lkapi:
            answer = await lkapi.sip.transfer_sip_participant(transfer())
        assert loop.time() - started < 1.0
        assert answer == sip_proto.TransferSIPParticipantResponse()
        assert lk.sip_transfers.transfers[0].outcome == "call_ended"


def test_refer_scripts_are_checked():
    with pytest.raises(ValueError):
        ReferScript(refer_status=180)
    with pytest.raises(ValueError):
        ReferScript.refused(202)
    with pytest.raises(ValueError):
        ReferScript.target_fails(200)
    with pytest.raises(ValueError):
        ReferScript(notify_after=-1)
    assert ReferScript().accepted and not ReferScript.refused(403).accepted


async def test_the_emulator_stops_a_transfer_under_way():
    lk = LiveKitEmulator(KEY, SECRET)
    await lk.start()
    lk.sip_transfers.default = ReferScript(notify_after=30.0)
    join_caller(lk)
    async with client(lk) as lkapi:
        pending = asyncio.create_task(lkapi.sip.transfer_sip_participant(transfer()))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await lk.stop()
        assert time.monotonic() - started < 3
        with contextlib.suppress(Exception):
            await pending
    assert not [t for t in asyncio.all_tasks() if "SipTransfers" in t.get_name()]


# `connect_mode: refer` through the core


def refer_bot(call, number=HUMAN, **backend_kwargs):
    """The smallest caller pipeline with a transfer in `refer` mode, on the call's backend."""
    transfer = WarmTransfer(
        backend=call.backend(**backend_kwargs),
        target=TransferTarget(number),
        # Short lines: the scripted voice takes its time over each word.
        briefing=BriefingParams(tts=ScriptedToneTTSService, connecting_message="It rings."),
        params=WarmTransferParams(
            connect_mode="refer",
            hold_message="Please hold.",
            hold_reminder=None,
            ring_timeout=3.0,
            connected_message=None,
            failure_messages={FailureReason.CONNECT_FAILED: "Sorry."},
        ),
        caller_room=call.room,
    )
    transport = call.transport(
        TransportParams(
            audio_in_enabled=True, audio_out_enabled=True, audio_out_mixer=transfer.hold_mixer
        )
    )
    transfer.watch_caller_transport(transport)
    pipeline = [
        transport.input(),
        transfer.caller_gate(),
        ScriptedToneTTSService(),
        transfer.caller_output(),
        transport.output(),
    ]
    return transfer, pipeline


def accepting_human():
    return HumanScript(answer_after=0.3, greeting=tone(660, 0.3)).dtmf(1.2, "1")


@pytest.fixture
def bridge_starts(monkeypatch):
    """Every `AudioBridge.start()` (none: the bot never relayed audio)."""
    started = []
    original = AudioBridge.start

    def start(self):
        started.append(self)
        original(self)

    monkeypatch.setattr(AudioBridge, "start", start)
    return started


async def test_a_whole_transfer_in_refer_mode_hands_the_callers_call_to_the_human(
    offline_call, livekit_emulator, scripted_humans, bridge_starts
):
    scripted_humans[HUMAN] = accepting_human()
    # The BYE well after LiveKit's answer (see the race below).
    livekit_emulator.sip_transfers.default = ReferScript(bye_after=0.3)
    transfer, pipeline = refer_bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=15)
    assert result.outcome == TransferOutcome.CONNECTED, result
    assert result.connect_mode == ConnectMode.REFER
    assert result.timings.accept_to_connected < 2.0
    connected = await offline_call.wait_for("connected")
    assert connected["mode"] == "refer"
    # The human was hung up first (their line is free), then the caller's call referred.
    methods = livekit_emulator.methods_called()
    assert "MoveParticipant" not in methods
    remove = methods.index("RemoveParticipant")
    assert methods.index("TransferSIPParticipant") > remove
    [human] = livekit_emulator.parties.values()
    assert human.ended and human.end_reason == "removed"
    [record] = livekit_emulator.sip_transfers.transfers
    assert (record.room, record.identity, record.transfer_to) == (
        offline_call.room,
        offline_call.caller_identity,
        f"tel:{HUMAN}",
    )
    assert record.outcome == "transferred" and record.play_dialtone
    # The bot left the media path: no bridge, and the caller's call left the room:
    # referred, not hung up.
    await offline_call.wait_for("teardown_done", timeout=5)
    names = [e["event"] for e in offline_call.events]
    assert "caller_referred" in names and "caller_hung_up" not in names, names
    assert not offline_call.caller.connected
    assert offline_call.caller.connection.attributes["sip.callStatus"] == "hangup"
    assert bridge_starts == []
    assert livekit_emulator.rooms.get_room(record.room).participants == ["transfer-bot"]
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings


@pytest.mark.parametrize("succeeds", [True, False], ids=["transferred", "target-busy"])
async def test_the_caller_hears_livekits_ringing_tone_not_the_room_while_referred(
    offline_call, livekit_emulator, scripted_humans, succeeds
):
    """`play_dialtone`: LiveKit swaps the room's audio to the caller for the ETSI ringing
    tone (425 Hz, 1 s on and 4 s off, half scale) until the transfer ends; a transfer
    that fails gives the room back (the bot tells the caller), one that goes through
    leaves the room off until the call ends."""
    scripted_humans[HUMAN] = accepting_human()
    script = (
        ReferScript(notify_after=1.6, bye_after=0.5)
        if succeeds
        else ReferScript.target_fails(486, after=1.6)
    )
    livekit_emulator.sip_transfers.default = script
    transfer, pipeline = refer_bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=15)
    await offline_call.wait_for("teardown_done", timeout=5)
    if not succeeds:
        await offline_call.wait_for("returned_to_caller", timeout=5)
        await asyncio.sleep(1.5)  # the bot's sentence, through the room again
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings
    [record] = livekit_emulator.sip_transfers.transfers
    assert record.play_dialtone
    caller = offline_call.caller
    rate = caller.sample_rate
    audio = caller.recording()
    start = record.events[0][0] - caller.t0 - script.refer_after  # the REFER went out
    end = record.events[1][0] - caller.t0  # the NOTIFY

    def span(a, b):
        return audio[int(a * rate) : int(b * rate)]

    ringing = span(start + 0.05, start + 0.95)
    assert abs(dominant_frequency(ringing, rate) - RINGBACK_HZ) < 5
    assert abs(rms_dbfs(ringing) + 9.0) < 0.5  # a half-scale sine
    assert rms_dbfs(span(start + 1.05, end - 0.05)) < -60  # the cadence's silence: no music
    tone = caller.heard_from(RINGBACK_SOURCE)
    assert rms_dbfs(tone[int(start * rate) + 800 :]) > -20
    bot = caller.heard_from("transfer-bot")
    after = bot[int(end * rate) + 1600 :]
    if succeeds:
        assert result.connect_mode == ConnectMode.REFER
        assert not after.any()  # the room's audio stayed off until the call left
    else:
        assert result.reason == FailureReason.CONNECT_FAILED
        assert rms_dbfs(after) > -40  # the room again: the bot takes the caller back


async def test_a_carrier_that_hangs_up_at_once_still_gives_a_connected_result(
    offline_call, livekit_emulator, scripted_humans
):
    """The carrier's BYE right at the NOTIFY 200 races LiveKit's answer to the bot."""
    scripted_humans[HUMAN] = accepting_human()
    livekit_emulator.sip_transfers.default = ReferScript(bye_after=0.0)
    transfer, pipeline = refer_bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=15)
    assert livekit_emulator.sip_transfers.transfers[0].outcome == "transferred"
    assert result.connect_mode == ConnectMode.REFER, result
    # The leave may come before LiveKit's answer: it waits for it, then says what it was.
    await offline_call.wait_for("teardown_done", timeout=5)
    names = [e["event"] for e in offline_call.events]
    assert "caller_referred" in names and "caller_hung_up" not in names, names


@pytest.mark.parametrize(
    "script, said",
    [
        (ReferScript.refused(603), "the caller's carrier refused the REFER (SIP 603 Decline"),
        (
            ReferScript.target_fails(486, after=0.2),
            "the human's line did not take the transferred call (SIP 486 Busy Here, busy)",
        ),
    ],
    ids=["refer-refused", "notify-busy"],
)
async def test_a_refer_that_fails_is_connect_failed_and_the_caller_is_taken_back(
    offline_call, livekit_emulator, scripted_humans, bridge_starts, script, said
):
    scripted_humans[HUMAN] = accepting_human()
    livekit_emulator.sip_transfers.scripts[HUMAN] = script
    transfer, pipeline = refer_bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=15)
    assert result.outcome == TransferOutcome.FAILED
    assert result.reason == FailureReason.CONNECT_FAILED and result.connect_mode is None
    assert said in result.detail, result.detail
    await offline_call.wait_for("returned_to_caller", timeout=5)
    await offline_call.wait_for("teardown_done", timeout=5)
    names = [e["event"] for e in offline_call.events]
    assert names.index("transfer_failed") < names.index("returned_to_caller")
    assert "connected" not in names and "caller_hung_up" not in names
    # The caller is still with the bot, which talks to them again; no bridge was opened.
    assert offline_call.caller.connected
    await until(lambda: transfer.state == TransferState.IDLE)
    assert bridge_starts == []
    assert livekit_emulator.sip_transfers.transfers[0].outcome in ("refused", "failed")
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings


async def test_a_webrtc_caller_cannot_be_referred_and_the_human_is_not_hung_up_first():
    """The in-memory caller of `CallHarness` joins as a standard (WebRTC) participant."""
    script = human_script_accepting()
    async with CallHarness(
        humans={HUMAN: script},
        livekit=True,
        params=fast_params(
            connect_mode="refer", failure_messages={FailureReason.CONNECT_FAILED: "Sorry."}
        ),
    ) as call:
        assert await call.transfer.start_transfer("billing")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
        methods = call.emulator.methods_called()
    [result] = call.report.results
    assert result.reason == FailureReason.CONNECT_FAILED
    assert "refer unavailable" in result.detail and "not a SIP call" in result.detail
    assert "TransferSIPParticipant" not in methods
    # Nothing was removed before the caller was told: the hang-up is the teardown's.
    assert methods.index("GetParticipant") < methods.index("RemoveParticipant")


def human_script_accepting():
    return HumanScript(answer_after=0.3).dtmf(1.0, "1")


# The in-memory backend and the strategy


async def test_the_in_memory_backend_refers_a_sip_caller_after_hanging_up_the_human():
    server = MemoryRoomServer()
    caller = server.connect("caller-room", "caller", "sip")
    backend = InMemoryBackend(server, {HUMAN: HumanScript(answer_after=0.05)})
    leg = await backend.open_leg(dial_request())
    await leg.dial()
    human = leg.party
    loop = asyncio.get_running_loop()
    started = loop.time()
    mode = await strategy_for(ConnectMode.REFER).join(
        Join(leg=leg, caller_room="caller-room", can_move=True, open_bridge=_no_bridge)
    )
    assert mode == ConnectMode.REFER
    assert loop.time() - started >= 0.3  # the REFER's answer and the target's ringing
    assert human.ended and human.end_reason == "removed"
    assert backend.referred == [("caller-room", "caller", HUMAN)]
    assert caller.connected  # leaves at the carrier's BYE
    await until(lambda: not caller.connected, 1.0)
    await leg.close()
    await backend.close()
    assert server.leftovers() == {"rooms": 1, "participants": 0, "connections": 0}


async def test_the_in_memory_backend_reports_a_refused_refer_with_its_status():
    server = MemoryRoomServer()
    caller = server.connect("caller-room", "caller", "sip")
    backend = InMemoryBackend(
        server, {HUMAN: HumanScript(answer_after=0.05)}, refer=ReferScript.refused(403)
    )
    leg = await backend.open_leg(dial_request())
    await leg.dial()
    with pytest.raises(ReferError) as caught:
        await ReferStrategy().join(
            Join(leg=leg, caller_room="caller-room", can_move=True, open_bridge=_no_bridge)
        )
    assert caught.value.sip_status == 403
    assert caught.value.reason == FailureReason.DIAL_FAILED
    assert "SIP 403 Forbidden" in str(caught.value)
    assert caller.connected
    await backend.close()


async def test_a_caller_that_is_not_sip_is_unavailable_before_the_human_is_hung_up():
    server = MemoryRoomServer()
    server.connect("caller-room", "caller", "standard")
    backend = InMemoryBackend(server, {HUMAN: HumanScript(answer_after=0.05)})
    leg = await backend.open_leg(dial_request())
    await leg.dial()
    join = Join(leg=leg, caller_room="caller-room", can_move=True, open_bridge=_no_bridge)
    with pytest.raises(ModeUnavailableError, match="not one"):
        await ReferStrategy().join(join)
    join.caller_identity = "caller"
    with pytest.raises(ModeUnavailableError, match="not a SIP call"):
        await ReferStrategy().join(join)
    with pytest.raises(ModeUnavailableError, match="room is unknown"):
        await ReferStrategy().join(
            Join(leg=leg, caller_room=None, can_move=True, open_bridge=_no_bridge)
        )
    assert leg.party.connected and backend.referred == []
    await backend.close()


async def test_a_leg_without_refer_makes_the_mode_unavailable():
    class NoReferLeg(ConsultLeg):
        transport = None

        async def dial(self):
            pass

        async def move_to(self, caller_room):
            pass

        async def hang_up(self):
            raise AssertionError("the human must not be hung up")

        async def close(self):
            pass

    leg = NoReferLeg(dial_request())
    join = Join(leg=leg, caller_room="caller-room", can_move=True, open_bridge=_no_bridge)
    with pytest.raises(ModeUnavailableError, match="cannot refer"):
        await strategy_for(ConnectMode.REFER).join(join)


def dial_request():
    return DialRequest(
        target=TransferTarget(HUMAN),
        consult_room="consult-1",
        human_identity="human-1",
        bot_identity="bot",
        ring_timeout=2.0,
        caller_room="caller-room",
    )


def _no_bridge():
    raise AssertionError("refer never opens the bridge")


# The LiveKit backend's mapping and the YAML


def test_refer_targets_are_tel_or_sip_uris():
    assert refer_uri("+15550100") == "tel:+15550100"
    assert refer_uri("tel:+15550100") == "tel:+15550100"
    assert refer_uri("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"


def test_a_failure_livekit_reports_in_a_200_answer_is_a_refer_error():
    """A SIP service reporting outcomes (livekit/sip TEL-911) fails with a 200 answer."""
    ok = sip_proto.TransferSIPParticipantResponse()
    assert _refer_failure(ok) is None
    done = sip_proto.TransferSIPParticipantResponse(
        status=sip_proto.SIPTransferStatus.STS_TRANSFER_SUCCESSFUL,
        reason=sip_proto.SIPTransferReason.STR_COMPLETED,
    )
    assert _refer_failure(done) is None
    rejected = sip_proto.TransferSIPParticipantResponse(
        status=sip_proto.SIPTransferStatus.STS_TRANSFER_FAILED,
        reason=sip_proto.SIPTransferReason.STR_REJECTED,
        sip_status=sip_proto.SIPStatus(code=486, status="Busy Here"),
    )
    error = _refer_failure(rejected)
    assert isinstance(error, ReferError) and error.sip_status == 486
    assert str(error) == "the transfer failed (rejected, SIP 486 Busy Here)"
    assert error.reason == FailureReason.BUSY
    ended = sip_proto.TransferSIPParticipantResponse(
        status=sip_proto.SIPTransferStatus.STS_TRANSFER_FAILED,
        reason=sip_proto.SIPTransferReason.STR_CALL_ENDED,
    )
    assert str(_refer_failure(ended)) == "the transfer failed (call_ended)"


async def test_livekit_errors_of_a_refer_are_mapped():
    async with running() as lk:
        join_caller(lk)
        backend = LiveKitSipBackend(lk.url, KEY, SECRET, trunk_id=TRUNK)
        leg = await backend.open_leg(dial_request())
        lk.sip_transfers.default = ReferScript(notify_after=5.0)
        leg.request.ring_timeout = 0.3
        with pytest.raises(ReferError, match=r"not answered within 0\.3 s") as caught:
            await leg.refer_caller(ROOM, CALLER, HUMAN)
        assert caught.value.sip_status is None
        join_caller(lk, identity="web", kind="standard", call_id=None)
        with pytest.raises(ReferUnsupportedError, match="not a SIP call"):
            await leg.find_sip_caller(ROOM, "web")
        with pytest.raises(ReferUnsupportedError, match="not in their room"):
            await leg.find_sip_caller(ROOM, "nobody")
        assert await leg.find_sip_caller(ROOM, None) == CALLER
        with pytest.raises(ReferUnsupportedError, match="not a SIP call"):
            await leg.refer_caller(ROOM, "web", HUMAN)
        await leg.close()
        await backend.close()
        # Each REFER is sent once (no failover replay), with the least grants.
        assert lk.methods_called().count("TransferSIPParticipant") == 2


def test_yaml_connect_mode_refer_validates_and_tells_the_human_their_phone_will_ring(tmp_path):
    text = (
        "services:\n  stt: {provider: scripted}\n  llm: {provider: scripted}\n"
        "  tts: {provider: scripted}\ntransfer:\n  target:\n    number: '+15551234567'\n"
        "  connect_mode: refer\n"
    )
    path = tmp_path / "bot.yaml"
    path.write_text(text, encoding="utf-8")
    settings = load_config(path, environ={}).transfer_settings()
    assert settings.params.connect_mode == ConnectMode.REFER
    assert settings.briefing_options["connecting_message"] == REFER_CONNECTING_MESSAGE
    path.write_text(
        text + "  messages:\n    human:\n      connecting: Ringing you now.\n", encoding="utf-8"
    )
    settings = load_config(path, environ={}).transfer_settings()
    assert settings.briefing_options["connecting_message"] == "Ringing you now."
    assert validate_config_file(path, environ={}) == []
