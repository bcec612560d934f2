"""Whole transfers on in-memory rooms: every outcome, teardown, leaks, audio."""

import asyncio

import numpy as np
import pytest
from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame
from pipecat.processors.frame_processor import FrameProcessor

from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs, windowed_rms_dbfs
from pipecat_warm_transfer.backends import TransferConfigError, TransferTarget
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BOT_PITCH_HZ,
    BRIEFING_PITCH_HZ,
    CALLER_OUTPUTS,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.drivers.listening import Listening, Voices, dead_air
from pipecat_warm_transfer.testing.drivers.music_finder import hold_loops, music_times
from pipecat_warm_transfer.testing.drivers.speech_finder import sentence_heard, sentence_secs
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferOutcome
from pipecat_warm_transfer.warm_transfer import HOLD_LINE_START_SECS

NUMBER = "+15550100"
RATE = 16000
HUMAN_VOICE_HZ = 700.0
CALLER_VOICE_HZ = 900.0


def human(answer_after=1.5, accept_at=2.0, **kwargs):
    """A human who answers with "Hello?" and presses 1 `accept_at` s after answering."""
    script = HumanScript(answer_after=answer_after, greeting=tone(500, 0.4), **kwargs)
    return script.dtmf(accept_at, "1") if accept_at is not None else script


#: Whole calls run on both caller outputs: the memory room's and Pipecat's real LiveKit
#: output writing into a real livekit-rtc AudioSource.
BOTH_OUTPUTS = pytest.mark.parametrize("caller_output", CALLER_OUTPUTS)


def window(audio, t0, t1):
    return audio[int(t0 * RATE) : int(t1 * RATE)]


def assert_no_dead_air(audio, t0, t1):
    """While held, at most one 20 ms frame may be (near) silent."""
    levels = windowed_rms_dbfs(window(audio, t0, t1), RATE, 20)
    assert np.sum(levels < -60.0) <= 1, levels.round(1)


async def run_call(
    humans, *, until, start_after=0.0, reason="billing dispute", linger=0.0, **kwargs
):
    """One transfer; the call goes on `linger` s after the bot last spoke."""
    async with CallHarness(humans=humans, **kwargs) as call:
        await asyncio.sleep(start_after)
        assert await call.transfer.start_transfer(reason)
        for event in until:
            await call.wait_for(event)
        await call.wait_idle()
        if linger:
            await call.wait_quiet(quiet_secs=linger)
    return call


def assert_told_then_quiet(report, text):
    """The caller heard `text` whole in the bot's voice, then silence: no hold music."""
    heard = sentence_heard(report.caller_audio, text, RATE, BOT_PITCH_HZ)
    assert heard is not None and heard.whole(), (text, heard)
    back = report.first("returned_to_caller")
    assert heard.start >= report.first("transfer_requested")["t"]
    after = heard.start + sentence_secs(text, RATE, BOT_PITCH_HZ) + 0.3
    rest = report.caller_audio[int(after * RATE) :]
    assert len(rest) >= RATE // 2, "the call ended right after the sentence"
    assert music_times(rest, hold_loops(RATE), RATE) == [], back
    assert rms_dbfs(rest) < -60.0


def only_result(report):
    assert len(report.results) == 1, report.results
    return report.results[0]


