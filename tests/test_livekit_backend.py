"""LiveKitSipBackend against the LiveKit emulator over loopback HTTP (real livekit-api)."""

import asyncio
import time

import numpy as np
import pytest
from livekit.api import LiveKitAPI, TokenVerifier
from livekit.protocol.sip import CreateSIPParticipantRequest, SIPOutboundConfig
from loguru import logger
from pipecat.frames.frames import OutputAudioRawFrame, UserAudioRawFrame

from pipecat_warm_transfer.audio.metrics import dominant_frequency
from pipecat_warm_transfer.backends.livekit import (
    LiveKitSipBackend,
    default_consult_params,
    livekit_transport_factory,
)
from pipecat_warm_transfer.consult_leg import (
    ConnectError,
    DialError,
    DialRequest,
    MoveUnsupportedError,
    TransferTarget,
)
from pipecat_warm_transfer.testing import (
    FrameCapture,
    HumanScript,
    PipelineRun,
    ScriptedParty,
    tone,
)
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness, fast_params
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TransferConfigError,
    TransferOutcome,
)

KEY = "APIbackendkey"
SECRET = "backend-secret-0123456789abcdef0123456"
ZERO = {"rooms": 0, "participants": 0, "connections": 0}
NUMBER = "+15550100"
RATE = 16000
CONSULT = "consult-1"


@pytest.fixture
async def lk():
    before = asyncio.all_tasks()
    humans = {NUMBER: HumanScript(answer_after=0.05)}
    async with LiveKitEmulator(KEY, SECRET, humans=humans, trunks=["ST_trunk"]) as emu:
        yield emu
        # Every test tears down what it made: nothing may be left while the server runs.
        assert await emu.settle() == ZERO
        current = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
        assert not left, left


def make_backend(emu, **kwargs):
    kwargs.setdefault("trunk_id", "ST_trunk")
    kwargs.setdefault("transport_factory", emu.transport_factory())
    kwargs.setdefault("api_timeout", 2.0)
    kwargs.setdefault("dial_grace", 0.5)
    return LiveKitSipBackend(emu.url, KEY, SECRET, **kwargs)


def request(number=NUMBER, ring_timeout=1.0, consult=CONSULT, **target):
    return DialRequest(
        target=TransferTarget(number, **target),
        consult_room=consult,
        human_identity="human-1",
        bot_identity="bot",
        ring_timeout=ring_timeout,
        caller_room="call",
    )


def sent(emu, method):
    return [fields for name, fields, _ in emu.requests if name == method]


def grants(emu, method):
    return [g for name, g in emu.request_grants if name == method]


async def _record(items, value):
    items.append(value)


# Settings


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LIVEKIT_URL", "wss://example.livekit.cloud")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIenv")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "env-secret-value-0123456789")
    monkeypatch.setenv("LIVEKIT_SIP_OUTBOUND_TRUNK", "ST_env")
    monkeypatch.setenv("LIVEKIT_SIP_NUMBER", "+15550000001")
    backend = LiveKitSipBackend()
    assert backend.url == "wss://example.livekit.cloud" and backend.api_key == "APIenv"
    assert backend.trunk_id == "ST_env" and backend.caller_id == "+15550000001"
    assert backend.supports_move is True
    assert "env-secret-value" not in repr(backend)


@pytest.mark.parametrize(
    ("missing", "field"),
    [("LIVEKIT_URL", "url"), ("LIVEKIT_API_KEY", "api_key"), ("LIVEKIT_API_SECRET", "api_secret")],
)
def test_missing_settings_are_named_in_one_line(monkeypatch, missing, field):
    monkeypatch.setenv("LIVEKIT_URL", "https://lk.example.com")
    monkeypatch.setenv("LIVEKIT_API_KEY", "APIenv")
    monkeypatch.setenv("LIVEKIT_API_SECRET", "env-secret-value-0123456789")
    monkeypatch.delenv(missing)
    with pytest.raises(TransferConfigError) as info:
        LiveKitSipBackend()
    message = str(info.value)
    assert message.startswith(f"{field}:") and missing in message and "\n" not in message
    assert "env-secret-value" not in message


def test_bad_settings_are_refused():
    with pytest.raises(TransferConfigError, match="^url:"):
        LiveKitSipBackend("ftp://x", "k", "s")
    with pytest.raises(TransferConfigError, match="^caller_id:"):
        LiveKitSipBackend("wss://x", "k", "s", caller_id="12")
    with pytest.raises(TransferConfigError, match="^outbound_trunk.hostname:"):
        LiveKitSipBackend("wss://x", "k", "s", outbound_trunk=SIPOutboundConfig())
    with pytest.raises(TransferConfigError, match="^dial_grace:"):
        LiveKitSipBackend("wss://x", "k", "s", dial_grace=0)
    with pytest.raises(TransferConfigError, match="^status_poll_interval:"):
        LiveKitSipBackend("wss://x", "k", "s", status_poll_interval=-0.5)


