"""`OfflineCall` and the plugin's fixtures: a bot pipeline of the test's own, whole transfers."""

from pipecat.transports.base_transport import TransportParams

from pipecat_warm_transfer import BriefingParams, TransferTarget, WarmTransfer, WarmTransferParams
from pipecat_warm_transfer.backends.livekit import LiveKitConsultLeg
from pipecat_warm_transfer.testing import NO_LEAKS, HumanScript, ScriptedToneTTSService, tone
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferOutcome

NUMBER = "+15550100"


def bot(call, number=NUMBER):
    """The smallest caller pipeline with a transfer, built from the call's backend and transport."""
    transfer = WarmTransfer(
        backend=call.backend(),
        target=TransferTarget(number),
        briefing=BriefingParams(tts=ScriptedToneTTSService),
        params=WarmTransferParams(
            hold_message="Please hold.",
            hold_reminder=None,
            ring_timeout=3.0,
            connected_message=None,
            failure_messages={FailureReason.BUSY: "They're busy."},
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


async def _do_nothing(self):
    return None


async def test_a_default_phone_is_busy_and_the_caller_is_taken_back(offline_call):
    transfer, pipeline = bot(offline_call, "+15550101")  # busy in `default_humans()`
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=10)
    assert result.outcome == TransferOutcome.FAILED and result.reason == FailureReason.BUSY
    await offline_call.wait_for("teardown_done", timeout=5)
    assert offline_call.caller.connected  # the call goes on with the bot
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings
    assert await offline_call.finish() is offline_call.leaks  # once


async def test_on_self_hosted_livekit_the_human_is_bridged(
    offline_call, livekit_emulator, scripted_humans
):
    livekit_emulator.oss = True  # no MoveParticipant
    scripted_humans[NUMBER] = HumanScript(answer_after=0.3, greeting=tone(660, 0.3)).dtmf(1.2, "1")
    transfer, pipeline = bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    result = await offline_call.wait_result(timeout=15)
    assert result.outcome == TransferOutcome.CONNECTED, result
    assert result.connect_mode == ConnectMode.BRIDGE
    names = [e["event"] for e in offline_call.events]
    assert {"hold_started", "human_answered", "briefing_started"} <= set(names), names
    assert names.index("human_answered") < names.index("connected")
    assert "MoveParticipant" in livekit_emulator.methods_called()  # tried, refused
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings


async def test_a_consult_leg_left_open_is_counted(offline_call, scripted_humans, monkeypatch):
    """The plugin 'forgets' to close the leg of a busy dial: the count names the room."""
    monkeypatch.setattr(LiveKitConsultLeg, "close", _do_nothing)
    scripted_humans[NUMBER] = HumanScript(outcome="busy", answer_after=0.2)
    transfer, pipeline = bot(offline_call)
    await offline_call.start(pipeline, transfer)
    assert await transfer.start_transfer("billing")
    await offline_call.wait_for("teardown_done", timeout=10)
    leaks = await offline_call.finish()
    assert leaks["rooms"] > 0, offline_call.leak_findings
    assert any("consult-" in line for line in offline_call.leak_findings)


async def test_a_call_never_started_finishes_clean(offline_call):
    offline_call.backend()
    assert await offline_call.finish() == NO_LEAKS, offline_call.leak_findings
