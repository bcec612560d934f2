"""A real bot for a LiveKit SIP inbound call that can warm-transfer the caller to a human.

A Pipecat runner bot: Pipecat's development runner (or a Pipecat Cloud-style host) calls
`bot(runner_args)` for each session, with the room, server URL and the bot's join token.
Needs a LiveKit deployment (Cloud or self-hosted with SIP), an outbound SIP trunk, and
keys for Deepgram, OpenAI and Cartesia (any Pipecat services work the same way):

    export LIVEKIT_URL=wss://your-project.livekit.cloud
    export LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export LIVEKIT_SIP_OUTBOUND_TRUNK=ST_xxx      # trunk used to dial the human
    export LIVEKIT_SIP_NUMBER=+15550001111        # caller id shown to the human (optional)
    export TRANSFER_TO=+15550002222               # the human's number or sip: URI
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=...
    export LIVEKIT_ROOM_NAME=<the caller's room>  # optional: a new room per session
    python examples/livekit_bot.py -t livekit

Then start a session: open http://localhost:7860 (Pipecat's prebuilt client joins the room
too), or `curl -X POST localhost:7860/start -d '{}'`. The runner mints the bot's token for
`LIVEKIT_ROOM_NAME` (the room a SIP inbound call landed in, from your dispatch rule) and
calls `bot()`. The first participant to join is the caller; the session ends when they
leave. Try it offline first: `make demo` runs the same pipeline shape against the bundled
LiveKit API emulator with scripted services.
"""

import os

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.runner.types import LiveKitRunnerArguments, RunnerArguments
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService
from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport
from pipecat.workers.runner import WorkerRunner

from pipecat_warm_transfer import (
    BriefingParams,
    LiveKitSipBackend,
    TransferTarget,
    WarmTransfer,
    WarmTransferParams,
)

VOICE = "71a7ad14-091c-4e8e-a314-022ece01c121"  # a Cartesia voice id


async def bot(runner_args: RunnerArguments):
    """Serve one caller: the runner's LiveKit room, until the caller leaves."""
    if not isinstance(runner_args, LiveKitRunnerArguments):
        raise RuntimeError("this example serves LiveKit sessions only: run it with -t livekit")
    room = runner_args.room_name
    transfer = WarmTransfer(
        # The runner's token only joins the room: dialing and moving the human take the
        # API key and secret (LIVEKIT_API_KEY / _API_SECRET / _SIP_* from the environment).
        backend=LiveKitSipBackend(url=runner_args.url),
        target=TransferTarget(os.environ["TRANSFER_TO"], display_name="a billing specialist"),
        params=WarmTransferParams(ring_timeout=25, briefing_timeout=90),
        briefing=BriefingParams(
            stt=lambda: DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"]),
            llm=lambda: OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"]),
            tts=lambda: CartesiaTTSService(api_key=os.environ["CARTESIA_API_KEY"], voice_id=VOICE),
        ),
        caller_room=room,
    )
    transport = LiveKitTransport(
        runner_args.url,
        runner_args.token,
        room,
        params=LiveKitParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_mixer=transfer.hold_mixer,
            # LiveKit's source queue (default 1,000 ms): TTS replies queue there and
            # Pipecat reports the bot stopped when the last frame is queued; 200 ms keeps
            # that close to what the caller hears. The hold mixer never fills it.
            audio_out_queue_size_ms=200,
        ),
    )

    stt = DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])
    llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"])
    tts = CartesiaTTSService(api_key=os.environ["CARTESIA_API_KEY"], voice_id=VOICE)
    context = LLMContext(
        messages=[
            {
                "role": "system",
                "content": "You are a friendly phone assistant for Acme. Keep answers short. "
                "If the caller asks for a person, or you cannot help, call transfer_to_human.",
            }
        ],
        tools=[transfer.tool_schema],
    )
    llm.register_function("transfer_to_human", transfer.handle_function_call)
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
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
    # No idle timeout: a caller on hold or joined to the human makes none of the frames
    # Pipecat's idle monitor watches. The call ends when the caller leaves instead.
    worker = PipelineWorker(
        pipeline, params=PipelineParams(enable_metrics=True), idle_timeout_secs=None
    )

    @transfer.event_handler("on_transfer_result")
    async def _on_result(_transfer, result):
        print(f"transfer result: {result.as_dict()}")

    caller = {"identity": None}

    @transport.event_handler("on_first_participant_joined")
    async def _on_joined(_transport, participant_id):
        caller["identity"] = participant_id
        await worker.queue_frame(LLMRunFrame())

    # Registered before the transfer's own watcher, so that the caller's hang-up is
    # handled to the end (dial cancelled, a briefed human told) before the worker stops.
    @transport.event_handler("on_participant_left")
    async def _on_left(_transport, participant_id, *args):
        if participant_id == caller["identity"]:
            await transfer.caller_hung_up()
            await worker.cancel(reason="the caller left")

    transfer.watch_caller_transport(transport)

    runner = WorkerRunner(
        handle_sigint=runner_args.handle_sigint, handle_sigterm=runner_args.handle_sigterm
    )
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
