"""Held-call density: how many held calls one core keeps in real time.

Each held call is a real Pipecat output transport (`MemoryTransport.output()`, a
`BaseOutputTransport` paced by the event-loop clock) inside its own `PipelineWorker` and
`WorkerRunner`, exactly as a bot runs one pipeline per call. Nothing is queued for it
(the bot is silent while the caller is held), so Pipecat's mixer loop produces every
frame: `mixer.mix(silence)` → `OutputAudioRawFrame` → bot-speech bookkeeping →
`write_audio_frame` (publish to the room + sleep until the frame has "played") → the
frame is pushed on downstream. One frame is Pipecat's default output chunk,
`audio_out_10ms_chunks=4`, i.e. 40 ms. The room has no other participant, so publishing
costs what building the event costs (a real SIP/WebRTC send would add its own cost to
both sides equally).

Two mixers, searched in the same run with their trials interleaved:

* **ours**: `HoldMusicMixer(source=<44.1 kHz stereo WAV>, level_dbfs=-24, enabled=True)`;
* **baseline**: Pipecat's `SoundfileMixer(volume=0.4)` fed a mono int16 WAV of the same
  music at the transport rate, scaled so its output is also -24 dBFS RMS.

A trial starts N calls (start times spread over 0.2 s, so their 40 ms frames have
random phases as real calls would), warms up past the fade-in, then measures a window
with the whole process pinned to one CPU (`os.sched_setaffinity` on every thread,
restored after). A frame is *late* when it is written more than 20 ms after its due
time; due times follow each call's own schedule (`anchor + k x 40 ms`, the anchor being
the earliest consistent one in the window), and frames missing from the window count as
late. N passes when fewer than 1 % of the frames are late. The search doubles N until a
trial fails (a step never goes past the N that would load the core to 100 % at the CPU
cost per call the last passing trial measured), then bisects, within a time budget;
interleaved searches run in rounds, one trial each, so they see the same conditions. CPU µs per call-second is the process
CPU time over the window / (N x window seconds), at the largest passing N.

Garbage collection. A full collection walks every tracked object, ~900 per Pipecat
pipeline here, and pauses every call: ~0.4 ms per call on this machine (~100 ms at
N = 256), far above the 20 ms lateness budget. Full collections are rare in the steady
state (about one per 10-20 s at N = 256) but land in a short window by chance, which
would make a 2 s trial a lottery. So each trial runs one timed full collection after its
calls have started (reported as `full_gc_ms`: the pause a full collection costs at that
N), then `gc.freeze()`s what exists, so the window measures the transports' own real-time
capacity; young collections run as usual and every pause in the window is recorded. The
`full` profile also searches ours with the collector left alone
(`ours_gc_default`, longer windows) to show the GC-bound density.

Three kinds of held call, all real Pipecat output transports in their own pipelines:

* **ours** (what `WarmTransfer` does by default): `HoldMusicMixer(shared_engine=True)`
  behind a `HoldMusicLink` (the job `caller_output()` does). Once the music is steady and
  the bot quiet, the mixer parks its transport's audio task and the package's
  `SharedHoldEngine` plays the call: one clocked task, one numpy gather of every parked
  call's frame from the shared loop per tick, then each call's non-blocking transport
  write (`MemoryOutputTransport.write_audio_nowait`). Every trial checks that the calls
  really are parked.
* **ours_per_frame**: the same mixer without the engine (Pipecat's per-call loop mixes
  every frame): shows that Pipecat's per-call output task, not the mixer, is the bound.
* **baseline**: `SoundfileMixer`, per-call loop.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer
from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from benchmarks.common import (
    RESULTS_DIR,
    PinnedToOneCore,
    check_profile,
    load_average,
    machine_info,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from benchmarks.mixer_bench import (
    BASELINE_VOLUME,
    FRAMES_PER_SEC,
    LEVEL_DBFS,
    _speech,
    _write_music_files,
)
from pipecat_warm_transfer import HoldMusicLink, HoldMusicMixer, SharedHoldEngine
from pipecat_warm_transfer.audio.metrics import rms_dbfs
from pipecat_warm_transfer.audio.music_source import load_music_loop
from pipecat_warm_transfer.testing import MemoryRoomServer, MemoryTransport

RATE = 16000
#: Pipecat's default output chunk (audio_out_10ms_chunks=4): one written frame.
FRAME_SECS = 0.04
FRAME_SAMPLES = int(RATE * FRAME_SECS)
LATE_SECS = 0.020
MAX_LATE_FRACTION = 0.01
#: Calls' start times are spread over this long, so their frame phases are random.
START_SPREAD_SECS = 0.2
#: Share of "ours" calls that must be parked in the engine when the window opens.
MIN_PARKED_FRACTION = 0.99
LEVEL_TOLERANCE_DB = 2.0
#: Searches whose kind ends with this keep CPython's GC as is (no freeze after setup).
GC_DEFAULT_SUFFIX = "_gc_default"

PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "warmup_s": 0.5,
        "window_s": 1.5,
        "tolerance": 0.25,
        # ours reaches thousands of calls, whose set-up alone takes seconds: its search
        # starts at the target (3x the baseline's N, found first), and the budget may
        # leave its bracket open (the passing N is then a floor, flagged as such).
        "budget_s": {"pipecat": 22.0, "ours": 22.0},
        "pipecat_start": 128,
        "pipecat_max": 4096,
        "ours_start_ratio": 3.0,
        "ours_max": 65536,
    },
    "full": {
        "warmup_s": 2.0,
        "window_s": 8.0,
        "tolerance": 0.05,  # stop bisecting when (fail - pass) / pass <= this
        "budget_s": {"pipecat": 180.0, "ours": 240.0, "gc_default": 90.0, "reminders": 240.0},
        "gc_default_search": True,
        # WarmTransfer's default reminder cycle: each held call leaves the engine to say
        # a 3 s reminder every 30 s (at its own random phase), then parks again.
        "reminder_search": True,
        "reminder_every_s": 30.0,
        "reminder_s": 3.0,
        "reminder_window_s": 30.0,
        "pipecat_start": 128,
        "pipecat_max": 4096,
        "ours_start_ratio": 2.0,
        "ours_max": 65536,
    },
}

JSON_PATH = RESULTS_DIR / "density.json"
PNG_PATH = RESULTS_DIR / "density.png"


class BenchmarkSanityError(RuntimeError):
    """A mixer did not produce the music the benchmark means to measure."""


# --------------------------------------------------------------------------- GC pauses


class GcPauses:
    """Records the duration of every garbage collection while installed."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, int, float]] = []  # (start, generation, seconds)
        self._start = 0.0

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((self._start, info["generation"], time.perf_counter() - self._start))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self, t0: float, t1: float) -> dict[str, Any]:
        inside = [p for p in self.pauses if t0 <= p[0] <= t1]
        full = [p[2] for p in inside if p[1] == 2]
        return {
            "collections": len(inside),
            "full_collections": len(full),
            "max_pause_ms": round(max((p[2] for p in inside), default=0.0) * 1000, 2),
            "max_full_pause_ms": round(max(full, default=0.0) * 1000, 2),
            "total_pause_ms": round(sum(p[2] for p in inside) * 1000, 2),
        }


