"""The core's parts on their own: connect strategies, the bridge, the transfer handle."""

import asyncio
import dataclasses

import pytest
from pipecat.frames.frames import InputAudioRawFrame

from pipecat_warm_transfer.bridge import AudioBridge
from pipecat_warm_transfer.connect_modes import (
    BridgeStrategy,
    ConnectStrategy,
    FallbackStrategy,
    Join,
    ModeUnavailableError,
    MoveStrategy,
    strategy_for,
)
from pipecat_warm_transfer.consult_leg import (
    ConsultLeg,
    DialRequest,
    MoveUnsupportedError,
    TransferTarget,
)
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferOutcome

NUMBER = "+15550100"


class _Leg(ConsultLeg):
    """A leg that only records what the strategies ask of it."""

    def __init__(self, move_error: Exception | None = None):
        super().__init__(
            DialRequest(
                target=TransferTarget(NUMBER),
                consult_room="consult",
                human_identity="human",
                bot_identity="bot",
                ring_timeout=5.0,
            )
        )
        self.move_error = move_error
        self.calls: list[str] = []

    @property
    def transport(self):
        raise NotImplementedError

    async def dial(self):
        self.calls.append("dial")

    async def move_to(self, caller_room):
        self.calls.append(f"move_to {caller_room}")
        if self.move_error is not None:
            raise self.move_error
        self._moved = True

    async def hang_up(self):
        self.calls.append("hang_up")

    async def close(self):
        self._closed = True


def join_for(leg, *, can_move=True, caller_room="call"):
    opened = []
    return Join(leg, caller_room, can_move, lambda: opened.append(True)), opened


async def test_auto_moves_when_the_server_can():
    leg = _Leg()
    join, opened = join_for(leg)
    assert await strategy_for(ConnectMode.AUTO).join(join) == ConnectMode.MOVE
    assert leg.calls == ["move_to call"] and leg.moved and not opened


async def test_auto_bridges_when_the_server_cannot_move():
    leg = _Leg(MoveUnsupportedError("not implemented"))
    join, opened = join_for(leg)
    assert await strategy_for(ConnectMode.AUTO).join(join) == ConnectMode.BRIDGE
    assert leg.calls == ["move_to call"] and opened == [True] and not leg.moved


@pytest.mark.parametrize("can_move,caller_room", [(False, "call"), (True, None)])
async def test_auto_bridges_without_asking_when_no_move_is_possible(can_move, caller_room):
    leg = _Leg()
    join, opened = join_for(leg, can_move=can_move, caller_room=caller_room)
    assert await strategy_for(ConnectMode.AUTO).join(join) == ConnectMode.BRIDGE
    assert leg.calls == [] and opened == [True]


async def test_move_alone_is_unavailable_rather_than_bridged():
    join, opened = join_for(_Leg(MoveUnsupportedError("not implemented")))
    with pytest.raises(ModeUnavailableError, match="move unsupported"):
        await MoveStrategy().join(join)
    assert not opened


async def test_bridge_never_touches_the_leg():
    leg = _Leg()
    join, opened = join_for(leg)
    assert await BridgeStrategy().join(join) == ConnectMode.BRIDGE
    assert leg.calls == [] and opened == [True]


async def test_a_new_mode_is_one_class_and_composes():
    """A mode that needs a leg operation of its own (SIP REFER, say) is one class."""

    class ReferStrategy(ConnectStrategy):
        async def join(self, join):
            await join.leg.dial()  # stands for the leg operation the mode needs
            raise ModeUnavailableError("no REFER on this trunk")

    leg = _Leg()
    join, opened = join_for(leg)
    mode = await FallbackStrategy(ReferStrategy(), BridgeStrategy()).join(join)
    assert mode == ConnectMode.BRIDGE and leg.calls == ["dial"] and opened == [True]


def _audio(value: int) -> InputAudioRawFrame:
    return InputAudioRawFrame(audio=bytes([value]) * 320, sample_rate=16000, num_channels=1)


async def test_the_bridge_relays_both_ways_only_while_open():
    to_caller, to_human = [], []

    async def play_to_caller(frame):
        to_caller.append(frame.audio[0])

    async def play_to_human(frame):
        to_human.append(frame.audio[0])

    bridge = AudioBridge(play_to_caller=play_to_caller, play_to_human=play_to_human)
    await bridge.from_caller(_audio(1))
    await bridge.from_human(_audio(2))
    bridge.start()
    await bridge.from_caller(_audio(3))
    await bridge.from_human(_audio(4))
    bridge.stop()
    await bridge.from_caller(_audio(5))
    await bridge.from_human(_audio(6))
    assert to_human == [3] and to_caller == [4]


def _human(**kwargs):
    return HumanScript(answer_after=0.5, greeting=tone(500, 0.4), **kwargs)