def test_a_status_poll_interval_of_zero_turns_polling_off():
    """0 is the documented "never poll" value, not a bad interval."""
    assert LiveKitSipBackend("wss://x", "k", "s", status_poll_interval=0).status_poll_interval == 0
    backend = LiveKitSipBackend("wss://x", "k", "s", status_poll_interval=0.25)
    assert backend.status_poll_interval == 0.25


async def test_a_trunk_is_required_before_any_call(lk, monkeypatch):
    monkeypatch.delenv("LIVEKIT_SIP_OUTBOUND_TRUNK", raising=False)
    backend = make_backend(lk, trunk_id=None)
    with pytest.raises(TransferConfigError, match="^trunk_id:"):
        await backend.open_leg(request())
    assert lk.requests == []
    leg = await backend.open_leg(request(route="ST_target"))  # the target's own trunk
    await leg.close()
    await backend.close()


# A whole leg


def test_the_default_transport_is_pipecats_livekit_transport():
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

    backend = LiveKitSipBackend("https://lk.example.com", "APIkey", SECRET, trunk_id="ST_1")
    assert backend.rtc_url == "wss://lk.example.com"
    token = backend.consult_token(CONSULT, "bot")
    transport = livekit_transport_factory(
        backend.rtc_url, token, CONSULT, "bot", default_consult_params(RATE)
    )
    assert isinstance(transport, LiveKitTransport)
    assert isinstance(transport.input()._params, LiveKitParams)
    assert transport.input()._params.audio_in_sample_rate == RATE


async def test_dial_brief_move_and_close_leaves_only_the_call():
    humans = {NUMBER: HumanScript(answer_after=0.1, greeting=tone(800, 0.3, RATE, -20))}
    async with LiveKitEmulator(KEY, SECRET, humans=humans, trunks=["ST_trunk"]) as lk:
        tokens = []
        factory = lk.transport_factory()

        def capturing_factory(url, token, room_name, identity, params):
            tokens.append((url, token, room_name, identity))
            return factory(url, token, room_name, identity, params)

        backend = make_backend(
            lk,
            caller_id="+15550000001",
            krisp_enabled=True,
            play_dialtone=True,
            transport_factory=capturing_factory,
        )
        caller = ScriptedParty(lk.rooms, "call", "caller", sample_rate=RATE)
        await caller.start()
        leg = await backend.open_leg(
            request(
                display_name="Dana",
                headers={"X-Reason": "billing"},
                dtmf="ww12",
                ring_timeout=1.5,
            )
        )
        left = []
        leg.on_human_left(lambda reason: _record(left, reason))
        await leg.dial()
        assert leg.answered and lk.rooms.get_room(CONSULT).kind_of("human-1") == "sip"
        assert leg.participant.participant_identity == "human-1"

        (fields,) = sent(lk, "CreateSIPParticipant")
        assert fields == {
            "sip_trunk_id": "ST_trunk",
            "sip_call_to": NUMBER,
            "sip_number": "+15550000001",
            "room_name": CONSULT,
            "participant_identity": "human-1",
            "participant_name": "Dana",
            "dtmf": "ww12",
            "play_dialtone": True,
            "headers": {"X-Reason": "billing"},
            "ringing_timeout": "1.500s",
            "krisp_enabled": True,
            "wait_until_answered": True,
        }
        (dial_grants,) = grants(lk, "CreateSIPParticipant")
        assert dial_grants["sip"] == {"call": True}
        assert not {"room_admin", "room_create", "room_join", "room_list"} & set(
            dial_grants["video"]
        )

        # The briefing pipeline on the consult transport hears the human and is heard.
        transport = leg.transport
        assert leg.transport is transport
        ((url, token, room_name, identity),) = tokens
        assert url.startswith("ws://127.0.0.1:") and (room_name, identity) == (CONSULT, "bot")
        claims = TokenVerifier(KEY, SECRET).verify(token)
        assert claims.identity == "bot" and claims.video.room_join
        assert claims.video.room == CONSULT
        assert not (claims.video.room_admin or claims.video.room_create or claims.video.room_list)
        assert not claims.sip.call and not claims.sip.admin
        with pytest.raises(PermissionError):
            lk.check_join_token(token, "call", "bot")  # cannot join the caller's room

        capture = FrameCapture(UserAudioRawFrame)
        async with PipelineRun([transport.input(), capture, transport.output()]) as run:
            await run.worker.queue_frame(
                OutputAudioRawFrame(
                    audio=tone(600, 0.3, RATE, -20), sample_rate=RATE, num_channels=1
                )
            )
            async with asyncio.timeout(3):
                await capture.wait_for(
                    lambda f: (
                        f.user_id == "human-1"
                        and np.abs(np.frombuffer(f.audio, np.int16)).max() > 2000
                    )
                )
            await asyncio.sleep(0.35)
            await leg.move_to("call")
        assert leg.moved and lk.parties["human-1"].room == "call"
        (move,) = grants(lk, "MoveParticipant")
        assert move["video"]["room_admin"] and move["video"]["room"] == CONSULT
        assert move["video"]["destination_room"] == "call"
        heard = np.frombuffer(
            b"".join(f.audio for f in capture.of_type(UserAudioRawFrame)), np.int16
        )
        onset = int(np.argmax(np.abs(heard) > 2000))
        assert abs(dominant_frequency(heard[onset + 320 : onset + 3200], RATE) - 800) < 10
        bot = lk.parties["human-1"].heard_from("bot")
        onset = int(np.argmax(np.abs(bot) > 2000))
        assert abs(dominant_frequency(bot[onset + 320 : onset + 3520], RATE) - 600) < 10

        await leg.close()
        assert lk.rooms.get_room(CONSULT) is None
        assert "RemoveParticipant" not in lk.methods_called()  # moved: not hung up
        assert (await lk.settle())["connections"] == 2  # only caller and human media
        assert lk.rooms.get_room("call").participants == ["caller", "human-1"]
        await leg.close()  # idempotent

        await leg.hang_up()  # later: the caller hung up
        assert sent(lk, "RemoveParticipant") == [{"room": "call", "identity": "human-1"}]
        assert lk.parties["human-1"].end_reason == "removed"
        await leg.hang_up()  # idempotent
        assert len(sent(lk, "RemoveParticipant")) == 1
        assert left == []  # our own hang-up and the move are not "the human left"
        await caller.close()
        lk.rooms.delete_room("call")
        await backend.close()
        assert await lk.settle() == ZERO