@BOTH_OUTPUTS
async def test_success_by_move_with_music_and_no_dead_air(caller_output):
    call = await run_call(
        {NUMBER: human().say(4.5, tone(HUMAN_VOICE_HZ, 1.0))},
        until=["connected", "teardown_done"],
        caller_output=caller_output,
    )
    await asyncio.sleep(0)
    report = call.report
    result = only_result(report)
    assert result.outcome == TransferOutcome.CONNECTED
    assert result.connect_mode == ConnectMode.MOVE
    names = report.event_names()
    for name in [
        "transfer_requested",
        "hold_started",
        "dialing",
        "human_answered",
        "briefing_started",
        "connected",
        "teardown_done",
    ]:
        assert name in names, names
    assert names.index("hold_started") < names.index("human_answered")
    assert report.leaks == NO_LEAKS, report.leak_findings

    audio = report.caller_audio
    hold = report.first("hold_started")["t"]
    connected = report.first("connected")["t"]
    # Music at its level while held (sampled past the fade-in: on LiveKit the hold line
    # is still playing when Pipecat reports the bot stopped, up to 1 s after it was
    # captured), and never dead air.
    assert abs(rms_dbfs(window(audio, hold + 1.2, hold + 2.0)) - (-24.0)) < 2.0
    assert_no_dead_air(audio, hold, connected - 0.3)
    # The human's words reach the caller after the move (human speaks 4.5 s after answer).
    answered = report.first("human_answered")["t"]
    heard = window(audio, answered + 4.6, answered + 5.4)
    assert abs(dominant_frequency(heard, RATE) - HUMAN_VOICE_HZ) < 5
    assert rms_dbfs(heard) > -30
    t = result.timings
    assert 0 < t.request_to_hold < 2.0 and 1.0 < t.ring < 3.0 and 0 < t.answer_to_briefing < 3.0
    assert t.accept_to_connected is not None and t.accept_to_connected < 0.5


@BOTH_OUTPUTS
async def test_bridge_relays_both_ways_when_move_is_unsupported(caller_output):
    def caller_script(p):
        p.say(9.0, tone(CALLER_VOICE_HZ, 1.0))

    async with CallHarness(
        caller_output=caller_output,
        humans={NUMBER: human().say(4.5, tone(HUMAN_VOICE_HZ, 1.0))},
        supports_move=False,
        caller_script=caller_script,
    ) as call:
        assert await call.transfer.start_transfer("refund")
        await call.wait_for("connected")
        await asyncio.sleep(10.5 - (asyncio.get_running_loop().time() - call.t0))
    report = call.report
    result = only_result(report)
    assert result.connect_mode == ConnectMode.BRIDGE
    assert report.leaks == NO_LEAKS, report.leak_findings
    answered = report.first("human_answered")["t"]
    heard = window(report.caller_audio, answered + 4.6, answered + 5.4)
    assert abs(dominant_frequency(heard, RATE) - HUMAN_VOICE_HZ) < 5
    assert report.human_audio is not None
    # The human's recording starts at the same t0: the caller's words reached them.
    heard_by_human = window(report.human_audio, 9.1, 9.9)
    assert abs(dominant_frequency(heard_by_human, RATE) - CALLER_VOICE_HZ) < 5
    assert rms_dbfs(heard_by_human) > -30


@pytest.mark.parametrize(
    "script,reason,status",
    [
        (HumanScript(outcome="answer", answer_after=10.0), FailureReason.NO_ANSWER, 480),
        (HumanScript(outcome="busy", answer_after=0.5), FailureReason.BUSY, 486),
        (HumanScript(outcome="decline", answer_after=0.5), FailureReason.DECLINED, 603),
        (HumanScript(outcome="fail", answer_after=0.5), FailureReason.DIAL_FAILED, 500),
    ],
)
@BOTH_OUTPUTS
async def test_dial_failures_return_the_caller_with_the_reason(
    script, reason, status, caller_output
):
    call = await run_call(
        {NUMBER: script}, until=["returned_to_caller"], caller_output=caller_output, linger=0.8
    )
    report = call.report
    result = only_result(report)
    assert result.outcome == TransferOutcome.FAILED
    assert result.reason == reason
    assert_told_then_quiet(report, call.transfer._params.failure_message(reason))
    assert result.sip_status == status
    failed = report.first("transfer_failed")
    assert failed["reason"] == str(reason)
    assert report.leaks == NO_LEAKS, report.leak_findings
    # The caller is told first, and the consult room is gone right after the dial failed
    # (review defect: it used to outlive the failure).
    told, torn_down = report.first("returned_to_caller")["t"], report.first("teardown_done")["t"]
    assert told <= torn_down < failed["t"] + 0.5
    # The caller is told, in the bot's voice, after the music faded out.
    back = report.first("returned_to_caller")["t"]
    told = window(report.caller_audio, back + 0.3, back + 1.5)
    assert abs(dominant_frequency(told, RATE) - BOT_PITCH_HZ) < 5
    sentence = call.transfer._params.failure_message(reason)
    assert sentence in call.report.spoken_to_caller


