"""LiveKit's agent dispatch across worker PROCESSES: the production serving loop, killed and drained.

The emulator runs here; two `dispatch_worker_process.py` processes run the real
`serve_dispatch` (registration, load reports, health endpoints, SIGTERM drain) and join
each dispatched call's room over the emulator's `/rtc` signal (`SignalRoomCall`), since a
process cannot share the emulator's memory rooms. Each process prints its call events as
JSON lines; each caller's memory connection records what it saw and when.
"""

import asyncio
import json
import os
import re
import signal
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from livekit.protocol import agent, agent_dispatch, room, sip

from pipecat_warm_transfer.testing.livekit_agent_dispatch import InboundCall
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator
from pipecat_warm_transfer.testing.memory_room import (
    Disconnected,
    ParticipantJoined,
    ParticipantLeft,
)

AGENT = "acme-support"
ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("dispatch_worker_process.py")
STALE_SECS = 1.0
HEALTH_LINE = re.compile(r"health checks on http://[^\s:]+:(\d+)")

BOT_YAML = f"""\
version: 1
livekit:
  url: ${{LIVEKIT_URL}}
  api_key: ${{LIVEKIT_API_KEY}}
  api_secret: ${{LIVEKIT_API_SECRET}}
  bot_identity: acme-bot
  agent_name: {AGENT}
  max_calls: 40
  load_threshold: 1.0
  drain_timeout: 30s
services:
  stt: {{provider: scripted}}
  llm: {{provider: scripted}}
  tts: {{provider: scripted}}
transfer:
  target:
    number: "+15551234567"
"""


def dispatch_rule() -> sip.SIPDispatchRuleInfo:
    return sip.SIPDispatchRuleInfo(
        rule=sip.SIPDispatchRule(
            dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="call")
        ),
        room_config=room.RoomConfiguration(
            agents=[agent_dispatch.RoomAgentDispatch(agent_name=AGENT)]
        ),
    )


async def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class WorkerProcess:
    """A worker process, its JSON call events (stdout) and its log (stderr)."""

    def __init__(self, name: str, process: asyncio.subprocess.Process):
        self.name = name
        self.process = process
        self.events: list[dict] = []
        self.log: list[str] = []
        self.health_port: int | None = None
        self._readers = [
            asyncio.create_task(self._read_events()),
            asyncio.create_task(self._read_log()),
        ]

    @classmethod
    async def start(cls, name: str, config: Path, env: dict) -> "WorkerProcess":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            str(config),
            "--health-port",
            "0",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        return cls(name, process)

    async def _read_events(self) -> None:
        async for line in self.process.stdout:
            self.events.append(json.loads(line))

    async def _read_log(self) -> None:
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log.append(line)
            match = HEALTH_LINE.search(line)
            if match and self.health_port is None:
                self.health_port = int(match.group(1))

    def of(self, event: str) -> list[dict]:
        return [e for e in self.events if e["event"] == event]

    def rooms(self) -> set[str]:
        return {e["room"] for e in self.of("joined")}

    async def readyz(self, session: aiohttp.ClientSession) -> tuple[int, str]:
        async with session.get(f"http://127.0.0.1:{self.health_port}/readyz") as response:
            return response.status, await response.text()

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await asyncio.wait_for(self.process.wait(), 10)
        await asyncio.wait(self._readers, timeout=5)

    def tail(self) -> str:
        return "\n".join(self.log[-30:])


class Caller:
    """An inbound call and what its caller saw in the room, with event-loop times."""

    def __init__(self, call: InboundCall):
        self.call = call
        self.seen: list[tuple[float, object]] = []
        self.hung_up_at: float | None = None
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        async for event in self.call.connection.events():
            if isinstance(event, (ParticipantJoined, ParticipantLeft, Disconnected)):
                self.seen.append((loop.time(), event))

    @property
    def room(self) -> str:
        return self.call.room

    def bot_joined_at(self) -> float | None:
        for at, event in self.seen:
            if isinstance(event, ParticipantJoined) and event.kind == "agent":
                return at
        return None

    def bot_left(self) -> tuple[float, ParticipantLeft] | None:
        for at, event in self.seen:
            if isinstance(event, ParticipantLeft) and event.kind == "agent":
                return at, event
        return None

    def hang_up(self) -> None:
        self.hung_up_at = time.time()
        self.call.hang_up()


def kinds(lk: LiveKitEmulator, room_name: str) -> list[str]:
    return sorted(c.kind for c in lk.rooms.get_room(room_name).connections())