# Dial outcomes


@pytest.mark.parametrize(
    ("number", "script", "reason", "status"),
    [
        ("+15550186", HumanScript(outcome="busy", answer_after=0.02), FailureReason.BUSY, 486),
        ("+15550160", HumanScript(outcome="busy", sip_status=600), FailureReason.BUSY, 600),
        ("+15550108", HumanScript(outcome="no_answer", sip_status=408), "no_answer", 408),
        # LiveKit's own ring-out: no SIP status at all.
        ("+15550180", HumanScript(outcome="no_answer"), FailureReason.NO_ANSWER, None),
        ("+15550181", HumanScript(answer_after=5.0), FailureReason.NO_ANSWER, None),
        # The carrier gives up first: its 480 is kept.
        (
            "+15550182",
            HumanScript(outcome="no_answer", sip_status=480, answer_after=0.05),
            FailureReason.NO_ANSWER,
            480,
        ),
        ("+15550187", HumanScript(outcome="fail", sip_status=487), FailureReason.NO_ANSWER, 487),
        ("+15550163", HumanScript(outcome="decline"), FailureReason.DECLINED, 603),
        ("+15550199", None, FailureReason.DIAL_FAILED, 404),
        ("+15550150", HumanScript(outcome="fail"), FailureReason.DIAL_FAILED, 500),
        ("+15550153", HumanScript(outcome="fail", sip_status=503), FailureReason.DIAL_FAILED, 503),
    ],
)
async def test_sip_statuses_map_to_reasons(lk, number, script, reason, status):
    if script is not None:
        lk.humans[number] = script
    backend = make_backend(lk)
    leg = await backend.open_leg(request(number, ring_timeout=0.15))
    with pytest.raises(DialError) as info:
        await leg.dial()
    assert info.value.reason == reason and info.value.sip_status == status
    if status is None:
        assert info.value.detail == (
            "nobody answered: LiveKit ended the ringing (0.15 s ring timeout)"
        )
    else:
        assert str(status) in info.value.detail
    assert leg.dial_error is info.value
    await leg.close()
    assert lk.methods_called() == ["CreateSIPParticipant", "DeleteRoom"]  # nobody to hang up
    await backend.close()


@pytest.mark.parametrize(
    ("fault", "took_at_most"),
    [
        (lambda lk: lk.fail_next("CreateSIPParticipant", 503), 0.3),
        (lambda lk: lk.fail_next("CreateSIPParticipant", 500), 0.3),
        (lambda lk: lk.fail_next("CreateSIPParticipant", "unavailable"), 0.3),
        (lambda lk: lk.fail_next("CreateSIPParticipant", "invalid_argument"), 0.3),
        (lambda lk: lk.drop_next("CreateSIPParticipant"), 0.3),
        # The client waits out the ring timeout, the join margin and its slack (1 s).
        (lambda lk: lk.latency("CreateSIPParticipant", 5.0), 0.2 + 0.3 + 1.0 + 0.3),
    ],
)
async def test_api_failures_and_timeouts_are_dial_failed(lk, fault, took_at_most):
    fault(lk)
    backend = make_backend(lk, dial_grace=0.3)
    leg = await backend.open_leg(request(ring_timeout=0.2))
    started = time.monotonic()
    with pytest.raises(DialError) as info:
        await leg.dial()
    assert time.monotonic() - started < took_at_most
    assert info.value.reason == FailureReason.DIAL_FAILED and info.value.sip_status is None
    await leg.close()
    assert lk.rooms.get_room(CONSULT) is None
    await backend.close()
    lk.clear_faults()


