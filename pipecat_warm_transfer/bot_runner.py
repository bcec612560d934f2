#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Runs a bot declared in YAML: one pipeline per call, with a warm transfer.

`build_bot(loaded, transport=..., backend=...)` builds one call's pipeline exactly as
DESIGN §3 shows, on any transport and transfer backend::

    transport.input() → transfer.caller_gate() → stt → user aggregator → llm → tts
        → transfer.caller_output() → transport.output() → assistant aggregator

so the same code runs a LiveKit call (`LiveKitTransport`, `LiveKitSipBackend`) and an
offline one (`MemoryTransport`, `InMemoryBackend`, `scripted` services). Without a flow
the caller LLM gets the `transfer_to_human` tool; with one, the flow's nodes name it
(`pipecat_warm_transfer.flows`). `run_call(call)` runs it until the caller leaves.

`run_livekit(loaded, room=...)` is the `run` command: it joins one room, or waits for
inbound SIP calls (rooms with a SIP participant and no bot) and serves each in its own
pipeline, until SIGINT/SIGTERM, which ends every call cleanly (each transfer torn
down). Every call logs one line per transfer result and one when it ends.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from pipecat.frames.frames import LLMRunFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.transports.base_transport import BaseTransport, TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_warm_transfer.audio import HoldMusicMixer
from pipecat_warm_transfer.backends.base import TransferBackend
from pipecat_warm_transfer.config.loader import ConfigError, PathT
from pipecat_warm_transfer.config.services import (
    ServiceBuildError,
    build_service,
    check_service,
)
from pipecat_warm_transfer.config.validate import LoadedConfig
from pipecat_warm_transfer.types import TransferResult, TransferState
from pipecat_warm_transfer.warm_transfer import WarmTransfer

#: How long a call waits for a transfer to finish its own teardown after the caller left.
CALLER_LEFT_GRACE_SECS = 12.0
#: Bound on a call's shutdown after SIGINT.
SHUTDOWN_SECS = 15.0
#: Rooms the transfer creates for the human; never served as inbound calls.
CONSULT_ROOM_PREFIX = "consult-"


@dataclass
class BotCall:
    """One call's bot: the pipeline, its worker, the transfer and the flow.

    Parameters:
        loaded: The bot declaration.
        transport: The caller's transport.
        backend: The transfer backend.
        transfer: The call's `WarmTransfer`.
        pipeline: The caller pipeline.
        worker: Its worker.
        context: The caller LLM's context.
        stt: The caller STT service.
        llm: The caller LLM service.
        tts: The caller TTS service.
        room: The caller's room (for logs).
        flow_manager: The flow manager, when the bot declares a flow.
        flow_link: The link between the flow and the transfer (its `outcomes`).
        caller_identity: The caller's participant identity (the first to join when None).
    """

    loaded: LoadedConfig
    transport: BaseTransport
    backend: TransferBackend
    transfer: WarmTransfer
    pipeline: Pipeline
    worker: PipelineWorker
    context: LLMContext
    stt: Any
    llm: Any
    tts: Any
    room: str | None = None
    flow: Any = None
    flow_manager: Any = None
    flow_link: Any = None
    caller_identity: str | None = None
    started_at: float = field(default_factory=time.monotonic)
    _conversation_started: bool = False
    _ending: bool = False
    _state_changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def results(self) -> list[TransferResult]:
        """Every transfer result of the call, oldest first."""
        return self.transfer.results

    @property
    def name(self) -> str:
        """The call's name in logs."""
        return self.room or self.loaded.config.bot.name

    async def start_conversation(self) -> None:
        """Greet the caller and start the flow (or let the LLM speak first). Idempotent."""
        if self._conversation_started:
            return
        self._conversation_started = True
        greeting = self.loaded.config.bot.greeting
        if greeting:
            await self.worker.queue_frame(TTSSpeakFrame(greeting))
        if self.flow_manager is not None:
            await self.flow_manager.initialize(self.flow.initial_node)
        elif not greeting:
            await self.worker.queue_frame(LLMRunFrame())

    async def end(self, reason: str = "caller left") -> None:
        """End the call: let a transfer in progress finish its teardown, then stop. Idempotent.

        Nobody is left to hear what is still queued, so the pipeline is cancelled rather
        than drained (the transfer tears its consult leg down on the way out).
        """
        if self._ending:
            return
        self._ending = True
        logger.info(f"call {self.name}: ending ({reason})")
        # Cancel the dial, tell a briefed human, hang up a human already joined; this
        # returns at once if the transfer's own watcher got there first (then wait below).
        await self.transfer.caller_hung_up()
        try:
            async with asyncio.timeout(CALLER_LEFT_GRACE_SECS):
                while self.transfer.busy:
                    self._state_changed.clear()
                    await self._state_changed.wait()
        except TimeoutError:
            logger.warning(f"call {self.name}: the transfer did not settle; ending anyway")
        await self.worker.cancel(reason=reason)

    async def cancel(self, reason: str = "shutdown") -> None:
        """Stop the call now (every transfer is torn down on the way out)."""
        self._ending = True
        await self.worker.cancel(reason=reason)

    def summary(self) -> str:
        """One line: how the call's transfers went."""
        outcomes = [_describe_result(r) for r in self.results] or ["no transfer"]
        secs = time.monotonic() - self.started_at
        return f"call {self.name}: ended after {secs:.1f} s; " + "; ".join(outcomes)


