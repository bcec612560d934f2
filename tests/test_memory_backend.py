"""InMemoryBackend: every dial outcome, briefing audio, move, hang-up and leak-free teardown."""

import asyncio

import numpy as np
import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import InputDTMFFrame, OutputAudioRawFrame, UserAudioRawFrame

from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs
from pipecat_warm_transfer.consult_leg import (
    ConnectError,
    DialError,
    DialRequest,
    MoveUnsupportedError,
    TransferTarget,
)
from pipecat_warm_transfer.testing import (
    AudioReceived,
    FrameCapture,
    HumanScript,
    InMemoryBackend,
    MemoryRoomServer,
    ParticipantLeft,
    PipelineRun,
    ScriptedParty,
    tone,
)
from pipecat_warm_transfer.types import FailureReason

ZERO = {"rooms": 0, "participants": 0, "connections": 0}
NUMBER = "+15550100"
RATE = 16000


@pytest.fixture
async def server():
    before = asyncio.all_tasks()
    server = MemoryRoomServer()
    yield server
    await asyncio.sleep(0)
    assert server.leftovers() == ZERO
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


def request(number=NUMBER, ring_timeout=1.0, consult="consult-1"):
    return DialRequest(
        target=TransferTarget(number),
        consult_room=consult,
        human_identity="human",
        bot_identity="bot",
        ring_timeout=ring_timeout,
        caller_room="call",
    )


def secs(samples, start, end, rate=RATE):
    return samples[int(start * rate) : int(end * rate)]


def pitch_and_level(samples):
    return dominant_frequency(samples, RATE), rms_dbfs(samples)


async def test_answer_brief_move_and_record(server):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    script = HumanScript(answer_after=0.2, greeting=tone(800, 0.3, RATE, -20))
    script.dtmf(0.5, "1").say(1.5, tone(1000, 0.4, RATE, -20))
    backend = InMemoryBackend(server, {NUMBER: script}, t0=t0)
    caller = ScriptedParty(server, "call", "caller", sample_rate=RATE, t0=t0)
    caller.say(2.4, tone(500, 0.3, RATE, -20))
    await caller.start()

    leg = await backend.open_leg(request())
    left = []
    leg.on_human_left(lambda reason: _append(left, reason))
    await leg.dial()
    assert 0.15 <= leg.answered_at <= 0.4
    assert server.get_room("consult-1").kind_of("human") == "sip"
    assert not leg.voicemail

    capture = FrameCapture(UserAudioRawFrame, InputDTMFFrame)
    async with PipelineRun([leg.transport.input(), capture, leg.transport.output()]) as run:
        await run.worker.queue_frame(
            OutputAudioRawFrame(audio=tone(700, 0.4, RATE, -20), sample_rate=RATE, num_channels=1)
        )
        async with asyncio.timeout(2):
            await capture.wait_for(lambda f: isinstance(f, InputDTMFFrame))
        await asyncio.sleep(0.1)

    assert [f.button for f in capture.of_type(InputDTMFFrame)] == [KeypadEntry.ONE]
    frames = capture.of_type(UserAudioRawFrame)
    assert {f.user_id for f in frames} == {"human"}
    heard = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
    onset = int(np.argmax(np.abs(heard) > 2000))
    greeting = heard[onset + 320 : onset + int(0.25 * RATE)]
    assert abs(dominant_frequency(greeting, RATE) - 800) < 5

    await leg.move_to("call")
    assert leg.moved and backend.parties["human"].room == "call"
    await leg.close()
    assert server.get_room("consult-1") is None
    assert server.get_room("call").participants == ["caller", "human"]  # still talking
    async with asyncio.timeout(3):
        await caller.wait_idle()
    await asyncio.sleep(0.2)

    human = backend.parties["human"]
    answered = leg.answered_at
    # In the consult room the human heard the bot's briefing tone; after the move, the caller.
    bot = human.heard_from("bot")
    onset = int(np.argmax(np.abs(bot) > 2000))
    freq, level = pitch_and_level(bot[onset + 320 : onset + int(0.3 * RATE)])
    assert abs(freq - 700) < 3 and abs(level + 20) < 1
    assert abs(pitch_and_level(secs(human.heard_from("caller"), 2.45, 2.65))[0] - 500) < 3
    # The caller heard the human's line said 1.5 s after the answer (after the move).
    said = secs(caller.heard_from("human"), answered + 1.55, answered + 1.85)
    freq, level = pitch_and_level(said)
    assert abs(freq - 1000) < 3 and abs(level + 20) < 1

    await backend.close()
    assert human.ended and human.end_reason == "removed"
    assert any(
        isinstance(e, ParticipantLeft) and e.identity == "human" and e.reason == "removed"
        for _, e in caller.events
    )
    assert left == []  # we hung up: no "human left" report
    await caller.close()
    server.delete_room("call")