async def test_deadline_without_sip_status_is_no_answer(lk):
    lk.fail_next("CreateSIPParticipant", "deadline_exceeded")
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    with pytest.raises(DialError) as info:
        await leg.dial()
    assert info.value.reason == FailureReason.NO_ANSWER and info.value.sip_status is None
    await leg.close()
    await backend.close()


async def test_wrong_secret_is_dial_failed_without_echoing_secrets(lk):
    logs = []
    sink = logger.add(lambda message: logs.append(str(message)), level="DEBUG")
    try:
        wrong = "the-wrong-secret-0123456789abcdef012345"
        backend = LiveKitSipBackend(
            lk.url, KEY, wrong, trunk_id="ST_trunk", transport_factory=lk.transport_factory()
        )
        leg = await backend.open_leg(request())
        with pytest.raises(DialError) as info:
            await leg.dial()
        assert info.value.reason == FailureReason.DIAL_FAILED
        assert info.value.detail == "CreateSIPParticipant: the API key or secret was refused"
        await leg.close()  # its DeleteRoom is refused too: logged, not raised
        assert lk.methods_called() == ["CreateSIPParticipant", "DeleteRoom"]
        await backend.close()
        good = make_backend(lk)
        leg = await good.open_leg(request())
        await leg.dial()
        leg.transport  # noqa: B018 - mints the join token
        await leg.close()
        await good.close()
    finally:
        logger.remove(sink)
    text = "".join(logs)
    assert wrong not in text and SECRET not in text
    assert "eyJ" not in text  # no JWT


async def test_inline_outbound_trunk_and_pre_created_room(lk):
    trunk = SIPOutboundConfig(hostname="sip.example.com", auth_username="u", auth_password="p")
    backend = make_backend(
        lk,
        trunk_id=None,
        outbound_trunk=trunk,
        create_consult_room=True,
        caller_id="+15550000001",
    )
    leg = await backend.open_leg(request())
    await leg.dial()
    assert lk.methods_called() == ["CreateRoom", "CreateSIPParticipant"]
    assert sent(lk, "CreateRoom") == [{"name": CONSULT, "empty_timeout": 60}]
    (fields,) = sent(lk, "CreateSIPParticipant")
    assert "sip_trunk_id" not in fields and fields["trunk"]["hostname"] == "sip.example.com"
    (create,) = grants(lk, "CreateRoom")
    assert create["video"].get("room_create") and "room_admin" not in create["video"]
    await leg.close()
    assert lk.methods_called()[-2:] == ["RemoveParticipant", "DeleteRoom"]
    (delete,) = grants(lk, "DeleteRoom")
    assert delete["video"].get("room_create") and "room_admin" not in delete["video"]
    await backend.close()


# Move


async def test_open_source_server_has_no_move(lk):
    lk.oss = True
    backend = make_backend(lk)  # supports_move=None: find out
    assert backend.supports_move
    leg = await backend.open_leg(request())
    await leg.dial()
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")
    assert not backend.supports_move and not leg.moved
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")  # no second API call
    assert lk.methods_called().count("MoveParticipant") == 1
    await leg.close()
    assert lk.methods_called()[-2:] == ["RemoveParticipant", "DeleteRoom"]

    explicit = make_backend(lk, supports_move=True)
    leg = await explicit.open_leg(request(consult="consult-2"))
    await leg.dial()
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")
    assert explicit.supports_move  # told to keep trying
    await leg.close()

    never = make_backend(lk, supports_move=False)
    assert not never.supports_move
    leg = await never.open_leg(request(consult="consult-3"))
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")
    await leg.close()
    assert lk.methods_called().count("MoveParticipant") == 2
    for b in (backend, explicit, never):
        await b.close()


async def test_move_failures_are_connect_errors(lk):
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    with pytest.raises(ConnectError):
        await leg.move_to("call")  # not answered yet
    await leg.dial()
    lk.fail_next("MoveParticipant", 500)
    with pytest.raises(ConnectError, match="internal"):
        await leg.move_to("call")
    assert not leg.moved and lk.rooms.get_room(CONSULT).participants == ["human-1"]
    await leg.close()
    with pytest.raises(ConnectError):
        await leg.move_to("call")
    await backend.close()


# Teardown


async def test_missing_room_and_participant_are_fine_at_teardown(lk):
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    await leg.dial()
    lk.rooms.delete_room(CONSULT)  # gone already (e.g. deleted by an operator)
    await leg.close()
    assert lk.methods_called() == ["CreateSIPParticipant", "RemoveParticipant", "DeleteRoom"]
    await backend.close()


