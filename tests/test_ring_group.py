"""Ring groups: several humans tried in turn or all at once, through whole transfers."""

import asyncio

import pytest

from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.ring_group import RingGroup, group_reason
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS
from pipecat_warm_transfer.types import FailureReason, TransferConfigError, TransferOutcome

ALICE, BOB, CAROL = "+15550101", "+15550102", "+15550103"


def person(number, name):
    return TransferTarget(number, display_name=name)


def accepts(answer_after=0.5, accept_at=1.0):
    return HumanScript(answer_after=answer_after, greeting=tone(500, 0.3)).dtmf(accept_at, "1")


def declines(answer_after=0.5):
    return HumanScript(answer_after=answer_after, greeting=tone(500, 0.3)).dtmf(1.0, "2")


async def transfer(group, humans, until, livekit=False):
    async with CallHarness(humans=humans, target=group, livekit=livekit) as call:
        assert await call.transfer.start_transfer("billing dispute")
        for event in until:
            await call.wait_for(event)
        await call.wait_idle()
    (result,) = call.report.results
    return call, result


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_sequential_busy_then_decline_then_accept(livekit):
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob"), person(CAROL, "Carol")])
    humans = {
        ALICE: HumanScript(outcome="busy", answer_after=0.3),
        BOB: declines(),
        CAROL: accepts(),
    }
    call, result = await transfer(group, humans, ["connected", "teardown_done"], livekit)
    assert result.outcome == TransferOutcome.CONNECTED
    assert result.answered_by == "Carol"
    assert [(t.display_name, t.outcome) for t in result.tried] == [
        ("Alice", "busy"),
        ("Bob", "declined"),
        ("Carol", "accepted"),
    ]
    assert result.tried[0].sip_status == 486 and result.tried[0].answered_at is None
    assert result.tried[1].answered_at is not None and result.tried[2].ring > 0
    assert all(t.number.startswith("…") for t in result.tried)  # masked
    dialing = [e for e in call.report.events if e["event"] == "dialing"]
    assert [e["target"] for e in dialing] == [0, 1, 2]
    # One after another: each human is dialed after the one before settled.
    assert result.tried[0].ended_at <= result.tried[1].dialed_at
    assert result.tried[1].ended_at <= result.tried[2].dialed_at
    failed = [e for e in call.report.events if e["event"] == "target_failed"]
    assert [(e["reason"], e["remaining"]) for e in failed] == [("busy", 2), ("declined", 1)]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_sequential_stops_at_a_decline_when_told_to():
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob")], on_decline="stop")
    call, result = await transfer(
        group, {ALICE: declines(), BOB: accepts()}, ["returned_to_caller", "teardown_done"]
    )
    assert result.reason == FailureReason.DECLINED
    assert [t.outcome for t in result.tried] == ["declined"]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_nobody_in_the_group_takes_the_call():
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob")])
    humans = {
        ALICE: HumanScript(outcome="no_answer", answer_after=0.3),
        BOB: HumanScript(outcome="busy", answer_after=0.3),
    }
    call, result = await transfer(group, humans, ["returned_to_caller", "teardown_done"])
    assert result.outcome == TransferOutcome.FAILED
    assert result.reason == FailureReason.NO_ANSWER
    assert [t.outcome for t in result.tried] == ["no_answer", "busy"]
    assert "none of the 2" in result.detail
    said = call.transfer._params.failure_message(FailureReason.NO_ANSWER)
    assert said in call.report.spoken_to_caller
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_simultaneous_first_to_answer_is_briefed_and_the_others_stop(livekit):
    group = RingGroup(
        [person(ALICE, "Alice"), person(BOB, "Bob"), person(CAROL, "Carol")],
        strategy="simultaneous",
    )
    humans = {
        ALICE: accepts(answer_after=3.0),  # would answer, but Bob was quicker
        BOB: accepts(answer_after=0.6),
        CAROL: HumanScript(outcome="busy", answer_after=0.2),
    }
    call, result = await transfer(group, humans, ["connected", "teardown_done"], livekit)
    assert result.outcome == TransferOutcome.CONNECTED
    assert result.answered_by == "Bob"
    outcomes = {t.display_name: t.outcome for t in result.tried}
    assert outcomes == {"Alice": "stopped", "Bob": "accepted", "Carol": "busy"}
    dialed = [t.dialed_at for t in result.tried]
    assert max(dialed) - min(dialed) < 0.3  # all at once
    stopped = call.report.first("others_stopped")
    assert stopped["count"] == 1 and stopped["secs"] < 1.0
    bob = next(t for t in result.tried if t.display_name == "Bob")
    alice = next(t for t in result.tried if t.display_name == "Alice")
    assert alice.ended_at - bob.answered_at < 1.0  # Alice's phone stopped within 1 s
    assert alice.answered_at is None
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_simultaneous_nobody_answers():
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob")], strategy="simultaneous")
    humans = {
        ALICE: HumanScript(outcome="busy", answer_after=0.2),
        BOB: HumanScript(outcome="busy", answer_after=0.4),
    }
    call, result = await transfer(group, humans, ["returned_to_caller", "teardown_done"])
    assert result.reason == FailureReason.BUSY
    assert sorted(t.outcome for t in result.tried) == ["busy", "busy"]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_caller_hangs_up_while_the_group_rings():
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob")], strategy="simultaneous")
    humans = {ALICE: accepts(answer_after=5.0), BOB: accepts(answer_after=5.0)}
    async with CallHarness(humans=humans, target=group) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("dialing")
        await asyncio.sleep(0.5)
        await call.caller.close()
        await call.wait_for("teardown_done")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.CALLER_HUNG_UP
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings  # no phone left ringing


