#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A whole call, offline, with leak accounting after teardown.

A scripted caller, the bot's pipeline with a `WarmTransfer`, and a backend with scripted
humans.
Tests, the demo and the benchmarks drive transfers through this, so each of them runs the
real processors, the real mixer and real Pipecat workers on in-memory rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import EndFrame, TTSSpeakFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_warm_transfer.audio.metrics import windowed_rms_dbfs
from pipecat_warm_transfer.consult_leg import TransferBackend, TransferTarget
from pipecat_warm_transfer.params import BriefingParams, WarmTransferParams
from pipecat_warm_transfer.testing.harness import watch_loop_stalls
from pipecat_warm_transfer.testing.leak_check import LeakWatch
from pipecat_warm_transfer.testing.livekit_sip_line import answered_sip_call
from pipecat_warm_transfer.testing.livekit_sip_transfer import ReferScript
from pipecat_warm_transfer.testing.memory_backend import InMemoryBackend
from pipecat_warm_transfer.testing.memory_room import MemoryRoomServer
from pipecat_warm_transfer.testing.memory_transport import MemoryTransport
from pipecat_warm_transfer.testing.scripted_party import HumanScript, ScriptedParty
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService
from pipecat_warm_transfer.types import TransferResult
from pipecat_warm_transfer.warm_transfer import WarmTransfer

CALLER_ROOM = "caller-room"
CALLER_IDENTITY = "caller"
BOT_IDENTITY = "transfer-bot"
#: Caller outputs a harness can run: Pipecat's on the memory room, or Pipecat's real
#: `LiveKitTransport` output writing into a real livekit-rtc `AudioSource`.
CALLER_OUTPUTS = ("memory", "livekit")
#: Audio still queued in LiveKit's source below which the caller has heard it all (the
#: mixer keeps up to 35 ms of music queued while it plays).
PLAYED_OUT_SECS = 0.05
#: Longest the harness waits, after the pipeline ended, for a teardown under way.
TEARDOWN_WAIT_SECS = 10.0
#: An event-loop stall longer than this is recorded (`CallReport.loop_stalls`).
LOOP_STALL_SECS = 0.06

#: Pitches of the scripted voices, so a test can tell speakers apart by frequency.
BOT_PITCH_HZ = 220.0
BRIEFING_PITCH_HZ = 330.0

#: A window of the human's recording above this RMS level is the bot's first words (and,
#: in a scripted greeting, speech: the briefing's own threshold for the greeting).
FIRST_WORDS_DBFS = -45.0
#: Window length for `FIRST_WORDS_DBFS`.
FIRST_WORDS_WINDOW_MS = 20.0


