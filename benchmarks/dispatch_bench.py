"""Dispatch: how fast a bot reaches an inbound call, and what it costs LiveKit's API.

Inbound SIP calls arrive at the LiveKit emulator (a dispatch rule puts each caller in a
room of their own), at `RATE` calls per second, each lasting `HOLD_SECS`; two bot
processes serve them. Two ways of finding the calls, same arrivals, same run:

* **agent dispatch** (ours): both workers are `AgentWorker`s registered over the `/agent`
  WebSocket; the server offers each new room to one of them, weighted by load.
* **polling** (the baseline, the `run` command before issue 16): each process, every 1 s,
  lists the rooms and then each room's participants, one request after another, and
  joins any room with a SIP participant and no bot. The second process polls half a second
  after the first. Two pollers race: when both list a room before either joined it, both
  join with the same identity and LiveKit evicts the first (`duplicate_identity`).

Numbers: **dispatch latency**, the caller joining the room → the bot in the room (p50 /
p95 / max); the **API requests** each way makes while serving (polling: ListRooms and
ListParticipants; dispatch: none — the socket's messages are counted apart); and the
**duplicate joins** (a second bot in a room).

The rooms are the emulator's memory rooms: a bot's join is instant here, as a LiveKit
room join is not (signalling, ICE), which adds the same time to both ways.

Summary keys: `dispatch_latency_p50_ms`, `dispatch_latency_p95_ms`,
`dispatch_latency_max_ms`, `polling_latency_p50_ms`, `polling_latency_p95_ms`,
`polling_api_requests_per_s`, `dispatch_api_requests_per_s`,
`polling_duplicate_joins`, `dispatch_duplicate_joins`, `dispatch_speedup_p95`.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from livekit import api
from livekit.protocol import agent_dispatch, models, room, sip

from benchmarks.common import (
    RESULTS_DIR,
    check_profile,
    distribution_ms,
    machine_info,
    percentile,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from pipecat_warm_transfer.runner.agent_worker import AgentWorker, CallAssignment, WorkerOptions
from pipecat_warm_transfer.testing import LiveKitEmulator
from pipecat_warm_transfer.testing.memory_room import Disconnected, ParticipantLeft

JSON_PATH = RESULTS_DIR / "dispatch.json"
PNG_PATH = RESULTS_DIR / "dispatch.png"
AGENT = "bench-bot"
IDENTITY = "bench-bot"
POLL_SECS = 1.0
PROFILE_SETTINGS = {
    "quick": {"calls": 40, "rate": 8.0, "hold": 3.0},
    "full": {"calls": 200, "rate": 10.0, "hold": 6.0},
}


def _rule() -> sip.SIPDispatchRuleInfo:
    return sip.SIPDispatchRuleInfo(
        rule=sip.SIPDispatchRule(
            dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="call")
        ),
        room_config=room.RoomConfiguration(
            agents=[agent_dispatch.RoomAgentDispatch(agent_name=AGENT)]
        ),
    )


class _Bot:
    """A bot in a caller's room until the caller leaves (the dispatched call's body)."""

    def __init__(self, emulator: LiveKitEmulator, served: CallAssignment, joins: dict):
        self._emulator = emulator
        self._served = served
        self._joins = joins
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        connection = self._emulator.join(self._served.token, self._served.room, IDENTITY)
        self._joins.setdefault(self._served.room, []).append(asyncio.get_running_loop().time())
        await _until_caller_leaves(connection, self._stopped)

    async def stop(self, reason: str) -> None:
        self._stopped.set()


async def _until_caller_leaves(connection, stopped: asyncio.Event) -> None:
    async def caller_gone():
        while True:
            event = await connection.recv()
            if isinstance(event, Disconnected):
                return
            if isinstance(event, ParticipantLeft) and event.identity.startswith("sip_"):
                return

    waiters = {asyncio.ensure_future(caller_gone()), asyncio.ensure_future(stopped.wait())}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    connection.disconnect()


async def _arrivals(emulator, settings, seed: int) -> list:
    rng = random.Random(seed)
    calls = []
    hang_ups = []
    for i in range(settings["calls"]):
        await asyncio.sleep(rng.expovariate(settings["rate"]))
        call = emulator.inbound_call(f"+1555{seed:02d}{i:05d}")
        calls.append(call)
        hang_ups.append(asyncio.get_running_loop().call_later(settings["hold"], call.hang_up))
    await asyncio.sleep(settings["hold"] + 0.5)
    for handle in hang_ups:
        handle.cancel()
    return calls


async def _until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the workers did not register")
        await asyncio.sleep(0.01)


def _outcome(calls, joins: dict, api_requests: int, elapsed: float) -> dict[str, Any]:
    """Each call's wait for its bot, the calls no bot reached, the second bots, the API load."""
    waits, missed, duplicates = [], 0, 0
    for call in calls:
        times = joins.get(call.room, [])
        if not times:
            missed += 1
            continue
        waits.append(times[0] - call.joined_at)
        duplicates += len(times) - 1
    return {
        "latency": distribution_ms(waits),
        "waits_s": waits,
        "missed": missed,
        "duplicate_joins": duplicates,
        "api_requests": api_requests,
        "api_requests_per_s": round(api_requests / elapsed, 2),
    }