async def test_dial_failure_after_the_room_exists_leaks_nothing():
    """Review defect 2: room and session leaked when the SIP call failed after the join."""
    async with CallHarness(humans={NUMBER: HumanScript(outcome="fail", answer_after=0.5)}) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("transfer_failed")
        await call.wait_for("teardown_done")
        assert [r for r in call.server.list_rooms() if r.startswith("consult-")] == []
        assert call.server.leftovers()["connections"] == 2  # caller and bot only
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_consult_room_is_closed_after_a_completed_transfer():
    """Review defect 1: the consult room connection was never disconnected on completion."""
    async with CallHarness(humans={NUMBER: human()}) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        await call.wait_for("teardown_done")
        assert [r for r in call.server.list_rooms() if r.startswith("consult-")] == []
        room = call.server.get_room("caller-room")
        assert sorted(room.participants) == sorted(
            ["caller", "transfer-bot", "human-" + call.transfer._attempt.id]
        )
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_decline_by_keypad():
    script = HumanScript(answer_after=0.5, greeting=tone(500, 0.4)).dtmf(1.5, "2")
    call = await run_call({NUMBER: script}, until=["returned_to_caller"])
    assert only_result(call.report).reason == FailureReason.DECLINED
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_keys_other_than_accept_and_decline_are_ignored():
    """The human presses 5 and 9 (neither accept nor decline), then 1: connected."""
    script = HumanScript(answer_after=0.5, greeting=tone(500, 0.4))
    script.dtmf(1.0, "5").dtmf(1.3, "9").dtmf(2.0, "1")
    call = await run_call({NUMBER: script}, until=["connected", "teardown_done"])
    assert only_result(call.report).outcome == TransferOutcome.CONNECTED
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_human_hangs_up_during_briefing(livekit):
    """A failure before the join: the caller hears the failure sentence, not the sentence
    for a human who leaves after being joined, and the transfer ends `human_hung_up`."""
    script = HumanScript(answer_after=0.5, greeting=tone(500, 0.4), hang_up_after=1.5)
    call = await run_call(
        {NUMBER: script}, until=["returned_to_caller"], linger=0.8, livekit=livekit
    )
    report = call.report
    assert only_result(report).reason == FailureReason.HUMAN_HUNG_UP
    assert "human_hung_up" in report.event_names() and "connected" not in report.event_names()
    assert report.first("returned_to_caller")["reason"] == str(FailureReason.HUMAN_HUNG_UP)
    params = call.transfer._params
    assert_told_then_quiet(report, params.failure_message(FailureReason.HUMAN_HUNG_UP))
    assert params.human_left_message not in report.spoken_to_caller
    assert report.leaks == NO_LEAKS, report.leak_findings


