"""MemoryTransport in real Pipecat pipelines: audio both ways, pacing, DTMF, events, teardown."""

import asyncio
import contextlib

import numpy as np
import pytest
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.audio.mixers.base_audio_mixer import BaseAudioMixer
from pipecat.frames.frames import (
    InputAudioRawFrame,
    InputDTMFFrame,
    OutputAudioRawFrame,
    OutputDTMFFrame,
    UserAudioRawFrame,
)
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import TransportParams

from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs
from pipecat_warm_transfer.testing import (
    AudioReceived,
    FrameCapture,
    MemoryRoomServer,
    MemoryTransport,
    PipelineRun,
    ScriptedParty,
    tone,
)

ZERO = {"rooms": 0, "participants": 0, "connections": 0}


@pytest.fixture
async def server():
    before = asyncio.all_tasks()
    server = MemoryRoomServer(auto_delete_empty=True)
    yield server
    await asyncio.sleep(0)
    assert server.leftovers() == ZERO
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


class Echo(FrameProcessor):
    """Plays every input audio frame back out."""

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(
                OutputAudioRawFrame(
                    audio=frame.audio, sample_rate=frame.sample_rate, num_channels=1
                )
            )
        else:
            await self.push_frame(frame, direction)


class ToneMixer(BaseAudioMixer):
    """A mixer that adds a continuous tone (a stand-in for hold music)."""

    def __init__(self, freq=300.0, dbfs=-20.0):
        self._freq, self._dbfs, self._phase, self._rate = freq, dbfs, 0, 16000

    async def start(self, sample_rate):
        self._rate = sample_rate

    async def stop(self):
        pass

    async def process_frame(self, frame):
        pass

    async def mix(self, audio):
        x = np.frombuffer(audio, dtype=np.int16).astype(np.int32)
        n = np.arange(self._phase, self._phase + x.size)
        self._phase += x.size
        amp = 32768 * 10 ** (self._dbfs / 20) * np.sqrt(2)
        x = x + np.round(amp * np.sin(2 * np.pi * self._freq * n / self._rate)).astype(np.int32)
        return np.clip(x, -32768, 32767).astype(np.int16).tobytes()


def params(**kwargs):
    base = dict(
        audio_in_enabled=True,
        audio_out_enabled=True,
        audio_in_sample_rate=16000,
        audio_out_sample_rate=16000,
        audio_out_end_silence_secs=0,
    )
    base.update(kwargs)
    return TransportParams(**base)


def secs(samples, rate, start, end):
    return samples[int(start * rate) : int(end * rate)]


async def collect_audio(connection, seconds):
    """Read a raw connection for `seconds`; return (audio events, others)."""
    audio, others = [], []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            event = await asyncio.wait_for(connection.recv(), left)
        except TimeoutError:
            break
        (audio if isinstance(event, AudioReceived) else others).append(event)
    return audio, others


async def test_audio_round_trip_through_a_pipeline(server):
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    transport = MemoryTransport(server, "call", "bot", params=params(audio_out_sample_rate=24000))
    capture = FrameCapture(UserAudioRawFrame)
    caller = ScriptedParty(server, "call", "caller", sample_rate=8000, t0=t0)
    caller.say(0.3, tone(440, 0.6, 8000, -20))
    run = PipelineRun(
        [transport.input(), capture, Echo(), transport.output()],
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000),
    )
    async with run:
        await caller.start()
        async with asyncio.timeout(3):
            await caller.wait_idle()
        await asyncio.sleep(0.4)
    await caller.close()

    frames = capture.of_type(UserAudioRawFrame)
    assert frames and {(f.user_id, f.sample_rate, f.num_channels) for f in frames} == {
        ("caller", 16000, 1)
    }
    pipeline_in = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
    loud = pipeline_in[np.abs(pipeline_in) > 1000]
    assert abs(rms_dbfs(loud) - rms_dbfs(tone(440, 1, 16000, -20))) < 1.5

    echo = caller.heard_from("bot")
    assert caller.stream_gaps("bot") == 0  # the bot's output never stalled
    levels = [rms_dbfs(secs(echo, 8000, t, t + 0.02)) for t in np.arange(0.2, 0.8, 0.02)]
    onset = 0.2 + 0.02 * next(i for i, level in enumerate(levels) if level > -30)
    assert 0.3 <= onset <= 0.5  # the scripted start, plus the pipeline's latency
    steady = secs(echo, 8000, onset + 0.1, onset + 0.45)
    assert abs(dominant_frequency(steady, 8000) - 440) < 3
    assert abs(rms_dbfs(steady) + 20) < 1.5
    assert rms_dbfs(secs(echo, 8000, onset + 0.7, onset + 0.9)) < -60  # echoed silence


