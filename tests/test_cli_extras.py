"""The `emulator` command serves the real client; `demo --config` uses a bot YAML's settings."""

import asyncio
import json
import socket
import sys

import soundfile as sf
from livekit.api import ListRoomsRequest, LiveKitAPI

from pipecat_warm_transfer.audio.metrics import rms_dbfs
from pipecat_warm_transfer.demo.runner import run_scenario
from pipecat_warm_transfer.testing.livekit_emulator import DEFAULT_API_SECRET


def example_yaml() -> str:
    with open("examples/bot.yaml") as f:
        return f.read()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_emulator_command_serves_the_livekit_api_client():
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pipecat_warm_transfer",
        "emulator",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert f"127.0.0.1:{port}" in line.decode()
        api = LiveKitAPI(f"http://127.0.0.1:{port}", "devkey", DEFAULT_API_SECRET)
        try:
            rooms = await api.room.list_rooms(ListRoomsRequest())
        finally:
            await api.aclose()
        assert list(rooms.rooms) == []
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 10)


async def test_demo_uses_a_bot_yamls_settings(tmp_path, monkeypatch):
    for name, value in {
        "LIVEKIT_URL": "wss://example.livekit.cloud",
        "LIVEKIT_API_KEY": "key",
        "LIVEKIT_API_SECRET": "secret",
        "DEEPGRAM_API_KEY": "x",
        "OPENAI_API_KEY": "x",
        "CARTESIA_API_KEY": "x",
        "LIVEKIT_SIP_OUTBOUND_TRUNK": "ST_x",
        "LIVEKIT_SIP_NUMBER": "+15550001111",
        "TRANSFER_TO": "+15550002222",
    }.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "bot.yaml"
    text = example_yaml()
    text = text.replace("level_dbfs: -24", "level_dbfs: -34").replace(
        "ring_timeout: 30s", "ring_timeout: 7s"
    )
    config.write_text(text)

    report = await run_scenario("no-answer", tmp_path / "out", config=config)
    assert report["as_scripted"], report
    events = [json.loads(x) for x in (tmp_path / "out" / "events.jsonl").read_text().splitlines()]
    hold = next(e["t"] for e in events if e["event"] == "hold_started")
    failed = next(e["t"] for e in events if e["event"] == "transfer_failed")
    dialing = next(e["t"] for e in events if e["event"] == "dialing")
    assert 6.5 < failed - dialing < 7.8  # the YAML's 7 s ring timeout, not the demo's 8 s
    caller, rate = sf.read(tmp_path / "out" / "caller.wav", dtype="int16")
    # `hold_started` is when the caller hears the music: past its fade-in, before the
    # ring-out's return sentence.
    assert hold + 1.5 < failed
    level = rms_dbfs(caller[int((hold + 0.5) * rate) : int((hold + 1.5) * rate)])
    assert abs(level - (-34.0)) < 3.0  # the YAML's music level