async def test_briefing_timeout():
    script = HumanScript(answer_after=0.5, greeting=tone(500, 0.4))
    call = await run_call(
        {NUMBER: script}, until=["returned_to_caller"], params=fast_params(briefing_timeout=2.0)
    )
    assert only_result(call.report).reason == FailureReason.BRIEFING_TIMEOUT
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_caller_hangs_up_while_ringing_cancels_the_dial(livekit):
    """The human would answer at 3.5 s; the caller leaves at 1.5 s. The phone stops
    ringing then, and nobody is left to pick up at 3.5 s."""
    async with CallHarness(
        humans={NUMBER: HumanScript(answer_after=3.5, greeting=tone(500, 0.3))},
        params=fast_params(ring_timeout=8.0),
        caller_script=lambda p: p.hang_up(1.5),
        livekit=livekit,
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("caller_hung_up")
        await call.wait_for("teardown_done")
        await asyncio.sleep(max(0.0, 4.5 - (asyncio.get_running_loop().time() - call.t0)))
        answered = [p.identity for p in call.human_parties() if p.connected]
        assert answered == [], "the human could still answer after the caller left"
        if call.emulator is not None:
            assert call.emulator.ringing() == []
            (dial,) = call.emulator.calls
            assert dial.outcome != "answered", dial.outcome
    report = call.report
    assert only_result(report).reason == FailureReason.CALLER_HUNG_UP
    assert "human_answered" not in report.event_names()
    assert report.leaks == NO_LEAKS, report.leak_findings


async def test_caller_hangs_up_during_briefing_the_human_is_told():
    async with CallHarness(
        humans={NUMBER: human(answer_after=0.5, accept_at=None)},
        caller_script=lambda p: p.hang_up(3.0),
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("teardown_done")
        await call.wait_idle()
    report = call.report
    assert only_result(report).reason == FailureReason.CALLER_HUNG_UP
    assert report.leaks == NO_LEAKS, report.leak_findings
    hung = report.first("caller_hung_up")["t"]
    done = report.first("teardown_done")["t"]
    told = sentence_heard(
        report.human_audio, call.transfer._params.caller_left_message, RATE, BRIEFING_PITCH_HZ
    )
    assert told is not None and told.whole(), told
    assert hung <= told.start <= done


@BOTH_OUTPUTS
async def test_caller_hangs_up_after_move_hangs_up_the_human(caller_output):
    async with CallHarness(
        caller_output=caller_output,
        humans={NUMBER: human()},
        caller_script=lambda p: p.hang_up(7.0),
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        await call.wait_for("caller_hung_up")
        await asyncio.sleep(0.3)
        assert call.server.get_room("caller-room").participants == ["transfer-bot"]
    assert only_result(call.report).outcome == TransferOutcome.CONNECTED
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@BOTH_OUTPUTS
async def test_human_hangs_up_after_bridge_the_bot_takes_the_caller_back(caller_output):
    script = human(hang_up_after=5.0)
    async with CallHarness(
        caller_output=caller_output, humans={NUMBER: script}, supports_move=False
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        back = await call.wait_for("returned_to_caller")
        await asyncio.sleep(2.5)
    report = call.report
    assert only_result(report).outcome == TransferOutcome.CONNECTED
    assert "human_hung_up" in report.event_names()
    told = window(report.caller_audio, back["t"] + 0.2, back["t"] + 1.5)
    assert abs(dominant_frequency(told, RATE) - BOT_PITCH_HZ) < 5
    assert report.leaks == NO_LEAKS, report.leak_findings


async def test_pipeline_end_mid_transfer_cancels_and_tears_down():
    async with CallHarness(humans={NUMBER: human(answer_after=0.5, accept_at=None)}) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("briefing_started")
    report = call.report
    assert only_result(report).reason == FailureReason.CANCELLED
    assert "teardown_done" in report.event_names()
    assert report.leaks == NO_LEAKS, report.leak_findings


async def test_a_second_transfer_after_a_failure_connects():
    humans = {NUMBER: HumanScript(outcome="busy", answer_after=0.3)}
    async with CallHarness(humans=humans) as call:
        assert await call.transfer.start_transfer("first")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
        call.backend.humans[NUMBER] = human(answer_after=0.5)
        assert await call.transfer.start_transfer("second")
        await call.wait_for("connected")
        assert not await call.transfer.start_transfer("third while connected")
    outcomes = [r.outcome for r in call.report.results]
    assert outcomes == [TransferOutcome.FAILED, TransferOutcome.CONNECTED]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_transfers_are_limited_per_call():
    humans = {NUMBER: HumanScript(outcome="busy", answer_after=0.1)}
    async with CallHarness(humans=humans, params=fast_params(max_transfers=1)) as call:
        assert await call.transfer.start_transfer("first")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
        assert not await call.transfer.start_transfer("second")
    assert len(call.report.results) == 1


class InputCounter(FrameProcessor):
    """Counts caller audio frames that get past the gate, by transfer state."""

    def __init__(self, transfer):
        super().__init__()
        self.transfer = transfer
        self.by_state = {}

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            state = str(self.transfer.state)
            self.by_state[state] = self.by_state.get(state, 0) + 1
        await self.push_frame(frame, direction)


async def test_caller_audio_is_dropped_while_held_and_restored_after():
    counters = []

    def processors(_transfer):
        counter = InputCounter(None)
        counters.append(counter)
        return [counter, ScriptedToneTTSService(pitch_hz=BOT_PITCH_HZ, sample_rate=RATE)]

    async with CallHarness(
        humans={NUMBER: HumanScript(outcome="busy", answer_after=2.0)},
        bot_processors=processors,
        caller_script=lambda p: p.say(0.0, tone(CALLER_VOICE_HZ, 12.0)),
    ) as call:
        counters[0].transfer = call.transfer
        await asyncio.sleep(0.5)
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
        await asyncio.sleep(0.5)
    by_state = counters[0].by_state
    assert by_state.get("idle", 0) > 20
    assert by_state.get("holding", 0) == 0 and by_state.get("briefing", 0) == 0


@BOTH_OUTPUTS
async def test_interruptions_do_not_drop_the_hold_line_or_the_music(caller_output):
    async with CallHarness(
        caller_output=caller_output, humans={NUMBER: HumanScript(answer_after=6.0)}
    ) as call:
        assert await call.transfer.start_transfer("x")
        await asyncio.sleep(0.3)
        await call.worker.queue_frame(InterruptionFrame())
        hold = (await call.wait_for("hold_started", timeout=5))["t"]
        await asyncio.sleep(1.6)
    report = call.report
    spoken = window(report.caller_audio, 0.1, 0.6)
    assert abs(dominant_frequency(spoken, RATE) - BOT_PITCH_HZ) < 5  # the hold line played on
    assert abs(rms_dbfs(window(report.caller_audio, hold + 0.4, hold + 1.5)) + 24) < 2


@BOTH_OUTPUTS
async def test_hold_reminders_play_over_the_music(caller_output):
    """Each reminder is heard whole, under it the music plays on (ducked), and the music
    is back at its level before and after."""
    params = fast_params(hold_reminder="Still trying.", hold_reminder_every=1.5, ring_timeout=5.0)
    async with CallHarness(
        caller_output=caller_output,
        humans={NUMBER: HumanScript(answer_after=4.5, outcome="busy")},
        params=params,
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
    report = call.report
    assert report.spoken_to_caller.count("Still trying.") >= 2
    heard = sentence_heard(report.caller_audio, "Still trying.", RATE, BOT_PITCH_HZ)
    assert heard is not None and heard.similarity >= 0.9, heard  # whole, over the music
    assert heard.fraction < 0.5  # not alone: mixed with the music under it
    secs = sentence_secs("Still trying.", RATE, BOT_PITCH_HZ)
    music = music_times(report.caller_audio, hold_loops(RATE), RATE)
    assert any(heard.start - 1.0 < t < heard.start for t in music), "no music before"
    assert any(heard.start + secs < t < heard.start + secs + 1.0 for t in music), "no music after"


class SlowSummaryLLM:
    def __init__(self, delay, text="Dana wants a refund for a double charge."):
        self.delay, self.text, self.calls = delay, text, 0

    async def run_inference(self, context, max_tokens=None, system_instruction=None, **_):
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.text


@pytest.mark.parametrize("delay,expect_llm", [(0.1, True), (5.0, False)])
async def test_summary_is_ready_when_the_human_answers(delay, expect_llm):
    from pipecat.processors.aggregators.llm_context import LLMContext

    context = LLMContext(
        messages=[
            {"role": "user", "content": "I was charged twice, I want a person."},
            {"role": "assistant", "content": "Let me get someone."},
        ]
    )
    llm = SlowSummaryLLM(delay)
    spoken = []

    class RecordingTTS(ScriptedToneTTSService):
        async def run_tts(self, text, context_id):
            spoken.append(text)
            async for f in super().run_tts(text, context_id):
                yield f

    from pipecat_warm_transfer.params import BriefingParams

    briefing = BriefingParams(
        tts=lambda: RecordingTTS(pitch_hz=BRIEFING_PITCH_HZ), start="immediate"
    )
    call = await run_call(
        {NUMBER: human(answer_after=1.0, accept_at=1.0)},
        until=["connected"],
        briefing=briefing,
        params=fast_params(summary_timeout=1.0),
        transfer_kwargs={"context": context, "summary_llm": llm},
    )
    intro = spoken[0]
    if expect_llm:
        assert "Dana wants a refund" in intro
    else:
        assert "I was charged twice" in intro  # the deterministic fallback
    assert llm.calls == 1
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"number": "12345"}, "target.number"),
        ({"number": "+15550100", "headers": {"X-Evil": "a\r\nInjected: 1"}}, "target.headers"),
        ({"number": "+15550100", "headers": {"Reason": "x"}}, "target.headers"),
        ({"number": "+15550100", "caller_id": "not a number"}, "target.caller_id"),
        ({"number": "sip:agent@example.com", "dtmf": "12a"}, "target.dtmf"),
    ],
)
def test_bad_targets_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(TransferConfigError) as err:
        TransferTarget(**kwargs)
    assert str(err.value).startswith(field)
    assert "\n" not in str(err.value)


async def test_a_briefing_that_cannot_start_returns_the_caller():
    from pipecat_warm_transfer.params import BriefingParams

    def broken_tts():
        raise RuntimeError("TTS credentials rejected")

    call = await run_call(
        {NUMBER: human(answer_after=0.5)},
        until=["returned_to_caller"],
        briefing=BriefingParams(tts=broken_tts),
    )
    result = only_result(call.report)
    # The bot joins the consult room before the dial: without it nobody is called.
    assert result.reason == FailureReason.DIAL_FAILED
    assert "could not join the consult room (RuntimeError)" in result.detail
    assert "dialing" not in call.report.event_names()
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize(
    "kwargs,starts",
    [
        ({"ring_timeout": -1}, "WarmTransferParams.ring_timeout: "),
        ({"briefing_timeout": 1e9}, "WarmTransferParams.briefing_timeout: "),
        ({"hold_music_level_dbfs": 6}, "WarmTransferParams.hold_music_level_dbfs: "),
        ({"connect_mode": "teleport"}, "WarmTransferParams.connect_mode: "),
        ({"ring_timout": 5}, "WarmTransferParams.ring_timout: "),
    ],
)
def test_bad_params_are_one_line_errors_naming_the_field(kwargs, starts):
    from pipecat_warm_transfer.params import WarmTransferParams

    with pytest.raises(TransferConfigError) as err:
        WarmTransferParams(**kwargs)
    assert str(err.value).startswith(starts)
    assert "\n" not in str(err.value)


def test_bad_briefing_digit_is_refused():
    from pipecat_warm_transfer.params import BriefingParams

    with pytest.raises(TransferConfigError, match=r"^BriefingParams.accept_digit: "):
        BriefingParams(tts=ScriptedToneTTSService, accept_digit="11")


async def test_move_only_on_a_server_without_move_fails_to_connect():
    call = await run_call(
        {NUMBER: human(answer_after=0.5)},
        until=["returned_to_caller"],
        supports_move=False,
        params=fast_params(connect_mode="move"),
    )
    result = only_result(call.report)
    assert result.reason == FailureReason.CONNECT_FAILED
    assert result.detail == "move unavailable"
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_auto_falls_back_to_bridge_when_the_move_is_refused():
    """The backend claims move support, but the server answers 'unimplemented'."""
    from pipecat_warm_transfer.backends import MoveUnsupportedError

    async with CallHarness(humans={NUMBER: human(answer_after=0.5)}) as call:

        async def refuse(_room):
            raise MoveUnsupportedError("unimplemented")

        original_open = call.backend.open_leg

        async def open_leg(request):
            leg = await original_open(request)
            leg.move_to = refuse
            return leg

        call.backend.open_leg = open_leg
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
    assert only_result(call.report).connect_mode == ConnectMode.BRIDGE
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize("supports_move", [True, False])
async def test_human_hangs_up_between_accepting_and_being_joined(supports_move):
    """Found by the soak: the human pressed 1 and hung up while being connected; the
    caller was left 'connected' to nobody."""
    script = HumanScript(answer_after=0.3, greeting=tone(500, 0.2), hang_up_after=1.3)
    script.dtmf(1.0, "1")
    async with CallHarness(humans={NUMBER: script}, supports_move=supports_move) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_settled(1, timeout=20.0)
        await asyncio.sleep(0.5)
        assert str(call.transfer.state) == "idle"
    assert "human_hung_up" in call.report.event_names()
    assert "returned_to_caller" in call.report.event_names()
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@BOTH_OUTPUTS
async def test_no_hold_music_after_a_failure_that_beats_the_hold_line(caller_output):
    # The phone is busy (0.05 s) while the hold line is still playing: the music's
    # start-after-speech was already armed behind that line, and must be disarmed, or it
    # fades in after the bot's next words and plays on with the caller back (issue 13).
    humans = {NUMBER: HumanScript(outcome="busy", answer_after=0.05)}
    async with CallHarness(caller_output=caller_output, humans=humans) as call:
        assert await call.transfer.start_transfer("billing")
        back = await call.wait_for("returned_to_caller")
        await call.wait_idle()
        await call.wait_quiet(quiet_secs=0.6)
        await call.say("Anything else?")
        await asyncio.sleep(0.3)
        await call.wait_quiet(quiet_secs=2.0)
        tail_from = call.caller.now() - 1.5
    audio = call.report.caller_audio
    tail = audio[int(tail_from * RATE) : int((tail_from + 1.4) * RATE)]
    assert back["t"] < tail_from
    assert rms_dbfs(tail) < -60  # silence, not music, once the bot is quiet


@BOTH_OUTPUTS
async def test_a_hold_line_that_never_plays_still_gets_music_within_1_5_s(caller_output):
    """No dead air even when the hold line is lost: the music takes over 1.5 s after the
    request (it used to be 8 s of silence, the watchdog's bound for a playing line)."""
    harness = CallHarness(
        humans={NUMBER: human(answer_after=2.5, accept_at=None)},
        bot_processors=lambda t: [
            ScriptedToneTTSService(pitch_hz=BOT_PITCH_HZ, silent_on=(t.hold_message,))
        ],
        caller_output=caller_output,
    )
    async with harness as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("hold_started")
        await call.wait_for("human_answered")
        await asyncio.sleep(1.0)
    report = call.report
    requested = report.first("transfer_requested")["t"]
    music = music_times(report.caller_audio, hold_loops(RATE), RATE)
    assert music and requested < music[0] < requested + HOLD_LINE_START_SECS + 0.4, music[:3]
    params = fast_params()
    listening = Listening()
    voices = Voices(bot_pitch_hz=BOT_PITCH_HZ, briefing_pitch_hz=BRIEFING_PITCH_HZ, params=params)
    dead_air(report, voices, None, listening)
    assert listening.measured["dead air"] == 1 and listening.problems == [], listening


async def test_move_mode_moves_the_human_on_a_server_with_move():
    """`connect_mode="move"` joins by MoveParticipant; it never falls back to a bridge."""
    call = await run_call(
        {NUMBER: human(answer_after=0.5)},
        until=["connected", "teardown_done"],
        params=fast_params(connect_mode="move"),
    )
    result = only_result(call.report)
    assert result.outcome == TransferOutcome.CONNECTED
    assert result.connect_mode == ConnectMode.MOVE
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_a_dial_that_outlives_its_own_bound_is_given_up_as_no_answer():
    """A leg whose server never ends the ringing: the core stops waiting at the leg's
    `dial_timeout` and reports `no_answer` (408), then closes the leg."""
    async with CallHarness(humans={NUMBER: human(answer_after=0.5)}) as call:
        original_open = call.backend.open_leg

        async def ring_forever():
            await asyncio.Event().wait()

        async def open_leg(request):
            leg = await original_open(request)
            leg.__class__ = type("BoundedLeg", (type(leg),), {"dial_timeout": 1.0})
            leg.dial = ring_forever
            return leg

        call.backend.open_leg = open_leg
        assert await call.transfer.start_transfer("x")
        dialing = await call.wait_for("dialing")
        failed = await call.wait_for("transfer_failed")
        await call.wait_for("returned_to_caller")
        assert 0.9 < failed["t"] - dialing["t"] < 1.5
    result = only_result(call.report)
    assert (result.reason, result.sip_status) == (FailureReason.NO_ANSWER, 408)
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_a_teardown_step_that_raises_does_not_stop_the_rest():
    """The consult leg's close raises after doing its work: teardown still finishes,
    the caller is told, and the error is logged, not raised into the call."""
    from loguru import logger

    warnings = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        async with CallHarness(
            humans={NUMBER: HumanScript(outcome="busy", answer_after=0.5)}
        ) as call:
            original_open = call.backend.open_leg

            async def open_leg(request):
                leg = await original_open(request)
                original_close = leg.close

                async def close():
                    await original_close()
                    raise RuntimeError("the server went away")

                leg.close = close
                return leg

            call.backend.open_leg = open_leg
            assert await call.transfer.start_transfer("x")
            await call.wait_for("teardown_done")
            await call.wait_for("returned_to_caller")
            await call.wait_idle()
    finally:
        logger.remove(sink)
    assert only_result(call.report).reason == FailureReason.BUSY
    assert any("could not close the consult leg" in w for w in warnings), warnings
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_the_bot_ending_right_after_the_caller_left_still_hangs_up_the_moved_human():
    """Found by the soak (seeds 101115, 101293): the caller leaves after the move and the
    bot's pipeline ends while LiveKit is still removing the human; the end must not cut
    that hang-up short, nor tear down without it."""
    async with CallHarness(
        humans={NUMBER: human(answer_after=0.5)},
        caller_script=lambda p: p.hang_up(5.0),
        livekit=True,
    ) as call:
        call.emulator.latency("RemoveParticipant", 0.5)
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        await call.wait_for("caller_hung_up")
        # Leaving the block ends the bot's pipeline at once; leaks are counted at its end.
    assert only_result(call.report).connect_mode == ConnectMode.MOVE
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@BOTH_OUTPUTS
@pytest.mark.parametrize("supports_move", [True, False], ids=["move", "bridge"])
async def test_the_connected_sentence_is_heard_whole_before_the_join(caller_output, supports_move):
    """Joined, the bot is silent to the caller: the sentence must be heard before that
    (it used to be cut at once: none of its frames reached the caller)."""
    # Longer than what the human is told meanwhile, so only the join's wait keeps it whole.
    text = "Thank you for waiting. I am connecting you with my colleague from billing now."
    script = human(answer_after=0.5, accept_at=1.2).say(3.0, tone(HUMAN_VOICE_HZ, 1.0))
    async with CallHarness(
        humans={NUMBER: script},
        caller_output=caller_output,
        supports_move=supports_move,
        params=fast_params(connected_message=text),
    ) as call:
        assert await call.transfer.start_transfer("billing")
        await call.wait_for("connected")
        await asyncio.sleep(1.0)  # what LiveKit's source still holds plays out
    report = call.report
    heard = sentence_heard(report.caller_audio, text, RATE, BOT_PITCH_HZ)
    assert heard is not None and heard.whole(), heard
    connected = report.first("connected")
    lag = report.event_lags[report.events.index(connected)] if report.event_lags else 0.0
    sentence_end = heard.start + sentence_secs(text, RATE, BOT_PITCH_HZ)
    assert sentence_end <= connected["t"] + lag + 0.1
    # Bounded: the join waits for the sentence, not longer.
    assert (
        only_result(report).timings.accept_to_connected
        < sentence_secs(text, RATE, BOT_PITCH_HZ) + 1.0
    )
