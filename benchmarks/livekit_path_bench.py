"""LiveKit output path: playout latency, held-call CPU and density, idle-call cost.

Every call is what a user runs: a real Pipecat pipeline (`PipelineWorker` +
`WorkerRunner`, `PipelineParams(audio_out_sample_rate=16000)`) ending in Pipecat's real
`LiveKitTransport` output (`OfflineLiveKitTransport` from
`pipecat_warm_transfer.testing.livekit_media`), which writes into a real livekit-rtc
`AudioSource` (its FFI, its 1 s queue, its native 10 ms playout); only the room connection
is faked. Pipecat's default `LiveKitParams` otherwise (`audio_out_queue_size_ms=1000`,
40 ms chunks). Three measurements, each side by side in one run, reported as ratios to
an in-run baseline:

1. **Added playout latency.** Five calls run at once, one per configuration; each pushes
   a loud marker (`OutputAudioRawFrame`, 40 ms of 30000) down its pipeline at random
   moments and finds when it is heard on the published track
   (`media.first_heard_above(25000, push_time)`): no mixer (the baseline), ours with the
   music off, ours with the music on, ours with the music on and the call parked in the
   shared hold engine (`mixer.parked` is checked before each push), Pipecat's
   `SoundfileMixer` with the music on. Added latency = delay - the baseline's p50.
2. **Held-call CPU and density.** N concurrent held calls (music on, bot silent) in one
   process, nothing listening (`record_heard=False`). CPU per held call-second = process
   CPU time (every thread: livekit-rtc's Rust side included) over a window / (N x
   window). A call is *late* when its source queue ran dry for > 1 % of the window,
   modelled from the capture log (a capture of n samples adds n / 16000 s once the queue
   has room, the queue drains in real time). Density = largest N with < 1 % late calls,
   searched (doubling, then bisection) within a time budget, process pinned to one core.
3. **Idle call cost.** N calls with our mixer installed but the music never enabled vs
   N calls without a mixer (`bare`: the floor every LiveKit call pays).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import os
import random
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer
from pipecat.frames.frames import MixerEnableFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.filters.identity_filter import IdentityFilter
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.livekit.transport import LiveKitParams
from pipecat.workers.runner import WorkerRunner

from benchmarks.common import (
    RESULTS_DIR,
    PinnedToOneCore,
    check_profile,
    load_average,
    machine_info,
    percentile,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from benchmarks.density_bench import BenchmarkSanityError, DensitySearch, run_searches
from benchmarks.mixer_bench import BASELINE_VOLUME, LEVEL_DBFS, _write_music_files
from pipecat_warm_transfer import HoldMusicLink, HoldMusicMixer, SharedHoldEngine
from pipecat_warm_transfer.audio.metrics import rms_dbfs
from pipecat_warm_transfer.audio.music_source import load_music_loop
from pipecat_warm_transfer.testing.livekit_media import (
    FAILED,
    REFUSED,
    TAKEN,
    OfflineLiveKitTransport,
)

RATE = 16000
#: LiveKitParams' default audio_out_queue_size_ms: the source's queue capacity.
QUEUE_SECS = 1.0
#: The marker: 40 ms at 30000, found on the track as the first sample above 25000.
MARKER_SAMPLES = 640
MARKER_LEVEL = 30000
MARKER_THRESHOLD = 25000
#: Markers are looked for from this long before their push: the track's timestamps put a
#: frame's first sample 10 ms before its arrival, so on an idle source a marker can appear
#: to start a few ms before it was pushed (searching from the push would clip that to 0).
LOOKBACK_SECS = 0.1
#: The goal for the added latency (p99, music on or off).
ADDED_LATENCY_GOAL_MS = 40.0
#: A held call is late when its source ran dry for more than this share of the window.
MAX_DRY_FRACTION = 0.01
#: N passes when fewer than this share of its calls are late.
MAX_LATE_CALLS = 0.01
#: Calls' start times are spread over this long (random phases, as real calls).
START_SPREAD_SECS = 0.2
#: Share of engine calls that must be parked when the window opens (and closes).
MIN_PARKED_FRACTION = 0.99
#: Music-on calls must play at least this level between markers (sanity check).
MIN_MUSIC_DBFS = LEVEL_DBFS - 6.0

#: Latency configurations, in plot order.
LATENCY_CONFIGS = ("no_mixer", "ours_off", "ours_on", "ours_parked", "soundfile_on")
#: Held-call kinds.
HELD_KINDS = ("bare", "ours_idle", "ours", "ours_per_frame", "baseline")
#: Kinds whose mixer parks in the shared engine.
ENGINE_KINDS = ("ours",)
#: Kinds that play music (their queues are modelled for underruns).
MUSIC_KINDS = ("ours", "ours_per_frame", "baseline")

PROFILE_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "markers": 20,
        "fixed_n": 40,
        "fixed_rounds": 1,
        "warmup_s": 1.5,
        "window_s": 2.0,
        "tolerance": 0.25,
        "density_start": 32,
        "density_max": 8192,
        "density_budget_s": 100.0,
    },
    "full": {
        "markers": 60,
        "fixed_n": 100,
        "fixed_rounds": 3,
        "warmup_s": 2.5,
        "window_s": 6.0,
        "tolerance": 0.08,
        "density_start": 32,
        "density_max": 16384,
        "density_budget_s": 660.0,
    },
}

JSON_PATH = RESULTS_DIR / "livekit_path.json"
PNG_PATH = RESULTS_DIR / "livekit_path.png"


# --------------------------------------------------------------------------- one call


def _make_mixer(kind: str, files: dict[str, Path]) -> Any:
    """The `audio_out_mixer` of a latency configuration or held-call kind (or None)."""
    if kind in ("no_mixer", "bare"):
        return None
    if kind in ("soundfile_on", "baseline"):
        return SoundfileMixer(
            sound_files={"music": str(files["baseline"])},
            default_sound="music",
            volume=BASELINE_VOLUME,
            mixing=True,
            loop=True,
        )
    return HoldMusicMixer(
        source=files["ours"],
        level_dbfs=LEVEL_DBFS,
        # Held kinds play from the start; latency configurations enable it by frame.
        enabled=kind in ("ours", "ours_per_frame"),
        shared_engine=kind in ("ours", "ours_parked"),
    )


class _Call:
    """One call: `[_Source, (HoldMusicLink), transport.output()]` in its own worker."""

    def __init__(self, kind: str, index: int, files: dict[str, Path], record_heard: bool):
        self.kind = kind
        self.mixer = _make_mixer(kind, files)
        self.transport = OfflineLiveKitTransport(
            f"{kind}-{index}",
            params=LiveKitParams(
                audio_out_enabled=True, audio_out_sample_rate=RATE, audio_out_mixer=self.mixer
            ),
            record_heard=record_heard,
            keep_captured=False,
        )
        self.source = IdentityFilter()  # markers are pushed from it
        processors: list[FrameProcessor] = [self.source]
        if isinstance(self.mixer, HoldMusicMixer):
            processors.append(HoldMusicLink(self.mixer))
        processors.append(self.transport.output())
        self.worker = PipelineWorker(
            Pipeline(processors),
            params=PipelineParams(audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        self.task: asyncio.Task | None = None

    @property
    def media(self):
        return self.transport.media

    @property
    def connected(self) -> bool:
        return self.transport.audio_source is not None

    @property
    def parked(self) -> bool:
        return bool(getattr(self.mixer, "parked", False))

    async def start(self) -> None:
        await self.runner.add_workers(self.worker)
        self.task = asyncio.create_task(self.runner.run(), name=f"livekit-bench-{self.kind}")

    async def push(self, frame) -> None:
        await self.source.push_frame(frame)

    async def stop(self) -> None:
        await self.worker.cancel(reason="livekit path benchmark done")


async def _stop_all(calls: list[_Call]) -> None:
    for call in calls:
        await call.stop()
    tasks = [c.task for c in calls if c.task]
    if tasks:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60.0)
    left = sum(1 for c in calls if c.connected)
    if left:
        raise BenchmarkSanityError(f"{left} LiveKit sources still open after the calls ended")


# --------------------------------------------------------------------------- 1. latency


def _marker() -> OutputAudioRawFrame:
    audio = np.full(MARKER_SAMPLES, MARKER_LEVEL, dtype=np.int16).tobytes()
    return OutputAudioRawFrame(audio=audio, sample_rate=RATE, num_channels=1)


def _heard_loud_since(media, frame_index: int) -> bool:
    """Whether a frame from `frame_index` on holds a sample above the marker threshold."""
    for data in media.heard_frames[frame_index:]:
        if np.abs(np.frombuffer(data, dtype=np.int16).astype(np.int32)).max() > MARKER_THRESHOLD:
            return True
    return False


@dataclass
class _MarkerLog:
    config: str
    pushes: list[float] = field(default_factory=list)
    parked_at_push: list[bool] = field(default_factory=list)
    delays_s: list[float] = field(default_factory=list)
    missed: int = 0


async def _marker_loop(call: _Call, markers: int, rng: random.Random) -> _MarkerLog:
    """Push markers at random moments, each after the previous one was heard."""
    log = _MarkerLog(call.kind)
    loop = asyncio.get_running_loop()
    parked_kind = call.kind == "ours_parked"
    for _ in range(markers):
        if parked_kind:
            # Quiet long enough for the call to park (0.5 s after the last frame and the
            # duck's release), then wait until it has, bounded.
            await asyncio.sleep(rng.uniform(0.65, 0.9))
            deadline = loop.time() + 3.0
            while not call.parked:
                if loop.time() > deadline:
                    break  # pushed anyway, recorded as not parked
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(rng.uniform(0.2, 0.45))
        await asyncio.sleep(rng.uniform(0.0, 0.04))  # a random phase of the 40 ms chunking
        log.parked_at_push.append(call.parked)
        frame_index = len(call.media.heard_frames)
        pushed = loop.time()
        await call.push(_marker())
        log.pushes.append(pushed)
        deadline = pushed + 3.0
        while not _heard_loud_since(call.media, frame_index) and loop.time() < deadline:
            frame_index = max(0, len(call.media.heard_frames) - 1)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the whole marker has played
    return log


async def _latency(files: dict[str, Path], settings: dict[str, Any]) -> dict[str, Any]:
    calls = [_Call(config, i, files, record_heard=True) for i, config in enumerate(LATENCY_CONFIGS)]
    for call in calls:
        await call.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while not all(c.connected for c in calls):
            if loop.time() > deadline:
                raise BenchmarkSanityError("latency calls did not connect")
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        for call in calls:
            if call.kind in ("ours_on", "ours_parked"):
                await call.push(MixerEnableFrame(True))
        await asyncio.sleep(1.2)  # past the fade-in (and SoundfileMixer's queue filling)
        logs = await asyncio.gather(
            *(
                _marker_loop(call, settings["markers"], random.Random(1000 + i))
                for i, call in enumerate(calls)
            )
        )
    finally:
        await _stop_all(calls)
    out: dict[str, Any] = {}
    for call, log in zip(calls, logs, strict=True):
        media = call.media
        heard = media.heard()
        for pushed in log.pushes:
            at = media.first_heard_above(MARKER_THRESHOLD, pushed - LOOKBACK_SECS)
            if at is None:
                log.missed += 1
            else:
                log.delays_s.append(at - pushed)
        # Sanity: music where it should be, and never loud enough to pass for a marker.
        first = media.heard_index(log.pushes[0] - LOOKBACK_SECS) if log.pushes else len(heard)
        before = heard[max(0, first - 8 * RATE // 10) : first]
        level = rms_dbfs(before)
        if call.kind in ("ours_on", "ours_parked", "soundfile_on") and level < MIN_MUSIC_DBFS:
            raise BenchmarkSanityError(f"{call.kind}: music at {level:.1f} dBFS before a marker")
        if before.size and int(np.abs(before.astype(np.int32)).max()) > MARKER_THRESHOLD:
            raise BenchmarkSanityError(f"{call.kind}: the music alone passes the marker threshold")
        out[call.kind] = {
            "log": log,
            "captures": len(media.captures),
            "refused": media.refused,
            "failed": media.failed,
            "level_before_first_marker_dbfs": round(level, 2),
        }
    if not out["no_mixer"]["log"].delays_s:
        raise BenchmarkSanityError("no marker was heard on the no-mixer baseline")
    return out


# --------------------------------------------------------------------------- 2./3. held calls


def _dry_seconds(captures, w0: float, w1: float) -> tuple[float, float]:
    """Time the modelled source queue was empty inside [w0, w1), and its largest gap.

    Each taken capture of n samples enters the queue at its start time, or when the
    queue has room for it (a full queue makes `capture_frame` wait); the queue drains in
    real time.
    """
    dry = longest = 0.0
    level = 0.0
    t_prev: float | None = None

    def add_dry(start: float, end: float) -> None:
        nonlocal dry, longest
        a, b = max(start, w0), min(end, w1)
        if b > a:
            dry += b - a
            longest = max(longest, b - a)

    for c in captures:
        if c.outcome != TAKEN:
            continue
        if c.at >= w1:
            break
        t = c.at if t_prev is None else max(c.at, t_prev)
        if t_prev is not None:
            if t - t_prev > level:
                add_dry(t_prev + level, t)
            level = max(0.0, level - (t - t_prev))
        d = c.samples / RATE
        wait = max(0.0, level + d - QUEUE_SECS)
        t_prev = t + wait
        level = level - wait + d
    if t_prev is None:
        add_dry(w0, w1)
    else:
        add_dry(t_prev + level, w1)
    return dry, longest


def _silent_secs(samples: np.ndarray, min_run: int = RATE // 1000) -> float:
    """Seconds of `samples` in runs of at least `min_run` exact zeros."""
    if not samples.size:
        return 0.0
    zero = np.concatenate(([False], samples == 0, [False]))
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    runs = edges[1::2] - edges[::2]
    return float(runs[runs >= min_run].sum()) / RATE


@dataclass
class HeldTrial:
    kind: str
    n: int
    cpu_s: float
    window_s: float
    late_calls: int
    dry_fraction_mean: float
    dry_fraction_max: float
    longest_dry_ms: float
    captures: int
    refused: int
    failed: int
    setup_s: float
    threads: int
    unpinned_threads: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def late_fraction(self) -> float:
        return self.late_calls / self.n if self.kind in MUSIC_KINDS else 0.0

    @property
    def passed(self) -> bool:
        return self.late_fraction < MAX_LATE_CALLS

    @property
    def cpu_us_per_call_second(self) -> float:
        return self.cpu_s / (self.n * self.window_s) * 1e6

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "n": self.n,
            "passed": self.passed,
            "late_calls": self.late_calls,
            "late_percent": round(100 * self.late_fraction, 3),
            "dry_percent_mean": round(100 * self.dry_fraction_mean, 4),
            "dry_percent_max": round(100 * self.dry_fraction_max, 3),
            "longest_dry_ms": round(self.longest_dry_ms, 2),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_load": round(self.cpu_s / self.window_s, 3),
            "cpu_us_per_call_second": round(self.cpu_us_per_call_second, 1),
            "window_s": round(self.window_s, 3),
            "captures_in_window_per_call_s": round(self.captures / (self.n * self.window_s), 2),
            "refused": self.refused,
            "failed": self.failed,
            "setup_s": round(self.setup_s, 2),
            "threads": self.threads,
            "threads_not_pinned": self.unpinned_threads,
            **self.extra,
        }


def _threads(pinned_cpu: int | None) -> tuple[int, int]:
    """Threads of the process (livekit-rtc starts several per source), and how many of
    them may run on another CPU than `pinned_cpu` (pinning must reach the Rust threads)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return threading.active_count(), 0
    if pinned_cpu is None:
        return len(tids), 0
    unpinned = 0
    for tid in tids:
        with contextlib.suppress(OSError):
            unpinned += os.sched_getaffinity(tid) != {pinned_cpu}
    return len(tids), unpinned


def _tid_cpu_seconds(tid: int) -> float:
    """CPU seconds of thread `tid` of this process (Linux's per-thread CPU clock)."""
    return time.clock_gettime(((~tid) << 3) | 6)  # MAKE_THREAD_CPUCLOCK(tid, SCHED)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds used so far per kind of thread (Linux; empty elsewhere).

    `event_loop` is the Python thread running the calls; `livekit_source` livekit-rtc's
    per-source capture threads (`AudioSourceCapt`, they play out every 10 ms);
    `livekit_tokio` its runtime workers (FFI requests and callbacks); `webrtc` the
    per-track WebRTC threads (network, worker, signaling) and `livekit-audio`; `other`
    the rest (executor threads). Threads that end inside a window are not seen (their
    CPU stays in the process total, as `unattributed`).
    """
    main = threading.get_native_id()
    out: dict[str, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            secs = _tid_cpu_seconds(int(tid))
        except (OSError, ValueError):
            continue
        if int(tid) == main:
            key = "event_loop"
        elif name.startswith("AudioSourceCapt"):
            key = "livekit_source"
        elif name.startswith("tokio-rt"):
            key = "livekit_tokio"
        elif name.startswith(("network_thread", "worker_thread", "signaling_thr", "livekit-")):
            key = "webrtc"
        else:
            key = "other"
        out[key] = out.get(key, 0.0) + secs
    return out


async def _held_trial(
    kind: str,
    n: int,
    files: dict[str, Path],
    settings: dict[str, Any],
    pinned_cpu: int | None = None,
) -> HeldTrial:
    loop = asyncio.get_running_loop()
    engine_kind = kind in ENGINE_KINDS
    t_setup = time.perf_counter()
    # Call 0 of a music kind listens to its track: what it heard checks the queue model.
    calls = [_Call(kind, i, files, record_heard=i == 0 and kind in MUSIC_KINDS) for i in range(n)]
    start = loop.time()
    frozen = False
    try:
        for i, call in enumerate(calls):
            delay = start + i * START_SPREAD_SECS / n - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await call.start()
        deadline = loop.time() + 15.0 + n / 50
        while not all(c.connected for c in calls):
            if loop.time() > deadline:
                raise BenchmarkSanityError(f"{kind} N={n}: calls did not connect in time")
            await asyncio.sleep(0.05)
        setup_s = time.perf_counter() - t_setup
        # Same as the density benchmark: one full collection now, then freeze what
        # exists, so that whether a full collection lands in a short window does not
        # decide the trial.
        gc.collect()
        gc.freeze()
        frozen = True
        if engine_kind:
            park_deadline = loop.time() + 10.0 + n / 100
            while sum(c.parked for c in calls) < MIN_PARKED_FRACTION * n:
                if loop.time() > park_deadline:
                    break
                await asyncio.sleep(0.1)
        await asyncio.sleep(settings["warmup_s"])
        parked = sum(c.parked for c in calls) / n
        engine_before = SharedHoldEngine.for_running_loop().stats() if engine_kind else None
        threads, unpinned = _threads(pinned_cpu)
        w0, c0, threads0 = loop.time(), time.process_time(), _thread_cpu()
        await asyncio.sleep(settings["window_s"])
        w1, c1, threads1 = loop.time(), time.process_time(), _thread_cpu()
        parked_after = sum(c.parked for c in calls) / n
        engine_after = SharedHoldEngine.for_running_loop().stats() if engine_kind else None
    finally:
        if frozen:
            gc.unfreeze()
        await _stop_all(calls)
    split = {k: threads1[k] - threads0.get(k, 0.0) for k in threads1}
    split["unattributed"] = max(0.0, (c1 - c0) - sum(split.values()))
    extra: dict[str, Any] = {
        "cpu_share_by_thread": (
            {k: round(v / (c1 - c0), 3) for k, v in sorted(split.items())} if c1 > c0 else {}
        ),
    }
    late = captures = refused = failed = 0
    dry_fractions: list[float] = []
    longest = 0.0
    for call in calls:
        in_window = [c for c in call.media.captures if w0 <= c.at < w1]
        captures += len(in_window)
        refused += sum(1 for c in in_window if c.outcome == REFUSED)
        failed += sum(1 for c in in_window if c.outcome == FAILED)
        if kind in MUSIC_KINDS:
            dry, gap = _dry_seconds(call.media.captures, w0, w1)
            dry_fractions.append(dry / (w1 - w0))
            longest = max(longest, gap)
            late += dry / (w1 - w0) > MAX_DRY_FRACTION
    if kind in MUSIC_KINDS:
        # The model against what call 0's track really played: silence inside the
        # window (runs of >= 1 ms of exact zeros; the music has none).
        media = calls[0].media
        heard = media.heard()
        if heard.size:
            i0, i1 = media.heard_index(w0), min(media.heard_index(w1), heard.size)
            extra["call0_heard_silent_ms"] = round(1000 * _silent_secs(heard[i0:i1]), 2)
            extra["call0_modelled_dry_ms"] = round(
                1000 * _dry_seconds(media.captures, w0, w1)[0], 2
            )
    if kind in MUSIC_KINDS and captures == 0:
        raise BenchmarkSanityError(f"{kind} N={n}: nothing was written in the window")
    if kind not in MUSIC_KINDS and captures:
        raise BenchmarkSanityError(f"{kind} N={n}: {captures} captures from a silent call")
    if engine_kind:
        if min(parked, parked_after) < MIN_PARKED_FRACTION:
            raise BenchmarkSanityError(
                f"{kind} N={n}: only {100 * parked:.1f} % / {100 * parked_after:.1f} % of "
                "the calls were parked at the window's start / end"
            )
        extra["parked_fraction"] = round(min(parked, parked_after), 4)
        extra["engine"] = {
            "ticks": engine_after.ticks - engine_before.ticks,
            "late_ticks": engine_after.late_ticks - engine_before.late_ticks,
            "writes_deferred": engine_after.writes_deferred - engine_before.writes_deferred,
            "frames_written": engine_after.frames_written - engine_before.frames_written,
            "max_tick_work_ms": round(engine_after.max_tick_work_ms, 3),
        }
    del calls
    gc.collect()
    return HeldTrial(
        kind=kind,
        n=n,
        cpu_s=c1 - c0,
        window_s=w1 - w0,
        late_calls=late,
        dry_fraction_mean=float(np.mean(dry_fractions)) if dry_fractions else 0.0,
        dry_fraction_max=max(dry_fractions, default=0.0),
        longest_dry_ms=1000 * longest,
        captures=captures,
        refused=refused,
        failed=failed,
        setup_s=setup_s,
        threads=threads,
        unpinned_threads=unpinned,
        extra=extra,
    )


def _trial_line(trial: HeldTrial, label: str, elapsed: float) -> str:
    head = (
        f"  {label} {trial.kind:>14} N={trial.n:>5}: {trial.cpu_us_per_call_second:7.1f} CPU "
        f"µs/call-s, load {trial.cpu_s / trial.window_s:4.2f}"
    )
    tail = f", {trial.threads} threads"
    if "call0_heard_silent_ms" in trial.extra:
        tail += (
            f", call 0 silent {trial.extra['call0_heard_silent_ms']:.0f} ms heard / "
            f"{trial.extra['call0_modelled_dry_ms']:.0f} ms modelled"
        )
    if trial.unpinned_threads:
        tail += f" ({trial.unpinned_threads} NOT pinned)"
    tail += f"  [{elapsed:.1f} s]"
    if trial.kind not in MUSIC_KINDS:
        return head + tail
    verdict = "pass" if trial.passed else "FAIL"
    return (
        f"{head}, late calls {100 * trial.late_fraction:5.1f} % ({verdict}), dry mean "
        f"{100 * trial.dry_fraction_mean:.3f} % max {100 * trial.dry_fraction_max:.2f} %, "
        f"refused {trial.refused}{tail}"
    )


# --------------------------------------------------------------------------- run


def _added_stats(delays_s: list[float], base_p50_s: float) -> dict[str, Any]:
    added = [1000 * (d - base_p50_s) for d in delays_s]
    if not added:
        return {"count": 0}
    return {
        "count": len(added),
        "p50_ms": round(percentile(added, 50), 2),
        "p99_ms": round(percentile(added, 99), 2),
        "max_ms": round(max(added), 2),
        "min_ms": round(min(added), 2),
    }


async def _run(profile: str) -> dict[str, Any]:
    settings = PROFILE_SETTINGS[profile]
    with tempfile.TemporaryDirectory(prefix="livekit-path-bench-") as tmp_dir:
        ours_file, baseline_files = _write_music_files(Path(tmp_dir))
        files = {"ours": ours_file, "baseline": baseline_files[RATE]}
        load_music_loop(ours_file, RATE, LEVEL_DBFS)  # decode once, outside the timings
        gc.collect()

        progress(
            f"  latency: {settings['markers']} markers per configuration, "
            f"{len(LATENCY_CONFIGS)} calls at once ({', '.join(LATENCY_CONFIGS)})"
        )
        t0 = time.perf_counter()
        latency = await _latency(files, settings)
        gc.collect()  # the latency calls' livekit-rtc threads end with their objects
        progress(f"  latency: done in {time.perf_counter() - t0:.1f} s")

        pin = PinnedToOneCore()

        async def trial(kind: str, n: int) -> HeldTrial:
            return await _held_trial(kind, n, files, settings, pin.cpu)

        fixed: dict[str, list[HeldTrial]] = {kind: [] for kind in HELD_KINDS}
        searches = {
            kind: DensitySearch(
                kind, settings["density_start"], settings["density_max"], settings["tolerance"]
            )
            for kind in MUSIC_KINDS
        }
        # The Rust threads exist now (the latency calls started livekit-rtc's FFI), so
        # pinning reaches them too.
        with pin:
            progress(f"  held calls: pinned to CPU {pin.cpu}; load average {load_average()}")
            fixed_n = settings["fixed_n"]
            for r in range(settings["fixed_rounds"]):
                kinds = list(HELD_KINDS)
                random.Random(r).shuffle(kinds)
                for kind in kinds:
                    t0 = time.perf_counter()
                    result = await trial(kind, fixed_n)
                    fixed[kind].append(result)
                    progress(_trial_line(result, f"same-N r{r + 1}", time.perf_counter() - t0))
            await run_searches(
                [searches[k] for k in MUSIC_KINDS],
                trial,
                settings["density_budget_s"],
                lambda _kind, _n, result, secs: _trial_line(result, "density", secs),
            )
    return {"latency": latency, "fixed": fixed, "searches": searches, "cpu": pin.cpu}


def _median_cpu(trials: list[HeldTrial]) -> float | None:
    values = [t.cpu_us_per_call_second for t in trials]
    return round(float(np.median(values)), 1) if values else None


def _ratio(a: float | None, b: float | None, digits: int = 2) -> float | None:
    return round(a / b, digits) if a is not None and b else None


def _plot(
    latency: dict[str, Any],
    base_p50_s: float,
    cpu: dict[str, float | None],
    searches: dict[str, DensitySearch],
    fixed_n: int,
    profile: str,
    path: Path,
) -> None:
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(18, 6))
    labels = {
        "no_mixer": "no mixer\n(baseline)",
        "ours_off": "ours,\nmusic off",
        "ours_on": "ours,\nmusic on",
        "ours_parked": "ours, music on,\nparked in engine",
        "soundfile_on": "SoundfileMixer,\nmusic on",
    }
    colors = {
        "no_mixer": "#7a7a7a",
        "ours_off": "#2a9d8f",
        "ours_on": "#e76f51",
        "ours_parked": "#f4a261",
        "soundfile_on": "#264653",
    }
    rng = np.random.default_rng(0)
    for i, config in enumerate(LATENCY_CONFIGS):
        added = [1000 * (d - base_p50_s) for d in latency[config]["log"].delays_s]
        if not added:
            continue
        ax1.boxplot([added], positions=[i], widths=0.5, showfliers=False)
        ax1.scatter(
            i + rng.uniform(-0.18, 0.18, len(added)),
            added,
            s=12,
            color=colors[config],
            alpha=0.7,
            zorder=3,
        )
        ax1.annotate(
            f"p99 {percentile(added, 99):.0f} ms",
            (i, max(added)),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
        )
    ax1.axhline(ADDED_LATENCY_GOAL_MS, color="#c1121f", linestyle="--", linewidth=1)
    ax1.text(
        0.01,
        ADDED_LATENCY_GOAL_MS * 1.15,
        "goal: 40 ms p99",
        color="#c1121f",
        fontsize=8,
        transform=ax1.get_yaxis_transform(),
    )
    ax1.set_yscale("symlog", linthresh=10)
    worst = max(
        (1000 * (d - base_p50_s) for c in LATENCY_CONFIGS for d in latency[c]["log"].delays_s),
        default=100.0,
    )
    ax1.set_ylim(top=max(100.0, 3.0 * worst))
    ax1.set_xticks(range(len(LATENCY_CONFIGS)), [labels[c] for c in LATENCY_CONFIGS], fontsize=8)
    ax1.set_ylabel("added playout delay, ms (delay - no-mixer p50; symlog)")
    ax1.set_title("Marker push -> heard on the LiveKit track", fontsize=11)
    ax1.grid(axis="y", which="both", alpha=0.25)

    kinds = list(HELD_KINDS)
    values = [cpu.get(k) or 0.0 for k in kinds]
    bar_colors = ["#bbbbbb", "#8ecae6", "#e76f51", "#2a9d8f", "#264653"]
    bars = ax2.bar(range(len(kinds)), values, color=bar_colors)
    for bar, value in zip(bars, values, strict=True):
        ax2.annotate(
            f"{value:.0f}",
            (bar.get_x() + bar.get_width() / 2, value),
            textcoords="offset points",
            xytext=(0, 3),
            ha="center",
            fontsize=8,
        )
    if cpu.get("bare"):
        ax2.axhline(cpu["bare"], color="#7a7a7a", linestyle=":", linewidth=1)
    ax2.set_xticks(
        range(len(kinds)),
        [
            "bare\n(no mixer)",
            "ours idle\n(music off)",
            "ours\n(engine)",
            "ours\nper-frame",
            "SoundfileMixer",
        ],
        fontsize=8,
    )
    ax2.set_ylabel("process CPU µs per call-second (all threads)")
    ax2.set_title(f"CPU per held call at N = {fixed_n} (one core)", fontsize=11)
    ax2.grid(axis="y", alpha=0.25)

    styles = {
        "ours": ("#e76f51", "^"),
        "ours_per_frame": ("#2a9d8f", "o"),
        "baseline": ("#264653", "s"),
    }
    for kind, search in searches.items():
        trials = sorted(search.trials, key=lambda t: t.n)
        if not trials:
            continue
        color, marker = styles[kind]
        ax3.plot(
            [t.n for t in trials],
            [max(100 * t.late_fraction, 0.1) for t in trials],
            marker=marker,
            color=color,
            label=f"{kind}: largest passing N = {search.lo}",
        )
    ax3.axhline(100 * MAX_LATE_CALLS, color="#c1121f", linestyle="--", linewidth=1)
    ax3.set_xscale("log", base=2)
    ax3.set_yscale("log")
    ax3.set_xlabel("concurrent held calls N (one core)")
    ax3.set_ylabel("late calls, % (source dry > 1 % of window; 0 drawn at 0.1)")
    ax3.set_title("Held-call density", fontsize=11)
    ax3.legend(fontsize=8)
    ax3.grid(which="both", alpha=0.25)
    fig.suptitle(
        f"Pipecat LiveKitTransport output path (real livekit-rtc AudioSource), profile {profile}",
        fontsize=12,
    )
    fig.tight_layout()
    save_figure(fig, path)


def run(profile: str) -> dict[str, Any]:
    """Run the LiveKit path benchmark; write livekit_path.json/png; return summary keys."""
    check_profile(profile)
    t0 = time.perf_counter()
    settings = PROFILE_SETTINGS[profile]
    progress(
        f"livekit_path: latency, held-call CPU/density and idle cost on Pipecat's "
        f"LiveKitTransport, profile {profile}"
    )
    load_before = load_average()
    out = asyncio.run(_run(profile))
    latency, fixed = out["latency"], out["fixed"]
    searches: dict[str, DensitySearch] = out["searches"]

    base_p50_s = percentile(latency["no_mixer"]["log"].delays_s, 50)
    added = {c: _added_stats(latency[c]["log"].delays_s, base_p50_s) for c in LATENCY_CONFIGS}
    cpu = {kind: _median_cpu(fixed[kind]) for kind in HELD_KINDS}
    floor = cpu["bare"] or 0.0

    def above(kind: str) -> float | None:
        return round(cpu[kind] - floor, 1) if cpu[kind] is not None else None

    def cpu_at_best(search: DensitySearch) -> float | None:
        best = search.best()
        return round(best.cpu_us_per_call_second, 1) if best else None

    parked_log = latency["ours_parked"]["log"]
    dens = {k: searches[k].lo for k in MUSIC_KINDS}
    summary: dict[str, Any] = {
        "livekit_latency_baseline_p50_ms": round(1000 * base_p50_s, 2),
        **{
            f"livekit_added_latency_{c}_{stat}": added[c].get(f"{stat}_ms")
            for c in LATENCY_CONFIGS
            if c != "no_mixer"
            for stat in ("p50", "p99", "max")
        },
        "livekit_added_latency_goal_met": all(
            (added[c].get("p99_ms") or math.inf) <= ADDED_LATENCY_GOAL_MS
            for c in ("ours_off", "ours_on", "ours_parked")
        ),
        "livekit_markers_parked": f"{sum(parked_log.parked_at_push)}/{len(parked_log.pushes)}",
        "livekit_markers_missed": sum(latency[c]["log"].missed for c in LATENCY_CONFIGS),
        "livekit_latency_refused_captures": sum(latency[c]["refused"] for c in LATENCY_CONFIGS),
        **{f"livekit_cpu_us_per_call_second_{k}": cpu[k] for k in HELD_KINDS},
        "livekit_cpu_same_n": settings["fixed_n"],
        "livekit_cpu_ratio": _ratio(cpu["baseline"], cpu["ours"]),
        "livekit_cpu_ratio_above_floor": _ratio(above("baseline"), above("ours")),
        "livekit_cpu_ratio_per_frame": _ratio(cpu["baseline"], cpu["ours_per_frame"]),
        "livekit_idle_cpu_ratio": _ratio(cpu["ours_idle"], cpu["bare"], 3),
        **{f"livekit_density_{k}": dens[k] for k in MUSIC_KINDS},
        "livekit_density_ratio": _ratio(dens["ours"], dens["baseline"]),
        "livekit_density_per_frame_ratio": _ratio(dens["ours_per_frame"], dens["baseline"]),
        "livekit_density_brackets_closed": all(not s.budget_stopped for s in searches.values()),
        **{
            f"livekit_cpu_us_per_call_second_{k}_at_density": cpu_at_best(searches[k])
            for k in MUSIC_KINDS
        },
        "livekit_density_refused_captures": sum(
            t.refused for s in searches.values() for t in s.trials
        ),
        "livekit_profile": profile,
    }
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "livekit_path",
        "profile": profile,
        "profile_settings": settings,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "pinned_cpu": out["cpu"],
        "setup": {
            "rate_hz": RATE,
            "transport": (
                "OfflineLiveKitTransport: Pipecat's LiveKitTransport output writing into a "
                "real livekit-rtc AudioSource (queue 1000 ms, 40 ms chunks); only the room "
                "connection is faked"
            ),
            "pipeline": (
                "[passthrough source, HoldMusicLink (our mixer only), transport.output()] "
                "in its own PipelineWorker + WorkerRunner"
            ),
            "ours": f"HoldMusicMixer(44.1 kHz stereo WAV, level_dbfs={LEVEL_DBFS})",
            "baseline": (
                f"SoundfileMixer(volume={BASELINE_VOLUME}, mixing=True, loop=True), mono int16 "
                f"WAV at {RATE} Hz scaled to output {LEVEL_DBFS} dBFS RMS"
            ),
            "latency_configs": {
                "no_mixer": "no audio_out_mixer (the baseline)",
                "ours_off": "HoldMusicMixer(shared_engine=False), never enabled",
                "ours_on": "HoldMusicMixer(shared_engine=False), MixerEnableFrame(True)",
                "ours_parked": (
                    "HoldMusicMixer(shared_engine=True), MixerEnableFrame(True), markers "
                    "pushed once the call is parked (>= 0.65 s quiet)"
                ),
                "soundfile_on": "SoundfileMixer playing",
            },
            "marker": (
                f"{MARKER_SAMPLES} samples at {MARKER_LEVEL}, heard = first sample above "
                f"{MARKER_THRESHOLD} after the push"
            ),
            "held_kinds": {
                "bare": "no mixer, nothing written (the floor: LiveKit source + idle pipeline)",
                "ours_idle": "HoldMusicMixer + HoldMusicLink, music never enabled",
                "ours": "HoldMusicMixer(enabled, shared_engine=True) + link, parked (checked)",
                "ours_per_frame": "HoldMusicMixer(enabled, shared_engine=False) + link",
                "baseline": "SoundfileMixer playing",
            },
            "late_call": (
                f"source queue (modelled from the capture log) dry > "
                f"{100 * MAX_DRY_FRACTION:g} % of the window; N passes with < "
                f"{100 * MAX_LATE_CALLS:g} % late calls"
            ),
            "gc": "one gc.collect() after start-up, then gc.freeze() for the window",
            "cpu": "time.process_time() over the window: every thread, Rust ones included",
        },
        "summary": summary,
        "latency": {
            c: {
                "added": added[c],
                "delay": {
                    "p50_ms": round(1000 * percentile(latency[c]["log"].delays_s, 50), 2),
                    "p99_ms": round(1000 * percentile(latency[c]["log"].delays_s, 99), 2),
                },
                "delays_ms": [round(1000 * d, 2) for d in latency[c]["log"].delays_s],
                "parked_at_push": latency[c]["log"].parked_at_push,
                "missed": latency[c]["log"].missed,
                "captures": latency[c]["captures"],
                "refused": latency[c]["refused"],
                "failed": latency[c]["failed"],
                "level_before_first_marker_dbfs": latency[c]["level_before_first_marker_dbfs"],
            }
            for c in LATENCY_CONFIGS
        },
        "same_n": {kind: [t.as_dict() for t in fixed[kind]] for kind in HELD_KINDS},
        "searches": {kind: s.as_dict() for kind, s in searches.items()},
    }
    write_json(JSON_PATH, document)
    _plot(latency, base_p50_s, cpu, searches, settings["fixed_n"], profile, PNG_PATH)
    progress(
        "livekit_path: added p99 ms: "
        + ", ".join(f"{c} {added[c].get('p99_ms')}" for c in LATENCY_CONFIGS if c != "no_mixer")
        + f" (baseline p50 {summary['livekit_latency_baseline_p50_ms']} ms)"
    )
    progress(
        f"livekit_path: CPU µs/call-s at N={settings['fixed_n']}: "
        + ", ".join(f"{k} {cpu[k]}" for k in HELD_KINDS)
        + f"; idle ratio {summary['livekit_idle_cpu_ratio']}"
    )
    progress(
        f"livekit_path: density ours {dens['ours']}, per-frame {dens['ours_per_frame']}, "
        f"SoundfileMixer {dens['baseline']}, ratio {summary['livekit_density_ratio']}"
    )
    progress(f"livekit_path: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