async def test_awaiting_the_handle_yields_the_connected_result():
    async with CallHarness(humans={NUMBER: _human().dtmf(1.5, "1")}) as call:
        handle = await call.transfer.start_transfer("billing")
        assert handle and handle.refusal is None and not handle.done()
        result = await asyncio.wait_for(handle, 20)
        assert result.outcome == TransferOutcome.CONNECTED
        assert result is call.transfer.last_result and handle.result() is result
        # A second transfer cannot start on a connected call: a falsy handle says why.
        again = await call.transfer.start_transfer("again")
        assert not again and "connected" in again.refusal
        assert await again is None
        await call.wait_for("teardown_done")


async def test_a_failed_transfer_settles_once_the_caller_is_told():
    async with CallHarness(humans={NUMBER: _human(outcome="busy")}) as call:
        handle = await call.transfer.start_transfer("billing")
        result = await asyncio.wait_for(handle, 20)
        assert result.outcome == TransferOutcome.FAILED and result.reason == FailureReason.BUSY
        names = [e["event"] for e in call.events]
        # Settled means told: the return sentence is on its way before the teardown ends.
        assert "returned_to_caller" in names
        await call.wait_for("teardown_done")


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_the_bot_is_in_the_consult_room_before_the_phone_rings(livekit):
    seen = {}
    async with CallHarness(humans={NUMBER: _human().dtmf(1.5, "1")}, livekit=livekit) as call:

        @call.transfer.event_handler("on_transfer_event")
        async def _on_event(_transfer, event):
            if event["event"] == "dialing":
                room = call.server.get_room(event["room"])
                seen["at_dial"] = sorted(room.participants) if room else None

        assert await call.transfer.start_transfer("billing")
        await call.wait_for("connected")
    assert seen["at_dial"] == ["transfer-bot"]


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_a_key_pressed_the_moment_the_human_answers_is_not_lost(livekit):
    """The bot listens from before the ring: the human's very first key counts."""
    script = HumanScript(answer_after=0.5).dtmf(0.05, "1")
    async with CallHarness(humans={NUMBER: script}, livekit=livekit) as call:
        handle = await call.transfer.start_transfer("billing")
        result = await asyncio.wait_for(handle, 20)
        await call.wait_for("teardown_done")
    assert result.outcome == TransferOutcome.CONNECTED


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "decline"])
async def test_a_failed_dial_seen_from_inside_the_room_is_no_hang_up(outcome):
    """In the room while it rings, the bot sees LiveKit's SIP participant leave with the
    failure: that is the dial's answer, not a human who hung up."""
    async with CallHarness(
        humans={NUMBER: _human(outcome=outcome)}, livekit=True, params=None
    ) as call:
        handle = await call.transfer.start_transfer("billing")
        result = await asyncio.wait_for(handle, 20)
        await call.wait_for("teardown_done")
    assert result.reason != FailureReason.HUMAN_HUNG_UP
    assert "human_hung_up" not in [e["event"] for e in call.events]


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_a_human_who_hangs_up_at_once_is_seen(livekit):
    """Hung up right at the answer, maybe before the answer reached the bot: the caller
    comes back at once, not after the briefing timeout."""
    script = HumanScript(answer_after=0.5, hang_up_after=0.02)
    async with CallHarness(humans={NUMBER: script}, livekit=livekit) as call:
        handle = await call.transfer.start_transfer("billing")
        result = await asyncio.wait_for(handle, 20)
        await call.wait_for("teardown_done")
    assert result.reason == FailureReason.HUMAN_HUNG_UP
    assert result.timings.total < 3.0  # the briefing timeout is 6 s here


async def test_a_teardown_that_raises_still_lets_the_pipeline_end():
    """An exception in the end-of-call teardown must not keep the EndFrame from the end of
    the pipeline (it used to: the runner, and the test, hung)."""
    async with CallHarness(humans={NUMBER: _human().dtmf(5.0, "1")}, check_leaks=False) as call:
        transfer = call.transfer
        real = transfer._end_under_transfer

        async def broken(reason):
            await real(reason)
            raise RuntimeError("a bug after the teardown")

        transfer._end_under_transfer = broken
        assert await transfer.start_transfer("billing")
        await call.wait_for("human_answered")
        ended = asyncio.get_running_loop().time()
    # Leaving the block ended the pipeline: it did, and promptly.
    assert asyncio.get_running_loop().time() - ended < 8.0
    assert call.report is not None


def test_the_target_names_no_backend_and_keeps_the_old_trunk_keyword():
    assert TransferTarget(NUMBER, "ST_1").route == "ST_1"
    with pytest.warns(DeprecationWarning, match="route"):
        old = TransferTarget(NUMBER, trunk_id="ST_2")
    assert old.route == "ST_2" and old == TransferTarget(NUMBER, route="ST_2")
    assert "trunk_id" not in {f.name for f in dataclasses.fields(TransferTarget)}
