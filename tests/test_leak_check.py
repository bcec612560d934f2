"""Leaks are counted at each teardown, before any clean-up, and the count can fail.

The harness's own clean-up closes every leg and hangs up every human; these tests break
the plugin's teardown on purpose and show that the leak count sees it anyway.
"""

import pytest

from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS
from pipecat_warm_transfer.testing.memory_backend import InMemoryLeg

NUMBER = "+15550100"


def human(**kwargs):
    return HumanScript(answer_after=0.3, greeting=tone(500, 0.3), **kwargs)


async def _do_nothing(self):
    return None


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_a_consult_leg_left_open_is_a_leak_at_its_teardown(monkeypatch, livekit):
    """The human declines; the plugin 'forgets' to close the leg. The harness would
    close it later: the leak is seen at `teardown_done` all the same."""
    if livekit:
        from pipecat_warm_transfer.backends.livekit import LiveKitConsultLeg

        monkeypatch.setattr(LiveKitConsultLeg, "close", _do_nothing)
    else:
        monkeypatch.setattr(InMemoryLeg, "close", _do_nothing)
    harness = CallHarness(
        humans={NUMBER: human().dtmf(0.8, "2")}, livekit=livekit, check_leaks=False
    )
    async with harness as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("teardown_done")
        await call.wait_idle()
    report = call.report
    assert report.leaks["rooms"] >= 1
    assert any(
        f.startswith("teardown_done of transfer 1: rooms consult-") for f in report.leak_findings
    ), report.leak_findings


async def test_the_harness_refuses_to_end_a_leaking_call_quietly(monkeypatch):
    monkeypatch.setattr(InMemoryLeg, "close", _do_nothing)
    with pytest.raises(AssertionError, match="the call leaked .*teardown_done of transfer 1"):
        async with CallHarness(humans={NUMBER: human().dtmf(0.8, "2")}) as call:
            assert await call.transfer.start_transfer("x")
            await call.wait_for("teardown_done")
            await call.wait_idle()


async def test_a_moved_human_left_on_after_the_caller_hangs_up_is_a_leak(monkeypatch):
    """After a move the human stays with the caller; once the caller hangs up, the
    plugin must hang the human up too (not the harness's clean-up)."""
    monkeypatch.setattr(InMemoryLeg, "hang_up", _do_nothing)
    harness = CallHarness(
        humans={NUMBER: human().dtmf(0.8, "1")},
        caller_script=lambda p: p.hang_up(4.0),
        check_leaks=False,
    )
    async with harness as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        await call.wait_for("caller_hung_up")
    findings = call.report.leak_findings
    assert any(f.startswith("end of call: participants human-") for f in findings), findings


async def test_a_moved_human_talking_with_the_caller_is_not_a_leak():
    async with CallHarness(humans={NUMBER: human().dtmf(0.8, "1")}) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("connected")
        await call.wait_idle()
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings
    assert "end of call" in [check.at for check in call.leak_watch.checks]