def _describe_result(result: TransferResult) -> str:
    if result.connected:
        return f"transfer connected ({result.connect_mode})"
    status = f", SIP {result.sip_status}" if result.sip_status else ""
    return f"transfer failed ({result.reason}{status})"


def hold_mixer(loaded: LoadedConfig) -> HoldMusicMixer:
    """A new hold mixer for one call, as declared (install it on the caller's transport)."""
    return loaded.transfer_settings().hold_music.mixer()


#: LiveKit's output source queue for the caller (Pipecat's default is 1,000 ms). The hold
#: mixer never fills it, but a TTS reply arrives faster than it plays and queues there;
#: Pipecat reports the bot stopped speaking when the last frame is queued, so a short
#: queue keeps `hold_started` and the bot's turn-taking within 200 ms of what the caller
#: hears, and an interruption has less to drop.
LIVEKIT_OUTPUT_QUEUE_MS = 200


def transport_params(
    loaded: LoadedConfig,
    mixer: HoldMusicMixer,
    params_class: type[TransportParams] = TransportParams,
) -> TransportParams:
    """The caller transport's parameters: audio in and out, the hold mixer on the output."""
    rate = loaded.config.bot.sample_rate
    extra = {}
    if "audio_out_queue_size_ms" in params_class.model_fields:
        extra["audio_out_queue_size_ms"] = LIVEKIT_OUTPUT_QUEUE_MS
    return params_class(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=rate,
        audio_out_sample_rate=rate,
        audio_out_mixer=mixer,
        **extra,
    )


def _service(loaded: LoadedConfig, path: PathT, kind: str, section, **kwargs):
    try:
        return build_service(
            kind,
            section.provider,
            section.options,
            section.settings,
            sample_rate=loaded.config.bot.sample_rate,
            **kwargs,
        )
    except ServiceBuildError as e:
        raise ConfigError([loaded.problem((*path, *e.path), e.message)]) from None


def _briefing_factory(loaded: LoadedConfig, kind: str):
    config = loaded.config
    override = getattr(config.transfer.briefing.services, kind)
    if override is not None:
        path: PathT = ("transfer", "briefing", "services", kind)
        section = override
    else:
        path, section = ("services", kind), getattr(config.services, kind)
    try:  # refuse a bad briefing service now, not in the middle of a transfer
        check_service(kind, section.provider, section.options, section.settings)
    except ServiceBuildError as e:
        raise ConfigError([loaded.problem((*path, *e.path), e.message)]) from None

    def factory():
        return _service(loaded, path, kind, section)

    return factory


