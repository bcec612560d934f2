"""SharedHoldEngine: one task plays every parked call; HoldMusicMixer parks and wakes."""

import asyncio

import numpy as np
import pytest
from pipecat.frames.frames import MixerEnableFrame, OutputAudioRawFrame, TTSAudioRawFrame
from pipecat.transports.base_transport import TransportParams

from pipecat_warm_transfer import HoldMusicLink, HoldMusicMixer, SharedHoldEngine
from pipecat_warm_transfer.audio import load_music_loop
from pipecat_warm_transfer.audio.hold_music_mixer import MAX_PARK_SECS, PARK_AFTER_SECS, PIECE_SECS
from pipecat_warm_transfer.audio.metrics import dominant_frequency, max_step, rms_dbfs
from pipecat_warm_transfer.testing import (
    AudioReceived,
    MemoryRoomServer,
    MemoryTransport,
    PipelineRun,
    tone,
)
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS

RATE = 16000
FRAME = 640  # 40 ms, Pipecat's default output chunk
ZERO = {"rooms": 0, "participants": 0, "connections": 0}


@pytest.fixture
def music():
    return load_music_loop(None, RATE, -24.0)


@pytest.fixture
async def no_leaks():
    before = asyncio.all_tasks()
    yield
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


class ListSink:
    def __init__(self):
        self.writes: list[tuple[float, bytes]] = []

    def write(self, audio):
        self.writes.append((asyncio.get_running_loop().time(), audio))
        return True

    def samples(self):
        return np.frombuffer(b"".join(a for _, a in self.writes), dtype=np.int16)


async def test_each_call_gets_its_own_contiguous_music_in_real_time(music, no_leaks):
    engine = SharedHoldEngine()
    starts = [0, 1234, music.length - 100, 77777 % music.length, 5]
    sinks = [ListSink() for _ in starts]
    channels = [engine.join(music, FRAME, s, sink) for s, sink in zip(starts, sinks, strict=True)]
    assert engine.running and engine.channels == 5
    await asyncio.sleep(0.5)
    positions = [engine.leave(c) for c in channels]
    await asyncio.sleep(0)
    assert not engine.running and engine.channels == 0

    for start, sink, position in zip(starts, sinks, positions, strict=True):
        got = sink.samples()
        # Exactly the loop from the call's position on, across the loop's end too.
        assert np.array_equal(got, music.take(start, len(got)))
        assert position == (start + len(got)) % music.length
        assert {len(a) for _, a in sink.writes} == {2 * FRAME}
        times = np.array([t for t, _ in sink.writes])
        assert 11 <= len(times) <= 15  # 0.5 s of 40 ms ticks
        assert np.max(np.diff(times)) < 0.040 + 0.020  # paced, never a 20 ms-late tick
        assert abs(rms_dbfs(got) + 24) < 3  # a half-second stretch of -24 dBFS music
    stats = engine.stats()
    assert stats.frames_written == sum(len(s.writes) for s in sinks)
    assert stats.writes_failed == 0


async def test_a_call_joining_between_ticks_writes_the_lead_and_stays_continuous(music, no_leaks):
    engine = SharedHoldEngine()
    first = engine.join(music, FRAME, 0, ListSink())
    await asyncio.sleep(0.05)  # the grid is now 10 ms past a tick
    lead = engine.lead(music, FRAME)
    assert 0 < lead < FRAME  # up to the next tick, in samples
    sink = ListSink()
    joined_at = asyncio.get_running_loop().time()
    second = engine.join(music, FRAME, 500 + lead, sink)
    await asyncio.sleep(0.2)
    engine.leave(second)
    engine.leave(first)
    first_write = sink.writes[0][0] - joined_at
    assert abs(first_write - lead / RATE) < 0.015  # on the grid's next tick
    assert np.array_equal(sink.samples(), music.take(500 + lead, len(sink.samples())))


async def test_a_slow_async_sink_is_not_waited_for_and_loses_no_music(music, no_leaks):
    engine = SharedHoldEngine()
    got: list[bytes] = []

    class SlowSink:
        def write(self, audio):
            async def _write():
                await asyncio.sleep(0.07)  # slower than a 40 ms tick
                got.append(audio)
                return True

            return _write()

    fast = ListSink()
    slow_channel = engine.join(music, FRAME, 300, SlowSink())
    fast_channel = engine.join(music, FRAME, 0, fast)
    await asyncio.sleep(0.6)
    position = engine.leave(slow_channel)
    engine.leave(fast_channel)
    await asyncio.sleep(0.1)  # the last write lands
    slow = np.frombuffer(b"".join(got), dtype=np.int16)
    assert np.array_equal(slow, music.take(300, len(slow)))  # deferred, never skipped
    assert position == 300 + len(slow)
    assert engine.stats().writes_deferred > 0
    assert len(fast.writes) >= 13  # the fast call was not held up by the slow one