async def test_regression_consult_room_closed_after_a_successful_leg(lk):
    """Review defect 1: the consult room was never disconnected after completion."""
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    await leg.dial()
    transport = leg.transport
    async with PipelineRun([transport.input(), transport.output()]):
        await asyncio.sleep(0.1)
        assert sorted(lk.rooms.get_room(CONSULT).participants) == ["bot", "human-1"]
    # Bridged (not moved): the core closes the leg when the transfer ends.
    await leg.close()
    assert lk.rooms.get_room(CONSULT) is None
    assert await lk.settle() == ZERO  # room, SIP participant and HTTP session all gone
    assert lk.parties["human-1"].end_reason == "removed"
    await backend.close()


async def test_regression_nothing_left_when_the_call_fails_after_the_room_was_joined(lk):
    """Review defect 2: room and session leaked when the SIP call failed after joining."""
    lk.humans[NUMBER] = HumanScript(outcome="busy", answer_after=0.2)
    backend = make_backend(lk, create_consult_room=True)
    leg = await backend.open_leg(request())
    transport = leg.transport
    async with PipelineRun([transport.input(), transport.output()]):
        await asyncio.sleep(0.05)
        bot = lk.rooms.get_room(CONSULT)
        assert bot is not None and bot.participants == ["bot"]  # joined before the dial
        connection = transport.connection
        with pytest.raises(DialError) as info:
            await leg.dial()
        assert info.value.reason == FailureReason.BUSY
        await leg.close()
        assert lk.rooms.get_room(CONSULT) is None
        assert connection.disconnect_reason == "room_deleted"
    assert lk.methods_called() == ["CreateRoom", "CreateSIPParticipant", "DeleteRoom"]
    assert await lk.settle() == ZERO
    await backend.close()


async def test_a_dial_cancelled_mid_request_leaves_nothing(lk):
    lk.humans[NUMBER] = HumanScript(answer_after=0.3)
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    task = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await leg.close()
    assert lk.rooms.get_room(CONSULT) is None
    await asyncio.sleep(0.35)  # past the answer: the abandoned call never joins
    assert "human-1" not in lk.parties and lk.rooms.get_room(CONSULT) is None
    await backend.close()


async def test_close_during_a_dial_cancels_it(lk):
    lk.humans[NUMBER] = HumanScript(answer_after=0.5)
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    task = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await leg.close()
    with pytest.raises(DialError) as info:
        await task
    assert info.value.reason == FailureReason.CANCELLED
    assert time.monotonic() - started < 0.3
    with pytest.raises(DialError):
        await leg.dial()  # closed
    await asyncio.sleep(0.45)
    assert "human-1" not in lk.parties and lk.rooms.get_room(CONSULT) is None
    await backend.close()


async def test_close_while_the_room_is_being_created(lk):
    lk.latency("CreateRoom", 0.3)
    backend = make_backend(lk, create_consult_room=True)
    leg = await backend.open_leg(request())
    task = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.1)
    await leg.close()
    with pytest.raises(DialError) as info:
        await task
    assert info.value.reason == FailureReason.CANCELLED
    assert lk.methods_called() == ["CreateRoom", "DeleteRoom"]  # never dialed
    assert lk.rooms.get_room(CONSULT) is None
    await backend.close()


async def test_teardown_survives_a_server_that_went_away():
    humans = {NUMBER: HumanScript()}
    async with LiveKitEmulator(KEY, SECRET, humans=humans, trunks=["ST_trunk"]) as lk:
        backend = make_backend(lk, api_timeout=0.5)
        leg = await backend.open_leg(request())
        await leg.dial()
    await leg.close()  # connection refused: logged, not raised
    await leg.hang_up()
    await backend.close()
    assert leg.closed


async def test_backend_close_closes_open_legs(lk):
    backend = make_backend(lk, hang_up_moved_on_close=True)
    leg = await backend.open_leg(request())
    await leg.dial()
    moved = await backend.open_leg(request(consult="consult-2"))
    await moved.dial()
    lk.rooms.create_room("call")
    await moved.move_to("call")
    await backend.close()
    assert leg.closed and moved.closed
    assert lk.rooms.get_room("call").participants == []  # the moved human was hung up
    lk.rooms.delete_room("call")


# The human leaving


async def test_the_human_hanging_up_is_reported_once(lk):
    lk.humans[NUMBER] = HumanScript(answer_after=0.02, hang_up_after=0.2)
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    left = []
    leg.on_human_left(lambda reason: _record(left, reason))
    await leg.dial()
    transport = leg.transport
    async with PipelineRun([transport.input(), transport.output()]):
        await asyncio.sleep(0.5)  # the human hangs up 0.2 s after answering
    assert left == ["disconnected"]
    await leg.close()
    assert "RemoveParticipant" not in lk.methods_called()  # already gone
    await backend.close()


async def test_our_own_hang_up_is_not_reported(lk):
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    left = []
    leg.on_human_left(lambda reason: _record(left, reason))
    await leg.dial()
    transport = leg.transport
    async with PipelineRun([transport.input(), transport.output()]):
        await asyncio.sleep(0.05)
        await leg.hang_up()
        await asyncio.sleep(0.1)
        assert transport.get_participants() == []
    assert left == []
    await leg.close()
    await backend.close()


