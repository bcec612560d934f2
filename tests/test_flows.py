"""Flows: a YAML flow transfers with `transfer_to_human` (or the `warm_transfer` action) and
branches on every outcome; whole calls run offline through `build_bot` (the `run`
command's pipeline) on in-memory rooms with scripted services."""

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pipecat.flows import Flow, FlowConfig, FlowError

from pipecat_warm_transfer.config import load_config
from pipecat_warm_transfer.flows import (
    WARM_TRANSFER_HANDLERS,
    next_node_name,
    refused_outcome,
    transfer_outcome,
    warm_transfer_of,
)
from pipecat_warm_transfer.runner.builder import build_bot, hold_mixer, run_call, transport_params
from pipecat_warm_transfer.testing import (
    HumanScript,
    InMemoryBackend,
    MemoryRoomServer,
    MemoryTransport,
    ScriptedParty,
    tone,
)
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS, LeakWatch
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TargetAttempt,
    TransferOutcome,
    TransferResult,
    TransferState,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NUMBER = "+15550100"
RATE = 16000
ROOM = "caller-room"
REASONS = [r.value for r in FailureReason]


#
# Outcomes and branching, without a call
#


def test_the_outcome_of_a_connected_and_of_a_failed_transfer():
    connected = transfer_outcome(
        TransferResult(TransferOutcome.CONNECTED, connect_mode=ConnectMode.BRIDGE)
    )
    assert connected["outcome"] == "connected" and connected["status"] == "connected"
    assert connected["reason"] is None and connected["connect_mode"] == "bridge"
    failed = transfer_outcome(
        TransferResult(TransferOutcome.FAILED, reason=FailureReason.BUSY, sip_status=486)
    )
    assert failed["outcome"] == "failed" and failed["reason"] == "busy"
    assert failed["status"] == "busy" and failed["sip_status"] == 486
    assert refused_outcome("limit")["outcome"] == "refused"
    # A ring group nobody took, with a callback to collect: the flow can branch on both.
    group = TransferResult(
        TransferOutcome.FAILED,
        reason=FailureReason.AFTER_HOURS,
        next_step="callback",
        tried=[TargetAttempt(index=0, number="…0101", display_name="Alice", outcome="busy")],
    )
    outcome = transfer_outcome(group)
    assert outcome["status"] == "after_hours" and outcome["next_step"] == "callback"
    assert outcome["tried"] == [{"name": "Alice", "outcome": "busy"}]
    assert set(refused_outcome("x")) == set(outcome)  # the same keys either way


def test_transition_to_a_node_or_a_branch_on_the_outcome():
    busy = {"outcome": "failed", "reason": "busy", "status": "busy"}
    assert next_node_name(None, busy) is None
    assert next_node_name("after", busy) == "after"
    branch = {"field": "status", "cases": {"connected": "done", "busy": "later"}, "default": "x"}
    assert next_node_name(branch, busy) == "later"
    assert next_node_name(branch, {"status": "voicemail"}) == "x"
    no_default = {"field": "outcome", "cases": {"connected": "done"}}
    assert next_node_name(no_default, busy) is None


def test_the_example_flow_is_a_plain_flow_config_joined_to_the_transfer_tool():
    config = FlowConfig.from_file(EXAMPLES / "flow.yaml")
    flow = Flow(config, handlers=[WARM_TRANSFER_HANDLERS])
    names = [f.name for f in flow.node("billing")["functions"]]
    assert names == ["transfer_to_human"]
    schema = flow.node("billing")["functions"][0]
    assert schema.required == ["reason"] and "human colleague" in schema.description
    # The LLM waits for the outcome (a synchronous call), however long the transfer takes.
    assert schema.cancel_on_interruption is True and schema.timeout_secs >= 2 * 3600


def test_the_tool_needs_register_warm_transfer():
    class Manager:
        state: dict = {}

    with pytest.raises(FlowError, match="register_warm_transfer"):
        warm_transfer_of(Manager())


#
# Whole calls, offline
#