@dataclass
class CallReport:
    """What a finished call left behind.

    Parameters:
        events: Timeline events, `t` in seconds from sample 0 of the recordings.
        results: Transfer results, oldest first.
        caller_audio: What the caller heard (int16 mono at `sample_rate`).
        human_audio: What the (last) human heard.
        leaks: Rooms, participants (ringing dials too), connections, asyncio tasks and
            missing teardowns: what each transfer left at its `teardown_done`, what was
            left when the pipeline ended, and what the harness's clean-up left, summed.
        sample_rate: Recording rate.
    """

    events: list[dict]
    results: list[TransferResult]
    caller_audio: Any
    human_audio: Any
    leaks: dict[str, int]
    sample_rate: int
    spoken_to_caller: list[str] = field(default_factory=list)
    #: Times the bot's stream to the caller paused over 0.1 s (the mixer writes nothing
    #: while no music plays, so a pause alone says nothing; see `loop_stalls`).
    caller_stream_gaps: int = 0
    #: (start, end) in seconds of every event-loop stall over `LOOP_STALL_SECS`.
    loop_stalls: list[tuple[float, float]] = field(default_factory=list)
    #: For each event, how much later the caller hears that moment (audio LiveKit's
    #: source still held: Pipecat reports speech written, not heard; 0 in memory).
    event_lags: list[float] = field(default_factory=list)
    #: The caller's output: `memory` or `livekit` (Pipecat's real LiveKit output).
    caller_output: str = "memory"
    #: Captures LiveKit's source refused (frames Pipecat dropped silently).
    refused_captures: int = 0
    spoken_to_human: list[str] = field(default_factory=list)
    #: The LiveKit emulator's dials (`room`, `outcome`, `statuses`, `sip_status`,
    #: `ringing_secs`, `answered_at`: seconds from sample 0 when the call went active,
    #: None when it never did), oldest first.
    dials: list[dict] = field(default_factory=list)
    #: Dials the emulator still had ringing after teardown (a phone nobody hung up).
    ringing_dials: int = 0
    #: Whether the (last) human hung up by themselves (their recording ends there).
    human_hung_up_first: bool = False
    #: The emulator's scripted faults that took effect: (kind, method), oldest first.
    faults_fired: list[tuple[str, str]] = field(default_factory=list)
    #: Each leftover counted in `leaks`, with where it was seen.
    leak_findings: list[str] = field(default_factory=list)
    #: Each REFER of the caller's call: `to` (the number or URI), `outcome` (the
    #: emulator's `SipTransfer.outcome`), `t` (when LiveKit took it, s from sample 0) and
    #: `ringback` (the caller hears LiveKit's ringing tone, not the room, from `t`). In
    #: memory only the request is kept (`outcome` and `t` None, no ringback).
    referrals: list[dict] = field(default_factory=list)
    #: Why the caller's connection closed (None: still open when the call ended).
    caller_left_reason: str | None = None

    def event_names(self) -> list[str]:
        """Event names in order."""
        return [e["event"] for e in self.events]

    def first(self, name: str) -> dict | None:
        """The first event of that name."""
        return next((e for e in self.events if e["event"] == name), None)

    def answered_at(self) -> float | None:
        """Seconds from sample 0 when the (last) human picked up; None if nobody did.

        The emulator's dial going `active` (the moment the scripted human answers and
        starts their greeting); without the emulator, the `human_answered` event (the
        backend's report of it, a little later).
        """
        for dial in reversed(self.dials):
            if dial.get("answered_at") is not None:
                return dial["answered_at"]
        answers = [e["t"] for e in self.events if e["event"] == "human_answered"]
        return answers[-1] if answers else None

    def human_waits(self, greeting: bytes | None = None) -> dict[str, float | None]:
        """How long the (last) human waited, after answering, to hear the bot.

        Measured on what the human heard (`human_audio`): the first words are the first
        `FIRST_WORDS_WINDOW_MS` window after the answer whose RMS is above
        `FIRST_WORDS_DBFS`. The greeting ends where its speech ends: the end of the
        clip's last window above that level (trailing quiet in the clip is not speech).

        Args:
            greeting: The human's scripted greeting (mono int16 at `sample_rate`), None
                when they said nothing.

        Returns:
            `answered_at_s`, `greeting_end_s`, `first_words_s` (seconds from sample 0),
            `answer_to_first_words_s` and `greeting_end_to_first_words_s`; each None
            when it does not apply (nobody answered, no greeting, the bot never spoke).
        """
        answered = self.answered_at()
        greeting_end = None
        if answered is not None and greeting:
            speech = _loud_windows(greeting, self.sample_rate)
            if speech.size:
                greeting_end = answered + float(speech[-1] + 1) * FIRST_WORDS_WINDOW_MS / 1000
        first_words = None
        if answered is not None and self.human_audio is not None:
            start = int(round(answered * self.sample_rate))
            loud = _loud_windows(self.human_audio[start:], self.sample_rate)
            if loud.size:
                first_words = (
                    start / self.sample_rate + float(loud[0]) * FIRST_WORDS_WINDOW_MS / 1000
                )

        def wait(since: float | None) -> float | None:
            return None if since is None or first_words is None else round(first_words - since, 3)

        def at(t: float | None) -> float | None:
            return None if t is None else round(t, 3)

        return {
            "answered_at_s": at(answered),
            "greeting_end_s": at(greeting_end),
            "first_words_s": at(first_words),
            "answer_to_first_words_s": wait(answered),
            "greeting_end_to_first_words_s": wait(greeting_end),
        }