async def test_output_is_paced_in_real_time(server):
    loop = asyncio.get_running_loop()
    transport = MemoryTransport(server, "room", "bot", params=params(audio_in_enabled=False))
    listener = server.connect("room", "listener")
    run = PipelineRun([transport.output()])
    await run.start()
    clip = tone(600, 1.0, 16000, -20)
    start = loop.time()
    for i in range(0, len(clip), 3200):  # ten 100 ms frames, queued at once
        await run.worker.queue_frame(
            OutputAudioRawFrame(audio=clip[i : i + 3200], sample_rate=16000, num_channels=1)
        )
    await run.end()
    elapsed = loop.time() - start
    assert 0.8 <= elapsed <= 1.5

    audio, _ = await collect_audio(listener, 0.05)
    assert sum(len(e.audio) for e in audio) == len(clip)
    spread = audio[-1].sent_at - audio[0].sent_at
    assert 0.8 <= spread <= 1.2  # one second of audio spread over about a second
    received = np.frombuffer(b"".join(e.audio for e in audio), dtype=np.int16)
    assert abs(dominant_frequency(received, 16000) - 600) < 2
    listener.disconnect()


async def test_mixer_output_is_continuous_and_paced(server):
    loop = asyncio.get_running_loop()
    transport = MemoryTransport(
        server, "room", "bot", params=params(audio_in_enabled=False, audio_out_mixer=ToneMixer())
    )
    listener = server.connect("room", "listener")
    async with PipelineRun([transport.output()]):
        await collect_audio(listener, 0.2)  # settle
        start = loop.time()
        audio, _ = await collect_audio(listener, 1.0)
        wall = loop.time() - start
    received = b"".join(e.audio for e in audio)
    seconds_of_audio = len(received) / 2 / 16000
    assert 0.8 * wall <= seconds_of_audio <= 1.2 * wall  # paced, not spinning
    assert abs(dominant_frequency(received, 16000) - 300) < 2
    assert abs(rms_dbfs(received) + 20) < 0.5
    listener.disconnect()


async def test_dtmf_in_and_out(server):
    t0 = asyncio.get_running_loop().time()
    transport = MemoryTransport(server, "room", "bot", params=params())
    events = []

    @transport.event_handler("on_dtmf_event")
    async def on_dtmf_event(transport, data):
        events.append(data)

    capture = FrameCapture(InputDTMFFrame)
    caller = ScriptedParty(server, "room", "caller", sample_rate=16000, t0=t0)
    caller.dtmf(0.2, "5").dtmf(0.3, "#")
    async with PipelineRun([transport.input(), capture, transport.output()]) as run:
        await caller.start()
        async with asyncio.timeout(2):
            await capture.wait_for(lambda f: f.button == KeypadEntry.POUND)
        await run.worker.queue_frame(OutputDTMFFrame(button=KeypadEntry.ONE))
        assert await transport.send_dtmf("9")
        assert not await transport.send_dtmf("x")
        await asyncio.sleep(0.2)
    await caller.close()

    assert [f.button for f in capture.of_type(InputDTMFFrame)] == [
        KeypadEntry.FIVE,
        KeypadEntry.POUND,
    ]
    assert events == [
        {"tone": "5", "digit": "5", "participant_id": "caller"},
        {"tone": "#", "digit": "#", "participant_id": "caller"},
    ]
    assert sorted(d for _, who, d in caller.dtmf_heard if who == "bot") == ["1", "9"]