# The whole transfer through the core, over HTTP


def _harness_backend(lk, **kwargs):
    def factory(server, t0):
        lk.rooms, lk.t0 = server, t0
        return make_backend(lk, hang_up_moved_on_close=True, **kwargs)

    return factory


async def _run_transfer(lk, until):
    lk.humans[NUMBER] = HumanScript(answer_after=0.3, greeting=tone(500, 0.3)).dtmf(0.8, "1")
    async with CallHarness(
        backend_factory=_harness_backend(lk), params=fast_params(ring_timeout=2.0)
    ) as call:
        assert await call.transfer.start_transfer("billing dispute")
        for event in until:
            await call.wait_for(event)
    return call


async def test_the_core_connects_by_move_over_livekit(lk):
    call = await _run_transfer(lk, until=["connected", "teardown_done"])
    (result,) = call.report.results
    assert result.outcome == TransferOutcome.CONNECTED and result.connect_mode == ConnectMode.MOVE
    assert "human_hung_up" not in call.report.event_names()  # the move is not a hang-up
    assert {k: call.report.leaks[k] for k in ZERO} == ZERO
    assert lk.methods_called() == [
        "CreateSIPParticipant",
        "MoveParticipant",
        "DeleteRoom",
        "RemoveParticipant",
    ]


async def test_the_core_bridges_on_an_open_source_server(lk):
    lk.oss = True
    call = await _run_transfer(lk, until=["connected"])  # bridged until the call ends
    (result,) = call.report.results
    assert result.outcome == TransferOutcome.CONNECTED
    assert result.connect_mode == ConnectMode.BRIDGE
    assert {k: call.report.leaks[k] for k in ZERO} == ZERO
    assert lk.methods_called()[:2] == ["CreateSIPParticipant", "MoveParticipant"]
    assert lk.methods_called()[-1] == "DeleteRoom"


async def test_the_core_returns_the_caller_on_busy(lk):
    lk.humans[NUMBER] = HumanScript(outcome="busy", answer_after=0.3)
    async with CallHarness(
        backend_factory=_harness_backend(lk), params=fast_params(ring_timeout=2.0)
    ) as call:
        assert await call.transfer.start_transfer("billing dispute")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.BUSY and result.sip_status == 486
    assert {k: call.report.leaks[k] for k in ZERO} == ZERO
    assert lk.methods_called() == ["CreateSIPParticipant", "DeleteRoom"]


async def test_teardown_retries_a_transient_delete_room_failure():
    """A 5xx on DeleteRoom would leak the consult room: teardown tries again."""
    from pipecat_warm_transfer.testing import CallHarness, HumanScript

    script = HumanScript(outcome="busy", answer_after=0.2)
    async with CallHarness(humans={"+15550100": script}, livekit=True) as call:
        call.emulator.fail_next("DeleteRoom", "unavailable", times=2)
        assert await call.transfer.start_transfer("x")
        await call.wait_for("teardown_done")
        assert [r for r in call.server.list_rooms() if r.startswith("consult-")] == []
        assert call.emulator.methods_called().count("DeleteRoom") == 3
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_hanging_up_a_moved_human_retries_a_transient_failure():
    """Found by the fault suite (seeds 50907, 50975): one 503 on RemoveParticipant left the
    moved human's phone connected to the caller's room after the caller hung up."""
    from pipecat_warm_transfer.testing import CallHarness, HumanScript, tone

    script = HumanScript(answer_after=0.3, greeting=tone(500, 0.3)).dtmf(1.2, "1")
    async with CallHarness(
        humans={"+15550100": script}, livekit=True, caller_script=lambda p: p.hang_up(6.0)
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        call.emulator.fail_next("RemoveParticipant", "unavailable")
        await call.wait_for("caller_hung_up")
        await call.wait_for("teardown_done")
        await asyncio.sleep(1.0)
        assert call.server.get_room("caller-room").participants == ["transfer-bot"]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


# LiveKit as it really answers


async def test_the_leg_reports_ringing_when_the_sip_participant_says_so(lk):
    lk.humans[NUMBER] = HumanScript(answer_after=0.6, ringing_after=0.2)
    backend = make_backend(lk, status_poll_interval=0.05)
    leg = await backend.open_leg(request(ring_timeout=2.0))
    rang = []
    leg.on_ringing(lambda: _record(rang, time.monotonic()))
    started = time.monotonic()
    await leg.dial()
    assert len(rang) == 1 and 0.2 <= rang[0] - started < 0.6
    assert lk.calls[-1].statuses[-1][1] == "active"
    polls = sent(lk, "GetParticipant")
    assert polls and all(p == {"room": CONSULT, "identity": "human-1"} for p in polls)
    (poll_grant, *_) = grants(lk, "GetParticipant")
    assert poll_grant["video"]["room_admin"] and poll_grant["video"]["room"] == CONSULT
    await leg.close()
    await backend.close()


async def test_the_http_client_outlasts_livekits_ring_clock_after_a_slow_join(lk):
    # LiveKit starts ringing only once its SIP participant joined the room (0.8 s here);
    # the client must not give up first and call a ring-out a failed dial.
    lk.humans[NUMBER] = HumanScript(outcome="no_answer", join_delay=0.8)
    backend = make_backend(lk, dial_grace=1.5)
    leg = await backend.open_leg(request(ring_timeout=0.5))
    started = time.monotonic()
    with pytest.raises(DialError) as info:
        await leg.dial()
    took = time.monotonic() - started
    assert info.value.reason == FailureReason.NO_ANSWER and info.value.sip_status is None
    assert 1.3 <= took < 2.0
    assert leg.dial_timeout > 0.5 + 1.5 + 1.0  # the core waits longer still
    assert lk.calls[-1].outcome == "ringing_timeout"
    await leg.close()
    assert sent(lk, "CreateSIPParticipant")[0]["ringing_timeout"] == "0.500s"
    await backend.close()


async def test_closing_while_it_rings_stops_the_ringing(lk):
    lk.humans[NUMBER] = HumanScript(outcome="no_answer")
    backend = make_backend(lk)
    leg = await backend.open_leg(request(ring_timeout=5.0))
    dial = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.3)
    assert lk.ringing()
    await leg.close()
    with pytest.raises(DialError) as info:
        await dial
    assert info.value.reason == FailureReason.CANCELLED
    assert not lk.ringing() and lk.calls[-1].outcome == "cancelled"
    assert lk.methods_called().count("CreateSIPParticipant") == 1
    await backend.close()