# --------------------------------------------------------------------------- lateness


def _late_frames(stamps: _Stamps, w0: float, w1: float) -> tuple[int, int, float]:
    """Late frames, expected frames and worst lateness (s) of one call in [w0, w1).

    `stamps` are (write time, samples written). Sample k of the stream is due at
    `anchor + k / RATE`, the anchor being the earliest consistent with every write in
    the window; a write is late when it comes more than `LATE_SECS` after its first
    sample's due time. Audio missing from the window counts as late frames.
    """
    expected = int((w1 - w0) / FRAME_SECS)
    inside = [(t, n) for t, n in zip(stamps.times, stamps.samples, strict=True) if w0 <= t < w1]
    if not inside:
        return expected, expected, w1 - w0
    starts = np.cumsum([0] + [n for _, n in inside[:-1]]) / RATE
    times = np.array([t for t, _ in inside])
    anchor = float(np.min(times - starts))
    lateness = times - starts - anchor
    late = int(np.sum(lateness > LATE_SECS))
    written = sum(n for _, n in inside) / FRAME_SAMPLES
    missing = max(0, int(expected - written) - 1)  # one frame of slack for the edges
    return late + missing, expected, float(np.max(lateness))


class _Stamps:
    """Publish times and lengths of one call's frames, in untracked arrays.

    Hundreds of thousands of (time, length) tuples would be objects the garbage
    collector scans, lengthening every call's pauses: the measurement must not.
    """

    def __init__(self) -> None:
        self.times = array("d")
        self.samples = array("l")

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class Trial:
    kind: str
    n: int
    late_fraction: float
    late_frames: int
    frames: int
    cpu_s: float
    window_s: float
    max_lateness_ms: float
    gc: dict[str, Any]
    setup_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.late_fraction < MAX_LATE_FRACTION

    @property
    def cpu_us_per_call_second(self) -> float:
        return self.cpu_s / (self.n * self.window_s) * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "passed": self.passed,
            "late_percent": round(100 * self.late_fraction, 3),
            "late_frames": self.late_frames,
            "frames": self.frames,
            "max_lateness_ms": round(self.max_lateness_ms, 2),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_load": round(self.cpu_s / self.window_s, 3),
            "cpu_us_per_call_second": round(self.cpu_us_per_call_second, 1),
            "window_s": round(self.window_s, 3),
            "setup_s": round(self.setup_s, 2),
            "gc": self.gc,
            **self.extra,
        }


