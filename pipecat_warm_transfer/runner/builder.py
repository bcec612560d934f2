#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""One call's bot, built from a YAML declaration and run: its pipeline and its warm transfer.

`build_bot(loaded, transport=..., backend=...)` builds one call's pipeline exactly as
DESIGN §3 shows, on any transport and transfer backend::

    transport.input() → transfer.caller_gate() → stt → user aggregator → llm → tts
        → transfer.caller_output() → transport.output() → assistant aggregator

so the same code runs a LiveKit call (`LiveKitTransport`, `LiveKitSipBackend`, see
`pipecat_warm_transfer.runner.livekit_serving`) and an offline one (`MemoryTransport`,
`InMemoryBackend`, `scripted` services). Without a flow the caller LLM gets the
`transfer_to_human` tool; with one, the flow's nodes name it (`pipecat_warm_transfer.flows`).
`run_call(call)` runs it until the caller leaves; only the caller leaving (not a supervisor
or a recorder) ends the call. Every call logs one line per transfer result and one when it
ends.
"""

from __future__ import annotations

import asyncio
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
from pipecat_warm_transfer.config.loader import ConfigError, PathT
from pipecat_warm_transfer.config.services import (
    ServiceBuildError,
    build_service,
    check_service,
)
from pipecat_warm_transfer.config.validate import LoadedConfig
from pipecat_warm_transfer.consult_leg import TransferBackend
from pipecat_warm_transfer.types import TransferResult, TransferState
from pipecat_warm_transfer.warm_transfer import WarmTransfer

#: How long a call waits for a transfer to finish its own teardown after the caller left.
CALLER_LEFT_GRACE_SECS = 12.0


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
        # A held or bridged call can be quiet for minutes: no idle timeout at all.
        idle_timeout_secs=None,
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