async def _append(items, value):
    items.append(value)


@pytest.mark.parametrize(
    ("script", "number", "ring_timeout", "reason", "status", "took"),
    [
        (HumanScript(outcome="busy", answer_after=0.05), NUMBER, 1, FailureReason.BUSY, 486, 0.05),
        (HumanScript(outcome="busy", sip_status=600), NUMBER, 1, FailureReason.BUSY, 600, 0),
        (HumanScript(outcome="decline", answer_after=0.1), NUMBER, 1, "declined", 603, 0.1),
        (HumanScript(outcome="fail"), NUMBER, 1, FailureReason.DIAL_FAILED, 500, 0),
        (HumanScript(outcome="fail", sip_status=503), NUMBER, 1, "dial_failed", 503, 0),
        (HumanScript(outcome="no_answer"), NUMBER, 0.2, FailureReason.NO_ANSWER, 480, 0.2),
        (HumanScript(outcome="no_answer", sip_status=408), NUMBER, 0.1, "no_answer", 408, 0.1),
        (HumanScript(answer_after=5), NUMBER, 0.2, FailureReason.NO_ANSWER, 480, 0.2),
        (HumanScript(), "+15550199", 1, FailureReason.DIAL_FAILED, 404, 0),
    ],
    ids=[
        "busy",
        "busy-600",
        "decline",
        "fail",
        "fail-503",
        "no-answer",
        "no-answer-408",
        "answers-after-ring-timeout",
        "unknown-number",
    ],
)
async def test_dial_failures(server, script, number, ring_timeout, reason, status, took):
    loop = asyncio.get_running_loop()
    backend = InMemoryBackend(server, {NUMBER: script})
    leg = await backend.open_leg(request(number, ring_timeout=ring_timeout))
    start = loop.time()
    with pytest.raises(DialError) as caught:
        await leg.dial()
    elapsed = loop.time() - start
    assert caught.value.reason == reason and caught.value.sip_status == status
    assert leg.dial_error is caught.value
    assert took <= elapsed < took + 0.15
    assert server.get_room("consult-1").participants == []  # nobody joined
    await leg.close()
    await leg.close()  # idempotent
    assert "human" not in backend.parties
    await backend.close()


async def test_cancelled_dial_leaves_nothing(server):
    backend = InMemoryBackend(server, {NUMBER: HumanScript(answer_after=5)}, dial_latency=0.05)
    leg = await backend.open_leg(request(ring_timeout=10))
    task = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.1)  # ringing
    assert server.get_room("consult-1") is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await leg.close()

    # The caller's timeout around the dial (how the core bounds it) cancels it the same way.
    leg = await backend.open_leg(request(consult="consult-2", ring_timeout=10))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(leg.dial(), 0.1)
    await leg.close()
    await backend.close()


