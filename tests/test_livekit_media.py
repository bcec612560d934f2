"""What the caller hears on Pipecat's real LiveKit output path.

Every test here runs Pipecat's own `LiveKitTransport` output writing into a real
livekit-rtc `AudioSource` (its FFI, its 1 s queue, its one-capture-at-a-time rule); only
the room connection is faked (`OfflineLiveKitTransport`). What "is heard" is what the
source played out, read back from its published track in real time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from contextlib import asynccontextmanager

import numpy as np
import pytest
import soundfile
from pipecat.frames.frames import (
    EndFrame,
    MixerEnableFrame,
    OutputAudioRawFrame,
    TextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.runner import WorkerRunner
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.transports.livekit.transport import LiveKitParams

import pipecat_warm_transfer.audio.hold_music_mixer as hold_music_mixer
from pipecat_warm_transfer.audio.hold_engine import SharedHoldEngine
from pipecat_warm_transfer.audio.hold_music_link import HoldMusicLink
from pipecat_warm_transfer.audio.hold_music_mixer import HoldMusicMixer
from pipecat_warm_transfer.audio.metrics import max_step, windowed_rms_dbfs
from pipecat_warm_transfer.testing.drivers.music_finder import music_positions
from pipecat_warm_transfer.testing.harness import watch_loop_stalls
from pipecat_warm_transfer.testing.livekit_media import REFUSED, OfflineLiveKitTransport

RATE = 16000
MARKER_LEVEL = 30000  # far above any music sample, so its first heard sample is exact
#: The issue's bound: audio plays at most this much later than without a mixer. Checked on
#: the median of each run; the worst marker may also carry the host's scheduling noise (a
#: loaded CI runner adds a few ms), so it gets a ceiling still far below LiveKit's 1 s queue.
ADDED_LATENCY_BOUND_MS = 40.0
WORST_ADDED_LATENCY_MS = 100.0


class LiveKitCall:
    """One pipeline: source → (link) → Pipecat's LiveKit output on an offline room."""

    def __init__(self, mixer=None, *, link: bool = True, params: dict | None = None):
        self.mixer = mixer
        self.transport = OfflineLiveKitTransport(
            params=LiveKitParams(
                audio_out_enabled=True,
                audio_out_sample_rate=RATE,
                audio_out_mixer=mixer,
                **(params or {}),
            )
        )
        self.source = IdentityFilter()  # tests push frames from it as a bot's TTS would
        processors = [self.source]
        if mixer is not None and link:
            processors.append(HoldMusicLink(mixer))
        processors.append(self.transport.output())
        self.worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )

    @property
    def media(self):
        return self.transport.media

    async def push(self, frame):
        await self.source.push_frame(frame)

    async def marker(self) -> float:
        """Push 40 ms of a loud constant; return the event-loop time it was pushed."""
        at = asyncio.get_running_loop().time()
        await self.push(OutputAudioRawFrame(constant(MARKER_LEVEL, 0.04), RATE, 1))
        return at

    def heard_after(self, pushed: float) -> float:
        """Seconds from `pushed` until the marker pushed then was heard."""
        heard = self.media.first_heard_above(MARKER_LEVEL - 5000, pushed)
        assert heard is not None, "the marker was never heard"
        return heard - pushed


@asynccontextmanager
async def running(call: LiveKitCall):
    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(call.worker)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(200):
            if call.transport.audio_source is not None:
                break
            await asyncio.sleep(0.01)
        assert call.transport.audio_source is not None, "the transport never connected"
        yield call
    finally:
        await call.worker.queue_frame(EndFrame())
        await asyncio.wait_for(task, 10)


def constant(value: int, secs: float) -> bytes:
    return np.full(int(secs * RATE), value, dtype=np.int16).tobytes()


async def marker_delays(
    call: LiveKitCall, count: int, gap=(0.15, 0.25), parked=False, settle: float = 0.3
):
    """Push `count` markers at random phases; return their playout delays in ms."""
    pushed = []
    for _ in range(count):
        await asyncio.sleep(random.uniform(*gap))
        if parked:
            for _ in range(200):
                if call.mixer.parked:
                    break
                await asyncio.sleep(0.01)
            assert call.mixer.parked, "the call never parked in the shared engine"
            await asyncio.sleep(random.uniform(0.0, 0.04))  # any phase of the engine's tick
        pushed.append(await call.marker())
    await asyncio.sleep(settle)
    return [1000.0 * call.heard_after(at) for at in pushed]


# -- the harness is LiveKit's own media path -------------------------------------------


async def test_livekit_refuses_a_second_capture_while_one_is_pending():
    async with running(LiveKitCall()) as call:
        source = call.transport.audio_source
        from livekit import rtc

        frame = rtc.AudioFrame(constant(100, 0.04), RATE, 1, int(0.04 * RATE))
        for _ in range(40):  # fill the queue: captures now wait for room
            await source.capture_frame(frame)
        results = await asyncio.gather(
            source.capture_frame(frame), source.capture_frame(frame), return_exceptions=True
        )
    assert results[0] is None and "InvalidState" in str(results[1])
    assert call.media.refused == 1
    assert [c.outcome for c in call.media.captures].count(REFUSED) == 1