# --------------------------------------------------------------------------- Pipecat calls


class _HeldCall:
    """One held call: a MemoryTransport output in its own PipelineWorker and runner.

    With a `HoldMusicMixer`, a `HoldMusicLink` sits before the transport, as
    `WarmTransfer.caller_output()` does in a real bot; it binds the mixer to the
    transport (so a mixer with `shared_engine` can park) and costs nothing while held.
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        index: int,
        mixer: Any,
        keep_audio: bool,
        stamp: bool = True,
    ):
        self.mixer = mixer
        self.stamps = _Stamps()
        self.audio: deque[bytes] | None = deque(maxlen=40) if keep_audio else None
        transport = MemoryTransport(
            server,
            f"held-{index}",
            "bot",
            params=TransportParams(
                audio_out_enabled=True, audio_out_sample_rate=RATE, audio_out_mixer=mixer
            ),
        )
        output = transport.output()
        times, samples, audio = self.stamps.times, self.stamps.samples, self.audio
        now = time.perf_counter
        client = output._client  # the room client: both write paths publish through it
        publish = client.publish_audio

        def stamped_publish(data, sample_rate, _publish=publish):
            times.append(now())
            samples.append(len(data) // 2)
            if audio is not None:
                audio.append(data)
            return _publish(data, sample_rate)

        if stamp:  # an instance attribute: this call only
            client.publish_audio = stamped_publish
        self.output = output
        processors = (
            [HoldMusicLink(mixer), output] if isinstance(mixer, HoldMusicMixer) else [output]
        )
        self.worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        self.task: asyncio.Task | None = None

    @property
    def parked(self) -> bool:
        return bool(getattr(self.mixer, "parked", False))

    async def start(self) -> None:
        await self.runner.add_workers(self.worker)
        self.task = asyncio.create_task(self.runner.run(), name="density-call")

    async def stop(self) -> None:
        await self.worker.cancel(reason="density trial done")


def _base_kind(kind: str) -> str:
    return kind.removesuffix(GC_DEFAULT_SUFFIX)


#: Kinds whose mixer uses the shared hold engine.
ENGINE_KINDS = ("ours", "ours_reminders")


def _mixer_factory(kind: str, files: dict[str, Path]) -> Callable[[], Any]:
    if kind.startswith("ours"):
        engine = kind in ENGINE_KINDS
        return lambda: HoldMusicMixer(
            source=files["ours"], level_dbfs=LEVEL_DBFS, enabled=True, shared_engine=engine
        )
    return lambda: SoundfileMixer(
        sound_files={"music": str(files["baseline"])},
        default_sound="music",
        volume=BASELINE_VOLUME,
        mixing=True,
        loop=True,
    )


_REMINDER_CACHE: dict[float, list[bytes]] = {}


def _reminder_chunks(seconds: float) -> list[bytes]:
    """The mixer benchmark's voice-like speech, `seconds` long, in 20 ms TTS chunks."""
    if seconds not in _REMINDER_CACHE:
        pcm = _speech(RATE, int(seconds * FRAMES_PER_SEC)).tobytes()
        step = 2 * RATE // FRAMES_PER_SEC
        _REMINDER_CACHE[seconds] = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    return _REMINDER_CACHE[seconds]


#: A streaming TTS's pace: 200 ms of audio every 50 ms (4x real time).
TTS_BURST_FRAMES, TTS_BURST_EVERY_S = 10, 0.05