async def test_participant_events_with_reasons(server):
    transport = MemoryTransport(server, "room", "bot", params=params())
    seen = []

    for name in (
        "on_connected",
        "on_disconnected",
        "on_participant_connected",
        "on_participant_disconnected",
        "on_participant_left",
        "on_first_participant_joined",
    ):

        async def handler(transport, *args, _name=name):
            seen.append((_name, *args))

        transport.add_event_handler(name, handler)

    early = server.connect("room", "early")  # already there: reported on connect
    async with PipelineRun([transport.input(), transport.output()]):
        server.connect("room", "late", kind="sip")
        mover = server.connect("room", "mover")
        await asyncio.sleep(0.05)
        early.disconnect()
        server.remove_participant("room", "late")
        server.create_room("elsewhere")
        server.move_participant("mover", "room", "elsewhere")
        await asyncio.sleep(0.05)
        assert transport.get_participants() == []
    server.delete_room("elsewhere")

    assert seen[0] == ("on_connected",)
    assert ("on_first_participant_joined", "early") in seen
    assert [s[1] for s in seen if s[0] == "on_first_participant_joined"] == ["early"]
    assert [s[1] for s in seen if s[0] == "on_participant_connected"] == [
        "early",
        "late",
        "mover",
    ]
    assert [s[1:] for s in seen if s[0] == "on_participant_left"] == [
        ("early", "disconnected"),
        ("late", "removed"),
        ("mover", "moved"),
    ]
    assert [s[1] for s in seen if s[0] == "on_participant_disconnected"] == [
        "early",
        "late",
        "mover",
    ]
    assert seen.count(("on_disconnected",)) == 1 and seen[-1] == ("on_disconnected",)
    assert mover.disconnect_reason == "room_deleted"


async def test_room_deleted_under_a_running_pipeline(server):
    loop = asyncio.get_running_loop()
    transport = MemoryTransport(server, "room", "bot", params=params(audio_out_mixer=ToneMixer()))
    disconnects = []

    @transport.event_handler("on_disconnected")
    async def on_disconnected(transport):
        disconnects.append(loop.time())

    run = PipelineRun([transport.input(), transport.output()])
    async with run:
        await asyncio.sleep(0.1)
        assert transport.connected
        server.delete_room("room")
        await asyncio.sleep(0.3)  # the mixer keeps writing into a closed connection
        assert not transport.connected
        assert len(disconnects) == 1
    assert len(disconnects) == 1


@pytest.mark.parametrize("ends", ["end", "cancel", "error"])
@pytest.mark.parametrize("sides", ["both", "input", "output"])
async def test_connection_closed_on_every_exit(server, ends, sides):
    transport = MemoryTransport(server, "room", "bot", params=params())
    processors = {
        "both": [transport.input(), transport.output()],
        "input": [transport.input()],
        "output": [transport.output()],
    }[sides]
    run = PipelineRun(processors)
    with pytest.raises(RuntimeError) if ends == "error" else contextlib.nullcontext():
        async with run:
            await asyncio.sleep(0.05)
            assert server.leftovers() == {"rooms": 1, "participants": 1, "connections": 1}
            if ends == "cancel":
                await run.cancel()
            elif ends == "error":
                raise RuntimeError("boom")
    assert run.done
    assert server.leftovers() == ZERO


async def test_input_is_per_publisher_like_livekit_user_tracks(server):
    """Two participants talking at once arrive as separate UserAudioRawFrame streams."""
    t0 = asyncio.get_running_loop().time()
    transport = MemoryTransport(server, "room", "bot", params=params())
    capture = FrameCapture(UserAudioRawFrame)
    a = ScriptedParty(server, "room", "a", sample_rate=16000, t0=t0).say(0.1, tone(500, 0.4))
    b = ScriptedParty(server, "room", "b", sample_rate=16000, t0=t0).say(0.1, tone(900, 0.4))
    async with PipelineRun([transport.input(), capture]):
        await a.start()
        await b.start()
        async with asyncio.timeout(2):
            await a.wait_idle()
            await b.wait_idle()
    await a.close()
    await b.close()
    frames = capture.of_type(UserAudioRawFrame)
    for who, freq in (("a", 500), ("b", 900)):
        audio = np.frombuffer(b"".join(f.audio for f in frames if f.user_id == who), dtype=np.int16)
        assert abs(dominant_frequency(audio, 16000) - freq) < 3