async def test_a_dial_is_never_replayed_by_region_failover(lk, monkeypatch):
    # livekit-api replays a request that got a 5xx or no answer on LiveKit Cloud hosts;
    # LiveKit does not dedupe it, so a replayed dial rings the phone twice. Make the
    # emulator's host count as Cloud, so the real failover logic runs.
    from livekit.api import _failover

    monkeypatch.setattr(_failover, "is_cloud", lambda host: True)
    lk.fail_next("CreateSIPParticipant", 503)
    plain = LiveKitAPI(lk.url, KEY, SECRET)
    dial = CreateSIPParticipantRequest(
        sip_trunk_id="ST_trunk", sip_call_to=NUMBER, room_name="replayed", wait_until_answered=True
    )
    dial.ringing_timeout.seconds = 4
    try:
        info = await plain.sip.create_sip_participant(dial)  # a 503, replayed: answered
    finally:
        await plain.aclose()
    assert info.room_name == "replayed"
    assert lk.methods_called().count("CreateSIPParticipant") == 2  # the hazard, shown
    lk.rooms.delete_room("replayed")

    lk.fail_next("CreateSIPParticipant", 503)
    backend = make_backend(lk)
    leg = await backend.open_leg(request(ring_timeout=4.0))
    with pytest.raises(DialError):
        await leg.dial()
    await leg.close()
    assert lk.methods_called().count("CreateSIPParticipant") == 3  # ours: sent once
    await backend.close()


async def test_livekits_deadline_for_the_dial_is_the_legs_own(lk):
    # A join slower than the margin (2 s against 0.2 s): LiveKit's deadline for the dial
    # (ring 1.5 + 0.2 s, sent as X-Twirp-Timeout-Ms) ends it before anything joins, and
    # LiveKit says so; nothing rings after the leg stopped waiting.
    lk.humans[NUMBER] = HumanScript(answer_after=0.5, join_delay=2.0)
    backend = make_backend(lk, dial_grace=0.2)
    leg = await backend.open_leg(request(ring_timeout=1.5))
    started = time.monotonic()
    with pytest.raises(DialError) as info:
        await leg.dial()
    assert 1.6 < time.monotonic() - started < 2.3
    assert info.value.reason == FailureReason.NO_ANSWER
    assert info.value.detail == "nobody answered before LiveKit's dial deadline"
    (headers,) = [h for name, _, h in lk.requests if name == "CreateSIPParticipant"]
    assert headers["X-Twirp-Timeout-Ms"] == "1700"
    await asyncio.sleep(0.5)
    assert lk.calls[-1].outcome == "cancelled" and lk.calls[-1].status is None  # never joined
    await leg.close()
    assert not lk.ringing() and lk.rooms.get_room(CONSULT) is None
    await backend.close()


async def test_a_dropped_dial_is_not_sent_again(lk):
    lk.drop_next("CreateSIPParticipant")
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    with pytest.raises(DialError) as info:
        await leg.dial()
    assert info.value.reason == FailureReason.DIAL_FAILED
    await leg.close()
    assert lk.methods_called().count("CreateSIPParticipant") == 1
    await backend.close()