def test_a_group_is_checked_before_any_call():
    with pytest.raises(TransferConfigError, match="targets: at least one"):
        RingGroup([])
    with pytest.raises(TransferConfigError, match="strategy"):
        RingGroup([person(ALICE, "A")], strategy="round_robin")
    with pytest.raises(TransferConfigError, match=r"targets\[1\]"):
        RingGroup([person(ALICE, "A"), ALICE])
    with pytest.raises(TransferConfigError, match="ring_timeout"):
        TransferTarget(ALICE, ring_timeout=0)


def test_the_group_reason():
    F = FailureReason
    assert group_reason([F.BUSY, F.BUSY]) == F.BUSY
    assert group_reason([F.BUSY, F.NO_ANSWER]) == F.NO_ANSWER
    assert group_reason([F.NO_ANSWER, F.DECLINED, F.BUSY]) == F.DECLINED
    assert group_reason([F.VOICEMAIL, F.NO_ANSWER]) == F.VOICEMAIL
    assert group_reason([F.DIAL_FAILED]) == F.DIAL_FAILED


async def test_the_call_record_keeps_what_each_human_heard_and_said():
    group = RingGroup([person(ALICE, "Alice"), person(BOB, "Bob")])
    humans = {ALICE: declines(), BOB: accepts()}
    call, result = await transfer(group, humans, ["connected", "teardown_done"])
    alice, bob = result.tried
    assert result.summary and "billing dispute" in result.summary
    # Each human's consult room: the bot's words to them, in order.
    for record in (alice, bob):
        said = [turn["text"] for turn in record.transcript if turn["role"] == "bot"]
        assert said, record.transcript
    assert result.consult_transcript == bob.transcript
    assert result.as_dict()["tried"][1]["transcript"] == bob.transcript


async def test_simultaneous_first_to_accept_briefs_everyone_who_answers():
    group = RingGroup(
        [person(ALICE, "Alice"), person(BOB, "Bob"), person(CAROL, "Carol")],
        strategy="simultaneous",
        first_to="accept",
    )
    humans = {
        ALICE: accepts(answer_after=0.4, accept_at=2.5),  # answers first, accepts late
        BOB: accepts(answer_after=0.8, accept_at=0.6),  # answers second, accepts first
        CAROL: HumanScript(outcome="no_answer", answer_after=6.0),  # still ringing
    }
    call, result = await transfer(group, humans, ["connected", "teardown_done"])
    assert result.outcome == TransferOutcome.CONNECTED and result.answered_by == "Bob"
    outcomes = {t.display_name: t.outcome for t in result.tried}
    assert outcomes == {"Alice": "stopped", "Bob": "accepted", "Carol": "stopped"}
    alice = next(t for t in result.tried if t.display_name == "Alice")
    assert alice.answered_at is not None  # she was briefed too ...
    thanks = call.transfer._params.taken_elsewhere_message
    said_to_alice = [t["text"] for t in alice.transcript if t["role"] == "bot"]
    assert any(thanks.split(".")[0] in text for text in said_to_alice), alice.transcript
    answers = [e for e in call.report.events if e["event"] == "human_answered"]
    assert [e["target"] for e in answers] == [0, 1]
    assert call.report.first("others_stopped")["count"] == 1  # Carol's phone; Alice is thanked
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_simultaneous_first_to_accept_when_everyone_declines():
    group = RingGroup(
        [person(ALICE, "Alice"), person(BOB, "Bob")], strategy="simultaneous", first_to="accept"
    )
    call, result = await transfer(
        group, {ALICE: declines(0.3), BOB: declines(0.6)}, ["returned_to_caller", "teardown_done"]
    )
    assert result.reason == FailureReason.DECLINED
    assert [t.outcome for t in result.tried] == ["declined", "declined"]
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings
