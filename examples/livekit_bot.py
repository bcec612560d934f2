"""A real bot for a LiveKit SIP inbound call that can warm-transfer the caller to a human.

Needs a LiveKit deployment (Cloud or self-hosted with SIP), an outbound SIP trunk, and
keys for Deepgram, OpenAI and Cartesia (any Pipecat services work the same way):

    export LIVEKIT_URL=wss://your-project.livekit.cloud
    export LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    export LIVEKIT_SIP_OUTBOUND_TRUNK=ST_xxx      # trunk used to dial the human
    export LIVEKIT_SIP_NUMBER=+15550001111        # caller id shown to the human (optional)
    export TRANSFER_TO=+15550002222               # the human's number or sip: URI
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=...
    python examples/livekit_bot.py --room <the caller's room>

Run it for the room a SIP inbound call landed in (from a LiveKit dispatch rule or a
webhook). Try it offline first: `make demo` runs the same pipeline shape against the
bundled LiveKit API emulator with scripted services.
"""

import argparse
import asyncio
import os

from livekit.api import AccessToken, VideoGrants
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
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


def bot_token(room: str) -> str:
    """A join token for the bot, for the caller's room only."""
    return (
        AccessToken(os.environ["LIVEKIT_API_KEY"], os.environ["LIVEKIT_API_SECRET"])
        .with_identity("transfer-bot")
        .with_grants(VideoGrants(room_join=True, room=room))
        .to_jwt()
    )


async def main(room: str):
    transfer = WarmTransfer(
        backend=LiveKitSipBackend(),  # LIVEKIT_URL / _API_KEY / _API_SECRET / _SIP_* from env
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
        os.environ["LIVEKIT_URL"],
        bot_token(room),
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
    transfer.watch_caller_transport(transport)

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
    worker = PipelineWorker(pipeline, params=PipelineParams(enable_metrics=True))

    @transfer.event_handler("on_transfer_result")
    async def _on_result(_transfer, result):
        print(f"transfer result: {result.as_dict()}")

    @transport.event_handler("on_first_participant_joined")
    async def _on_joined(_transport, _participant_id):
        await worker.queue_frame(LLMRunFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await runner.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--room", required=True, help="the LiveKit room of the SIP caller")
    asyncio.run(main(parser.parse_args().room))