@pytest.mark.timeout(90)
async def test_two_worker_processes_kill_and_drain(tmp_path):
    config = tmp_path / "bot.yaml"
    config.write_text(BOT_YAML)
    started = time.monotonic()
    workers: list[WorkerProcess] = []
    callers: list[Caller] = []
    async with (
        LiveKitEmulator(dispatch_seed=16, stale_participant_secs=STALE_SECS) as lk,
        aiohttp.ClientSession() as http,
    ):
        lk.add_dispatch_rule(dispatch_rule())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
            "LIVEKIT_URL": lk.url,
            "LIVEKIT_API_KEY": lk.api_key,
            "LIVEKIT_API_SECRET": lk.api_secret,
            "LOGURU_LEVEL": "INFO",
        }
        try:
            workers = [await WorkerProcess.start(n, config, env) for n in ("a", "b")]
            await until(lambda: len(lk.agents.workers) == 2, 30, "both workers registered")
            await until(lambda: all(w.health_port for w in workers), 5, "health ports logged")

            def place(count: int, base: int) -> list[Caller]:
                placed = [Caller(lk.inbound_call(f"+1555{base + i:07d}")) for i in range(count)]
                callers.extend(placed)
                return placed

            def joined_total() -> int:
                return sum(len(w.of("joined")) for w in workers)

            # 1. Twenty calls, each served exactly once, spread over both processes.
            first = []
            for i in range(20):
                first += place(1, 1000 + i)
                await asyncio.sleep(0.05)
            await until(lambda: joined_total() == 20, 20, "20 bots joined")
            records = {r.job.id: r for r in lk.agents.jobs}
            assert len(records) == 20
            assert all(r.outcome == "assigned" for r in records.values())
            job_ids = [e["job_id"] for w in workers for e in w.of("joined")]
            assert sorted(job_ids) == sorted(records)  # every job once, by one process
            for caller in first:
                assert kinds(lk, caller.room) == ["agent", "sip"], caller.room
            assert workers[0].rooms() | workers[1].rooms() == {c.room for c in first}
            worker_id = {}
            for w in workers:
                (worker_id[w.name],) = {records[e["job_id"]].worker_id for e in w.of("joined")}
            spread = {w.name: len(w.of("joined")) for w in workers}
            assert min(spread.values()) >= 5, spread  # spread by load

            # 2. Kill a process mid-call: LiveKit forgets the worker, its bots time out.
            victim, survivor = sorted(workers, key=lambda w: -len(w.of("joined")))
            stranded = [c for c in first if c.room in victim.rooms()]
            victim.process.send_signal(signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            await until(
                lambda: worker_id[victim.name] not in lk.agents.workers, 5, "deregistration"
            )
            assert all(kinds(lk, c.room) == ["agent", "sip"] for c in stranded)
            await until(
                lambda: all(kinds(lk, c.room) == ["sip"] for c in stranded),
                STALE_SECS + 4,
                "the dead bots' removal",
            )
            for caller in stranded:
                at, left = caller.bot_left()
                assert left.reason == "connection_timeout"
                assert at - killed_at >= STALE_SECS * 0.9
                assert caller.call.connection.connected  # LiveKit does not hang up a caller
            for record in (records[e["job_id"]] for e in victim.of("joined")):
                assert record.terminations == []  # its worker is gone: nothing to tell
            for caller in first:
                if caller not in stranded:
                    assert kinds(lk, caller.room) == ["agent", "sip"]
            # New calls all go to the survivor.
            second = place(6, 2000)
            await until(lambda: len(survivor.of("joined")) == spread[survivor.name] + 6, 15, "6")
            for record in lk.agents.jobs[-6:]:
                assert record.offered_to == [worker_id[survivor.name]]
            assert {c.room for c in second} <= survivor.rooms()

            # 3. SIGTERM the survivor while it has calls: it drains, dropping none.
            held = [c for c in first + second if c.room in survivor.rooms()]
            assert await survivor.readyz(http) == (200, "ready\n")
            survivor.process.send_signal(signal.SIGTERM)
            sigterm_at = time.monotonic()
            status = await survivor.readyz(http)
            while status[0] != 503 and time.monotonic() - sigterm_at < 2:
                status = await survivor.readyz(http)
            readyz_secs = time.monotonic() - sigterm_at
            assert status == (503, "draining\n") and readyz_secs < 1.0
            server_side = lk.agents.workers[worker_id[survivor.name]]
            await until(
                lambda: server_side.status == agent.WorkerStatus.WS_FULL, 3, "WS_FULL reported"
            )
            late = place(2, 3000)
            await asyncio.gather(*(job for c in late for job in c.call.jobs))
            for record in lk.agents.jobs[-2:]:
                assert (record.outcome, record.offered_to) == ("no_worker", [])
            await asyncio.sleep(0.5)
            assert survivor.process.returncode is None
            assert all(kinds(lk, c.room) == ["agent", "sip"] for c in held)
            assert survivor.of("left") == []
            for caller in held:
                caller.hang_up()
                await asyncio.sleep(0.02)
            assert await asyncio.wait_for(survivor.process.wait(), 15) == 0
            left = {e["room"]: e for e in survivor.of("left")}
            assert set(left) == {c.room for c in held}
            for caller in held:
                assert left[caller.room]["reason"] == "caller_left"
                assert left[caller.room]["at"] >= caller.hung_up_at
            assert any("drained after" in line for line in survivor.log), survivor.tail()

            # Dispatch latency: the caller is in the room -> the bot is.
            latencies = [
                c.bot_joined_at() - c.call.joined_at for c in first + second if c.bot_joined_at()
            ]
            assert len(latencies) == 26
            print(
                f"\ndispatch latency over {len(latencies)} calls: median "
                f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f}"
                f" ms; spread {spread}; /readyz 503 after {readyz_secs * 1000:.1f} ms; "
                f"wall {time.monotonic() - started:.1f} s"
            )
        finally:
            for caller in callers:
                caller.call.hang_up()
            for w in workers:
                await w.close()