async def test_a_failing_sink_hands_its_call_back_and_the_others_play_on(music, no_leaks):
    engine = SharedHoldEngine()
    dropped = []

    class BrokenSink:
        def write(self, audio):
            raise ConnectionError("gone")

    good = ListSink()
    good_channel = engine.join(music, FRAME, 0, good)
    broken = engine.join(music, FRAME, 900, BrokenSink(), on_dropped=dropped.append)
    await asyncio.sleep(0.2)
    assert dropped == [broken] and not broken.active
    assert good_channel.active and len(good.writes) >= 4
    engine.leave(good_channel)


def test_bad_frame_size_is_refused(music):
    engine = SharedHoldEngine()
    with pytest.raises(ValueError, match="frame_samples"):
        asyncio.run(_join(engine, music, 0))
    with pytest.raises(ValueError, match="yield_every"):
        SharedHoldEngine(yield_every=0)


async def _join(engine, music, frame_samples):
    engine.join(music, frame_samples, 0, ListSink())


# --------------------------------------------------------------------------- in a pipeline


def out_params(mixer):
    return TransportParams(
        audio_out_enabled=True,
        audio_out_sample_rate=RATE,
        audio_out_mixer=mixer,
        audio_out_end_silence_secs=0,
    )


class Listener:
    """A raw room connection recording what the bot sends, with arrival times."""

    def __init__(self, server, room):
        self.connection = server.connect(room, "listener")
        self.events: list[AudioReceived] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self):
        while True:
            event = await self.connection.recv()
            if isinstance(event, AudioReceived):
                self.events.append(event)

    def samples(self, since: float = 0.0) -> np.ndarray:
        chunks = [e.audio for e in self.events if e.sent_at >= since]
        return np.frombuffer(b"".join(chunks), dtype=np.int16)

    def max_send_gap(self, since: float) -> float:
        times = [e.sent_at for e in self.events if e.sent_at >= since]
        return float(np.max(np.diff(times))) if len(times) > 1 else 0.0

    async def close(self):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.connection.disconnect()


async def held_call(server, engine, **mixer_kwargs):
    mixer = HoldMusicMixer(level_dbfs=-24.0, fade_ms=100, shared_engine=engine, **mixer_kwargs)
    transport = MemoryTransport(server, "call", "bot", params=out_params(mixer))
    listener = Listener(server, "call")
    run = PipelineRun([HoldMusicLink(mixer), transport.output()])
    await run.start()
    return mixer, transport, listener, run


def unstarted_call():
    """A held call's room server, engine, mixer and output, before anything runs (so a
    test can patch the output first)."""
    server = MemoryRoomServer(auto_delete_empty=True)
    engine = SharedHoldEngine()
    mixer = HoldMusicMixer(level_dbfs=-24.0, fade_ms=100, shared_engine=engine)
    output = MemoryTransport(server, "call", "bot", params=out_params(mixer)).output()
    return server, engine, mixer, output


async def parked_call():
    """A held call whose music is on and parked in its own engine."""
    server = MemoryRoomServer(auto_delete_empty=True)
    engine = SharedHoldEngine()
    mixer, transport, listener, run = await held_call(server, engine)
    await run.worker.queue_frame(MixerEnableFrame(True))
    await wait_for(lambda: mixer.parked, 0.1 + PARK_AFTER_SECS + 1.0)
    return server, engine, mixer, transport, listener, run