@pytest.mark.parametrize(
    ("number", "error"),
    [
        ("sip:alice@pbx.example.com", "target.number: LiveKit dials a phone number or SIP user"),
    ],
)
async def test_a_full_sip_uri_is_refused_before_any_call(lk, number, error):
    backend = make_backend(lk)
    with pytest.raises(TransferConfigError, match=f"^{error}"):
        await backend.open_leg(request(number))
    assert lk.requests == []
    await backend.close()


async def test_tel_and_sip_user_targets_are_dialed_as_livekit_takes_them(lk):
    lk.humans["+15550100"] = HumanScript(answer_after=0.05)
    lk.humans["alice"] = HumanScript(answer_after=0.05)
    backend = make_backend(lk)
    for number, consult in (("tel:+15550100", "consult-a"), ("sip:alice", "consult-b")):
        leg = await backend.open_leg(request(number, consult=consult))
        await leg.dial()
        await leg.close()
    assert [f["sip_call_to"] for f in sent(lk, "CreateSIPParticipant")] == ["+15550100", "alice"]
    await backend.close()


async def test_an_inline_trunk_needs_a_caller_id_before_any_call(lk):
    trunk = SIPOutboundConfig(hostname="sip.example.com")
    backend = make_backend(lk, trunk_id=None, outbound_trunk=trunk)
    with pytest.raises(TransferConfigError, match="^caller_id: an inline outbound trunk"):
        await backend.open_leg(request())
    assert lk.requests == []
    await backend.close()


async def test_open_source_not_implemented_answer_falls_back_and_is_remembered(lk):
    lk.oss = True
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    await leg.dial()
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")
    (error,) = [f for name, f, _ in lk.requests if name == "MoveParticipant"]
    assert error == {"room": CONSULT, "identity": "human-1", "destination_room": "call"}
    assert not backend.supports_move  # remembered for this server
    await leg.close()
    await backend.close()


async def test_cloud_refusing_a_participant_falls_back_for_that_transfer_only(lk):
    backend = make_backend(lk)
    leg = await backend.open_leg(request())
    await leg.dial()
    lk.fail_next("MoveParticipant", "failed_precondition", msg="participant cannot be moved")
    with pytest.raises(MoveUnsupportedError, match="failed_precondition"):
        await leg.move_to("call")
    assert backend.supports_move  # the server can move; this participant could not
    await leg.close()
    await backend.close()


async def test_the_core_reports_ringing_then_a_livekit_ring_out_as_no_answer(lk):
    lk.humans[NUMBER] = HumanScript(outcome="no_answer", ringing_after=0.1)
    async with CallHarness(
        backend_factory=_harness_backend(lk, status_poll_interval=0.05),
        params=fast_params(ring_timeout=0.8),
    ) as call:
        assert await call.transfer.start_transfer("billing dispute")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    names = call.report.event_names()
    assert names.index("dialing") < names.index("ringing") < names.index("transfer_failed")
    (result,) = call.report.results
    assert result.reason == FailureReason.NO_ANSWER and result.sip_status is None
    assert {k: call.report.leaks[k] for k in ZERO} == ZERO


async def test_a_dial_abandoned_before_livekit_joined_is_hung_up_once_it_joins(lk):
    # Found by the fault suite (seed 90021): the caller hung up while LiveKit's SIP
    # participant had not joined yet; teardown found nobody to remove, then the phone
    # joined and rang on after everything was "torn down".
    lk.humans[NUMBER] = HumanScript(outcome="no_answer", join_delay=0.6)
    backend = make_backend(lk, dial_grace=1.0)
    leg = await backend.open_leg(request(ring_timeout=3.0))
    dial = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.2)
    assert lk.calls and lk.calls[-1].status is None  # not joined yet
    started = time.monotonic()
    await leg.close()
    with pytest.raises(DialError):
        await dial
    assert 0.3 < time.monotonic() - started < 1.5
    assert lk.calls[-1].statuses[0][1] == "dialing" and lk.calls[-1].outcome == "cancelled"
    assert not lk.ringing() and lk.rooms.get_room(CONSULT) is None
    await backend.close()


async def test_a_token_in_a_server_error_never_reaches_the_logs():
    """A proxy in front of LiveKit may echo the request's bearer token in its error: the
    backend logs the error with anything token-like redacted."""
    from livekit.api import AccessToken

    from pipecat_warm_transfer.testing import CallHarness, HumanScript

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    try:
        script = HumanScript(outcome="busy", answer_after=0.2)
        async with CallHarness(humans={"+15550100": script}, livekit=True) as call:
            token = AccessToken(call.emulator.api_key, call.emulator.api_secret)
            token = token.with_identity("x").to_jwt()
            call.emulator.fail_next(
                "DeleteRoom", "unavailable", msg=f"proxy: bad Authorization: Bearer {token}"
            )
            assert await call.transfer.start_transfer("x")
            await call.wait_for("teardown_done")
    finally:
        logger.remove(sink)
    failed = [line for line in lines if "DeleteRoom failed" in line]
    assert failed and all("[redacted]" in line for line in failed), failed
    assert not any(token in line for line in lines)
