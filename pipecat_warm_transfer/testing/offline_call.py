#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A phone call into your own bot's pipeline, offline, with its transfers' leaks counted.

`OfflineCall` puts a scripted caller in a room of a `LiveKitEmulator`, gives your bot what
it would get on LiveKit (a `LiveKitSipBackend` talking to the emulator over loopback
HTTP, and a transport in the caller's room), runs the pipeline you built, and counts what
each transfer left behind (`LeakWatch`), when it says it is torn down and once the
pipeline has ended, before anything is cleaned up::

    async with LiveKitEmulator(humans={"+15550100": HumanScript(answer_after=0.5)}) as lk:
        call = OfflineCall(lk)
        transfer, pipeline = build_my_bot(call.backend(), call.transport)
        call.caller.say(0.5, tone(300, 1.0))
        await call.start(pipeline, transfer)
        result = await call.wait_result()
        assert await call.finish() == NO_LEAKS, call.leak_findings

The pytest fixture `offline_call` (`pipecat_warm_transfer.testing.pytest_plugin`) makes one
on the `livekit_emulator` fixture and finishes it after the test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import TransportParams

from pipecat_warm_transfer.backends.livekit import LiveKitSipBackend
from pipecat_warm_transfer.testing.harness import PipelineRun
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS, LeakWatch
from pipecat_warm_transfer.testing.livekit_emulator import DEFAULT_TRUNK_ID, LiveKitEmulator
from pipecat_warm_transfer.testing.livekit_sip_line import answered_sip_call
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport
from pipecat_warm_transfer.testing.scripted_party import ScriptedParty
from pipecat_warm_transfer.types import TransferResult
from pipecat_warm_transfer.warm_transfer import WarmTransfer

#: Longest `finish()` waits, once the pipeline has ended, for a teardown under way.
TEARDOWN_WAIT_SECS = 10.0


class OfflineCall:
    """One call from a scripted phone caller into your bot, on a `LiveKitEmulator`.

    Script the caller (`caller.say`, `caller.dtmf`, `caller.hang_up`; seconds from when it
    joins), build your bot with `backend()` and `transport()`, then `start()` it; read
    `events`, `results` and `caller.recording()`; `finish()` ends the call and returns
    the leak counts (all zero: `NO_LEAKS`).

    Parameters:
        emulator: The running emulator (its rooms are the call's rooms; its `humans` are
            the phones a transfer reaches).
        room: The caller's room (pass it to your `WarmTransfer` as `caller_room`).
        caller_identity: The caller's participant identity.
        bot_identity: Your bot's identity in the caller's room.
        sample_rate: Rate the caller and the bot's transport send and record at.

    Attributes:
        caller: The scripted caller (a SIP participant with LiveKit's `sip.callID` and
            `sip.callStatus = active`, so `refer` can transfer its call; it joins in
            `start()`).
        events: Every transfer event, with `t` in seconds from `start()`.
        leaks: What `finish()` counted, by kind (None before).
        leak_findings: Each leftover counted, with where it was seen.
    """

    def __init__(
        self,
        emulator: LiveKitEmulator,
        *,
        room: str = "caller-room",
        caller_identity: str = "caller",
        bot_identity: str = "transfer-bot",
        sample_rate: int = 16000,
    ):
        """Describe the call (nothing joins until `start()`)."""
        self.emulator = emulator
        self.room = room
        self.caller_identity = caller_identity
        self.bot_identity = bot_identity
        self.sample_rate = sample_rate
        self.caller = ScriptedParty(emulator.rooms, room, caller_identity, sample_rate, kind="sip")
        self.events: list[dict] = []
        self.leaks: dict[str, int] | None = None
        self.leak_findings: list[str] = []
        self.transfer: WarmTransfer | None = None
        self.run: PipelineRun | None = None
        self._transport: MemoryTransport | None = None
        self._backends: list[LiveKitSipBackend] = []
        self._leak_watch: LeakWatch | None = None
        self._baseline: set[asyncio.Task] = set()
        self._t0 = 0.0
        self._changed = asyncio.Event()

    def __repr__(self) -> str:
        return f"OfflineCall({self.room!r} on {self.emulator!r})"

    # What your bot is built with

    def backend(self, **kwargs: Any) -> LiveKitSipBackend:
        """A `LiveKitSipBackend` reaching the emulator's phones (closed by `finish()`).

        Args:
            **kwargs: `LiveKitSipBackend` arguments over the defaults: the emulator's
                URL, key, secret and (first) trunk, its transport factory (consult rooms are its
                memory rooms), this call's sample rate, and `hang_up_moved_on_close`
                (a moved human is hung up when the call is finished).

        Returns:
            The backend.
        """
        settings: dict[str, Any] = dict(
            trunk_id=next(iter(self.emulator.trunks), DEFAULT_TRUNK_ID),
            transport_factory=self.emulator.transport_factory(),
            sample_rate=self.sample_rate,
            hang_up_moved_on_close=True,
        )
        settings.update(kwargs)
        backend = LiveKitSipBackend(
            self.emulator.url, self.emulator.api_key, self.emulator.api_secret, **settings
        )
        self._backends.append(backend)
        return backend

    def transport(self, params: TransportParams | None = None) -> MemoryTransport:
        """Your bot's transport in the caller's room, in place of `LiveKitTransport`.

        It has `LiveKitTransport`'s events (`on_first_participant_joined`,
        `on_participant_left`, ...) and plays out in real time, as LiveKit does.

        Args:
            params: The params you give `LiveKitTransport` (`LiveKitParams` or any
                `TransportParams`, with `audio_out_mixer=transfer.hold_mixer`); None:
                audio in and out at the call's rate, no mixer.

        Returns:
            The transport (one per call).
        """
        if self._transport is not None:
            raise RuntimeError("the call already has the bot's transport")
        if params is None:
            params = TransportParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=self.sample_rate,
                audio_out_sample_rate=self.sample_rate,
            )
        self._transport = MemoryTransport(
            self.emulator.rooms, self.room, self.bot_identity, params=params
        )
        return self._transport

    # The call

    @property
    def results(self) -> list[TransferResult]:
        """The transfer results so far, oldest first."""
        return self.transfer.results if self.transfer is not None else []

    async def start(
        self,
        pipeline: Pipeline | Sequence[FrameProcessor],
        transfer: WarmTransfer,
        *,
        params: PipelineParams | None = None,
    ) -> PipelineRun:
        """Run the bot's pipeline, then let the caller join the room.

        Args:
            pipeline: Your bot's pipeline (or its processors), with `transfer`'s
                processors and the transport from `transport()`.
            transfer: The bot's `WarmTransfer` (its events are recorded and its
                leftovers counted).
            params: Pipeline parameters (default: the call's sample rate).

        Returns:
            The running pipeline (`run.worker.queue_frame(...)` reaches it).
        """
        if self.run is not None:
            raise RuntimeError("the call has already started")
        loop = asyncio.get_running_loop()
        self._baseline = set(asyncio.all_tasks())
        self._t0 = loop.time()
        self.transfer = transfer
        self._leak_watch = LeakWatch(
            self.emulator.rooms,
            caller_room=self.room,
            caller_identity=self.caller_identity,
            bot_identity=self.bot_identity,
            emulator=self.emulator,
        )

        @transfer.event_handler("on_transfer_event")
        async def _on_event(_transfer, event: dict):
            stamped = {"t": round(loop.time() - self._t0, 3), **event}
            self.events.append(stamped)
            self._leak_watch.on_event(stamped)
            self._changed.set()

        @transfer.event_handler("on_transfer_result")
        async def _on_result(_transfer, _result):
            self._changed.set()

        processors = [pipeline] if isinstance(pipeline, Pipeline) else list(pipeline)
        self.run = PipelineRun(
            processors,
            params=params
            or PipelineParams(
                audio_in_sample_rate=self.sample_rate, audio_out_sample_rate=self.sample_rate
            ),
        )
        self._leak_watch.own_tasks = (f"{self.run.worker}::",)
        await self.run.start()
        # An answered inbound call, as LiveKit's SIP service joins it.
        await self.caller.start(
            self.emulator.rooms.connect(
                self.room, self.caller_identity, "sip", attributes=answered_sip_call()
            )
        )
        return self.run

    async def wait_for(self, event: str, timeout: float = 20.0) -> dict:
        """Wait for a transfer event (one already seen counts).

        Returns:
            The first event of that name.
        """
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                found = next((e for e in self.events if e["event"] == event), None)
                if found is not None:
                    return found
                await self._changed.wait()

    async def wait_result(self, count: int = 1, timeout: float = 20.0) -> TransferResult:
        """Wait until transfer number `count` settled (connected, or failed and told).

        Returns:
            Its result.
        """
        async with asyncio.timeout(timeout):
            while self.transfer is None or len(self.transfer.handles) < count:
                self._changed.clear()
                await self._changed.wait()
            return await self.transfer.handles[count - 1]

    async def finish(self) -> dict[str, int]:
        """End the pipeline, count what each transfer left, then clean up (once).

        The count is taken at every `teardown_done` and once the pipeline has ended,
        before anything else is closed (`LeakWatch`), then after the clean-up: rooms,
        participants, ringing dials, connections, tasks and missing teardowns. The caller
        and a human moved to them may stay until the pipeline ends.

        Returns:
            The leaks by kind (`NO_LEAKS` when nothing was left); `leak_findings` names each.
        """
        if self.leaks is not None:
            return self.leaks
        watch = self._leak_watch
        if self.run is not None:
            await self.run.end()
            for _ in range(3):  # event handlers run in tasks of their own: let them look
                await asyncio.sleep(0)
            for _ in range(int(TEARDOWN_WAIT_SECS / 0.01)):
                if watch is None or not watch.teardowns_pending:
                    break
                await asyncio.sleep(0.01)
        if watch is not None:
            watch.at_end()
        for backend in self._backends:
            await backend.close()
        await self.caller.close()
        await asyncio.sleep(0)
        leftover = await self.emulator.settle()
        room = self.emulator.rooms.get_room(self.room)
        if room is not None and not room.participants:
            # The caller's room, empty now: LiveKit closes it by itself (empty_timeout).
            leftover["rooms"] -= 1
            self.emulator.rooms.delete_room(self.room)
        current = asyncio.current_task()
        leftover["tasks"] = len(
            [
                task
                for task in asyncio.all_tasks()
                if task not in self._baseline and task is not current and not task.done()
            ]
        )
        counted = watch.counts() if watch is not None else dict(NO_LEAKS)
        self.leaks = {kind: n + leftover.get(kind, 0) for kind, n in counted.items()}
        self.leak_findings = watch.describe() if watch is not None else []
        self.leak_findings += [f"after clean-up: {k} {n}" for k, n in leftover.items() if n]
        return self.leaks
