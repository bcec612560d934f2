#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Soak: many transfers in one process against the LiveKit emulator, memory and fds checked.

`python -m pipecat_warm_transfer.testing.drivers.soak --sequential 1000 --concurrent 100`

The sequential phase runs transfers one after another on one long call (as a busy line
would see them: most fail fast, every `connect_every`-th one is briefed, bridged and
dropped by the human, and the bot takes the caller back). The concurrent phase runs that
many whole calls at once, each with one transfer that connects. Resident memory and open
file descriptors are read at the start, after each phase and after teardown; leftovers
(rooms, participants, connections, tasks) are counted after each call.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from pathlib import Path

from loguru import logger

from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.scripted_party import HumanScript, tone
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService
from pipecat_warm_transfer.types import FailureReason, TransferOutcome

NUMBER = "+15550100"
SHORT = "Sorry."


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def heap_blocks() -> int:
    """Python objects' memory blocks still allocated (what a leak of objects grows)."""
    return sys.getallocatedblocks()


def open_fds() -> int:
    """Open file descriptors of this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))


def _params(**overrides):
    values = dict(
        hold_message="Hold.",
        failure_messages={reason: SHORT for reason in FailureReason},
        human_left_message="Back.",
        ring_timeout=2.0,
        briefing_timeout=3.0,
        max_transfers=1_000_000,
    )
    values.update(overrides)
    return fast_params(**values)


def _briefing() -> BriefingParams:
    return BriefingParams(
        tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ),
        start="immediate",
        intro="Hi.",
        connecting_message="OK.",
    )


def _connecting_human() -> HumanScript:
    # Keys pressed once the briefing is under way (a key pressed before the bot joined the
    # consult room is lost, as on a real call), and once more in case the first was early.
    return HumanScript(answer_after=0.05, greeting=tone(500, 0.1)).dtmf(0.6, "1").dtmf(3.0, "1")


async def sequential(count: int, connect_every: int, progress) -> dict:
    """`count` transfers one after another on one call; returns its figures."""
    outcomes: dict[str, int] = {}
    async with CallHarness(
        humans={NUMBER: HumanScript(outcome="busy", answer_after=0.0)},
        params=_params(connect_mode="bridge"),
        briefing=_briefing(),
        livekit=True,
        record_limit_secs=1.0,
    ) as call:
        # Each human records from their own answer, not from the call's start: a long
        # call's humans would otherwise each hold a recording as long as the whole call.
        call.emulator.t0 = None
        for i in range(count):
            connect = connect_every and (i + 1) % connect_every == 0
            human = _connecting_human() if connect else HumanScript(outcome="busy")
            if connect:
                # After the second key: the bot joins the consult room a while after the
                # answer, so the first key can be lost (0.9 s, as before, was too early).
                human.hang_up_after = 3.6
            call.emulator.humans[NUMBER] = human
            if not await call.transfer.start_transfer(f"soak {i}"):
                raise RuntimeError(f"transfer {i} was refused")
            # A connected transfer ends when the human hangs up and the bot takes the
            # caller back; a failed one when the caller has been told.
            await call.wait_settled(i + 1, timeout=20.0)
            await call.wait_quiet()  # the caller hears why before asking again
            result = call.transfer.results[i]
            key = str(result.outcome if result.connected else result.reason)
            outcomes[key] = outcomes.get(key, 0) + 1
            progress(i + 1, count)
    return {"transfers": count, "outcomes": outcomes, "leaks": call.report.leaks}


async def concurrent(count: int, progress) -> dict:
    """`count` whole calls at once, each transferring and connecting; returns the figures."""
    done = 0
    leaks = {"rooms": 0, "participants": 0, "connections": 0, "tasks": 0}
    outcomes: dict[str, int] = {}

    async def one_call():
        nonlocal done
        # The calls share one event loop, so a call's task count would hold the others'
        # tasks: rooms, participants and connections are judged per call, the tasks
        # once all calls are over (`tasks_left`).
        async with CallHarness(
            humans={NUMBER: _connecting_human()},
            params=_params(),
            briefing=_briefing(),
            livekit=True,
            record_limit_secs=1.0,
            check_leaks=False,
        ) as call:
            await call.transfer.start_transfer("soak")
            # Connected, or failed (an overloaded machine can miss a timeout): the soak
            # counts outcomes and leftovers, it does not assume them.
            await call.wait_result(1, timeout=120.0)
        for key in leaks:
            leaks[key] += call.report.leaks[key] if key != "tasks" else 0
        result = call.report.results[-1]
        key = str(result.outcome if result.outcome == TransferOutcome.CONNECTED else result.reason)
        outcomes[key] = outcomes.get(key, 0) + 1
        done += 1
        progress(done, count)

    await asyncio.gather(*(one_call() for _ in range(count)))
    return {"calls": count, "outcomes": outcomes, "leaks": leaks}


async def soak(
    sequential_count: int, concurrent_count: int, connect_every: int, out: Path | None = None
) -> dict:
    """Run both phases and measure memory and file descriptors around them."""

    def progress(label):
        def show(i, n):
            if i == n or i % max(1, n // 20) == 0:
                print(f"  {label}: {i}/{n}", flush=True)

        return show

    gc.collect()
    figures = {
        "baseline": {"rss_mb": round(rss_mb(), 1), "fds": open_fds(), "heap_blocks": heap_blocks()}
    }
    started = time.monotonic()
    if sequential_count:
        figures["sequential"] = await sequential(
            sequential_count, connect_every, progress("sequential")
        )
        gc.collect()
        figures["after_sequential"] = {
            "rss_mb": round(rss_mb(), 1),
            "fds": open_fds(),
            "heap_blocks": heap_blocks(),
        }
        if out is not None:
            await asyncio.to_thread(
                out.write_text, json.dumps(figures, indent=2)
            )  # kept on failure
    if concurrent_count:
        figures["concurrent"] = await concurrent(concurrent_count, progress("concurrent"))
        gc.collect()
        figures["after_concurrent"] = {
            "rss_mb": round(rss_mb(), 1),
            "fds": open_fds(),
            "heap_blocks": heap_blocks(),
        }
    figures["tasks_left"] = len([t for t in asyncio.all_tasks() if t is not asyncio.current_task()])
    figures["seconds"] = round(time.monotonic() - started, 1)
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the soak; print and save the figures; exit 1 on a leak."""
    parser = argparse.ArgumentParser(description="Soak the warm transfer offline.")
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=100)
    parser.add_argument("--connect-every", type=int, default=10)
    parser.add_argument("--out", default="benchmarks/results/soak.json")
    args = parser.parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level="ERROR")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(
        soak(args.sequential, args.concurrent, args.connect_every, Path(args.out))
    )
    Path(args.out).write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    leaked = any(
        any(figures.get(phase, {}).get("leaks", {}).values())
        for phase in ("sequential", "concurrent")
    )
    return 1 if leaked or figures["tasks_left"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