async def _remind(call: _HeldCall, period: float, seconds: float, phase: float) -> None:
    """Have the bot say a reminder every `period` s, as `hold_reminder_every` does.

    The audio arrives as a streaming TTS delivers it: ahead of real time, in bursts.
    """
    chunks = _reminder_chunks(seconds)
    await asyncio.sleep(phase)
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        await call.worker.queue_frame(TTSStartedFrame())
        for i in range(0, len(chunks), TTS_BURST_FRAMES):
            for chunk in chunks[i : i + TTS_BURST_FRAMES]:
                await call.worker.queue_frame(
                    TTSAudioRawFrame(audio=chunk, sample_rate=RATE, num_channels=1)
                )
            await asyncio.sleep(TTS_BURST_EVERY_S)
        await call.worker.queue_frame(TTSStoppedFrame())
        await asyncio.sleep(max(0.0, started + period - loop.time()))


async def _pipecat_trial(kind: str, n: int, files: dict[str, Path], settings: dict) -> Trial:
    loop = asyncio.get_running_loop()
    freeze = not kind.endswith(GC_DEFAULT_SUFFIX)
    make_mixer = _mixer_factory(_base_kind(kind), files)
    engine_kind = _base_kind(kind) in ENGINE_KINDS
    reminders = _base_kind(kind).endswith("_reminders")
    reminder_tasks: list[asyncio.Task] = []
    parked_samples: list[float] = []
    server = MemoryRoomServer()
    t_setup = time.perf_counter()
    calls = [_HeldCall(server, i, make_mixer(), keep_audio=i == 0) for i in range(n)]
    start = loop.time()
    for i, call in enumerate(calls):
        delay = start + i * START_SPREAD_SECS / n - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await call.start()
    engine_before = None
    try:
        deadline = loop.time() + 10.0 + n / 200
        while not all(call.stamps for call in calls):
            if loop.time() > deadline:
                raise RuntimeError(f"{kind}: calls did not start writing within the bound")
            await asyncio.sleep(0.05)
        setup_s = time.perf_counter() - t_setup
        # The N new pipelines' long-lived objects would trigger one full collection soon
        # after start-up; run it now, timed: the pause any full collection costs at this
        # N. Then (unless this is a GC-default search) freeze what exists, so that later
        # collections only scan young objects: whether a full collection lands in a short
        # window would otherwise decide the trial (see the module docstring).
        t_gc = time.perf_counter()
        gc.collect()
        full_gc_s = time.perf_counter() - t_gc
        if freeze:
            gc.freeze()
        # Ours parks once its fade-in is over and the link has been quiet for a while;
        # N calls all starting at once share the core until they have parked (on a
        # bot, calls go on hold one by one), so wait for that, bounded.
        if engine_kind:
            park_deadline = loop.time() + 10.0 + n / 100
            while sum(call.parked for call in calls) < MIN_PARKED_FRACTION * n:
                if loop.time() > park_deadline:
                    break
                await asyncio.sleep(0.1)
        window_s = settings["window_s"]
        if reminders:
            # Each call says a reminder every period, at its own random phase; the
            # window spans whole periods, so every call speaks in it.
            period, length = settings["reminder_every_s"], settings["reminder_s"]
            window_s = settings["reminder_window_s"]
            rng = np.random.default_rng(n)
            reminder_tasks = [
                asyncio.create_task(_remind(call, period, length, float(rng.uniform(0, period))))
                for call in calls
            ]
        await asyncio.sleep(settings["warmup_s"])
        parked = sum(call.parked for call in calls) / n
        if engine_kind:
            engine_before = SharedHoldEngine.for_running_loop().stats()
        with GcPauses() as pauses:
            w0, c0 = time.perf_counter(), time.process_time()
            t_end = loop.time() + window_s
            while (left := t_end - loop.time()) > 0:
                await asyncio.sleep(min(0.25, left))
                parked_samples.append(sum(call.parked for call in calls) / n)
            w1, c1 = time.perf_counter(), time.process_time()
        parked_after = sum(call.parked for call in calls) / n
    finally:
        gc.unfreeze()
        for task in reminder_tasks:
            task.cancel()
        await asyncio.gather(*reminder_tasks, return_exceptions=True)
        for call in calls:
            await call.stop()
        await asyncio.wait_for(
            asyncio.gather(*(c.task for c in calls if c.task), return_exceptions=True), 30.0
        )
    late = frames = 0
    worst = 0.0
    for call in calls:
        call_late, call_frames, call_worst = _late_frames(call.stamps, w0, w1)
        late += call_late
        frames += call_frames
        worst = max(worst, call_worst)
    sample = np.frombuffer(b"".join(calls[0].audio or []), dtype=np.int16)
    level = rms_dbfs(sample)
    # With reminders, call 0's last 1.6 s may hold one over the music: louder is fine.
    too_far = level - LEVEL_DBFS < -LEVEL_TOLERANCE_DB or (
        not reminders and level - LEVEL_DBFS > LEVEL_TOLERANCE_DB
    )
    if too_far:
        raise BenchmarkSanityError(
            f"{kind} at N={n}: music at {level:.1f} dBFS RMS, expected {LEVEL_DBFS:g} "
            f"± {LEVEL_TOLERANCE_DB:g} dB (is the mixer doing the work?)"
        )
    if reminders and engine_kind and not max(parked_samples, default=0.0) > 0.5:
        raise BenchmarkSanityError(f"{kind} at N={n}: the calls never parked between reminders")
    if engine_kind and not reminders and min(parked, parked_after) < MIN_PARKED_FRACTION:
        raise BenchmarkSanityError(
            f"{kind} at N={n}: only {100 * parked:.1f} % / {100 * parked_after:.1f} % of the "
            "calls were parked in the shared hold engine at the window's start / end"
        )
    extra: dict[str, Any] = {
        "music_dbfs_call0": round(level, 2),
        "full_gc_ms": round(1000 * full_gc_s, 1),
        "gc_frozen_after_setup": freeze,
        "parked_fraction": round(parked, 4),
        "parked_fraction_in_window": (
            round(float(np.mean(parked_samples)), 4) if parked_samples else None
        ),
    }
    if engine_before is not None:
        after = SharedHoldEngine.for_running_loop().stats()
        extra["engine"] = {
            "ticks": after.ticks - engine_before.ticks,
            "late_ticks": after.late_ticks - engine_before.late_ticks,
            "max_tick_work_ms": round(after.max_tick_work_ms, 3),
            "frames_written": after.frames_written - engine_before.frames_written,
        }
    del calls
    gc.collect()
    return Trial(
        kind=kind,
        n=n,
        late_fraction=late / max(frames, 1),
        late_frames=late,
        frames=frames,
        cpu_s=c1 - c0,
        window_s=w1 - w0,
        max_lateness_ms=worst * 1000,
        gc=pauses.summary(w0, w1),
        setup_s=setup_s,
        extra=extra,
    )


