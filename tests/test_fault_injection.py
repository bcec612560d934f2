"""Randomized, seeded fault injection over whole calls (WT_FUZZ_SEED, WT_FUZZ_RUNS)."""

import asyncio

import pytest
from pipecat.frames.frames import MixerEnableFrame

from pipecat_warm_transfer.testing import CallHarness, HumanScript
from pipecat_warm_transfer.testing.call_harness import CALLER_OUTPUTS
from pipecat_warm_transfer.testing.fault_injection import (
    _stray_music,
    draw_plan,
    fuzz_settings,
    run_plan,
)
from pipecat_warm_transfer.types import ConnectMode

SEED, RUNS = fuzz_settings()


@pytest.mark.parametrize("seed", [SEED + i for i in range(RUNS)])
async def test_random_call_keeps_every_invariant(seed, record_property):
    run = await run_plan(draw_plan(seed))
    record_property("fault_run", run.summary())
    assert not run.violations, (
        f"{run.violations}\nreproduce with WT_FUZZ_SEED={seed} WT_FUZZ_RUNS=1\n{run.trace()}"
    )


def test_a_third_of_the_calls_are_meant_to_connect_through_the_emulator_in_each_mode():
    """The hard paths are drawn often enough to be reached (the runs' totals, printed at
    the end of the suite, say how many did)."""
    plans = [draw_plan(seed) for seed in range(2000)]
    accepting = [p for p in plans if p.livekit and any(a[2:] == ("1",) for a in p.human.actions)]
    assert len(accepting) / len(plans) >= 0.45
    for mode in ConnectMode:
        share = sum(p.connect_mode == mode for p in accepting) / len(plans)
        assert share >= 0.1, (mode, share)
    assert sum(not p.supports_move for p in accepting) / len(plans) >= 0.2  # bridge by auto


def test_the_same_seed_draws_the_same_call():
    assert draw_plan(7).describe() == draw_plan(7).describe()
    assert draw_plan(7).describe() != draw_plan(8).describe()


@pytest.mark.parametrize("caller_output", CALLER_OUTPUTS)
@pytest.mark.parametrize("defect", [False, True])
async def test_hold_music_with_the_caller_back_is_a_violation(caller_output, defect):
    """The stray-music invariant finds the music in what the caller heard, and only it."""
    humans = {"+15550100": HumanScript(outcome="busy", answer_after=0.5)}
    async with CallHarness(humans=humans, caller_output=caller_output) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
        await call.wait_quiet(quiet_secs=0.8)
        if defect:  # music with the caller back, as a missed disarm would play it
            await call.worker.queue_frame(MixerEnableFrame(True))
        await asyncio.sleep(1.5)
    problems = _stray_music(call.report)
    if defect:
        assert len(problems) == 1 and "outside any hold" in problems[0], problems
    else:
        assert problems == []
