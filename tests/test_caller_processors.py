"""CallerGate and CallerOutput in isolation, with Pipecat's run_test."""

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    InputAudioRawFrame,
    InputDTMFFrame,
    MixerEnableFrame,
    OutputAudioRawFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStoppedFrame,
    UserAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.tests.utils import run_test

from pipecat_warm_transfer import (
    BriefingParams,
    CallerGate,
    MixerStartAfterSpeechFrame,
    TransferState,
    TransferStateFrame,
    TransferTarget,
    WarmTransfer,
)
from pipecat_warm_transfer.testing import InMemoryBackend, MemoryRoomServer, ScriptedToneTTSService


def make_transfer():
    return WarmTransfer(
        backend=InMemoryBackend(MemoryRoomServer()),
        target=TransferTarget("+15550100"),
        briefing=BriefingParams(tts=ScriptedToneTTSService),
    )


def audio_in():
    return InputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1)


async def test_gate_passes_caller_input_when_idle():
    transfer = make_transfer()
    frames = [audio_in(), TranscriptionFrame("hi", "caller", "now")]
    down, _ = await run_test(
        transfer.caller_gate(),
        frames_to_send=frames,
        expected_down_frames=[InputAudioRawFrame, TranscriptionFrame],
    )


def gate_with(**callbacks) -> CallerGate:
    """A gate on its own: it needs only the callbacks, never its owner."""

    async def nothing(*_args):
        return None

    names = ("on_end", "on_request", "on_dtmf", "on_caller_audio")
    return CallerGate(on_start=lambda: None, **{n: callbacks.get(n, nothing) for n in names})


async def test_gate_drops_caller_input_while_held_but_sees_dtmf():
    seen = []

    async def on_dtmf(digit):
        seen.append(digit)

    gate = gate_with(on_dtmf=on_dtmf)
    gate.set_state(TransferState.HOLDING)
    user_audio = UserAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1, user_id="c")
    frames = [
        audio_in(),
        user_audio,
        TranscriptionFrame("connect me now", "caller", "now"),
        InputDTMFFrame(button=KeypadEntry.ONE),
    ]
    await run_test(gate, frames_to_send=frames, expected_down_frames=[])
    assert seen == ["1"]  # the transfer is told (the keypad is not held back)


async def test_output_arms_the_music_after_the_hold_line():
    transfer = make_transfer()
    output = transfer.caller_output()
    holding = TransferStateFrame(state=TransferState.HOLDING, previous=TransferState.IDLE)
    frames = [
        holding,
        TTSAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1),
        TTSStoppedFrame(),
    ]
    await run_test(
        output,
        frames_to_send=frames,
        expected_down_frames=[
            TransferStateFrame,
            TTSAudioRawFrame,
            TTSStoppedFrame,
            MixerStartAfterSpeechFrame,
        ],
    )


async def test_output_enables_the_music_when_the_bot_stops_speaking():
    transfer = make_transfer()
    output = transfer.caller_output()
    output._state = TransferState.HOLDING
    output._music_armed = True
    down, up = await run_test(
        output,
        frames_to_send=[BotStoppedSpeakingFrame()],
        frames_to_send_direction=FrameDirection.UPSTREAM,
        expected_down_frames=[MixerEnableFrame],
        expected_up_frames=[BotStoppedSpeakingFrame],
    )
    assert down[0].enable is True


async def test_output_silences_the_bot_once_connected_but_plays_the_human():
    transfer = make_transfer()
    output = transfer.caller_output()
    connected = TransferStateFrame(state=TransferState.CONNECTED, previous=TransferState.CONNECTING)
    bot = TTSAudioRawFrame(audio=b"\x01\x00" * 320, sample_rate=16000, num_channels=1)
    human = OutputAudioRawFrame(audio=b"\x02\x00" * 320, sample_rate=16000, num_channels=1)
    down, _ = await run_test(
        output,
        frames_to_send=[connected, bot, human],
        expected_down_frames=[TransferStateFrame, OutputAudioRawFrame],
    )
    assert down[1].audio == human.audio  # the human's audio, not the bot's


async def test_output_waits_for_the_hold_line_not_the_sentence_before_it():
    """The LLM said a sentence and called the tool: the music waits for the hold line."""
    from pipecat.frames.frames import TTSTextFrame

    transfer = make_transfer()
    output = transfer.caller_output()
    holding = TransferStateFrame(state=TransferState.HOLDING, previous=TransferState.IDLE)
    frames = [
        holding,
        TTSTextFrame("Sure, let me get someone for you.", aggregated_by="sentence"),
        TTSStoppedFrame(),
        TTSTextFrame(transfer.hold_message, aggregated_by="sentence"),
        TTSStoppedFrame(),
    ]
    await run_test(
        output,
        frames_to_send=frames,
        expected_down_frames=[
            TransferStateFrame,
            TTSTextFrame,
            TTSStoppedFrame,  # no music after the first sentence
            TTSTextFrame,
            TTSStoppedFrame,
            MixerStartAfterSpeechFrame,
        ],
    )