async def test_what_plays_is_what_was_captured_in_real_time():
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.int16)
    async with running(LiveKitCall()) as call:
        await asyncio.sleep(0.2)
        pushed = asyncio.get_running_loop().time()
        for i in range(0, RATE, 640):
            await call.push(OutputAudioRawFrame(tone[i : i + 640].tobytes(), RATE, 1))
        await asyncio.sleep(1.4)
    heard = call.media.heard()
    starts = [i - 1 for i in np.flatnonzero(heard == tone[1]) if heard[i - 1] == 0]
    first = next(i for i in starts if np.array_equal(heard[i : i + RATE], tone))  # bit-exact
    assert abs(call.media.heard_time(first) - pushed) < 0.05  # played as soon as pushed
    played = call.media.heard_time(first + RATE) - call.media.heard_time(first)
    assert abs(played - 1.0) < 0.03  # in real time
    # Pipecat wrote the whole second at once: LiveKit's queue held it.
    assert max(c.queued_before for c in call.media.captures) > 0.9
    assert call.media.refused == 0


async def test_pipecat_own_mixer_runs_a_second_ahead(tmp_path):
    """Documents what the plugin avoids: Pipecat's output loop with a mixer fills LiveKit's
    one-second queue with music, and everything said after waits behind it."""
    from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer

    path = tmp_path / "tone.wav"
    soundfile.write(path, (0.05 * np.sin(np.arange(RATE * 2) * 0.1)).astype(np.float32), RATE)
    mixer = SoundfileMixer(sound_files={"m": str(path)}, default_sound="m", volume=1.0)
    async with running(LiveKitCall(mixer, link=False)) as call:
        await asyncio.sleep(1.5)
        # Markers further apart than the queue is long, so each is found, not its elder.
        delays = await marker_delays(call, 2, gap=(1.2, 1.3), settle=1.5)
    assert min(delays) > 800.0, delays


# -- no run-ahead: what the bot says plays as soon as without a mixer --------------------


LATENCY_CASES = {
    "music off": dict(music=False),
    "music on": dict(music=True),
    "music on, parked in the shared engine": dict(music=True, engine=True),
    "music off, mixer without its link": dict(music=False, link=False),
    "music on, mixer without its link": dict(music=True, link=False),
}


@pytest.mark.parametrize("case", list(LATENCY_CASES))
async def test_speech_plays_at_most_40ms_later_than_without_a_mixer(case):
    """The median added delay stays within 40 ms and no marker waits 100 ms: a mixer that
    ran ahead would add a whole queue (~1,000 ms, see the SoundfileMixer test above)."""
    setup = LATENCY_CASES[case]
    async with running(LiveKitCall()) as call:
        baseline = await marker_delays(call, 8)
    mixer = HoldMusicMixer(shared_engine=SharedHoldEngine() if setup.get("engine") else False)
    async with running(LiveKitCall(mixer, link=setup.get("link", True))) as call:
        if setup["music"]:
            await call.push(MixerEnableFrame(True))
            await asyncio.sleep(0.5)
        delays = await marker_delays(
            call,
            15,
            gap=(0.7, 0.8) if setup.get("engine") else (0.15, 0.25),
            parked=setup.get("engine", False),
        )
        refused = call.media.refused
    base = float(np.median(baseline))
    assert float(np.median(delays)) - base <= ADDED_LATENCY_BOUND_MS, (case, delays, baseline)
    assert max(delays) - base <= WORST_ADDED_LATENCY_MS, (case, delays, baseline)
    assert refused == 0


async def test_no_music_means_nothing_written():
    """Idle, the transport's silence stays LiveKit's: the mixer adds no captures."""
    mixer = HoldMusicMixer()
    async with running(LiveKitCall(mixer)) as call:
        await asyncio.sleep(0.3)
        before = len(call.media.captures)
        await asyncio.sleep(1.0)
        idle_captures = len(call.media.captures) - before
        queued = call.transport.audio_source.queued_duration
    assert idle_captures == 0 and queued == 0.0


# -- the shared engine on LiveKit ---------------------------------------------------------


def continuity(positions, length: int, step: int = 160) -> dict:
    """Jumps in the music (between music blocks directly or across <= 12 speech, ducked
    or silent blocks: silence is inserted, not music skipped), and the silent blocks
    inside the music; both as block indexes."""
    music = [(k, p) for k, p in enumerate(positions) if isinstance(p, int)]
    jumps = []
    for (k1, p1), (k2, p2) in itertools.pairwise(music):
        played = sum(1 for p in positions[k1:k2] if p is not None)
        if k2 - k1 <= 12 and (p2 - p1 - played * step) % length:
            jumps.append(k1)
    first, last = music[0][0], music[-1][0]
    gaps = [k for k in range(first, last) if positions[k] is None]
    return {"music_blocks": len(music), "jumps": jumps, "gaps": gaps}