def scripted_bot(**transfer) -> dict:
    """A bot with scripted services: the caller's first words ask for a person."""
    bot = {
        "bot": {"name": "flow-test", "vad": "none", "turn_end": "speech_timeout"},
        "services": {
            "stt": {
                "provider": "scripted",
                "options": {
                    "lines": ["I want a person, please."],
                    "user_id": "caller",
                    "min_speech_secs": 0.1,
                    "end_silence_secs": 0.15,
                },
            },
            "llm": {
                "provider": "scripted",
                "options": {
                    "replies": [
                        {
                            "when": "person",
                            "call": {
                                "name": "transfer_to_human",
                                "arguments": {"reason": "wants a person"},
                            },
                        }
                    ],
                    "summary": "The caller asked for a person.",
                },
            },
            "tts": {"provider": "scripted"},
        },
        "transfer": {
            "target": {"number": NUMBER},
            "ring_timeout": "1.5s",
            "briefing_timeout": "3s",
            "summary_timeout": "0.5s",
            "hold_music": {"reminder": None},
            "messages": {
                "caller": {"hold": "Please hold.", "connected": None},
                "human": {"connecting": "OK."},
            },
            "briefing": {"mode": "dtmf", "start": "immediate"},
            **transfer,
        },
    }
    if "targets" in transfer:  # a ring group instead of the one human
        del bot["transfer"]["target"]
    return bot


def branching_flow() -> dict:
    """`transfer_to_human` branches on `status`: one node per outcome."""
    statuses = ["connected", *REASONS]
    nodes = {
        f"after_{status}": {
            "task_messages": [{"role": "developer", "content": f"After {status}."}],
            "respond_immediately": False,
        }
        for status in statuses
    }
    nodes["after_busy"]["task_messages"][0]["content"] = "Busy: {{ warm_transfer.reason }}."
    nodes["help"] = {
        "task_messages": [{"role": "developer", "content": "Help the caller."}],
        "respond_immediately": False,
        "functions": [
            {
                "name": "transfer_to_human",
                "transition_to": {
                    "field": "status",
                    "cases": {status: f"after_{status}" for status in statuses},
                },
            }
        ],
    }
    return {"initial_node": "help", "nodes": nodes}


