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

SEED, RUNS = fuzz_settings()


@pytest.mark.parametrize("seed", [SEED + i for i in range(RUNS)])
async def test_random_call_keeps_every_invariant(seed):
    run = await run_plan(draw_plan(seed))
    assert not run.violations, (
        f"{run.violations}\nreproduce with WT_FUZZ_SEED={seed} WT_FUZZ_RUNS=1\n{run.trace()}"
    )


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
