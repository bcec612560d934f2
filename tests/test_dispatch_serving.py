"""`run` on LiveKit's agent dispatch: the YAML bot served end to end, offline.

The production glue runs unchanged (`serve_dispatch`, `dispatched_call_maker`,
`livekit_room_call`, health endpoints, SIGTERM drain); only the caller's transport is a
memory one, joined with the token LiveKit minted for the job and checked as the server
checks it. The API and the agent dispatch are the emulator's.
"""

import asyncio
import os
import signal

import aiohttp
import numpy as np
import pytest
import yaml
from livekit.protocol import agent, sip
from loguru import logger

from pipecat_warm_transfer.cli import main
from pipecat_warm_transfer.config import load_config
from pipecat_warm_transfer.runner.dispatch_rule import dispatch_rule_info, dispatch_rule_request
from pipecat_warm_transfer.runner.dispatch_serving import serve_dispatch, worker_options
from pipecat_warm_transfer.runner.livekit_serving import LiveKitAccess, dispatched_call_maker
from pipecat_warm_transfer.testing import LiveKitEmulator
from pipecat_warm_transfer.testing.memory_room import AudioReceived
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport

IDENTITY = "acme-bot"


def bot_yaml(tmp_path, emulator: LiveKitEmulator, **livekit) -> str:
    declaration = {
        "livekit": {
            "url": emulator.url,
            "api_key": emulator.api_key,
            "api_secret": emulator.api_secret,
            "bot_identity": IDENTITY,
            **livekit,
        },
        "bot": {
            "name": "acme-support",
            "greeting": "Hello, thanks for calling.",
            "vad": "none",
            "turn_end": "speech_timeout",
        },
        "services": {
            "stt": {"provider": "scripted"},
            "llm": {"provider": "scripted"},
            "tts": {"provider": "scripted"},
        },
        "transfer": {"target": {"number": "+15550100", "trunk_id": "ST_trunk"}},
    }
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(declaration, sort_keys=False), encoding="utf-8")
    return str(path)


def memory_transports(emulator: LiveKitEmulator, built: list):
    """The caller's transport: a memory room joined with the job's token, checked."""

    def factory(url, token, room_name, *, params):
        claims = emulator.check_join_token(token, room_name, IDENTITY)
        built.append((url, room_name, claims))
        return MemoryTransport(emulator.rooms, room_name, IDENTITY, kind="agent", params=params)

    return factory