async def wait_for(predicate, timeout):
    """Poll a condition of the mixer (which has no event to wait on), bounded."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_held_call_parks_in_the_engine_and_its_stream_stays_the_same_music(music, no_leaks):
    loop = asyncio.get_running_loop()
    server, engine, mixer, _transport, listener, run = await parked_call()
    assert engine.channels == 1
    parked_at = loop.time()
    await asyncio.sleep(1.5)  # longer than MAX_PARK_SECS: the transport's periodic look
    assert mixer.parked
    window = listener.samples(since=parked_at)
    wall = loop.time() - parked_at
    await run.end()
    await listener.close()

    # Paced by the engine: about a second of audio per second, no send gap over a tick.
    assert 0.85 * wall <= len(window) / RATE <= 1.15 * wall
    assert listener.max_send_gap(since=parked_at) < 0.040 + 0.020
    assert abs(rms_dbfs(window) + 24) < 1.0
    # Past the fade-in the stream is the loop itself, sample for sample, across the
    # hand-over from the transport's own loop to the engine and its periodic looks.
    steady = listener.samples()[int(0.2 * RATE) :]
    start = _find_in_loop(music, steady[:64])
    assert np.array_equal(steady, music.take(start, len(steady)))
    assert engine.stats().frames_written >= 30
    assert server.leftovers() == ZERO and not engine.running


async def test_speech_wakes_a_parked_call_then_it_parks_again(music, no_leaks):
    loop = asyncio.get_running_loop()
    _server, engine, mixer, _transport, listener, run = await parked_call()

    speech = tone(700, 0.6, RATE, -18)
    spoke_at = loop.time()
    for i in range(0, len(speech), 320):
        await run.worker.queue_frame(
            TTSAudioRawFrame(audio=speech[i : i + 320], sample_rate=RATE, num_channels=1)
        )
    await asyncio.sleep(0.02)
    assert not mixer.parked and engine.channels == 0  # taken back at once
    await wait_for(lambda: mixer.parked, 0.6 + 0.5 + PARK_AFTER_SECS + 0.6)
    await asyncio.sleep(0.3)
    heard = listener.samples(since=spoke_at)
    await run.end()
    await listener.close()

    # The speech arrives within a frame or two, ducked music under it, music after it.
    levels = [rms_dbfs(heard[i : i + 320]) for i in range(0, 3200, 320)]
    onset = next(i for i, level in enumerate(levels) if level > -20) * 0.02
    assert onset <= 0.1
    during = heard[int((onset + 0.1) * RATE) : int((onset + 0.5) * RATE)]
    assert abs(dominant_frequency(during, RATE) - 700) < 5
    music_under = during.astype(np.int32) - _tone_like(during, 700)
    assert rms_dbfs(music_under) < -24 - 6  # ducked
    after = heard[-int(0.3 * RATE) :]
    assert abs(rms_dbfs(after) + 24) < 1.5
    assert max_step(heard) < 6000  # no click at the hand-overs


async def test_a_frame_queued_behind_the_link_still_plays_within_the_look_period(music, no_leaks):
    loop = asyncio.get_running_loop()
    _server, _engine, mixer, transport, listener, run = await parked_call()
    sent_at = loop.time()
    # Straight into the transport: nothing wakes the mixer.
    await transport.output().queue_frame(
        OutputAudioRawFrame(audio=tone(900, 0.2, RATE, -12), sample_rate=RATE, num_channels=1)
    )
    await asyncio.sleep(MAX_PARK_SECS + 0.4)
    heard = listener.samples(since=sent_at)
    await run.end()
    await listener.close()
    loud = [i for i in range(0, len(heard) - 320, 320) if rms_dbfs(heard[i : i + 320]) > -16]
    assert loud, "the frame never played"
    assert loud[0] / RATE <= MAX_PARK_SECS + 0.1


@pytest.mark.parametrize("ending", ["end", "cancel", "disable"])
async def test_a_parked_call_ends_or_stops_promptly_and_leaves_nothing(music, no_leaks, ending):
    loop = asyncio.get_running_loop()
    server, engine, mixer, _transport, listener, run = await parked_call()
    t0 = loop.time()
    if ending == "disable":
        await run.worker.queue_frame(MixerEnableFrame(False))
        await asyncio.sleep(0.4)
        assert not mixer.parked and not mixer.playing
        tail = listener.samples(since=loop.time() - 0.15)
        assert rms_dbfs(tail) < -80  # faded out to silence, still written by the transport
        await run.end()
    elif ending == "end":
        await run.end()
    else:
        await run.cancel()
    took = loop.time() - t0
    await listener.close()
    assert ending == "disable" or took < 0.3
    assert not mixer.parked and engine.channels == 0
    await asyncio.sleep(0)
    assert not engine.running
    assert server.leftovers() == ZERO


async def test_without_a_known_sink_the_mixer_never_parks(music, no_leaks):
    server = MemoryRoomServer(auto_delete_empty=True)
    engine = SharedHoldEngine()
    mixer = HoldMusicMixer(level_dbfs=-24.0, fade_ms=0, shared_engine=engine)
    transport = MemoryTransport(server, "call", "bot", params=out_params(mixer))
    listener = Listener(server, "call")
    async with PipelineRun([transport.output()]):  # no link: nothing binds the transport
        await transport.output().queue_frame(MixerEnableFrame(True))
        await asyncio.sleep(PARK_AFTER_SECS + 0.5)
        assert not mixer.parked and engine.channels == 0
    await listener.close()
    assert abs(rms_dbfs(listener.samples()[RATE // 4 :]) + 24) < 1.0


def _find_in_loop(music, probe):
    """Loop position where `probe` starts (unique for a 64-sample probe of music)."""
    windows = np.lib.stride_tricks.sliding_window_view(music.samples[: music.length + 64], 64)
    hits = np.flatnonzero((windows == probe).all(axis=1))
    assert len(hits) >= 1
    return int(hits[0])


def _tone_like(x, freq):
    """Least-squares fit of a sine at `freq` to `x` (to take the voice out)."""
    t = np.arange(len(x)) / RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x.astype(np.float64), rcond=None)
    return np.rint(basis @ coef).astype(np.int32)


# --------------------------------------------------------------------------- in a transfer


@pytest.mark.parametrize("engine_on", [True, False])
async def test_a_long_hold_parks_between_reminders_without_dead_air(engine_on):
    from pipecat_warm_transfer.audio.metrics import windowed_rms_dbfs
    from pipecat_warm_transfer.testing import HumanScript
    from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness, fast_params

    params = fast_params(
        hold_reminder="Still trying.",
        hold_reminder_every=2.0,
        ring_timeout=8.0,
        shared_hold_engine=engine_on,
    )
    parked_samples: list[bool] = []
    async with CallHarness(
        humans={"+15550100": HumanScript(answer_after=5.5, outcome="busy")}, params=params
    ) as call:
        mixer = call.transfer.hold_mixer

        async def watch():
            while True:
                parked_samples.append(mixer.parked)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller", timeout=15)
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        assert not mixer.parked  # taken back for the fade-out and the failure sentence
    report = call.report
    assert report.leaks == NO_LEAKS, report.leak_findings
    assert report.spoken_to_caller.count("Still trying.") >= 2  # reminders woke it up
    hold = report.first("hold_started")["t"]
    failed = report.first("transfer_failed")["t"]
    levels = windowed_rms_dbfs(report.caller_audio[int(hold * RATE) : int(failed * RATE)], RATE, 20)
    assert np.sum(levels < -60.0) <= 1, levels.round(1)
    share = sum(parked_samples) / len(parked_samples)
    if engine_on:
        # Parked for most of the 5.5 s of ringing, between the reminders.
        assert share > 0.3, share
        parks = sum(1 for a, b in zip(parked_samples, parked_samples[1:], strict=False) if b > a)
        assert parks >= 2  # parked again after each reminder
    else:
        assert share == 0


# --------------------------------------------------------------------------- sinks


async def test_sinks_are_picked_by_transport(music):
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

    from pipecat_warm_transfer.audio.hold_sink import NowaitSink, OutputFrameSink, hold_sink_for

    server = MemoryRoomServer()
    memory = MemoryTransport(server, "call", "bot", params=out_params(None)).output()
    assert isinstance(hold_sink_for(memory), NowaitSink)
    stereo = MemoryTransport(
        server, "call", "bot", params=TransportParams(audio_out_enabled=True, audio_out_channels=2)
    ).output()
    assert hold_sink_for(stereo) is None  # the music is mono: keep the per-frame path

    livekit = LiveKitTransport(
        "ws://127.0.0.1:1", "token", "room", params=LiveKitParams(audio_out_enabled=True)
    ).output()
    sink = hold_sink_for(livekit)
    assert isinstance(sink, OutputFrameSink)
    written = sink.write(music.take(0, FRAME).tobytes())
    assert asyncio.iscoroutine(written)
    assert await written is False  # not connected: refused, not raised

    class PlainOutput:  # a transport without a non-blocking write
        async def write_audio_frame(self, frame):
            return True

    assert hold_sink_for(PlainOutput()) is None


async def test_a_transport_running_late_is_caught_up_when_it_parks(music, no_leaks):
    """Regression: a call that parked while its transport was behind (a busy event loop)
    kept that deficit as a gap for the whole hold (found by the density benchmark's
    reminder run: streams ~95 ms behind until the next reminder)."""
    loop = asyncio.get_running_loop()
    server, engine, mixer, output = unstarted_call()
    behind = 0.12
    output.write_audio_lag = lambda: behind  # as if the loop had just been busy
    listener = Listener(server, "call")
    run = PipelineRun([HoldMusicLink(mixer), output])
    await run.start()
    await run.worker.queue_frame(MixerEnableFrame(True))
    await wait_for(lambda: mixer.parked, 2.0)
    parked_at = loop.time()
    await asyncio.sleep(0.3)
    await run.end()
    await listener.close()
    # What was published within a frame of parking covers the lag as well as the time
    # to the engine's next tick: the stream is back on time at once.
    first = [e for e in listener.events if parked_at - 0.045 <= e.sent_at <= parked_at + 0.001]
    caught_up = sum(len(e.audio) for e in first) // 2
    assert caught_up >= int(behind * RATE), caught_up
    steady = listener.samples()[int(0.2 * RATE) :]
    start = _find_in_loop(music, steady[:64])
    assert np.array_equal(steady, music.take(start, len(steady)))  # and nothing skipped


async def test_a_wake_during_the_lead_write_keeps_the_call_out_of_the_engine(music, no_leaks):
    import time

    engine = SharedHoldEngine()
    piece = int(PIECE_SECS * RATE)  # a sink that may queue is written in pieces
    other = engine.join(music, piece, 0, ListSink())  # a running grid: the next park has a lead
    await asyncio.sleep(0.01)
    writing = asyncio.Event()

    class SlowSink:
        def write(self, audio):
            async def _write():
                writing.set()
                await asyncio.sleep(0.05)
                return True

            return _write()

    mixer = HoldMusicMixer(level_dbfs=-24.0, fade_ms=0, enabled=True, shared_engine=engine)
    await mixer.start(RATE)
    mixer.bind_sink(SlowSink())
    silence = bytes(2 * FRAME)
    assert await mixer.mix(silence) != silence  # music; the silence buffer is now known
    mixer._last_wake = time.monotonic() - 2 * PARK_AFTER_SECS  # quiet for long enough
    woken = asyncio.Event()

    async def transport():
        """Pipecat's output loop: ask for the mixer's audio until it plays on after the wake."""
        while True:
            out = await mixer.mix(silence)
            if out and woken.is_set():
                return out

    parking = asyncio.create_task(transport())
    await asyncio.wait_for(writing.wait(), 2.0)  # the call is joining: its lead is being written
    mixer.wake()  # speech is on its way while the lead is being written
    woken.set()
    out = await asyncio.wait_for(parking, 1.0)
    assert out != silence and not mixer.parked  # played on, not parked
    engine.leave(other)
    await mixer.stop()


async def test_a_parked_call_whose_sink_breaks_plays_on_through_its_transport(music, no_leaks):
    """The engine drops a sink that raises; the mixer must take its call back at once."""
    loop = asyncio.get_running_loop()
    server, engine, mixer, output = unstarted_call()
    publish = output.write_audio_nowait
    broken = False

    def write_audio_nowait(audio):
        if broken:
            raise ConnectionError("the room connection went away")
        return publish(audio)

    output.write_audio_nowait = write_audio_nowait  # what the engine's sink will call
    listener = Listener(server, "call")
    try:
        # A failing check cancels the pipeline (and the engine's task) on the way out.
        async with PipelineRun([HoldMusicLink(mixer), output]) as run:
            await run.worker.queue_frame(MixerEnableFrame(True))
            await wait_for(lambda: mixer.parked, 2.0)
            broken = True
            broke_at = loop.time()
            await wait_for(lambda: not mixer.parked, 0.3)
            assert engine.channels == 0
            await asyncio.sleep(PARK_AFTER_SECS + 0.5)
            assert not mixer.parked  # no usable sink any more: it never parks again
    finally:
        await listener.close()
    after = listener.samples(since=broke_at + 0.1)
    assert len(after) / RATE >= PARK_AFTER_SECS + 0.3
    assert abs(rms_dbfs(after) + 24) < 1.0
    assert listener.max_send_gap(since=broke_at) < 0.15
    assert server.leftovers() == ZERO