def _user_params(loaded: LoadedConfig) -> LLMUserAggregatorParams:
    bot = loaded.config.bot
    kwargs: dict[str, Any] = {}
    if bot.vad == "silero":
        from pipecat.audio.vad.silero import SileroVADAnalyzer

        kwargs["vad_analyzer"] = SileroVADAnalyzer()
    if bot.turn_end == "speech_timeout":
        from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
            SpeechTimeoutUserTurnStopStrategy,
        )
        from pipecat.turns.user_turn_strategies import UserTurnStrategies

        kwargs["user_turn_strategies"] = UserTurnStrategies(
            stop=[SpeechTimeoutUserTurnStopStrategy()]
        )
    return LLMUserAggregatorParams(**kwargs)


def build_bot(
    loaded: LoadedConfig,
    *,
    transport: BaseTransport,
    backend: TransferBackend,
    hold_mixer: HoldMusicMixer,
    caller_room: str | None = None,
    caller_identity: str | None = None,
    bot_identity: str | None = None,
) -> BotCall:
    """Build one call's bot on a transport and a transfer backend.

    Args:
        loaded: The validated bot declaration.
        transport: The caller's transport; its output's `audio_out_mixer` must be
            `hold_mixer` (see `transport_params`).
        backend: How the human is reached (`LiveKitSipBackend`, `InMemoryBackend`).
        hold_mixer: The caller output's mixer (see `hold_mixer`).
        caller_room: The caller's room (needed for the `move` connect mode).
        caller_identity: The caller's identity (default: the first participant to join).
        bot_identity: The bot's identity in consult rooms (default: `livekit.bot_identity`).

    Returns:
        The call, ready for `run_call`.

    Raises:
        ConfigError: A service cannot be built (one line naming its YAML field).
    """
    config = loaded.config
    settings = loaded.transfer_settings()
    rate = config.bot.sample_rate
    services = config.services
    flow = loaded.flow()
    prompt = config.bot.prompt
    stt = _service(loaded, ("services", "stt"), "stt", services.stt)
    llm = _service(loaded, ("services", "llm"), "llm", services.llm, system_instruction=prompt)
    tts = _service(loaded, ("services", "tts"), "tts", services.tts)
    briefing = settings.briefing(
        tts=_briefing_factory(loaded, "tts"),
        stt=_briefing_factory(loaded, "stt") if settings.briefing_mode == "voice" else None,
        llm=_briefing_factory(loaded, "llm") if settings.briefing_mode == "voice" else None,
    )

    context = LLMContext()
    aggregators = LLMContextAggregatorPair(context, user_params=_user_params(loaded))
    transfer = WarmTransfer(
        backend=backend,
        target=settings.target,
        briefing=briefing,
        params=settings.params,
        hold_mixer=hold_mixer,
        context=context,
        summary_llm=llm,
        caller_room=caller_room,
        bot_identity=bot_identity or config.livekit.bot_identity,
        name=f"WarmTransfer[{caller_room or config.bot.name}]",
    )
    pipeline = Pipeline(
        [
            transport.input(),
            transfer.caller_gate(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transfer.caller_output(),
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        cancel_on_idle_timeout=False,
        enable_rtvi=False,
    )
    call = BotCall(
        loaded=loaded,
        transport=transport,
        backend=backend,
        transfer=transfer,
        pipeline=pipeline,
        worker=worker,
        context=context,
        stt=stt,
        llm=llm,
        tts=tts,
        room=caller_room,
        flow=flow,
        caller_identity=caller_identity,
    )
    if flow is not None:
        from pipecat.flows import FlowManager

        from pipecat_warm_transfer.flows import register_warm_transfer

        call.flow_manager = FlowManager(
            worker=worker,
            llm=llm,
            context_aggregator=aggregators,
            transport=transport,
            global_functions=flow.global_functions,
        )
        call.flow_link = register_warm_transfer(call.flow_manager, transfer, flow=flow)
    else:
        context.set_tools([transfer.tool_schema])
        llm.register_function("transfer_to_human", transfer.handle_function_call)
    _wire_events(call)
    return call


def _wire_events(call: BotCall) -> None:
    transport, transfer = call.transport, call.transfer
    watching = False

    def watch_caller(identity: str) -> None:
        # The transfer is told who the caller is, never None: with None it would take
        # anyone else leaving the room (a supervisor, a recorder, a second SIP leg) for
        # the caller hanging up.
        nonlocal watching
        if not watching:
            watching = True
            transfer.watch_caller_transport(transport, identity)

    @transport.event_handler("on_first_participant_joined")
    async def _on_first(_transport, participant_id, *args):
        if call.caller_identity is None:
            call.caller_identity = participant_id
        watch_caller(call.caller_identity)
        logger.info(f"call {call.name}: {participant_id} joined")
        await call.start_conversation()

    # Registered before the transfer's own watcher, so that the caller's hang-up is
    # handled to the end (human hung up, consult leg closed) before the call stops.
    @transport.event_handler("on_participant_left")
    async def _on_left(_transport, participant_id, reason=None, *args):
        if participant_id == call.caller_identity:
            await call.end(f"the caller left ({reason})")

    if call.caller_identity is not None:
        watch_caller(call.caller_identity)

    @transfer.event_handler("on_transfer_result")
    async def _on_result(_transfer, result: TransferResult):
        line = _describe_result(result)
        timing = result.timings.total
        took = f" after {timing:.1f} s" if timing is not None else ""
        logger.info(f"call {call.name}: {line}{took}")

    @transfer.event_handler("on_state_changed")
    async def _on_state(_transfer, state: TransferState):
        call._state_changed.set()
        logger.debug(f"call {call.name}: transfer {state}")


async def run_call(call: BotCall, *, handle_sigint: bool = False) -> list[TransferResult]:
    """Run a call's pipeline until it ends; log its one-line summary.

    Returns:
        The call's transfer results.
    """
    runner = WorkerRunner(handle_sigint=handle_sigint, check_dangling_tasks=False)
    await runner.add_workers(call.worker)
    try:
        await runner.run()
    finally:
        logger.info(call.summary())
    return call.results


#
# LiveKit
#


@dataclass
class LiveKitAccess:
    """The LiveKit deployment, from the YAML or the `LIVEKIT_*` environment.

    Parameters:
        url: Server URL.
        api_key: API key.
        api_secret: API secret.
    """

    url: str
    api_key: str
    api_secret: str = field(repr=False)

    @property
    def rtc_url(self) -> str:
        """The media URL (`ws(s)://`)."""
        if self.url.lower().startswith("https://"):
            return "wss://" + self.url[len("https://") :]
        if self.url.lower().startswith("http://"):
            return "ws://" + self.url[len("http://") :]
        return self.url

    @classmethod
    def from_config(cls, loaded: LoadedConfig) -> LiveKitAccess:
        """Read the access, refusing a missing field with the field's line."""
        section = loaded.config.livekit
        values = {
            "url": section.url or os.getenv("LIVEKIT_URL"),
            "api_key": (section.api_key.get_secret_value() if section.api_key else None)
            or os.getenv("LIVEKIT_API_KEY"),
            "api_secret": (section.api_secret.get_secret_value() if section.api_secret else None)
            or os.getenv("LIVEKIT_API_SECRET"),
        }
        missing = [
            loaded.problem(("livekit", name), f"not set here nor in LIVEKIT_{name.upper()}")
            for name, value in values.items()
            if not value
        ]
        if missing:
            raise ConfigError(missing)
        return cls(**values)

    def join_token(self, room: str, identity: str, name: str | None = None) -> str:
        """A token that lets `identity` join `room` (that room only)."""
        from livekit import api

        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )


def livekit_call(loaded: LoadedConfig, access: LiveKitAccess, room: str) -> BotCall:
    """Build the bot of one LiveKit room: `LiveKitTransport` and `LiveKitSipBackend`."""
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

    from pipecat_warm_transfer.backends.livekit import LiveKitSipBackend

    config = loaded.config
    mixer = hold_mixer(loaded)
    identity = config.livekit.bot_identity
    transport = LiveKitTransport(
        access.rtc_url,
        access.join_token(room, identity, config.bot.name),
        room,
        params=transport_params(loaded, mixer, LiveKitParams),
    )
    backend = LiveKitSipBackend(
        url=access.url,
        api_key=access.api_key,
        api_secret=access.api_secret,
        trunk_id=config.transfer.target.trunk_id,
    )
    return build_bot(
        loaded,
        transport=transport,
        backend=backend,
        hold_mixer=mixer,
        caller_room=room,
        bot_identity=identity,
    )


async def _serve(call: BotCall) -> None:
    try:
        await run_call(call)
    finally:
        await call.backend.close()


async def waiting_sip_rooms(
    access: LiveKitAccess, *, bot_identity: str, prefix: str | None = None, lkapi=None
) -> list[str]:
    """Rooms with a SIP participant and no bot yet (inbound calls to serve).

    The transfer's own consult rooms (`consult-…`) are skipped.
    """
    from livekit import api
    from livekit.protocol.models import ParticipantInfo

    own = lkapi is None
    lkapi = lkapi or api.LiveKitAPI(access.url, access.api_key, access.api_secret)
    try:
        rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
        waiting = []
        for room in rooms:
            if room.name.startswith(CONSULT_ROOM_PREFIX):
                continue
            if prefix and not room.name.startswith(prefix):
                continue
            people = (
                await lkapi.room.list_participants(api.ListParticipantsRequest(room=room.name))
            ).participants
            has_bot = any(p.identity == bot_identity for p in people)
            has_sip = any(p.kind == ParticipantInfo.Kind.SIP for p in people)
            if has_sip and not has_bot:
                waiting.append(room.name)
        return waiting
    finally:
        if own:
            await lkapi.aclose()


async def run_livekit(
    loaded: LoadedConfig,
    *,
    room: str | None = None,
    poll_secs: float = 1.0,
    max_calls: int | None = None,
) -> int:
    """The `run` command: serve one room, or every inbound SIP call, until SIGINT.

    Args:
        loaded: The validated bot declaration.
        room: Join this room (dispatch by room name); None waits for SIP calls.
        poll_secs: How often to look for new inbound SIP calls.
        max_calls: Stop after serving this many calls (None: run until SIGINT).

    Returns:
        The process exit code.
    """
    access = LiveKitAccess.from_config(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    calls: dict[str, tuple[BotCall, asyncio.Task]] = {}
    served = 0

    def serve(name: str) -> None:
        nonlocal served
        call = livekit_call(loaded, access, name)
        calls[name] = (call, asyncio.create_task(_serve(call), name=f"call-{name}"))
        served += 1

    try:
        if room is not None:
            logger.info(f"{loaded.config.bot.name}: joining room {room}")
            serve(room)
        else:
            logger.info(f"{loaded.config.bot.name}: waiting for inbound SIP calls")
        while not stop.is_set():
            for name, (_call, task) in list(calls.items()):
                if task.done():
                    calls.pop(name)
                    if not task.cancelled() and task.exception() is not None:
                        error = task.exception()
                        logger.error(f"call {name}: {type(error).__name__}: {error}")
            finished = room is not None or (max_calls is not None and served >= max_calls)
            if finished and not calls:
                break
            if not finished:
                for name in await _poll(access, loaded, calls):
                    serve(name)
            try:
                await asyncio.wait_for(stop.wait(), poll_secs)
            except TimeoutError:
                pass
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _stop_calls(loaded, calls)
    return 0


async def _stop_calls(loaded: LoadedConfig, calls: dict[str, tuple[BotCall, asyncio.Task]]):
    """End every call cleanly (its transfer torn down), then make sure its task is gone."""
    running = [(call, task) for call, task in calls.values() if not task.done()]
    if not running:
        return
    logger.info(f"{loaded.config.bot.name}: stopping {len(running)} call(s)")
    for call, _task in running:
        try:
            await call.cancel()
        except Exception as e:
            logger.warning(f"call {call.name}: cancel: {type(e).__name__}: {e}")
    tasks = [task for _call, task in running]
    _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_SECS)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=SHUTDOWN_SECS)


async def _poll(access: LiveKitAccess, loaded: LoadedConfig, calls: dict) -> list[str]:
    try:
        rooms = await waiting_sip_rooms(
            access,
            bot_identity=loaded.config.livekit.bot_identity,
            prefix=loaded.config.livekit.room_prefix,
        )
    except Exception as e:
        logger.warning(f"looking for inbound calls failed: {type(e).__name__}")
        return []
    return [name for name in rooms if name not in calls]