async def until(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def heard_the_bot(connection, timeout: float = 10.0) -> float:
    """Event-loop time the caller first hears the bot's voice (not silence)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        event = await asyncio.wait_for(connection.recv(), max(0.01, deadline - loop.time()))
        if isinstance(event, AudioReceived) and event.identity == IDENTITY:
            samples = np.frombuffer(event.audio, dtype=np.int16)
            if samples.size and np.abs(samples).max() > 1000:
                return loop.time()


async def test_the_yaml_bot_answers_dispatched_calls_and_drains_on_sigterm(tmp_path):
    async with LiveKitEmulator(dispatch_seed=1) as lk:
        loaded = load_config(bot_yaml(tmp_path, lk, agent_name="acme", max_calls=4))
        lk.add_dispatch_rule(dispatch_rule_info(loaded))
        access = LiveKitAccess.from_config(loaded)
        built: list = []
        records: list = []
        sink = logger.add(lambda m: records.append(m.record), level="INFO")
        serving = asyncio.create_task(
            serve_dispatch(
                loaded,
                url=access.url,
                api_key=access.api_key,
                api_secret=access.api_secret,
                make_call=dispatched_call_maker(
                    loaded, access, transport_factory=memory_transports(lk, built)
                ),
                health_host="127.0.0.1",
                health_port=0,
                max_retries=1,
            )
        )
        try:
            await until(lambda: len(lk.agents.workers) == 1)
            (worker,) = lk.agents.workers.values()
            assert worker.agent_name == "acme"
            calls = [lk.inbound_call(f"+1555011{i:04d}") for i in range(3)]
            for call in calls:
                joined = await heard_the_bot(call.connection)
                assert joined - call.joined_at < 5.0
            assert sorted(room for _url, room, _c in built) == sorted(c.room for c in calls)
            assert all(url.startswith("ws://127.0.0.1") for url, _r, _c in built)
            assert all(claims.kind == "agent" for _u, _r, claims in built)
            # Each call's lines carry its room and job id.
            jobs = {record.job.room.name: record.job.id for record in lk.agents.jobs}
            for call in calls:
                tagged = [r for r in records if r["extra"].get("room") == call.room]
                assert tagged and {r["extra"]["call_id"] for r in tagged} == {jobs[call.room]}
            # The first caller hangs up: the bot's pipeline ends and the job succeeds.
            calls[0].hang_up()
            await until(lambda: len(worker.running) == 2)
            # SIGTERM drains: no new call; the others go on until their callers leave.
            os.kill(os.getpid(), signal.SIGTERM)
            await until(lambda: worker.status == agent.WorkerStatus.WS_FULL)
            late = lk.inbound_call("+15550119999")
            await asyncio.gather(*late.jobs)
            assert lk.agents.jobs[-1].outcome == "no_worker"
            await asyncio.sleep(0.3)
            assert not serving.done()
            for call in calls[1:]:
                assert [c.kind for c in lk.rooms.get_room(call.room).connections()] == [
                    "sip",
                    "agent",
                ]
                call.hang_up()
            assert await asyncio.wait_for(serving, 20) == 0
            late.hang_up()
        finally:
            logger.remove(sink)
            if not serving.done():
                serving.cancel()
        assert not lk.agents.workers
        assert all(r.outcome == "assigned" for r in lk.agents.jobs[:3])
        leftovers = lk.rooms.leftovers()
        assert leftovers["connections"] == 0


async def test_health_endpoints_follow_the_worker(tmp_path):
    from pipecat_warm_transfer.runner.agent_worker import AgentWorker
    from pipecat_warm_transfer.runner.health import HealthServer

    async with LiveKitEmulator() as lk:
        loaded = load_config(bot_yaml(tmp_path, lk))
        worker = AgentWorker(
            lk.url, lk.api_key, lk.api_secret, worker_options(loaded), make_call=None
        )
        health = await HealthServer(worker, "127.0.0.1", 0).start()
        base = f"http://127.0.0.1:{health.port}"
        async with aiohttp.ClientSession() as session:

            async def get(path):
                async with session.get(base + path) as response:
                    return response.status, await response.text()

            assert await get("/healthz") == (200, "ok\n")
            assert await get("/readyz") == (503, "not registered with LiveKit\n")
            run = asyncio.create_task(worker.run())
            await until(lambda: worker.registered)
            assert await get("/readyz") == (200, "ready\n")
            status, text = await get("/status")
            assert status == 200 and '"agent_name": "acme-support"' in text
            assert await worker.drain(timeout=1) is True
            assert await get("/readyz") == (503, "draining\n")
            await worker.close()
            await run
            health.stopped = True
            assert await get("/healthz") == (503, "stopped\n")
        await health.stop()


def test_dispatch_rule_command_prints_a_rule_livekit_accepts(tmp_path, capsys):
    from google.protobuf import json_format

    path = tmp_path / "bot.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "livekit": {"url": "wss://x.livekit.cloud", "room_prefix": "acme"},
                "bot": {"name": "acme-support"},
                "services": {
                    "stt": {"provider": "scripted"},
                    "llm": {"provider": "scripted"},
                    "tts": {"provider": "scripted"},
                },
                "transfer": {"target": {"number": "+15550100", "trunk_id": "ST_trunk"}},
            }
        ),
        encoding="utf-8",
    )
    assert main(["dispatch-rule", str(path), "--trunk", "ST_in"]) == 0
    out = capsys.readouterr().out
    request = json_format.Parse(out, sip.CreateSIPDispatchRuleRequest())
    rule = request.dispatch_rule
    assert rule.rule.dispatch_rule_individual.room_prefix == "acme"
    assert [a.agent_name for a in rule.room_config.agents] == ["acme-support"]
    assert list(rule.trunk_ids) == ["ST_in"]
    assert out == dispatch_rule_request(load_config(path), trunk_ids=["ST_in"]) + "\n"


async def test_the_printed_rule_sends_calls_to_the_bot(tmp_path, capsys):
    from google.protobuf import json_format

    from pipecat_warm_transfer.runner.agent_worker import AgentWorker

    async with LiveKitEmulator() as lk:
        path = bot_yaml(tmp_path, lk, agent_name="desk-bot", room_prefix="desk")
        assert main(["dispatch-rule", path]) == 0
        request = json_format.Parse(capsys.readouterr().out, sip.CreateSIPDispatchRuleRequest())
        lk.add_dispatch_rule(request.dispatch_rule)
        taken = []

        class Noted:
            def __init__(self, served):
                taken.append(served)

            async def run(self):
                await asyncio.sleep(0)

            async def stop(self, reason):
                pass

        worker = AgentWorker(
            lk.url, lk.api_key, lk.api_secret, worker_options(load_config(path)), Noted
        )
        run = asyncio.create_task(worker.run())
        await until(lambda: worker.registered)
        call = lk.inbound_call("+15550120001")
        await until(lambda: len(taken) == 1)
        assert taken[0].room == call.room and call.room.startswith("desk_+15550120001_")
        call.hang_up()
        await worker.close()
        await run


@pytest.mark.parametrize("bad", [{"max_calls": 0}, {"load_threshold": 1.5}, {"agent_name": ""}])
def test_serving_fields_are_checked_before_anything_runs(tmp_path, bad, capsys):
    path = tmp_path / "bot.yaml"
    text = yaml.safe_dump(
        {
            "livekit": {"url": "wss://x.livekit.cloud", **bad},
            "bot": {"name": "acme-support"},
            "services": {
                "stt": {"provider": "scripted"},
                "llm": {"provider": "scripted"},
                "tts": {"provider": "scripted"},
            },
            "transfer": {"target": {"number": "+15550100", "trunk_id": "ST_trunk"}},
        }
    )
    path.write_text(text, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    (field,) = bad
    assert len(lines) == 1 and f"livekit.{field}" in lines[0]
