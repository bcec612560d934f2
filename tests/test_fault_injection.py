"""Randomized, seeded fault injection over whole calls (WT_FUZZ_SEED, WT_FUZZ_RUNS)."""

import pytest

from pipecat_warm_transfer.testing.fault_injection import draw_plan, fuzz_settings, run_plan

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