async def test_a_thousand_park_and_wake_cycles_on_livekit(monkeypatch):
    """Zero refused captures, the music sample-continuous through every hand-over, and
    every reminder heard whole."""
    monkeypatch.setattr(hold_music_mixer, "PARK_AFTER_SECS", 0.02)
    cycles, remind_every = 1000, 50
    reminder = constant(28000, 0.1)
    mixer = HoldMusicMixer(fade_ms=100, shared_engine=SharedHoldEngine())
    stalls: list[tuple[float, float]] = []
    watcher = asyncio.create_task(watch_loop_stalls(stalls, step=0.005, late=0.010))
    async with running(LiveKitCall(mixer)) as call:
        await call.push(MixerEnableFrame(True))
        await asyncio.sleep(0.3)
        loops = [mixer._loop, mixer._ducked]
        parks = reminders = 0
        for cycle in range(cycles):
            for _ in range(500):
                if mixer.parked:
                    break
                await asyncio.sleep(0.005)
            parks += mixer.parked
            await asyncio.sleep(random.uniform(0.0, 0.03))
            if cycle % remind_every == remind_every - 1:
                await call.push(OutputAudioRawFrame(reminder, RATE, 1))
                reminders += 1
            else:
                await call.push(TextFrame("wake"))  # anything on its way takes the call back
        await asyncio.sleep(0.3)
    watcher.cancel()
    media = call.media
    assert parks == cycles, f"parked in {parks} of {cycles} cycles"
    assert media.refused == 0 and media.failed == 0, (media.refused, media.failed)
    assert max(loop.peak for loop in loops) < 28000 - 15000  # only reminders reach 15000
    loud = int(np.count_nonzero(media.heard() > 15000))
    assert loud == reminders * len(reminder) // 2, (loud, reminders, stalls)
    report = continuity(music_positions(media.heard(), loops), loops[0].length)

    def unexplained(blocks):
        """Blocks not where the event loop itself stalled (a loaded machine): a source
        that runs dry plays silence, and part of a 10 ms frame may be silence."""
        return [
            k
            for k in blocks
            if not any(a - 0.05 <= media.heard_time(k * 160) <= b + 0.15 for a, b in stalls)
        ]

    assert unexplained(report["jumps"]) == [], (report["jumps"], stalls)
    # A hand-over that loses audio would do it at most of the 1,000 hand-overs. A lone
    # silent 10 ms block is the OS starving the process on a loaded 2-core runner (the
    # source ran dry while no event-loop stall showed: CI saw one, once in 1,000 cycles).
    gaps = unexplained(report["gaps"])
    lone = [k for k in gaps if k - 1 not in gaps and k + 1 not in gaps]
    assert len(gaps) <= 2 and lone == gaps, (gaps, stalls)
    assert report["music_blocks"] > 0.5 * (len(media.heard()) // 160)


async def test_the_fade_out_is_whole_when_a_parked_call_stops_its_music():
    mixer = HoldMusicMixer(fade_ms=250, shared_engine=SharedHoldEngine())
    async with running(LiveKitCall(mixer)) as call:
        await call.push(MixerEnableFrame(True))
        for _ in range(300):
            if mixer.parked:
                break
            await asyncio.sleep(0.01)
        assert mixer.parked
        stopped = asyncio.get_running_loop().time()
        await call.push(MixerEnableFrame(False))
        await asyncio.sleep(0.6)
    media = call.media
    heard = media.heard()[media.heard_index(stopped) :]
    levels = windowed_rms_dbfs(heard, RATE, 10)
    audible = np.flatnonzero(levels > -60.0)
    fade_ms = 10 * (audible[-1] + 1)
    assert 230 <= fade_ms <= 320, fade_ms  # 250 ms, give or take a piece: not cut
    assert levels[:5].mean() > -27.0  # at full level when the fade starts
    assert levels[audible[-1] - 2 : audible[-1] + 1].max() < -34.0  # and faded at its end
    assert max_step(heard) < 4000  # no click
    assert media.refused == 0


def test_the_yaml_runner_gives_livekit_a_short_output_queue():
    from types import SimpleNamespace

    from pipecat.transports.base_transport import TransportParams

    from pipecat_warm_transfer.runner.builder import LIVEKIT_OUTPUT_QUEUE_MS, transport_params

    loaded = SimpleNamespace(config=SimpleNamespace(bot=SimpleNamespace(sample_rate=16000)))
    mixer = HoldMusicMixer()
    params = transport_params(loaded, mixer, LiveKitParams)
    assert params.audio_out_queue_size_ms == LIVEKIT_OUTPUT_QUEUE_MS == 200
    assert params.audio_out_mixer is mixer
    assert not hasattr(transport_params(loaded, mixer, TransportParams), "audio_out_queue_size_ms")


def test_continuity_tells_a_jump_from_inserted_silence():
    # 0, 160, 320, silence (the source ran dry), 480: continuous; then 800: skipped 160.
    report = continuity([0, 160, 320, None, 480, 800], length=10_000)
    assert report["gaps"] == [3] and report["jumps"] == [4]
    assert continuity([0, 160, "-", 480], length=10_000)["jumps"] == []  # speech over it
    assert continuity([0, 160, 160], length=10_000)["jumps"] == [1]  # repeated
