"""Pipecat's runner entry (`bot(runner_args)`) and the LiveKit example bot, offline.

A session runs on Pipecat's real `LiveKitTransport` with only its room connection faked
(`OfflineLiveKitTransport`), the transfer's API calls go to the LiveKit API emulator, and
the services are scripted.
"""

import ast
import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
import yaml
from livekit import api
from pipecat.runner.types import (
    DailyRunnerArguments,
    LiveKitRunnerArguments,
    SmallWebRTCRunnerArguments,
)

from pipecat_warm_transfer.runner import pipecat_runner
from pipecat_warm_transfer.runner.pipecat_runner import (
    CONFIG_ENV,
    RunnerEntryError,
    load_entry_config,
    run_bot,
)
from pipecat_warm_transfer.testing import LiveKitEmulator
from pipecat_warm_transfer.testing.livekit_media import OfflineLiveKitTransport
from pipecat_warm_transfer.testing.scripted_services import ScriptedLLMService, ScriptedSTTService
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "livekit_bot.py"
KEY, SECRET = "APIrunner", "runner-secret-0123456789abcdef0123"
ROOM = "pipecat-ab12cd34"
AGENT = "Pipecat Agent-ab12cd34"  # who Pipecat's runner mints the bot's token for
CALLER = "sip_+15550199"
GREETING_LEVEL = 1000  # the scripted greeting's tones are far above this; silence is 0

