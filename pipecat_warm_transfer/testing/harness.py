#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Run a Pipecat pipeline in the background for a test or the demo, and capture frames.

`PipelineRun` wraps the `PipelineWorker` + `WorkerRunner` boilerplate::

    async with PipelineRun([transport.input(), capture, transport.output()]) as run:
        await run.worker.queue_frame(OutputAudioRawFrame(...))
        ...
    # leaving the block ends the pipeline (EndFrame), or cancels it on an exception

`FrameCapture` is a pass-through processor that records the frames it sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from loguru import logger
from pipecat.frames.frames import EndFrame, Frame, StartFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner


class FrameCapture(FrameProcessor):
    """Pass every frame on, keeping those of the given types (with their loop time).

    Parameters:
        types: Frame types to keep (all when empty).
        limit: Most frames kept (the oldest are dropped beyond it).
    """

    def __init__(self, *types: type[Frame], limit: int = 100_000, **kwargs):
        """Create the capture.

        Args:
            *types: Frame types to keep (all when empty).
            limit: Most frames kept.
            **kwargs: Passed to `FrameProcessor`.
        """
        super().__init__(**kwargs)
        self._types = types or (Frame,)
        self._limit = limit
        self.frames: list[tuple[float, Frame]] = []
        self._changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Keep the frame if it is of a captured type, and pass it on.

        Args:
            frame: The frame.
            direction: Its direction.
        """
        await super().process_frame(frame, direction)
        if isinstance(frame, self._types):
            self.frames.append((asyncio.get_running_loop().time(), frame))
            if len(self.frames) > self._limit:
                del self.frames[0]
            self._changed.set()
        await self.push_frame(frame, direction)

    def of_type(self, frame_type: type[Frame]) -> list[Frame]:
        """The captured frames of one type, in order."""
        return [frame for _, frame in self.frames if isinstance(frame, frame_type)]

    async def wait_for(self, predicate: Callable[[Frame], bool]) -> Frame:
        """Wait until a captured frame matches (bound it with `asyncio.timeout`).

        Returns:
            The first matching frame.
        """
        seen = 0
        while True:
            for _, frame in self.frames[seen:]:
                if predicate(frame):
                    return frame
            seen = len(self.frames)
            self._changed.clear()
            await self._changed.wait()


class PipelineRun:
    """A pipeline running in the background on its own `WorkerRunner`.

    Parameters:
        processors: The pipeline's processors.
        params: Pipeline parameters (sample rates, ...).
        start_timeout: Seconds to wait for the pipeline to start.
        end_timeout: Seconds to wait for the pipeline to end before cancelling it.
    """

    def __init__(
        self,
        processors: Sequence[FrameProcessor],
        *,
        params: PipelineParams | None = None,
        start_timeout: float = 5.0,
        end_timeout: float = 10.0,
    ):
        """Create the run (started by `start()` or `async with`)."""
        self.pipeline = Pipeline(list(processors))
        self.worker = PipelineWorker(
            self.pipeline,
            params=params or PipelineParams(),
            idle_timeout_secs=None,
            enable_rtvi=False,
            enable_turn_tracking=False,
        )
        self.runner = WorkerRunner(handle_sigint=False)
        self._start_timeout = start_timeout
        self._end_timeout = end_timeout
        self._task: asyncio.Task | None = None
        self._started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _on_started(worker, frame: StartFrame):
            self._started.set()

    @property
    def done(self) -> bool:
        """Whether the runner has finished."""
        return self._task is not None and self._task.done()

    async def start(self) -> PipelineRun:
        """Start the runner and wait until the pipeline has started.

        Returns:
            The run.
        """
        await self.runner.add_workers(self.worker)
        self._task = asyncio.create_task(self.runner.run(), name="PipelineRun::runner")
        started = asyncio.create_task(self._started.wait())
        try:
            await asyncio.wait(
                {started, self._task}, timeout=self._start_timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            started.cancel()
            await asyncio.gather(started, return_exceptions=True)
        if not self._started.is_set():
            await self.cancel()
            raise TimeoutError("the pipeline did not start")
        return self

    async def end(self) -> None:
        """End the pipeline with an `EndFrame` and wait for the runner (cancel if stuck)."""
        if self._task is None or self._task.done():
            return
        await self.worker.queue_frame(EndFrame())
        await self._wait_or_cancel()

    async def cancel(self) -> None:
        """Cancel the pipeline (`CancelFrame`) and wait for the runner."""
        if self._task is None or self._task.done():
            return
        await self.worker.cancel(reason="PipelineRun.cancel")
        await self._wait_or_cancel()

    async def wait(self) -> None:
        """Wait for the runner to finish by itself (bound it with `asyncio.timeout`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _wait_or_cancel(self) -> None:
        assert self._task is not None
        done, _ = await asyncio.wait({self._task}, timeout=self._end_timeout)
        if not done:
            logger.warning("PipelineRun: the pipeline did not finish, cancelling the runner")
            await self.runner.cancel(reason="PipelineRun timeout")
            done, _ = await asyncio.wait({self._task}, timeout=self._end_timeout)
            if not done:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> PipelineRun:
        return await self.start()

    async def __aexit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            await self.end()
        else:
            await self.cancel()


async def watch_loop_stalls(
    stalls: list[tuple[float, float]], *, step: float, late: float, origin: float = 0.0
) -> None:
    """Record event-loop stalls until cancelled.

    Appends (start, end), in event-loop seconds from `origin`, of every sleep of `step`
    that woke more than `late` late. Silence while the loop itself stalled is the
    machine's doing, not the code under test's.
    """
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(step)
        if loop.time() - before - step > late:
            stalls.append((before - origin, loop.time() - origin))