async def test_close_while_ringing_fails_the_dial_as_cancelled(server):
    backend = InMemoryBackend(server, {NUMBER: HumanScript(answer_after=5)})
    leg = await backend.open_leg(request(ring_timeout=10))
    task = asyncio.create_task(leg.dial())
    await asyncio.sleep(0.05)
    await leg.close()
    with pytest.raises(DialError) as caught:
        await task
    assert caught.value.reason == FailureReason.CANCELLED
    with pytest.raises(DialError):
        await leg.dial()  # a closed leg does not dial
    await backend.close()


@pytest.mark.parametrize("how", ["script", "removed", "room_deleted", "hang_up"])
async def test_human_leaving_is_reported(server, how):
    script = HumanScript(hang_up_after=0.2 if how == "script" else None)
    backend = InMemoryBackend(server, {NUMBER: script})
    leg = await backend.open_leg(request())
    reported = asyncio.Queue()
    leg.on_human_left(reported.put)
    await leg.dial()
    party = backend.parties["human"]
    if how == "removed":
        server.remove_participant("consult-1", "human")
    elif how == "room_deleted":
        server.delete_room("consult-1")
    elif how == "hang_up":
        await leg.hang_up()
        await leg.hang_up()  # idempotent
    async with asyncio.timeout(1):
        await party.wait_ended()
    await asyncio.sleep(0.05)
    expected = {"script": "disconnected", "removed": "removed", "room_deleted": "room_deleted"}
    if how == "hang_up":
        assert reported.empty()  # the leg's own hang-up is not reported back
        assert party.end_reason == "removed"
    else:
        assert reported.get_nowait() == expected[how] and reported.empty()
    await leg.close()
    await backend.close()


async def test_move_errors(server):
    backend = InMemoryBackend(server, {NUMBER: HumanScript()}, supports_move=False)
    assert not backend.supports_move
    leg = await backend.open_leg(request())
    await leg.dial()
    server.create_room("call")
    with pytest.raises(MoveUnsupportedError):
        await leg.move_to("call")
    await leg.close()
    await backend.close()

    backend = InMemoryBackend(server, {NUMBER: HumanScript(hang_up_after=0.05)})
    leg = await backend.open_leg(request())
    with pytest.raises(ConnectError):
        await leg.move_to("call")  # not dialed yet
    await leg.dial()
    with pytest.raises(ConnectError):
        await leg.move_to("no-such-room")
    async with asyncio.timeout(1):
        await backend.parties["human"].wait_ended()
    with pytest.raises(ConnectError):
        await leg.move_to("call")  # the human hung up
    await leg.close()
    await backend.close()
    server.delete_room("call")


async def test_voicemail_greeting_and_moved_human_hanging_up(server):
    t0 = asyncio.get_running_loop().time()
    script = HumanScript(voicemail=True, greeting=tone(1400, 0.3, RATE, -18), hang_up_after=0.6)
    backend = InMemoryBackend(server, {NUMBER: script}, t0=t0)
    listener = server.connect("consult-1", "bot")
    leg = await backend.open_leg(request())
    reported = []
    leg.on_human_left(lambda reason: _append(reported, reason))
    await leg.dial()
    assert leg.voicemail
    await asyncio.sleep(0.4)
    audio = b"".join(
        e.audio for e in _drain(listener) if isinstance(e, AudioReceived) and e.identity == "human"
    )
    freq, level = pitch_and_level(np.frombuffer(audio, dtype=np.int16)[: int(0.3 * RATE)])
    assert abs(freq - 1400) < 5 and abs(level + 18) < 1

    # Moved, then the leg is closed: the human keeps living in the caller room until
    # their own hang-up, which is still reported.
    server.create_room("call")
    await leg.move_to("call")
    listener.disconnect()
    await leg.close()
    assert server.leftovers() == {"rooms": 1, "participants": 1, "connections": 1}
    async with asyncio.timeout(1):
        assert await backend.parties["human"].wait_ended() == "hung_up"
    await asyncio.sleep(0.05)
    assert reported == ["disconnected"]
    await backend.close()
    server.delete_room("call")


def _drain(connection):
    events = []
    while (event := connection._inbox.get_nowait()) is not None:
        events.append(event)
    return events