BOT = {
    "bot": {
        "name": "runner-test",
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


@pytest.fixture
def bot_yaml(tmp_path, monkeypatch):
    """The bot's YAML, named by WARM_TRANSFER_CONFIG; API credentials from LIVEKIT_*."""
    path = tmp_path / "bot.yaml"
    path.write_text(yaml.safe_dump(BOT, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv(CONFIG_ENV, str(path))
    monkeypatch.setenv("LIVEKIT_API_KEY", KEY)
    monkeypatch.setenv("LIVEKIT_API_SECRET", SECRET)
    monkeypatch.delenv("LIVEKIT_URL", raising=False)  # the runner's URL is the server
    monkeypatch.delenv("LIVEKIT_SIP_OUTBOUND_TRUNK", raising=False)
    return path


def runner_args(url: str) -> LiveKitRunnerArguments:
    """The session Pipecat's runner starts for `-t livekit` (its agent join token)."""
    token = (
        api.AccessToken(KEY, SECRET)
        .with_identity(AGENT)
        .with_grants(api.VideoGrants(room_join=True, room=ROOM, agent=True))
        .to_jwt()
    )
    return LiveKitRunnerArguments(room_name=ROOM, url=url, token=token, session_id="ab12cd34")


class Transports:
    """A transport factory: offline LiveKit transports, each checked as the server would."""

    def __init__(self, emulator: LiveKitEmulator):
        self.emulator = emulator
        self.built: list[dict] = []
        self.transport: OfflineLiveKitTransport | None = None

    def __call__(self, url, token, room_name, *, params):
        claims = self.emulator.check_join_token(token, room_name, AGENT)
        self.built.append({"url": url, "token": token, "room": room_name, "claims": claims})
        self.transport = OfflineLiveKitTransport(room_name, identity=AGENT, params=params)
        return self.transport

    def room_event(self, event: str, identity: str) -> None:
        """A participant event, as livekit-rtc emits it on the room Pipecat listens to."""
        self.transport._client.room.emit(event, SimpleNamespace(identity=identity))


async def wait_for(predicate, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"never true: {predicate}")


async def ended(task: asyncio.Task, timeout: float = 5.0):
    """The session's result, once it ended by itself (never by a timeout's cancel)."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=timeout)
        pytest.fail(f"the session did not end within {timeout} s")
    return task.result()


def greeting_heard(transport: OfflineLiveKitTransport) -> bool:
    heard = transport.media.heard()
    return heard.size > 0 and int(np.abs(heard.astype(np.int32)).max()) > GREETING_LEVEL


async def test_a_livekit_session_runs_on_the_runners_room_until_the_caller_leaves(bot_yaml):
    async with LiveKitEmulator(KEY, SECRET, trunks=["ST_trunk"]) as emulator:
        args = runner_args(emulator.url)
        transports = Transports(emulator)
        task = asyncio.create_task(run_bot(args, load_entry_config(), transport_factory=transports))
        await wait_for(lambda: transports.transport is not None)
        # Built with the runner's URL, token and room (the token checked as LiveKit would).
        (built,) = transports.built
        assert (built["url"], built["token"], built["room"]) == (emulator.url, args.token, ROOM)
        assert built["claims"].identity == AGENT
        transport = transports.transport
        await wait_for(lambda: transport.audio_source is not None)

        transports.room_event("participant_connected", CALLER)
        await wait_for(lambda: greeting_heard(transport))  # the call started for the caller

        # Pipecat's idle monitor firing (a held caller makes none of its frames) does
        # not end the call.
        worker = transport.output().pipeline_worker
        assert await worker._idle_timeout_detected() is True
        await asyncio.sleep(0.3)
        assert not task.done()

        transports.room_event("participant_disconnected", CALLER)
        call = await ended(task)
        assert call.caller_identity == CALLER
        assert call.results == []

        # The transfer uses the YAML/env API credentials on the runner's server, not the
        # join token: the emulator accepts them.
        assert call.backend.url == emulator.url and call.backend.api_key == KEY
        lkapi = call.backend.new_api()
        try:
            await lkapi.room.list_rooms(api.ListRoomsRequest())  # refused (401) if they were not
        finally:
            await lkapi.aclose()
        assert [name for name, _grants in emulator.request_grants][-1].endswith("ListRooms")
        assert await emulator.settle() == {"rooms": 0, "participants": 0, "connections": 0}


async def test_another_participant_leaving_does_not_end_the_call(bot_yaml):
    async with LiveKitEmulator(KEY, SECRET, trunks=["ST_trunk"]) as emulator:
        transports = Transports(emulator)
        task = asyncio.create_task(
            run_bot(runner_args(emulator.url), load_entry_config(), transport_factory=transports)
        )
        await wait_for(lambda: transports.transport is not None)
        await wait_for(lambda: transports.transport.audio_source is not None)
        transports.room_event("participant_connected", CALLER)
        transports.room_event("participant_connected", "supervisor")
        await wait_for(lambda: greeting_heard(transports.transport))
        transports.room_event("participant_disconnected", "supervisor")
        await asyncio.sleep(0.5)
        assert not task.done()
        transports.room_event("participant_disconnected", CALLER)
        await ended(task)


@pytest.mark.parametrize("handle_sigint", [True, False])
async def test_sigint_ends_the_session_only_with_handle_sigint(bot_yaml, handle_sigint):
    loop = asyncio.get_running_loop()
    fallback: list[str] = []
    # Takes SIGINT unless the session's runner installs its own handler (which replaces it).
    loop.add_signal_handler(signal.SIGINT, fallback.append, "fallback")
    try:
        async with LiveKitEmulator(KEY, SECRET, trunks=["ST_trunk"]) as emulator:
            args = runner_args(emulator.url)
            args.handle_sigint = handle_sigint
            transports = Transports(emulator)
            task = asyncio.create_task(
                run_bot(args, load_entry_config(), transport_factory=transports)
            )
            await wait_for(lambda: transports.transport is not None)
            await wait_for(lambda: transports.transport.audio_source is not None)
            os.kill(os.getpid(), signal.SIGINT)
            if handle_sigint:
                call = await ended(task)
                assert fallback == [] and call.caller_identity is None  # nobody had joined
            else:
                await wait_for(lambda: fallback == ["fallback"])
                await asyncio.sleep(0.3)
                assert not task.done()
                transports.room_event("participant_connected", CALLER)
                transports.room_event("participant_disconnected", CALLER)
                await ended(task)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def test_livekit_call_still_mints_the_bots_own_token(bot_yaml):
    from pipecat.transports.livekit.transport import LiveKitTransport

    from pipecat_warm_transfer.runner.livekit_serving import LiveKitAccess, livekit_call

    loaded = load_entry_config()
    call = livekit_call(loaded, LiveKitAccess("https://lk.example", KEY, SECRET), "r1")
    assert isinstance(call.transport, LiveKitTransport)
    client = call.transport._client  # Pipecat's: what it will connect with
    assert client._url == "wss://lk.example" and client._room_name == "r1"
    claims = api.TokenVerifier(KEY, SECRET).verify(client._token)
    assert claims.identity == loaded.config.livekit.bot_identity
    assert claims.video.room == "r1" and claims.video.room_join


#
# Errors: one line each
#


async def test_an_unset_config_variable_is_named_in_one_line(monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    with pytest.raises(RunnerEntryError) as caught:
        await pipecat_runner.bot(runner_args("wss://x.invalid"))
    message = str(caught.value)
    assert CONFIG_ENV in message and "not set" in message
    assert "\n" not in message


def test_a_bad_config_file_is_one_line_naming_the_variable_and_each_problem(tmp_path):
    path = tmp_path / "bot.yaml"
    path.write_text("services:\n  stt: {provider: nope}\nbot:\n  vad: loud\n", encoding="utf-8")
    with pytest.raises(RunnerEntryError) as caught:
        load_entry_config({CONFIG_ENV: str(path)})
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{CONFIG_ENV}: {path}:")
    assert "bot.vad" in message and "transfer" in message  # every problem, on one line

    missing = tmp_path / "absent.yaml"
    with pytest.raises(RunnerEntryError, match=f"^{CONFIG_ENV}: .*absent.yaml"):
        load_entry_config({CONFIG_ENV: str(missing)})


async def test_missing_api_credentials_are_one_line_naming_the_field(bot_yaml, monkeypatch):
    monkeypatch.delenv("LIVEKIT_API_SECRET")
    with pytest.raises(RunnerEntryError) as caught:
        await pipecat_runner.bot(runner_args("wss://x.invalid"))
    message = str(caught.value)
    assert "livekit.api_secret" in message and "LIVEKIT_API_SECRET" in message
    assert "\n" not in message


async def test_a_bad_transfer_setting_is_one_line(bot_yaml, monkeypatch):
    monkeypatch.delenv("LIVEKIT_SIP_OUTBOUND_TRUNK", raising=False)
    text = yaml.safe_dump({**BOT, "transfer": {"target": {"number": "+15550100"}}})
    bot_yaml.write_text(text, encoding="utf-8")
    with pytest.raises(RunnerEntryError) as caught:
        await pipecat_runner.bot(runner_args("wss://x.invalid"))
    message = str(caught.value)
    assert "trunk_id" in message and "LIVEKIT_SIP_OUTBOUND_TRUNK" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "args",
    [
        DailyRunnerArguments(room_url="https://x.daily.co/r"),
        SmallWebRTCRunnerArguments(webrtc_connection=None),
    ],
    ids=["daily", "webrtc"],
)
async def test_only_livekit_sessions_are_served(args, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)  # said first, whatever the config
    with pytest.raises(RunnerEntryError) as caught:
        await pipecat_runner.bot(args)
    message = str(caught.value)
    assert "LiveKit" in message and type(args).__name__ in message
    assert "\n" not in message


def test_the_module_runs_pipecats_runner_when_executed():
    tree = ast.parse(Path(pipecat_runner.__file__).read_text(encoding="utf-8"))
    assert _main_block_calls_pipecat_main(tree)


#
# The example bot
#


def _main_block_calls_pipecat_main(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            text = ast.unparse(node)
            return "from pipecat.runner.run import main" in text and "main()" in text
    return False


def _worker_calls(tree: ast.Module) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "PipelineWorker"
    ]


def test_the_example_is_a_pipecat_runner_bot_without_an_idle_timeout():
    tree = ast.parse(EXAMPLE.read_text(encoding="utf-8"))
    bots = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "bot"]
    assert len(bots) == 1 and [a.arg for a in bots[0].args.args] == ["runner_args"]
    assert _main_block_calls_pipecat_main(tree)
    (worker,) = _worker_calls(tree)
    keywords = {k.arg: ast.unparse(k.value) for k in worker.keywords}
    assert keywords.get("idle_timeout_secs") == "None"
    source = ast.unparse(bots[0])
    for name in ("room_name", "url", "token"):  # joins the runner's room
        assert f"runner_args.{name}" in source


EXAMPLE_MODULES = ("deepgram", "openai", "websockets", "onnxruntime")


def load_example():
    spec = importlib.util.spec_from_file_location("livekit_bot_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in EXAMPLE_MODULES),
    reason="the example's optional service packages are not installed",
)
def test_the_example_imports_and_defines_bot():
    assert asyncio.iscoroutinefunction(load_example().bot)


@pytest.mark.skipif(
    not all(importlib.util.find_spec(m) for m in EXAMPLE_MODULES[1:]),
    reason="the example's OpenAI, Cartesia or Silero packages are not installed",
)
async def test_the_example_serves_the_runners_room_until_the_caller_leaves(monkeypatch):
    # Deepgram's SDK may be missing: the example only needs the name, replaced below.
    deepgram = ModuleType("pipecat.services.deepgram.stt")
    deepgram.DeepgramSTTService = None
    monkeypatch.setitem(sys.modules, "pipecat.services.deepgram.stt", deepgram)
    example = load_example()
    monkeypatch.setattr(example, "DeepgramSTTService", lambda **_: ScriptedSTTService([]))
    monkeypatch.setattr(
        example, "OpenAILLMService", lambda **_: ScriptedLLMService([], fallback="Hello.")
    )
    monkeypatch.setattr(example, "CartesiaTTSService", lambda **_: ScriptedToneTTSService())
    monkeypatch.setattr(example, "SileroVADAnalyzer", lambda: None)
    env = {"TRANSFER_TO": "+15550100", "LIVEKIT_SIP_OUTBOUND_TRUNK": "ST_trunk"}
    env |= {"LIVEKIT_API_KEY": KEY, "LIVEKIT_API_SECRET": SECRET}
    env |= {f"{name}_API_KEY": "offline" for name in ("DEEPGRAM", "OPENAI", "CARTESIA")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LIVEKIT_URL", raising=False)

    async with LiveKitEmulator(KEY, SECRET, trunks=["ST_trunk"]) as emulator:
        args = runner_args(emulator.url)
        transports = Transports(emulator)
        monkeypatch.setattr(example, "LiveKitTransport", transports)
        task = asyncio.create_task(example.bot(args))
        await wait_for(lambda: transports.transport is not None)
        (built,) = transports.built
        assert (built["url"], built["token"], built["room"]) == (emulator.url, args.token, ROOM)
        await wait_for(lambda: transports.transport.audio_source is not None)

        transports.room_event("participant_connected", CALLER)
        await wait_for(lambda: greeting_heard(transports.transport))  # the LLM spoke first
        transports.room_event("participant_disconnected", CALLER)
        await ended(task)
        assert await emulator.settle() == {"rooms": 0, "participants": 0, "connections": 0}