class OfflineCall:
    """One call of a YAML-declared bot on in-memory rooms (the `run` pipeline, offline)."""

    def __init__(self, tmp_path, bot: dict, flow: dict | None, human: HumanScript, **kw):
        text = yaml.safe_dump(bot, sort_keys=False)
        if flow is not None:
            (tmp_path / "flow.yaml").write_text(yaml.safe_dump(flow), encoding="utf-8")
            text += "flow: !include flow.yaml\n"
        (tmp_path / "bot.yaml").write_text(text, encoding="utf-8")
        self.loaded = load_config(tmp_path / "bot.yaml")
        self.human = human
        self.supports_move = kw.get("supports_move", True)
        self.caller_identity = kw.get("caller_identity")
        self.events: list[dict] = []
        self._changed = asyncio.Event()

    async def __aenter__(self):
        self._baseline = set(asyncio.all_tasks())
        loop = asyncio.get_running_loop()
        self.t0 = loop.time()
        self.server = MemoryRoomServer()
        self.backend = InMemoryBackend(
            self.server, {NUMBER: self.human}, supports_move=self.supports_move, t0=self.t0
        )
        mixer = hold_mixer(self.loaded)
        transport = MemoryTransport(
            self.server, ROOM, "transfer-bot", params=transport_params(self.loaded, mixer)
        )
        self.call = build_bot(
            self.loaded,
            transport=transport,
            backend=self.backend,
            hold_mixer=mixer,
            caller_room=ROOM,
            caller_identity=self.caller_identity,
        )

        self.leak_watch = LeakWatch(
            self.server,
            caller_room=ROOM,
            caller_identity="caller",
            bot_identity="transfer-bot",
            own_tasks=(f"{self.call.worker}::",),
        )

        @self.call.transfer.event_handler("on_transfer_event")
        async def _on_event(_transfer, event):
            self.events.append(event)
            self.leak_watch.on_event(event)
            self._changed.set()

        @self.call.transfer.event_handler("on_state_changed")
        async def _on_state(_transfer, _state):
            self._changed.set()

        self.task = asyncio.create_task(run_call(self.call))
        self.caller = ScriptedParty(self.server, ROOM, "caller", RATE, self.t0)
        self.caller.say(0.1, tone(900, 0.35))
        await self.caller.start()
        return self

    async def wait_event(self, name: str, timeout: float = 12.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                found = next((e for e in self.events if e["event"] == name), None)
                if found is not None:
                    return found
                await self._changed.wait()

    async def wait_outcome(self, timeout: float = 12.0) -> dict:
        async with asyncio.timeout(timeout):
            while not self.outcomes:
                self._changed.clear()
                await self._changed.wait()
            return self.outcomes[-1]

    @property
    def outcomes(self) -> list[dict]:
        link = self.call.flow_link
        return link.outcomes if link is not None else []

    async def wait_node(self, name: str) -> str | None:
        manager = self.call.flow_manager
        for _ in range(100):
            if manager.current_node == name:
                break
            await asyncio.sleep(0.05)
        return manager.current_node

    async def __aexit__(self, *exc):
        if not self.task.done():
            self.caller.hang_up()
        await asyncio.wait_for(self.task, 15)
        for _ in range(3):  # the event handlers run in tasks: let them look first
            await asyncio.sleep(0)
        self.leak_watch.at_end()  # what the call left, before any clean-up here
        # Nobody is left on a call when the bot's call ends (before the backend's own close).
        self.humans_on_call = [p.identity for p in self.backend.parties.values() if p.connected]
        await self.backend.close()
        await self.caller.close()
        leftovers = self.server.leftovers()
        if self.server.get_room(ROOM) is not None:
            leftovers["rooms"] -= 1  # the caller's own room (LiveKit closes it when empty)
        await asyncio.sleep(0)
        current = asyncio.current_task()
        alive = [t for t in asyncio.all_tasks() if t not in self._baseline and t is not current]
        leftovers["tasks"] = len([t for t in alive if not t.done()])
        watched = self.leak_watch.counts()
        self.leaks = {kind: leftovers.get(kind, 0) + n for kind, n in watched.items()}
        self.leak_findings = self.leak_watch.describe()


def scenario(reason: str):
    """The human (and settings) that end a transfer with `reason` (or connect it)."""
    transfer: dict = {}
    human = HumanScript(answer_after=0.3)
    supports_move = True
    if reason == "connected":
        human.dtmf(0.3, "1")
    elif reason == "busy":
        human = HumanScript(outcome="busy", answer_after=0.3)
    elif reason == "no_answer":
        human = HumanScript(outcome="no_answer")
        transfer["ring_timeout"] = "1s"
    elif reason == "declined":
        human.dtmf(0.3, "2")
    elif reason == "dial_failed":
        human = HumanScript(outcome="fail", answer_after=0.2)
    elif reason == "human_hung_up":
        human = HumanScript(answer_after=0.3, hang_up_after=0.6)
    elif reason == "briefing_timeout":
        transfer["briefing_timeout"] = "1.2s"
    elif reason == "connect_failed":
        human.dtmf(0.3, "1")
        transfer["connect_mode"] = "move"
        supports_move = False
    elif reason == "after_hours":  # closed all day today: nobody is dialed
        today = datetime.now(UTC).date().isoformat()
        days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        transfer["availability"] = {
            "time_zone": "UTC",
            "hours": {day: "00:00-24:00" for day in days},
            "holidays": [today],
        }
    elif reason == "hold_timeout":  # a group of two; the first rings out the hold limit
        human = HumanScript(outcome="no_answer")
        transfer["max_hold"] = "1s"
        transfer["ring_timeout"] = "5s"
        transfer["targets"] = [{"number": NUMBER}, {"number": "+15550199"}]
    elif reason == "voicemail":
        human = HumanScript(answer_after=0.3, voicemail=True, greeting=tone(480, 0.6))
        transfer["briefing"] = {
            "mode": "voice",
            "start": "immediate",
            "detect_voicemail": False,
            "services": {
                "stt": {"provider": "scripted", "options": {"lines": ["Leave a message."]}},
                "llm": {
                    "provider": "scripted",
                    "options": {"replies": [{"call": "voicemail_detected"}]},
                },
            },
        }
    return human, transfer, supports_move


@pytest.mark.parametrize("reason", ["connected", *REASONS])
async def test_a_flow_transfers_and_branches_on_each_outcome(tmp_path, reason):
    human, transfer, supports_move = scenario(reason)
    bot = scripted_bot(**transfer)
    async with OfflineCall(
        tmp_path, bot, branching_flow(), human, supports_move=supports_move
    ) as call:
        if reason == "caller_hung_up":
            await call.wait_event("human_answered")
            call.caller.hang_up()
        elif reason == "cancelled":
            await call.wait_event("dialing")
            await call.call.cancel("test")
        outcome = await call.wait_outcome()
        if reason not in ("caller_hung_up", "cancelled"):
            node = await call.wait_node(f"after_{reason}")
            assert node == f"after_{reason}"
    assert outcome["status"] == reason
    assert outcome["outcome"] == ("connected" if reason == "connected" else "failed")
    assert call.call.flow_manager.state["warm_transfer"]["status"] == reason
    assert [e["event"] for e in call.events].count("teardown_done") == 1
    assert call.humans_on_call == []
    assert call.leaks == NO_LEAKS, call.leak_findings


async def test_the_flow_state_fills_a_later_prompt(tmp_path):
    human, transfer, _ = scenario("busy")
    async with OfflineCall(tmp_path, scripted_bot(**transfer), branching_flow(), human) as call:
        await call.wait_outcome()
        assert await call.wait_node("after_busy") == "after_busy"
        messages = call.call.context.get_messages()
    assert any(m.get("content") == "Busy: busy." for m in messages if isinstance(m, dict))


def action_flow() -> dict:
    """A `transition_only` tool enters a node whose `warm_transfer` action transfers."""
    quiet = {"task_messages": [{"role": "developer", "content": "Wait."}]}
    return {
        "initial_node": "help",
        "nodes": {
            "help": {
                "task_messages": [{"role": "developer", "content": "Help the caller."}],
                "respond_immediately": False,
                "functions": [
                    {
                        "name": "transfer_to_human",
                        "transition_only": True,
                        "description": "The caller wants a person.",
                        "transition_to": "transferring",
                    }
                ],
            },
            "transferring": {
                **quiet,
                "respond_immediately": False,
                "pre_actions": [
                    {
                        "type": "warm_transfer",
                        "reason": "Asked for billing.",
                        "transition_to": {
                            "field": "outcome",
                            "cases": {"connected": "with_human", "failed": "back"},
                        },
                    }
                ],
            },
            "with_human": {**quiet, "respond_immediately": False},
            "back": {**quiet, "respond_immediately": False},
        },
    }


@pytest.mark.parametrize(("accept", "node"), [(True, "with_human"), (False, "back")])
async def test_the_warm_transfer_action_branches_on_the_outcome(tmp_path, accept, node):
    human = HumanScript(answer_after=0.3).dtmf(0.3, "1" if accept else "2")
    async with OfflineCall(tmp_path, scripted_bot(), action_flow(), human) as call:
        outcome = await call.wait_outcome()
        assert await call.wait_node(node) == node
    assert outcome["outcome"] == ("connected" if accept else "failed")
    requested = next(e for e in call.events if e["event"] == "transfer_requested")
    assert requested["reason"] == "Asked for billing."
    assert call.leaks == NO_LEAKS, call.leak_findings


async def test_a_plain_bot_greets_and_transfers_with_its_llm_tool(tmp_path):
    bot = scripted_bot()
    bot["bot"]["greeting"] = "Hello, Acme here."
    bot["bot"]["prompt"] = "You are Acme's assistant."
    human = HumanScript(answer_after=0.3).dtmf(0.3, "1")
    async with OfflineCall(tmp_path, bot, None, human) as call:
        await call.wait_event("connected")
        assert call.call.flow_manager is None
        tts = call.call.tts
    result = call.call.results[-1]
    assert result.outcome == TransferOutcome.CONNECTED
    assert tts.spoken[:2] == ["Hello, Acme here.", "Please hold."]
    # DESIGN §3: input, gate, STT, user context, LLM, TTS, caller output, output, assistant.
    order = [type(p).__name__ for p in call.call.pipeline.processors][1:-1]
    assert order == [
        "MemoryInputTransport",
        "CallerGate",
        "ScriptedSTTService",
        "LLMUserAggregator",
        "ScriptedLLMService",
        "ScriptedToneTTSService",
        "CallerOutput",
        "MemoryOutputTransport",
        "LLMAssistantAggregator",
    ]
    assert call.call.llm.calls == ["transfer_to_human"]
    assert call.leaks == NO_LEAKS, call.leak_findings


#
# Hang-ups: only the caller leaving the caller's room is the caller hanging up
#


async def third_party_comes_and_goes(call: OfflineCall) -> None:
    """A supervisor (or a recorder, a second SIP leg) joins the caller's room and leaves."""
    left = asyncio.Event()

    @call.call.transport.event_handler("on_participant_left")
    async def _on_left(_transport, participant_id, *args):
        if participant_id == "supervisor":
            left.set()

    supervisor = ScriptedParty(call.server, ROOM, "supervisor", RATE, call.t0)
    await supervisor.start()
    supervisor.hang_up()
    await asyncio.wait_for(left.wait(), 5)
    await supervisor.close()
    await asyncio.sleep(0.5)  # the transport's event handlers run in tasks: let them act


@pytest.mark.parametrize("caller_identity", [None, "caller"], ids=["first-joined", "given"])
async def test_a_third_participant_leaving_is_not_the_caller_hanging_up(tmp_path, caller_identity):
    human = HumanScript(answer_after=0.3)  # decides when told to, below
    bot = scripted_bot(briefing_timeout="30s")
    async with OfflineCall(tmp_path, bot, None, human, caller_identity=caller_identity) as call:
        await call.wait_event("briefing_started")
        await third_party_comes_and_goes(call)
        assert "caller_hung_up" not in [e["event"] for e in call.events]
        assert call.call.transfer.state == TransferState.BRIEFING  # the transfer goes on
        assert not call.task.done()
        [party] = call.backend.parties.values()
        party.dtmf(None, "1")
        await call.wait_event("connected")
    assert call.call.results[-1].outcome == TransferOutcome.CONNECTED
    assert len(call.call.results) == 1
    assert call.leaks == NO_LEAKS, call.leak_findings


@pytest.mark.parametrize("caller_identity", [None, "caller"], ids=["first-joined", "given"])
async def test_the_caller_leaving_after_a_third_participant_still_hangs_up(
    tmp_path, caller_identity
):
    human = HumanScript(answer_after=0.3)  # never decides: briefing until the caller leaves
    bot = scripted_bot(briefing_timeout="30s")
    async with OfflineCall(tmp_path, bot, None, human, caller_identity=caller_identity) as call:
        await call.wait_event("briefing_started")
        await third_party_comes_and_goes(call)
        assert "caller_hung_up" not in [e["event"] for e in call.events]
        call.caller.hang_up()
        await call.wait_event("caller_hung_up")
        await asyncio.wait_for(asyncio.shield(call.task), 15)  # the runner ends the call
    [result] = call.call.results
    assert result.reason == FailureReason.CALLER_HUNG_UP
    assert [e["event"] for e in call.events].count("teardown_done") == 1
    assert call.humans_on_call == []
    assert call.leaks == NO_LEAKS, call.leak_findings


#
# The `run` command's loop, offline: SIGINT ends every call cleanly
#


async def test_run_ends_calls_cleanly_on_sigint(tmp_path, monkeypatch):
    import os
    import signal

    from loguru import logger

    from pipecat_warm_transfer.runner import livekit_serving

    for name, value in {
        "LIVEKIT_URL": "wss://example.invalid",
        "LIVEKIT_API_KEY": "APIkey",
        "LIVEKIT_API_SECRET": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "bot.yaml").write_text(yaml.safe_dump(scripted_bot(briefing_timeout="30s")))
    loaded = load_config(tmp_path / "bot.yaml")
    human = HumanScript(answer_after=0.3)  # answers and never decides: held until the end
    made: dict = {}
    briefing = asyncio.Event()

    def offline_call(loaded, access, room):
        assert access.url == "wss://example.invalid"
        made["server"] = server = MemoryRoomServer()
        made["backend"] = backend = InMemoryBackend(server, {NUMBER: human})
        mixer = hold_mixer(loaded)
        transport = MemoryTransport(
            server, room, "transfer-bot", params=transport_params(loaded, mixer)
        )
        call = build_bot(
            loaded, transport=transport, backend=backend, hold_mixer=mixer, caller_room=room
        )

        @call.transfer.event_handler("on_transfer_event")
        async def _on_event(_transfer, event):
            if event["event"] == "briefing_started":
                briefing.set()

        made["call"] = call
        return call

    monkeypatch.setattr(livekit_serving, "livekit_call", offline_call)
    logs: list[str] = []
    sink = logger.add(lambda message: logs.append(str(message)), level="INFO")
    try:
        task = asyncio.create_task(livekit_serving.run_livekit(loaded, room="r1"))
        for _ in range(100):
            if "call" in made:
                break
            await asyncio.sleep(0.02)
        caller = ScriptedParty(made["server"], "r1", "caller", RATE)
        caller.say(0.1, tone(900, 0.35))
        await caller.start()
        await asyncio.wait_for(briefing.wait(), 10)
        os.kill(os.getpid(), signal.SIGINT)
        assert await asyncio.wait_for(task, 20) == 0
    finally:
        logger.remove(sink)
    await caller.close()
    result = made["call"].results[-1]
    assert result.reason == FailureReason.CANCELLED
    leftovers = made["server"].leftovers()
    assert leftovers["participants"] == 0 and leftovers["connections"] == 0
    assert leftovers["rooms"] <= 1  # only the caller's own (empty) room
    assert any("call r1: transfer failed (cancelled)" in line for line in logs)
    assert any("call r1: ended after" in line for line in logs)