# --------------------------------------------------------------------------- search


class DensitySearch:
    """Largest passing N: doubling from `start` until a failure, then bisection."""

    def __init__(self, kind: str, start: int, maximum: int, tolerance: float):
        self.kind = kind
        self.lo = 0  # largest N that passed
        self.hi: int | None = None  # smallest N that failed
        self._next: int | None = start
        self._max = maximum
        self._tol = tolerance
        self.budget_stopped = False
        self.trials: list[Trial] = []

    @property
    def done(self) -> bool:
        return self._next is None

    def next_n(self) -> int | None:
        return self._next

    def restart(self, start: int) -> None:
        """Set the first N (a search whose start depends on another search's result)."""
        self._next = max(1, start)

    def stop(self) -> None:
        self._next = None
        self.budget_stopped = True

    def report(self, trial: Trial) -> None:
        self.trials.append(trial)
        n = trial.n
        if trial.passed:
            self.lo = max(self.lo, n)
        else:
            self.hi = n if self.hi is None else min(self.hi, n)
        if self.hi is None:  # still doubling up
            # ... but never past the N that would load the core to 100 % at the CPU cost
            # per call just measured (one core cannot run more than that in real time).
            load = trial.cpu_s / trial.window_s
            cap = int(n / load) if load > 0 else 2 * n
            step = max(int(n * (1 + self._tol)) + 1, min(2 * n, cap))
            step = -(-step // 8) * 8  # a multiple of 8
            self._next = step if step <= self._max else None
            return
        if self.lo == 0:  # the first trial failed: halve down
            self._next = n // 2 if n > 1 else None
            return
        if (self.hi - self.lo) <= max(1, self._tol * self.lo):
            self._next = None
            return
        mid = (self.lo + self.hi) // 2
        self._next = mid if mid not in (self.lo, self.hi) else None

    def best(self) -> Trial | None:
        passing = [t for t in self.trials if t.passed and t.n == self.lo]
        return passing[-1] if passing else None

    def as_dict(self) -> dict[str, Any]:
        best = self.best()
        return {
            "largest_passing_n": self.lo,
            "smallest_failing_n": self.hi,
            "bracket_closed": not self.budget_stopped,
            "cpu_us_per_call_second_at_best": (
                round(best.cpu_us_per_call_second, 1) if best else None
            ),
            "trials": [t.as_dict() for t in self.trials],
        }


def _density_line(kind: str, n: int, result: Trial, secs: float) -> str:
    return (
        f"  density {kind:>8} N={n:>6}: late {100 * result.late_fraction:6.2f} %"
        f" ({'pass' if result.passed else 'FAIL'}), "
        f"{result.cpu_us_per_call_second:7.1f} CPU µs/call-s, "
        f"load {result.cpu_s / result.window_s:4.2f}, "
        f"max late {result.max_lateness_ms:6.1f} ms, "
        f"GC max {result.gc['max_pause_ms']:.0f} ms  [{secs:.1f} s]"
    )


async def run_searches(
    searches: list[DensitySearch],
    trial: Callable[[str, int], Awaitable[Any]],
    budget_s: float,
    describe: Callable[[str, int, Any, float], str] = _density_line,
) -> None:
    """Run the searches in rounds, one trial each, interleaved (same machine conditions).

    A round starts only if the time budget still fits one more round as long as the
    last one, so interleaved searches always get the same number of trials. `describe`
    makes each trial's progress line (kind, N, result, seconds).
    """
    t_end = time.perf_counter() + budget_s
    last_round_s = 0.0
    while any(not s.done for s in searches):
        if time.perf_counter() + last_round_s > t_end:
            for search in searches:
                if not search.done:
                    progress(
                        f"  density {search.kind}: time budget reached, bracket "
                        f"[{search.lo}, {search.hi}] kept"
                    )
                    search.stop()
            return
        t_round = time.perf_counter()
        for search in searches:
            n = search.next_n()
            if n is None:
                continue
            t0 = time.perf_counter()
            result = await trial(search.kind, n)
            search.report(result)
            progress(describe(search.kind, n, result, time.perf_counter() - t0))
        last_round_s = time.perf_counter() - t_round


# --------------------------------------------------------------------------- output


def _plot(searches: dict[str, DensitySearch], profile: str, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 6))
    styles = {
        "ours": (
            "ours: HoldMusicMixer parked in the SharedHoldEngine (WarmTransfer's default)",
            "#e76f51",
            "^",
        ),
        "ours_per_frame": (
            "HoldMusicMixer without the engine (Pipecat's per-call loop mixes each frame)",
            "#2a9d8f",
            "o",
        ),
        "baseline": (
            "baseline: SoundfileMixer (Pipecat's per-call loop)",
            "#7a7a7a",
            "s",
        ),
        "ours" + GC_DEFAULT_SUFFIX: ("ours, GC not frozen after set-up", "#8ecae6", "v"),
        "ours_reminders": (
            "ours with a 3 s reminder every 30 s (leaves the engine to speak)",
            "#f4a261",
            "D",
        ),
        "baseline_reminders": (
            "baseline with the same reminders",
            "#4a4a4a",
            "x",
        ),
    }
    for kind, search in searches.items():
        label, color, marker = styles[kind]
        trials = sorted(search.trials, key=lambda t: t.n)
        if not trials:
            continue
        ns = [t.n for t in trials]
        ax1.plot(
            ns,
            [max(100 * t.late_fraction, 1e-3) for t in trials],
            marker=marker,
            color=color,
            label=f"{label}: largest passing N = {search.lo}",
        )
        ax2.plot(ns, [t.cpu_us_per_call_second for t in trials], marker=marker, color=color)
    ax1.axhline(100 * MAX_LATE_FRACTION, color="#c1121f", linestyle="--", linewidth=1)
    ax1.text(
        0.01,
        100 * MAX_LATE_FRACTION * 1.2,
        "1 % limit",
        color="#c1121f",
        fontsize=8,
        transform=ax1.get_yaxis_transform(),
    )
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent held calls N (process pinned to one core)")
        ax.grid(which="both", alpha=0.25)
    ax1.set_yscale("log")
    ax1.set_ylabel("late frames, % (written > 20 ms after due; 0 drawn at 0.001)")
    ax1.set_title("Late 40 ms frames vs N", fontsize=11)
    ax2.set_yscale("log")
    ax2.set_ylabel("process CPU µs per call-second")
    ax2.set_title("CPU cost per held call vs N", fontsize=11)
    fig.legend(loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle(
        f"Held-call density on one core: hold music over silent input (profile {profile})",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    save_figure(fig, path)


# --------------------------------------------------------------------------- entry


async def _run(profile: str) -> dict[str, Any]:
    settings = PROFILE_SETTINGS[profile]
    tol = settings["tolerance"]
    pipecat_n = settings["pipecat_start"], settings["pipecat_max"]
    searches = {
        "ours": DensitySearch("ours", 0, settings["ours_max"], tol),
        "ours_per_frame": DensitySearch("ours_per_frame", *pipecat_n, tol),
        "baseline": DensitySearch("baseline", *pipecat_n, tol),
    }
    gc_kind = "ours" + GC_DEFAULT_SUFFIX
    if settings.get("gc_default_search"):
        searches[gc_kind] = DensitySearch(gc_kind, *pipecat_n, tol)
    if settings.get("reminder_search"):
        searches["ours_reminders"] = DensitySearch("ours_reminders", 0, settings["ours_max"], tol)
        searches["baseline_reminders"] = DensitySearch("baseline_reminders", *pipecat_n, tol)
    with tempfile.TemporaryDirectory(prefix="density-bench-") as tmp_dir:
        ours_file, baseline_files = _write_music_files(Path(tmp_dir))
        files = {"ours": ours_file, "baseline": baseline_files[RATE]}
        load_music_loop(ours_file, RATE, LEVEL_DBFS)  # decode once, outside the trials
        gc.collect()

        async def trial(kind: str, n: int) -> Trial:
            return await _pipecat_trial(kind, n, files, settings)

        with PinnedToOneCore() as pin:
            progress(f"  density: pinned to CPU {pin.cpu}; load average {load_average()}")
            await run_searches(
                [searches["ours_per_frame"], searches["baseline"]],
                trial,
                settings["budget_s"]["pipecat"],
            )
            base_n = searches["baseline"].lo or settings["pipecat_start"]
            start = int(settings["ours_start_ratio"] * base_n)
            searches["ours"].restart(-(-start // 8) * 8)
            await run_searches([searches["ours"]], trial, settings["budget_s"]["ours"])
            if "ours_reminders" in searches:
                # Both speak the same reminders, interleaved: the fair comparison.
                searches["ours_reminders"].restart(-(-base_n // 8) * 8)
                searches["baseline_reminders"].restart(max(8, base_n // 2))
                await run_searches(
                    [searches["ours_reminders"], searches["baseline_reminders"]],
                    trial,
                    settings["budget_s"]["reminders"],
                )
            if gc_kind in searches:
                await run_searches([searches[gc_kind]], trial, settings["budget_s"]["gc_default"])
    return {"searches": searches, "cpu": pin.cpu}


def run(profile: str) -> dict[str, Any]:
    """Run the density benchmark; write density.json and density.png; return summary keys."""
    check_profile(profile)
    t0 = time.perf_counter()
    settings = PROFILE_SETTINGS[profile]
    progress(
        f"density: N held calls per core, ours (shared engine) vs per-frame vs SoundfileMixer, "
        f"profile {profile} (window {settings['window_s']} s)"
    )
    load_before = load_average()
    out = asyncio.run(_run(profile))
    searches: dict[str, DensitySearch] = out["searches"]
    ours, base = searches["ours"], searches["baseline"]
    per_frame = searches["ours_per_frame"]

    def cpu_at_best(search: DensitySearch) -> float | None:
        best = search.best()
        return round(best.cpu_us_per_call_second, 1) if best else None

    def cpu_at(search: DensitySearch, n: int) -> float | None:
        values = [t.cpu_us_per_call_second for t in search.trials if t.n == n]
        return round(float(np.median(values)), 1) if values else None

    # Same-N comparison of the two per-frame mixers: the mixer's share of the per-call
    # cost, at the largest N both passed.
    common = sorted(
        {t.n for t in per_frame.trials if t.passed} & {t.n for t in base.trials if t.passed}
    )
    same_n = common[-1] if common else None
    cpu_ours, cpu_base = cpu_at_best(ours), cpu_at_best(base)
    summary = {
        "density_ratio": round(ours.lo / base.lo, 3) if base.lo else None,
        "density_ours": ours.lo,
        "density_ours_bracket_closed": not ours.budget_stopped,
        "density_baseline": base.lo,
        "density_ours_per_frame": per_frame.lo,
        "density_per_frame_ratio": round(per_frame.lo / base.lo, 3) if base.lo else None,
        "cpu_us_per_call_second_ours": cpu_ours,
        "cpu_us_per_call_second_ours_per_frame": cpu_at_best(per_frame),
        "cpu_us_per_call_second_baseline": cpu_base,
        "density_cpu_ratio": round(cpu_base / cpu_ours, 1) if cpu_base and cpu_ours else None,
        "density_same_n": same_n,
        "cpu_us_per_call_second_per_frame_same_n": cpu_at(per_frame, same_n) if same_n else None,
        "cpu_us_per_call_second_baseline_same_n": cpu_at(base, same_n) if same_n else None,
        "density_cpu_ratio_same_n": (
            round(cpu_at(base, same_n) / cpu_at(per_frame, same_n), 3) if same_n else None
        ),
        "density_full_gc_pause_ms_at_ours": (
            ours.best().extra.get("full_gc_ms") if ours.best() else None
        ),
        "density_profile": profile,
    }
    gc_search = searches.get("ours" + GC_DEFAULT_SUFFIX)
    if gc_search is not None:
        summary["density_ours_gc_default"] = gc_search.lo
    reminder_search = searches.get("ours_reminders")
    if reminder_search is not None:
        summary["density_ours_reminders"] = reminder_search.lo
        summary["density_reminders_ratio"] = (
            round(reminder_search.lo / base.lo, 3) if base.lo else None
        )
        summary["cpu_us_per_call_second_ours_reminders"] = cpu_at_best(reminder_search)
        base_rem = searches["baseline_reminders"]
        summary["density_baseline_reminders"] = base_rem.lo
        summary["density_reminders_vs_baseline_reminders"] = (
            round(reminder_search.lo / base_rem.lo, 3) if base_rem.lo else None
        )
        summary["cpu_us_per_call_second_baseline_reminders"] = cpu_at_best(base_rem)
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "density",
        "profile": profile,
        "profile_settings": settings,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "pinned_cpu": out["cpu"],
        "setup": {
            "rate_hz": RATE,
            "frame_ms": FRAME_SECS * 1000,
            "late_after_ms": LATE_SECS * 1000,
            "max_late_percent": 100 * MAX_LATE_FRACTION,
            "per_call": (
                "MemoryTransport.output() (Pipecat BaseOutputTransport, clock-paced) alone "
                "in a Pipeline, its own PipelineWorker and WorkerRunner; mixer-only frames "
                "(silent input); room without listeners"
            ),
            "ours": (
                f"HoldMusicMixer(source=44.1 kHz stereo WAV, level_dbfs={LEVEL_DBFS}, "
                "shared_engine=True) behind a HoldMusicLink; parked in the package's "
                "SharedHoldEngine (checked every trial), written with write_audio_nowait"
            ),
            "ours_per_frame": "the same mixer with shared_engine=False",
            "baseline": (
                f"SoundfileMixer(volume={BASELINE_VOLUME}) with a mono int16 WAV at {RATE} Hz "
                f"scaled to output {LEVEL_DBFS} dBFS RMS"
            ),
            "gc": (
                "one timed gc.collect() after start-up, then gc.freeze() for the window "
                "(except *_gc_default searches); every pause in the window recorded"
            ),
        },
        "summary": summary,
        "searches": {kind: s.as_dict() for kind, s in searches.items()},
    }
    write_json(JSON_PATH, document)
    _plot(searches, profile, PNG_PATH)
    progress(
        f"density: ours N={ours.lo} ({summary['cpu_us_per_call_second_ours']} µs/call-s), "
        f"baseline N={base.lo} ({summary['cpu_us_per_call_second_baseline']} µs/call-s), "
        f"ratio {summary['density_ratio']}; per-frame mixer N={per_frame.lo} "
        f"({summary['cpu_us_per_call_second_ours_per_frame']} µs/call-s)"
    )
    progress(f"density: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