def fast_params(**overrides) -> WarmTransferParams:
    """Transfer settings for quick offline runs (short lines and timeouts)."""
    values: dict[str, Any] = dict(
        hold_message="Please hold.",
        hold_reminder=None,
        hold_reminder_every=None,
        ring_timeout=3.0,
        briefing_timeout=6.0,
        summary_timeout=1.0,
        connected_message=None,
    )
    values.update(overrides)
    return WarmTransferParams(**values)


class CallHarness:
    """One offline call with a warm transfer, as an async context manager.

    Example::

        async with CallHarness(humans={"+15550100": HumanScript(...)}) as call:
            await call.transfer.start_transfer("billing question")
            await call.wait_for("connected")
        report = call.report
    """

    def __init__(
        self,
        *,
        humans: dict[str, HumanScript] | None = None,
        number: str = "+15550100",
        params: WarmTransferParams | None = None,
        briefing: BriefingParams | None = None,
        supports_move: bool = True,
        sample_rate: int = 16000,
        caller_script: Callable[[ScriptedParty], None] | None = None,
        bot_processors: Callable[[WarmTransfer], list[FrameProcessor]] | None = None,
        backend_factory: Callable[[MemoryRoomServer, float], TransferBackend] | None = None,
        transfer_kwargs: dict | None = None,
        livekit: bool = False,
        record_limit_secs: float = 600.0,
        backend_kwargs: dict | None = None,
        caller_output: str = "memory",
        check_leaks: bool = True,
        target=None,
        caller_sip: bool = False,
        refer: ReferScript | None = None,
    ):
        """Describe the call (nothing runs until `async with`).

        Args:
            humans: Scripted humans by number (for the default in-memory backend).
            number: The number the transfer dials.
            target: Who the transfer dials, when not just `number`: a `TransferTarget`,
                or a `RingGroup` of several humans (each scripted in `humans`).
            params: Caller-side transfer settings (default: `fast_params()`).
            briefing: Briefing settings (default: scripted tone TTS, DTMF decisions).
            supports_move: Whether the in-memory server supports `move`.
            sample_rate: Rate of every transport and recording.
            caller_script: Adds the caller's timed actions (`say`, `dtmf`, `hang_up`).
            bot_processors: Builds the bot's processors between the gate and the caller
                output, given the transfer (default: a scripted tone TTS).
            backend_factory: Builds another backend (e.g. LiveKit against the emulator).
            transfer_kwargs: Extra `WarmTransfer` arguments (context, summary_llm, ...).
            livekit: Reach the humans through `LiveKitSipBackend` and the real `livekit-api`
                client, against a `LiveKitEmulator` on loopback (open-source mode, without
                MoveParticipant, when `supports_move` is False).
            record_limit_secs: How much of what the caller hears is kept (soaks keep little).
            backend_kwargs: Extra `LiveKitSipBackend` arguments when `livekit` is set
                (e.g. a short `dial_grace`).
            caller_output: `memory`, or `livekit`: the bot speaks to the caller through
                Pipecat's real `LiveKitTransport` output and a real livekit-rtc
                `AudioSource` (`OfflineLiveKitTransport`); what the source plays out is
                what the caller hears.
            check_leaks: Leaving the `async with` block raises `AssertionError` naming
                every leftover (see `CallReport.leaks`), so no whole-call test can
                forget to look. Off where the caller judges leaks itself (the fault suite).
            caller_sip: The caller joins as LiveKit's SIP service joins an answered
                inbound call (kind `sip`, `sip.callID`, `sip.callStatus = active`), so
                `refer` can transfer their call; otherwise as a WebRTC participant.
            refer: What the caller's carrier does with a REFER (either backend; default:
                it transfers the call).
        """
        if caller_output not in CALLER_OUTPUTS:
            raise ValueError(f"caller_output: expected one of {CALLER_OUTPUTS}")
        self._humans = humans or {}
        self._number = number
        self._target = target
        self._params = params or fast_params()
        self._briefing = briefing or BriefingParams(
            tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ, sample_rate=sample_rate)
        )
        self._supports_move = supports_move
        self._rate = sample_rate
        self._caller_script = caller_script
        self._bot_processors = bot_processors
        self._backend_factory = backend_factory
        self._transfer_kwargs = transfer_kwargs or {}
        self._livekit = livekit
        self._record_limit_secs = record_limit_secs
        self._backend_kwargs = dict(backend_kwargs or {})
        self._caller_output = caller_output
        self._check_leaks = check_leaks
        self._caller_sip = caller_sip
        self._refer = refer
        self.caller_livekit = None
        self._stalls: list[tuple[float, float]] = []
        self.emulator = None
        self.events: list[dict] = []
        self.event_lags: list[float] = []
        self.report: CallReport | None = None
        self._event_waiters: list[tuple[str, asyncio.Future]] = []

    async def __aenter__(self) -> CallHarness:
        loop = asyncio.get_running_loop()
        self._baseline_tasks = set(asyncio.all_tasks())
        self.server = MemoryRoomServer()
        self.t0 = loop.time()
        if self._livekit:
            self.backend = await self._livekit_backend()
        elif self._backend_factory:
            self.backend = self._backend_factory(self.server, self.t0)
        else:
            self.backend = InMemoryBackend(
                self.server,
                self._humans,
                supports_move=self._supports_move,
                sample_rate=self._rate,
                t0=self.t0,
                refer=self._refer,
            )
        self.transfer = WarmTransfer(
            backend=self.backend,
            target=self._target or TransferTarget(self._number),
            briefing=self._briefing,
            params=self._params,
            caller_room=CALLER_ROOM,
            bot_identity=BOT_IDENTITY,
            **self._transfer_kwargs,
        )

        self.leak_watch = LeakWatch(
            self.server,
            caller_room=CALLER_ROOM,
            caller_identity=CALLER_IDENTITY,
            bot_identity=BOT_IDENTITY,
            emulator=self.emulator,
        )

        @self.transfer.event_handler("on_transfer_event")
        async def _on_event(_transfer, event: dict):
            stamped = {"t": round(loop.time() - self.t0, 3), **event}
            self.events.append(stamped)
            self.leak_watch.on_event(stamped)
            self.event_lags.append(round(self._queued_secs(), 3))
            for name, future in list(self._event_waiters):
                if name == event["event"] and not future.done():
                    future.set_result(stamped)

        self._state_changed = asyncio.Event()

        @self.transfer.event_handler("on_state_changed")
        async def _on_state(_transfer, _state):
            self._state_changed.set()

        livekit_output = self._caller_output == "livekit"
        self.caller_transport = MemoryTransport(
            self.server,
            CALLER_ROOM,
            BOT_IDENTITY,
            params=TransportParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=self._rate,
                audio_out_sample_rate=self._rate,
                audio_out_mixer=None if livekit_output else self.transfer.hold_mixer,
            ),
        )
        output = self.caller_transport.output()
        if livekit_output:
            output = self._livekit_caller_output()
        self._stall_probe = asyncio.create_task(
            watch_loop_stalls(self._stalls, step=0.01, late=LOOP_STALL_SECS, origin=self.t0),
            name="call-harness-stalls",
        )
        self.transfer.watch_caller_transport(self.caller_transport, CALLER_IDENTITY)
        self.bot_tts = None
        if self._bot_processors:
            middle = self._bot_processors(self.transfer)
        else:
            self.bot_tts = ScriptedToneTTSService(pitch_hz=BOT_PITCH_HZ, sample_rate=self._rate)
            middle = [self.bot_tts]
        pipeline = Pipeline(
            [
                self.caller_transport.input(),
                self.transfer.caller_gate(),
                *middle,
                self.transfer.caller_output(),
                output,
            ]
        )
        self.worker = PipelineWorker(
            pipeline,
            params=PipelineParams(
                audio_in_sample_rate=self._rate, audio_out_sample_rate=self._rate
            ),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        started = asyncio.Event()

        @self.worker.event_handler("on_pipeline_started")
        async def _on_started(_worker, _frame):
            started.set()

        self.leak_watch.own_tasks = (f"{self.worker}::",)
        self.runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
        await self.runner.add_workers(self.worker)
        self._run_task = asyncio.create_task(self.runner.run(), name="call-harness-runner")
        await asyncio.wait_for(started.wait(), 10.0)

        self.caller = ScriptedParty(
            self.server,
            CALLER_ROOM,
            CALLER_IDENTITY,
            self._rate,
            self.t0,
            record_limit_secs=self._record_limit_secs,
        )
        if self._caller_script:
            self._caller_script(self.caller)
        if self._caller_sip:
            await self.caller.start(
                self.server.connect(
                    CALLER_ROOM, CALLER_IDENTITY, "sip", attributes=answered_sip_call()
                )
            )
        else:
            await self.caller.start()
        return self

    async def __aexit__(self, exc_type, exc, tb):
        report = await self.finish()
        if self._check_leaks and exc_type is None and any(report.leaks.values()):
            raise AssertionError(f"the call leaked {report.leaks}: {report.leak_findings}")

    def _livekit_caller_output(self):
        """Pipecat's LiveKit output on an offline room; what it plays goes to the caller."""
        from pipecat.transports.livekit.transport import LiveKitParams

        from pipecat_warm_transfer.testing.livekit_media import OfflineLiveKitTransport

        rate = self._rate
        server = self.server

        def deliver(audio: bytes, _at: float):
            # The bot's one connection publishes what LiveKit played, as a LiveKit
            # participant publishes its track (it does not hear itself).
            room = server.get_room(CALLER_ROOM)
            connection = room.connection(BOT_IDENTITY) if room is not None else None
            if connection is not None and connection.connected:
                connection.publish_audio(audio, rate)

        self.caller_livekit = OfflineLiveKitTransport(
            CALLER_ROOM,
            identity=BOT_IDENTITY,
            params=LiveKitParams(
                audio_out_enabled=True,
                audio_out_sample_rate=rate,
                audio_out_mixer=self.transfer.hold_mixer,
            ),
            on_heard=deliver,
            record_heard=False,
            keep_captured=False,
        )
        return self.caller_livekit.output()

    async def _livekit_backend(self):
        from pipecat_warm_transfer.backends.livekit import LiveKitSipBackend
        from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator

        self.emulator = LiveKitEmulator(
            oss=not self._supports_move,
            rooms=self.server,
            humans=self._humans,
            sample_rate=self._rate,
            t0=self.t0,
        )
        if self._refer is not None:
            self.emulator.sip_transfers.default = self._refer
        await self.emulator.start()
        return LiveKitSipBackend(
            self.emulator.url,
            self.emulator.api_key,
            self.emulator.api_secret,
            trunk_id="ST_offline_trunk",
            caller_id="+15550199",
            transport_factory=self.emulator.transport_factory(),
            sample_rate=self._rate,
            hang_up_moved_on_close=True,
            **self._backend_kwargs,
        )

    def human_parties(self) -> list[ScriptedParty]:
        """The scripted humans dialed so far (whichever backend placed the calls)."""
        if self.emulator is not None:
            return list(self.emulator.parties.values())
        return list(getattr(self.backend, "parties", {}).values())

    async def say(self, text: str):
        """Have the bot say something to the caller (as its LLM would)."""
        await self.worker.queue_frame(TTSSpeakFrame(text))

    async def wait_for(self, event: str, timeout: float = 20.0) -> dict:
        """Wait for a timeline event (already seen counts)."""
        for e in self.events:
            if e["event"] == event:
                return e
        future = asyncio.get_running_loop().create_future()
        self._event_waiters.append((event, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._event_waiters.remove((event, future))

    async def wait_idle(self, timeout: float = 20.0):
        """Wait until no transfer is in progress."""
        async with asyncio.timeout(timeout):
            while self.transfer.busy:
                self._state_changed.clear()
                await self._state_changed.wait()

    async def wait_settled(self, results: int, timeout: float = 20.0):
        """Wait until transfer number `results` settled and the bot is idle with the caller."""
        async with asyncio.timeout(timeout):
            await self.wait_result(results, timeout)
            while self.transfer.state != "idle":
                self._state_changed.clear()
                await self._state_changed.wait()

    async def wait_result(self, results: int = 1, timeout: float = 20.0):
        """Wait until transfer number `results` settled (awaiting its handle)."""
        async with asyncio.timeout(timeout):
            while len(self.transfer.handles) < results:
                self._state_changed.clear()
                await self._state_changed.wait()
            return await self.transfer.handles[results - 1]

    async def wait_quiet(self, quiet_secs: float = 0.4, timeout: float = 20.0):
        """Wait until the bot has said nothing to the caller for `quiet_secs` (bounded)."""
        output = self.transfer.caller_output()
        quiet = 0.0
        for _ in range(int(timeout / 0.05)):
            speaking = output.bot_speaking or self._queued_secs() > PLAYED_OUT_SECS
            quiet = 0.0 if speaking else quiet + 0.05
            if quiet >= quiet_secs:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the bot kept speaking")

    def _queued_secs(self) -> float:
        """Audio the caller's output has taken but the caller has not heard yet."""
        source = self.caller_livekit.audio_source if self.caller_livekit is not None else None
        return source.queued_duration if source is not None else 0.0

    async def finish(self) -> CallReport:
        """End the call, tear everything down, and count what is left (once)."""
        if self.report is not None:
            return self.report
        if self.caller_livekit is not None:
            # LiveKit plays what it was given up to a second after Pipecat wrote it, and
            # the bot's connection closes with the pipeline: let the caller hear what
            # the bot is saying first (bounded), as the memory output's paced writes do.
            with contextlib.suppress(TimeoutError):
                await self.wait_quiet(quiet_secs=0.3, timeout=8.0)
        await self.worker.queue_frame(EndFrame())
        try:
            await asyncio.wait_for(asyncio.shield(self._run_task), 15.0)
        except TimeoutError:
            await self.worker.cancel(reason="harness timeout")
            await asyncio.wait_for(self._run_task, 10.0)
        for _ in range(3):  # event handlers run in tasks of their own: let them look first
            await asyncio.sleep(0)
        # A teardown still under way (a dial LiveKit may still connect is being hung up)
        # is waited for, bounded: what counts is what it leaves when it says it is done.
        for _ in range(int(TEARDOWN_WAIT_SECS / 0.01)):
            if not self.leak_watch.teardowns_pending:
                break
            await asyncio.sleep(0.01)
        self.leak_watch.at_end()  # before anything of the harness's is closed
        await self.backend.close()
        self._stall_probe.cancel()
        await asyncio.gather(self._stall_probe, return_exceptions=True)
        caller_audio = self.caller.recording()
        stream_gaps = self.caller.stream_gaps(BOT_IDENTITY)
        caller_left_reason = self.caller.connection.disconnect_reason
        await self.caller.close()
        human = self.human_parties()
        human_audio = human[-1].recording() if human else None
        human_hung_up_first = bool(human) and human[-1].end_reason == "hung_up"
        await asyncio.sleep(0)
        if self.emulator is not None:
            # Rooms, participants, and HTTP plus media connections, as the server sees them.
            leftover = await self.emulator.settle()
        else:
            leftover = self.server.leftovers()
        caller_room = self.server.get_room(CALLER_ROOM)
        if caller_room is not None and not caller_room.participants:
            # The caller's own room, empty now: LiveKit closes it by itself (empty_timeout).
            leftover["rooms"] -= 1
            self.server.delete_room(CALLER_ROOM)
        dials: list[dict] = []
        faults_fired: list[tuple[str, str]] = []
        ringing_dials = 0
        referrals = [
            {"to": to, "outcome": None, "t": None, "ringback": False}
            for _room, _who, to in getattr(self.backend, "referred", [])
        ]
        if self.emulator is not None:
            referrals = [
                {
                    "to": r.transfer_to,
                    "outcome": r.outcome,
                    "t": round(r.started_at - self.t0, 3),
                    "ringback": r.play_dialtone,
                }
                for r in self.emulator.sip_transfers.transfers
            ]
            dials = [_dial_summary(c, self.t0) for c in self.emulator.calls]
            faults_fired = list(self.emulator.faults_fired)
            ringing_dials = len(self.emulator.ringing())
            await self.emulator.stop()  # the server's own tasks are not the plugin's
        await asyncio.sleep(0)
        tasks = [
            t
            for t in asyncio.all_tasks()
            if t not in self._baseline_tasks and t is not asyncio.current_task() and not t.done()
        ]
        leftover["tasks"] = len(tasks)
        self.leftover_tasks = tasks
        watched = self.leak_watch.counts()
        leaks = {kind: leftover.get(kind, 0) + n for kind, n in watched.items()}
        findings = self.leak_watch.describe()
        findings += [f"after clean-up: {k} {n}" for k, n in leftover.items() if n]
        self.report = CallReport(
            events=list(self.events),
            event_lags=list(self.event_lags),
            results=self.transfer.results,
            caller_audio=caller_audio,
            human_audio=human_audio,
            leaks=leaks,
            leak_findings=findings,
            sample_rate=self._rate,
            spoken_to_caller=list(getattr(self.bot_tts, "spoken", [])),
            caller_stream_gaps=stream_gaps,
            dials=dials,
            ringing_dials=ringing_dials,
            faults_fired=faults_fired,
            human_hung_up_first=human_hung_up_first,
            loop_stalls=list(self._stalls),
            caller_output=self._caller_output,
            refused_captures=(
                self.caller_livekit.media.refused if self.caller_livekit is not None else 0
            ),
            referrals=referrals,
            caller_left_reason=caller_left_reason,
        )
        return self.report


def _loud_windows(audio, sample_rate: int):
    """Indices of the `FIRST_WORDS_WINDOW_MS` windows above `FIRST_WORDS_DBFS`."""
    levels = windowed_rms_dbfs(audio, sample_rate, FIRST_WORDS_WINDOW_MS)
    return (levels > FIRST_WORDS_DBFS).nonzero()[0]


def _dial_summary(call, t0: float) -> dict:
    """An emulator dial: its outcome, statuses, SIP status, ring and answer times (s).

    `answered_at` counts from `t0` (sample 0 of the recordings), as the events do.
    """
    times = [t for t, _ in call.statuses] + [call.ended_at]
    ringing_secs = 0.0
    for i, (t, status) in enumerate(call.statuses):
        end = times[i + 1]
        if status == "ringing" and end is not None:
            ringing_secs = end - t
    active = next((t for t, status in call.statuses if status == "active"), None)
    return {
        "room": call.room_name,
        "outcome": call.outcome,
        "statuses": [status for _, status in call.statuses],
        "sip_status": call.sip_status,
        "ringing_secs": round(ringing_secs, 3),
        "answered_at": None if active is None else round(active - t0, 3),
    }
