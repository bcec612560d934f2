#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""One clocked task that plays the hold music of every held call of the process.

A held call's output transport otherwise runs Pipecat's per-call mixer loop: every
40 ms a frame object, the bot-speech bookkeeping, a timed write and a push down the
pipeline, ~50 µs of CPU per frame of which the mixing itself is ~0.6 µs. While a
`HoldMusicMixer` is in its steady held state (music at full level, nothing to mix in) it
*parks* its transport's audio task inside `mix()` and hands the call to this engine,
which, once per frame period, gathers every parked call's next frame from the shared
loop in one numpy fancy-index and writes each to its transport's sink. The mixer takes
the call back (and the transport its audio task) the moment anything else has to be
played: bot speech, a fade, a settings change, the pipeline's end.

The engine holds per-call state only while a call is parked, and only in this process;
it keeps no registry of calls beyond that and runs no task while nothing is parked.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from loguru import logger
from numpy.lib.stride_tricks import sliding_window_view

from pipecat_warm_transfer.audio.music_source import MusicLoop

#: A tick that starts this much after its due time counts as late.
LATE_TICK_SECS = 0.020
#: Behind by more than this, the engine skips ahead instead of bursting to catch up.
MAX_TICK_LAG_SECS = 0.2
#: Channels written between two yields to the event loop (other calls keep running).
DEFAULT_YIELD_EVERY = 512


class HoldSink(Protocol):
    """Where the engine writes a parked call's audio: its output transport.

    `write` takes mono 16-bit PCM at the loop's rate and returns whether it was taken,
    or an awaitable of that (the engine does not wait for it; a call whose previous
    write is still pending skips a tick without losing music).
    """

    def write(self, audio: bytes) -> bool | Awaitable[bool]:
        """Send one frame of audio to the call's listener."""
        ...


@dataclass(eq=False)
class HoldChannel:
    """One parked call in the engine (returned by `SharedHoldEngine.join`)."""

    sink: HoldSink
    on_dropped: Callable[[HoldChannel], None] | None = None
    group: _Group | None = None
    index: int = -1
    pending: asyncio.Future | None = None

    @property
    def active(self) -> bool:
        """Whether the engine is playing this channel."""
        return self.group is not None


@dataclass(eq=False)
class _Group:
    """Channels sharing one loop and frame size: one gather per tick serves them all."""

    loop: MusicLoop
    frame_samples: int
    period: float
    next_due: float
    windows: np.ndarray = field(repr=False)
    channels: list[HoldChannel | None] = field(default_factory=list)
    positions: np.ndarray = field(default_factory=lambda: np.zeros(16, dtype=np.intp))
    ticking: bool = False  # a tick is under way: removals leave a hole, compacted after
    holes: int = 0

    @property
    def size(self) -> int:
        return len(self.channels) - self.holes

    def add(self, channel: HoldChannel, position: int) -> None:
        n = len(self.channels)
        if n == len(self.positions):
            self.positions = np.concatenate([self.positions, np.zeros(n, dtype=np.intp)])
        self.positions[n] = position
        channel.group, channel.index = self, n
        self.channels.append(channel)

    def remove(self, channel: HoldChannel) -> int:
        """Take `channel` out; return its loop position.

        Outside a tick the last channel takes its place; during one (the engine yields
        between chunks) the place is left empty, so no channel misses the tick.
        """
        i, last = channel.index, len(self.channels) - 1
        position = int(self.positions[i])
        channel.group, channel.index = None, -1
        if self.ticking:
            self.channels[i] = None
            self.holes += 1
            return position
        if i != last:
            moved = self.channels[last]
            self.channels[i], self.positions[i] = moved, self.positions[last]
            moved.index = i
        self.channels.pop()
        return position

    def compact(self) -> None:
        """Close the holes left by removals during a tick."""
        if not self.holes:
            return
        keep = [i for i, c in enumerate(self.channels) if c is not None]
        self.channels = [self.channels[i] for i in keep]
        self.positions[: len(keep)] = self.positions[keep]
        for i, channel in enumerate(self.channels):
            channel.index = i
        self.holes = 0


@dataclass
class HoldEngineStats:
    """What the engine did so far (for benchmarks and health checks)."""

    channels: int = 0
    ticks: int = 0
    late_ticks: int = 0
    max_lateness_ms: float = 0.0
    max_tick_work_ms: float = 0.0
    frames_written: int = 0
    writes_deferred: int = 0
    writes_failed: int = 0


class SharedHoldEngine:
    """Plays every parked call's hold music from one clocked task, one gather a tick.

    Use `SharedHoldEngine.for_running_loop()` (one engine per event loop, i.e. per bot
    process) unless a test wants its own. The task starts when the first call parks and
    ends when the last one leaves.
    """

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedHoldEngine] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, *, yield_every: int = DEFAULT_YIELD_EVERY):
        """Initialize an engine with no calls.

        Args:
            yield_every: Channels written between two yields to the event loop.
        """
        if yield_every < 1:
            raise ValueError(f"yield_every: expected a positive count, got {yield_every!r}")
        self._yield_every = yield_every
        self._groups: dict[tuple[int, int], _Group] = {}
        self._task: asyncio.Task | None = None
        self._wakeup: asyncio.Event | None = None
        self._stats = HoldEngineStats()
        self._warned: set[str] = set()

    @classmethod
    def for_running_loop(cls) -> SharedHoldEngine:
        """The engine of the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        engine = cls._per_loop.get(loop)
        if engine is None:
            engine = cls._per_loop[loop] = cls()
        return engine

    @property
    def channels(self) -> int:
        """Number of calls the engine is playing."""
        return sum(g.size for g in self._groups.values())

    @property
    def running(self) -> bool:
        """Whether the engine's task is alive."""
        return self._task is not None and not self._task.done()

    def stats(self) -> HoldEngineStats:
        """A snapshot of the engine's counters."""
        stats = HoldEngineStats(**vars(self._stats))
        stats.channels = self.channels
        return stats

    def lead(self, loop: MusicLoop, frame_samples: int) -> int:
        """Samples a call about to `join` writes itself first, to reach the next tick.

        Calls with the same loop and frame size share one tick grid; a call that joins
        between two ticks first plays, through its own transport, the audio up to the
        grid's next tick, so its stream has neither a gap nor an overlap. 0 when the
        call would start a new grid (the engine writes at once).
        """
        group = self._groups.get((id(loop), frame_samples))
        if group is None or group.loop is not loop or not group.size:
            return 0
        lead = int(round((group.next_due - asyncio.get_running_loop().time()) * loop.sample_rate))
        return min(max(0, lead), loop.pad)

    def join(
        self,
        loop: MusicLoop,
        frame_samples: int,
        position: int,
        sink: HoldSink,
        *,
        on_dropped: Callable[[HoldChannel], None] | None = None,
    ) -> HoldChannel:
        """Park a call: from the next tick the engine plays `loop` from `position`.

        Args:
            loop: The shared music loop (at the transport's rate and level).
            frame_samples: Samples per written frame (the transport's chunk).
            position: The call's loop position (after any `lead` it wrote itself).
            sink: Where the call's audio goes.
            on_dropped: Called if the channel's sink fails; the owner should `leave`.

        Returns:
            The channel, to `leave` with.
        """
        if not 0 < frame_samples <= loop.pad:
            raise ValueError(f"frame_samples: {frame_samples} is not within 1..{loop.pad}")
        aio_loop = asyncio.get_running_loop()
        key = (id(loop), frame_samples)
        group = self._groups.get(key)
        if group is None or group.loop is not loop:
            group = _Group(
                loop=loop,
                frame_samples=frame_samples,
                period=frame_samples / loop.sample_rate,
                next_due=aio_loop.time(),
                windows=sliding_window_view(loop.samples, frame_samples),
            )
            self._groups[key] = group
        elif not group.size:
            group.next_due = aio_loop.time()
        channel = HoldChannel(sink=sink, on_dropped=on_dropped)
        group.add(channel, position % loop.length)
        self._ensure_running(aio_loop)
        return channel

    def leave(self, channel: HoldChannel) -> int | None:
        """Take a call back; returns its loop position (None if it was not playing)."""
        group = channel.group
        if group is None:
            return None
        position = group.remove(channel)
        if not group.size and not group.ticking:
            self._groups.pop((id(group.loop), group.frame_samples), None)
        if not self._groups and self._task is not None and self._task is not _current_task():
            self._task.cancel()
            self._task = None
        return position

    def _ensure_running(self, aio_loop: asyncio.AbstractEventLoop) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
        if self._task is None or self._task.done():
            self._wakeup = asyncio.Event()
            self._task = aio_loop.create_task(self._run(), name="warm-transfer-hold-engine")

    async def _run(self) -> None:
        aio_loop = asyncio.get_running_loop()
        try:
            while self._groups:
                due = min(g.next_due for g in self._groups.values())
                delay = due - aio_loop.time()
                if delay > 0:
                    self._wakeup.clear()
                    try:
                        # A new grid (due now) wakes the engine early.
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                        continue
                    except TimeoutError:
                        pass
                now = aio_loop.time()
                for group in [g for g in self._groups.values() if g.next_due <= now]:
                    await self._tick(group, aio_loop)
        finally:
            if self._task is _current_task():
                self._task = None

    async def _tick(self, group: _Group, aio_loop: asyncio.AbstractEventLoop) -> None:
        t0 = time.perf_counter()
        lateness = aio_loop.time() - group.next_due
        stats = self._stats
        stats.ticks += 1
        if lateness > LATE_TICK_SECS:
            stats.late_ticks += 1
        stats.max_lateness_ms = max(stats.max_lateness_ms, 1000 * lateness)
        group.next_due += group.period
        if lateness > MAX_TICK_LAG_SECS:
            group.next_due = aio_loop.time() + group.period

        n, length = group.frame_samples, group.loop.length
        start = 0
        group.ticking = True
        try:
            while start < len(group.channels):
                end = min(start + self._yield_every, len(group.channels))
                positions = group.positions[start:end]
                frames = group.windows[positions]  # every channel's next frame: one gather
                positions += n
                positions %= length
                for channel, row in zip(group.channels[start:end], frames, strict=True):
                    if channel is not None:
                        self._write(channel, row)
                start = end
                if start < len(group.channels):
                    await asyncio.sleep(0)  # let the rest of the process run
        finally:
            group.ticking = False
            group.compact()
            if not group.size:
                self._groups.pop((id(group.loop), group.frame_samples), None)
        stats.max_tick_work_ms = max(stats.max_tick_work_ms, 1000 * (time.perf_counter() - t0))

    def _write(self, channel: HoldChannel, row: np.ndarray) -> None:
        pending = channel.pending
        if pending is not None:
            if not pending.done():
                # The sink has not taken the last frame yet: hold this one back (the
                # music resumes exactly where it stopped, no sample is lost).
                group = channel.group
                group.positions[channel.index] -= group.frame_samples
                group.positions[channel.index] %= group.loop.length
                self._stats.writes_deferred += 1
                return
            channel.pending = None
            if not pending.cancelled() and pending.exception() is not None:
                self._drop(channel, pending.exception())
                return
        try:
            result = channel.sink.write(row.tobytes())
        except Exception as e:  # a sink that fails loses its call, not the engine
            self._drop(channel, e)
            return
        if not isinstance(result, bool) and result is not None:
            channel.pending = asyncio.ensure_future(result)
            channel.pending.add_done_callback(_retrieve)
        elif result is False:
            self._stats.writes_failed += 1
        self._stats.frames_written += 1

    def _drop(self, channel: HoldChannel, error: BaseException) -> None:
        key = type(error).__name__
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(f"hold engine: a call's audio sink failed ({key}); it plays on its own")
        self._stats.writes_failed += 1
        if channel.on_dropped is not None:
            channel.on_dropped(channel)  # the owner takes the call back (and its position)
        self.leave(channel)

    def __str__(self) -> str:
        return f"SharedHoldEngine({self.channels} calls)"


def _retrieve(future: asyncio.Future) -> None:
    """Mark a sink write's outcome as seen (its channel may have left meanwhile)."""
    if not future.cancelled():
        future.exception()


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