async def _run_dispatch(settings) -> dict[str, Any]:
    async with LiveKitEmulator(dispatch_seed=1) as lk:
        lk.add_dispatch_rule(_rule())
        joins: dict = {}
        options = WorkerOptions(agent_name=AGENT, identity=IDENTITY, max_calls=500)
        workers = [
            AgentWorker(
                lk.url,
                lk.api_key,
                lk.api_secret,
                options,
                lambda served: _Bot(lk, served, joins),
            )
            for _ in range(2)
        ]
        runs = [asyncio.create_task(worker.run()) for worker in workers]
        await _until(lambda: all(worker.registered for worker in workers))
        requests_before = len(lk.requests)
        t0 = time.perf_counter()
        calls = await _arrivals(lk, settings, seed=1)
        elapsed = time.perf_counter() - t0
        api_requests = len(lk.requests) - requests_before
        per_worker = [worker.calls_served for worker in workers]
        for worker in workers:
            await worker.close()
        await asyncio.gather(*runs)
    return {**_outcome(calls, joins, api_requests, elapsed), "calls_per_worker": per_worker}


async def _poller(
    lk: LiveKitEmulator, joins: dict, stop: asyncio.Event, bots: list, offset: float
) -> None:
    """The `run` command before issue 16: list, look, join; every second."""
    lkapi = api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
    stopped = asyncio.Event()
    await asyncio.sleep(offset)
    try:
        while not stop.is_set():
            rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
            for info in rooms:
                people = (
                    await lkapi.room.list_participants(api.ListParticipantsRequest(room=info.name))
                ).participants
                has_bot = any(p.identity == IDENTITY for p in people)
                has_sip = any(p.kind == models.ParticipantInfo.Kind.SIP for p in people)
                if has_sip and not has_bot:
                    token = lk_join_token(lk, info.name)
                    connection = lk.join(token, info.name, IDENTITY)
                    joins.setdefault(info.name, []).append(asyncio.get_running_loop().time())
                    bots.append(asyncio.create_task(_until_caller_leaves(connection, stopped)))
            try:
                await asyncio.wait_for(stop.wait(), POLL_SECS)
            except TimeoutError:
                pass
    finally:
        stopped.set()
        await lkapi.aclose()


def lk_join_token(lk: LiveKitEmulator, room_name: str) -> str:
    return (
        api.AccessToken(lk.api_key, lk.api_secret)
        .with_identity(IDENTITY)
        .with_grants(api.VideoGrants(room_join=True, room=room_name))
        .to_jwt()
    )


async def _run_polling(settings) -> dict[str, Any]:
    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(_rule())
        joins: dict = {}
        stop = asyncio.Event()
        bots: list = []
        # The second process started half a poll later: they do not poll in lockstep.
        pollers = [
            asyncio.create_task(_poller(lk, joins, stop, bots, i * POLL_SECS / 2)) for i in range(2)
        ]
        requests_before = len(lk.requests)
        t0 = time.perf_counter()
        calls = await _arrivals(lk, settings, seed=1)
        elapsed = time.perf_counter() - t0
        api_requests = len(lk.requests) - requests_before
        stop.set()
        await asyncio.gather(*pollers)
        await asyncio.gather(*bots, return_exceptions=True)
    return _outcome(calls, joins, api_requests, elapsed)


def _plot(results: dict, profile: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, label in (("dispatch", "agent dispatch (ours)"), ("polling", "polling (before)")):
        waits = sorted(w * 1000 for w in results[name]["waits_s"])
        if waits:
            fractions = [(i + 1) / len(waits) for i in range(len(waits))]
            ax.step(waits, fractions, where="post", label=label)
    ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("caller joins the room → bot in the room (ms)")
    ax.set_ylabel("fraction of calls")
    ax.set_title(
        f"Dispatch latency, two bot processes, profile {profile}: "
        f"{results['polling']['api_requests_per_s']:g} API requests/s polling, "
        f"{results['dispatch']['api_requests_per_s']:g} with dispatch",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def run(profile: str) -> dict[str, Any]:
    check_profile(profile)
    settings = PROFILE_SETTINGS[profile]
    progress(f"dispatch: {settings['calls']} calls through agent dispatch ...")
    dispatch = asyncio.run(_run_dispatch(settings))
    progress(f"dispatch: {settings['calls']} calls through polling (baseline) ...")
    polling = asyncio.run(_run_polling(settings))
    results = {"dispatch": dispatch, "polling": polling}
    summary = {
        "dispatch_latency_p50_ms": dispatch["latency"].get("p50_ms"),
        "dispatch_latency_p95_ms": round(_p95(dispatch["waits_s"]), 3),
        "dispatch_latency_max_ms": dispatch["latency"].get("max_ms"),
        "polling_latency_p50_ms": polling["latency"].get("p50_ms"),
        "polling_latency_p95_ms": round(_p95(polling["waits_s"]), 3),
        "polling_api_requests_per_s": polling["api_requests_per_s"],
        "dispatch_api_requests_per_s": dispatch["api_requests_per_s"],
        "polling_duplicate_joins": polling["duplicate_joins"],
        "dispatch_duplicate_joins": dispatch["duplicate_joins"],
        "dispatch_speedup_p95": round(
            _p95(polling["waits_s"]) / max(_p95(dispatch["waits_s"]), 1e-3), 1
        ),
    }
    write_json(
        JSON_PATH,
        {
            "profile": profile,
            "settings": settings,
            "summary": summary,
            "dispatch": {k: v for k, v in dispatch.items() if k != "waits_s"},
            "polling": {k: v for k, v in polling.items() if k != "waits_s"},
            "machine": machine_info(),
        },
    )
    _plot(results, profile, PNG_PATH)
    return summary


def _p95(waits_s: list[float]) -> float:
    return percentile([w * 1000 for w in waits_s], 95)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(sys.argv[1] if len(sys.argv) > 1 else "quick"), indent=2))
