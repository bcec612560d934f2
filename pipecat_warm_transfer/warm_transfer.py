#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""`WarmTransfer`: the controller of one call's warm transfers.

It hands out the caller pipeline's processors (`caller_gate()`, `caller_output()`), the
hold mixer and the LLM tool, and runs each transfer: hold, dial (the summary is written
while the phone rings), brief, connect (move or bridge) or return with a reason, and
tear everything down on every exit. One instance per call; nothing is shared between
calls but the read-only hold-music cache.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import EndWorkerFrame, InputAudioRawFrame, LLMSetToolsFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.llm_service import FunctionCallParams, FunctionCallResultProperties
from pipecat.utils.base_object import BaseObject

from pipecat_warm_transfer.audio import HoldMusicMixer
from pipecat_warm_transfer.bridge import AudioBridge
from pipecat_warm_transfer.briefing import BriefingDecision, BriefingSession
from pipecat_warm_transfer.callback import CallbackCollector, CallbackRequest, mask_number
from pipecat_warm_transfer.connect_modes import Join, ModeUnavailableError, strategy_for
from pipecat_warm_transfer.consult_leg import (
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    TransferBackend,
    TransferConfigError,
    TransferTarget,
)
from pipecat_warm_transfer.frames import (
    TransferEventFrame,
    TransferResultFrame,
    TransferStateFrame,
)
from pipecat_warm_transfer.params import (
    REFER_CONNECTING_MESSAGE,
    BriefingParams,
    WarmTransferParams,
    fill_opens,
)
from pipecat_warm_transfer.processors import CallerGate, CallerOutput
from pipecat_warm_transfer.ring_group import RingGroup, group_reason
from pipecat_warm_transfer.summary import summarize_conversation, transcript_from_context
from pipecat_warm_transfer.transfer_handle import TransferHandle
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TargetAttempt,
    TransferOutcome,
    TransferResult,
    TransferState,
    TransferTimings,
)

#: Bound on the wait for the hold line to start playing before the music starts anyway
#: (a TTS that fails or says nothing must not leave the caller in silence).
HOLD_LINE_START_SECS = 1.5
#: Bound on the wait for a hold line that is playing to end.
HOLD_LINE_TIMEOUT_SECS = 8.0
#: Bound on the "caller has disconnected" sentence to a briefed human.
CALLER_LEFT_SPEECH_SECS = 8.0
#: Longest the join waits for the caller to hear the connected sentence.
CONNECTED_SPEECH_SECS = 8.0
#: Bound on the wait for a REFER in flight when the caller's call leaves the room (LiveKit's
#: own deadline for a transfer is the 30 s ringing timeout).
REFER_SETTLE_SECS = 35.0
#: Bound on the teardown's wait for a group's other hang-ups and thank-yous.
SIDE_TASKS_SECS = 10.0
#: Bound on the wait for the transfer's run task to stop when the call ends under it.
STOP_RUN_SECS = 5.0

_DECISION_FAILURES = {
    "decline": FailureReason.DECLINED,
    "voicemail": FailureReason.VOICEMAIL,
    "human_left": FailureReason.HUMAN_HUNG_UP,
    "timeout": FailureReason.BRIEFING_TIMEOUT,
    "error": FailureReason.CANCELLED,
}


class _TransferFailed(Exception):
    def __init__(self, reason: FailureReason, sip_status: int | None = None, detail=None):
        super().__init__(detail or str(reason))
        self.reason = reason
        self.sip_status = sip_status
        self.detail = detail


class _Attempt:
    """The state of one transfer attempt (the controller keeps at most one)."""

    def __init__(self, reason: str, number: int):
        self.reason = reason
        self.number = number
        self.id = uuid.uuid4().hex[:8]
        self.requested_at = time.monotonic()
        self.handle = TransferHandle()
        self.leg: ConsultLeg | None = None
        self.briefing: BriefingSession | None = None
        self.answered = False
        self.mode: ConnectMode | None = None
        self.timings = TransferTimings()
        self.dial_started_at: float | None = None
        self.answered_at: float | None = None
        self.result: TransferResult | None = None
        self.torn_down = False
        self.teardown_task: asyncio.Task | None = None
        self.summary_task: asyncio.Task | None = None
        self.turns: list = []
        self.human_left: str | None = None  # the human hung up before being joined
        self.tries: list[_Try] = []  # every human tried, in order
        self.open_tries: list[_Try] = []  # the tries whose leg is not closed yet
        self.remaining = 0  # humans of the group not tried yet
        self.accepted_by: _Try | None = None
        self.side_tasks: list[asyncio.Task] = []  # hang-ups and thanks the teardown waits for
        self.accepting = False  # a human accepted: the caller hears nothing but the connect

    @property
    def moved(self) -> bool:
        """Whether the human is in the caller's room (the leg is the one source)."""
        return self.leg is not None and self.leg.moved


class _Try:
    """One human of the group: their leg, and the bot's briefing in their consult room."""

    def __init__(self, index: int, target: TransferTarget, record: TargetAttempt):
        self.index = index
        self.target = target
        self.record = record
        self.leg: ConsultLeg | None = None
        self.briefing: BriefingSession | None = None
        self.dial_started_at: float | None = None
        self.left: str | None = None  # they hung up before the transfer followed them


class WarmTransfer(BaseObject):
    """Warm transfer of one call from the bot to a human.

    Event handlers:

    - ``on_transfer_event(transfer, event: dict)`` — every timeline event
      (`transfer_requested`, `hold_started`, `dialing`, `human_answered`,
      `briefing_started`, `connected`, `transfer_failed`, `returned_to_caller`,
      `caller_hung_up`, `human_hung_up`, `teardown_done`).
    - ``on_state_changed(transfer, state: TransferState)``
    - ``on_transfer_result(transfer, result: TransferResult)``
    - ``on_callback_requested(transfer, request: CallbackRequest)`` — the caller confirmed
      a callback after nobody was free (`nobody_free="callback"`); also on the result.

    Example::

        transfer = WarmTransfer(backend=backend, target=TransferTarget("+15551234567"),
                                briefing=BriefingParams(tts=lambda: MyTTS(...)))
        transport = LiveKitTransport(..., params=LiveKitParams(
            audio_out_mixer=transfer.hold_mixer, ...))
        pipeline = Pipeline([transport.input(), transfer.caller_gate(), stt,
                             context.user(), llm, tts, transfer.caller_output(),
                             transport.output(), context.assistant()])
        transfer.watch_caller_transport(transport)  # the caller hanging up ends the transfer
        llm.register_function("transfer_to_human", transfer.handle_function_call)

        handle = await transfer.start_transfer("billing dispute")  # or the LLM tool
        result = await handle  # the settled TransferResult
    """

    def __init__(
        self,
        *,
        backend: TransferBackend,
        target: TransferTarget | RingGroup,
        briefing: BriefingParams,
        params: WarmTransferParams | None = None,
        hold_mixer: HoldMusicMixer | None = None,
        context: LLMContext | None = None,
        summary_llm: Any = None,
        caller_room: str | None = None,
        bot_identity: str = "transfer-bot",
        name: str | None = None,
    ):
        """Initialize the controller; settings are checked here, before any call.

        Args:
            backend: How the human is reached (LiveKit SIP, or in-memory in tests).
            target: Who to dial: one human, or a `RingGroup` of several tried in turn
                or all at once.
            briefing: How the human is briefed (services are factories).
            params: Caller-side settings.
            hold_mixer: The caller output's mixer (default: bundled music at the
                params' level, using the shared hold engine as the params say).
                Install it as the transport's `audio_out_mixer`.
            context: The caller conversation's LLM context (for the summary and the
                transcript given to the human); taken from the tool call when None.
            summary_llm: An LLM service with `run_inference` for the summary; taken from
                the tool call when None; without one, a deterministic summary is used.
            caller_room: The caller's room name (needed for `move`).
            bot_identity: The bot's participant identity in consult rooms.
            name: Optional object name.
        """
        super().__init__(name=name)
        if not isinstance(target, TransferTarget | RingGroup):
            raise TransferConfigError("target: expected a TransferTarget or a RingGroup")
        if not isinstance(briefing, BriefingParams):
            raise TransferConfigError("briefing: expected BriefingParams")
        self._group = RingGroup.of(target)
        for member in self._group.targets:
            backend.check_target(member)
        self._backend = backend
        self._target = self._group.targets[0]
        self._params = params or WarmTransferParams()
        if (
            self._params.connect_mode == ConnectMode.REFER
            and "connecting_message" not in briefing.model_fields_set
        ):
            # The bot hangs up and the human's phone rings with the caller: say so.
            briefing = briefing.model_copy(update={"connecting_message": REFER_CONNECTING_MESSAGE})
        self._briefing_params = briefing
        self._hold_mixer = hold_mixer or HoldMusicMixer(
            level_dbfs=self._params.hold_music_level_dbfs,
            shared_engine=self._params.shared_hold_engine,
        )
        self._context = context
        self._summary_llm = summary_llm
        self._caller_room = caller_room
        self._bot_identity = bot_identity

        self._gate = CallerGate(
            on_start=self._on_pipeline_start,
            on_end=self._on_pipeline_end,
            on_request=self.start_transfer,
            on_dtmf=self._on_caller_dtmf,
            on_caller_audio=self._on_caller_audio,
            on_cleanup=self._stop_tasks,
            name=f"{self.name}::CallerGate",
        )
        self._output = CallerOutput(
            mixer=self._hold_mixer,
            hold_message=self._params.hold_message,
            on_music_heard=self._on_music_started,
            name=f"{self.name}::CallerOutput",
        )
        self._bridge = AudioBridge(
            play_to_caller=self._output.relay_from_human, play_to_human=self._play_to_human
        )
        self._running = False
        self._state = TransferState.IDLE
        self._attempt: _Attempt | None = None
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._attempts = 0
        self._results: list[TransferResult] = []
        self._handles: list[TransferHandle] = []
        self._caller_gone = False
        self._ended = False
        self._hold_line_event: asyncio.Event | None = None
        self._caller_llm: Any = None
        self._caller_identity: str | None = None  # known once the caller is watched
        hours = self._params.availability
        self._callback = CallbackCollector(
            time_zone=hours.zone if hours is not None else "UTC",
            name=f"{self.name}::Callback",
        )
        self._callback.add_event_handler("on_callback_requested", self._on_callback_requested)
        self._callback_tools_added = False

        self._register_event_handler("on_transfer_event")
        self._register_event_handler("on_state_changed")
        self._register_event_handler("on_transfer_result")
        self._register_event_handler("on_callback_requested")

    #
    # What the user wires in
    #

    @property
    def hold_mixer(self) -> HoldMusicMixer:
        """The mixer to install as the caller output transport's `audio_out_mixer`."""
        return self._hold_mixer

    def caller_gate(self) -> CallerGate:
        """The processor to place right after the caller's `transport.input()`."""
        return self._gate

    def caller_output(self) -> CallerOutput:
        """The processor to place right before the caller's `transport.output()`."""
        return self._output

    @property
    def tool_schema(self) -> FunctionSchema:
        """The caller LLM's `transfer_to_human(reason)` tool."""
        return FunctionSchema(
            name="transfer_to_human",
            description=(
                "Transfer the caller to a human colleague when they ask for a person or "
                "you cannot help. The caller is put on hold while the colleague is briefed."
            ),
            properties={
                "reason": {
                    "type": "string",
                    "description": "Why the caller needs a human, in one sentence.",
                }
            },
            required=["reason"],
        )

    @property
    def callback_collector(self) -> CallbackCollector:
        """The callback request tools the caller's LLM gets when nobody is free.

        The transfer registers them on the caller's LLM (the one that called
        `transfer_to_human`) when `nobody_free` says `callback`; give it the caller's
        number with `set_caller_attributes(...)` so it is offered as the default.
        """
        return self._callback

    @property
    def hold_message(self) -> str:
        """What the bot says before the hold music starts."""
        return self._params.hold_message

    @property
    def state(self) -> TransferState:
        """The current state."""
        return self._state

    @property
    def results(self) -> list[TransferResult]:
        """Every transfer result of this call, oldest first."""
        return list(self._results)

    @property
    def handles(self) -> list[TransferHandle]:
        """The handle of every transfer started on this call (the LLM tool's too)."""
        return list(self._handles)

    @property
    def last_result(self) -> TransferResult | None:
        """The latest transfer result."""
        return self._results[-1] if self._results else None

    @property
    def busy(self) -> bool:
        """Whether a transfer is in progress (not idle, not connected)."""
        return self._state not in (TransferState.IDLE, TransferState.CONNECTED)

    def watch_caller_transport(self, transport, caller_identity: str | None = None):
        """Watch the caller's transport for hang-ups (and the human leaving after a move).

        Part of the wiring: without it a caller who hangs up is only noticed when the
        pipeline ends, the dial is not cancelled and a briefed human is not told.

        Args:
            transport: The caller's Pipecat transport (LiveKit or in-memory), with
                `on_first_participant_joined(transport, participant_id)` and
                `on_participant_left(transport, participant_id, reason)` events.
            caller_identity: The caller's identity; None means the first participant
                to join the caller's room (a SIP caller, typically).
        """
        caller = {"identity": caller_identity}
        self._caller_identity = caller_identity

        @transport.event_handler("on_first_participant_joined")
        async def _on_first(_transport, participant_id):
            if caller["identity"] is None and participant_id != self._bot_identity:
                caller["identity"] = participant_id
                self._caller_identity = participant_id

        @transport.event_handler("on_participant_left")
        async def _on_left(_transport, participant_id, reason=None):
            attempt = self._attempt
            human = attempt.leg.human_identity if attempt and attempt.leg else None
            if attempt is not None and attempt.moved and participant_id == human:
                await self._on_human_left(attempt, f"left the caller room ({reason})")
            elif participant_id in (self._bot_identity, human):
                return
            elif caller["identity"] in (None, participant_id):
                # Nobody joined after the watch began: anyone but the bot and the human.
                self._spawn(self.caller_hung_up(), "caller-hung-up")

    async def handle_function_call(self, params: FunctionCallParams):
        """Handler of the `transfer_to_human` tool (register it on the caller's LLM)."""
        reason = str(params.arguments.get("reason") or "The caller asked for a person.")
        if self._context is None and params.context is not None:
            self._context = params.context
        if self._summary_llm is None:
            self._summary_llm = params.llm
        self._caller_llm = params.llm
        accepted, why = self._can_start()
        if not accepted:
            await params.result_callback({"status": "refused", "reason": why})
            return
        await params.result_callback(
            {"status": "transferring", "note": "The caller is being put on hold."},
            properties=FunctionCallResultProperties(run_llm=False),
        )
        await self.start_transfer(reason)

    async def start_transfer(self, reason: str = "") -> TransferHandle:
        """Start a transfer (from code).

        Returns:
            A handle: falsy (with its `refusal`) when no transfer can start now; else
            awaiting it yields the settled `TransferResult`.
        """
        accepted, why = self._can_start()
        if not accepted:
            logger.warning(f"{self}: transfer refused: {why}")
            return TransferHandle(refusal=why)
        self._attempts += 1
        self._attempt = attempt = _Attempt(reason.strip()[:500], self._attempts)
        self._handles.append(attempt.handle)
        self._task = self._spawn(self._run(attempt), "transfer")
        return attempt.handle

    def _can_start(self) -> tuple[bool, str]:
        if self._ended or self._caller_gone:
            return False, "the call has ended"
        if self._state != TransferState.IDLE:
            return False, f"a transfer is already {self._state}"
        if self._attempts >= self._params.max_transfers:
            return False, "no more transfers are allowed on this call"
        if not self._running:
            return False, "the caller pipeline is not running"
        return True, ""

    async def caller_hung_up(self):
        """The caller left: cancel the dial, tell a briefed human, tear everything down.

        After a REFER the caller's call leaving is the transfer working, not a hang-up:
        that is `caller_referred` (a REFER in flight is waited for, to tell which).
        """
        if self._caller_gone:
            return
        self._caller_gone = True
        if self._referring():
            await self._wait_run_task(REFER_SETTLE_SECS)
        if self._referred():
            await self._emit("caller_referred")
        else:
            await self._emit("caller_hung_up")
        await self._end_under_transfer(FailureReason.CALLER_HUNG_UP)

    def _referred(self) -> bool:
        """Whether the caller's call was referred to a human (`refer` mode connected)."""
        attempt = self._attempt
        return (
            attempt is not None
            and attempt.mode == ConnectMode.REFER
            and attempt.result is not None
            and attempt.result.outcome == TransferOutcome.CONNECTED
        )

    async def _end_under_transfer(self, reason: FailureReason):
        """The call ends with a transfer under way or joined: the one path for both ends.

        Not joined yet: the transfer stops, a briefed human is told the caller left, the
        result is `reason`. Then the attempt is torn down, which decides the hang-up.
        """
        attempt = self._attempt
        if attempt is None:
            return
        joined = self._state == TransferState.CONNECTED or attempt.moved
        if not joined and self._referring():
            # A REFER takes the caller's call away: their leaving is how it succeeds.
            # LiveKit's answer to the REFER decides, not the leave that may come first.
            await self._wait_run_task(REFER_SETTLE_SECS)
            joined = self._state == TransferState.CONNECTED
        if not joined:
            await self._stop_run_task()
            briefing = attempt.briefing
            if self._caller_gone and briefing and attempt.answered and not attempt.torn_down:
                await briefing.interrupt()
                await briefing.say(
                    self._params.caller_left_message, timeout=CALLER_LEFT_SPEECH_SECS
                )
            self._finish(attempt, _TransferFailed(reason))
            await self._publish_result(attempt)
            attempt.handle.settle(attempt.result)
        await self._teardown(attempt)
        if not joined and not self._ended:
            await self._set_state(TransferState.IDLE)

    #
    # The transfer
    #

    async def _run(self, attempt: _Attempt):
        await self._emit("transfer_requested", reason=attempt.reason)
        try:
            self._check_open()
            await self._hold(attempt)
            leg = await self._reach_someone(attempt)
            await self._connect(attempt, leg)
        except _TransferFailed as failure:
            await self._return_to_caller(attempt, failure)
        except asyncio.CancelledError:
            raise  # the call is ending under the transfer: that path settles the handle
        except Exception as e:
            logger.exception(f"{self}: transfer error")
            reason = FailureReason.CONNECT_FAILED if attempt.answered else FailureReason.DIAL_FAILED
            await self._return_to_caller(attempt, _TransferFailed(reason, detail=type(e).__name__))

    def _check_open(self):
        """Outside business hours nobody is dialed: the caller is told when to call back."""
        hours = self._params.availability
        if hours is not None and not hours.is_open(datetime.now(UTC)):
            raise _TransferFailed(FailureReason.AFTER_HOURS, detail="outside business hours")

    def _opens(self) -> str | None:
        """When the team is back, in words ("tomorrow at 9:00"), if hours are known."""
        hours = self._params.availability
        return None if hours is None else hours.describe_next_opening(datetime.now(UTC))

    async def _hold(self, attempt: _Attempt):
        await self._set_state(TransferState.HOLDING)
        self._hold_line_event = asyncio.Event()
        await self._gate.announce(self._params.hold_message)
        self._spawn(self._hold_watchdog(attempt), "hold-watchdog")

    async def _hold_watchdog(self, attempt: _Attempt):
        """No dead air: music even if the hold line never plays; reminders while held."""
        heard = await self._output.hold_line_started(HOLD_LINE_START_SECS)
        if heard:
            try:
                await asyncio.wait_for(self._hold_line_event.wait(), HOLD_LINE_TIMEOUT_SECS)
            except TimeoutError:
                heard = False
        if not heard:
            if self._attempt is attempt and self._state in _HELD and not self._output.music_on:
                logger.warning(f"{self}: hold line not heard, starting the music")
                await self._output.start_music()
        every = self._params.hold_reminder_every
        if not self._params.hold_reminder or not every:
            return
        policy = self._params.hold_policy()
        while True:
            await asyncio.sleep(every)
            if self._attempt is not attempt or self._state not in _HELD:
                return
            if attempt.accepting:
                return  # a reminder now would be queued behind the connected sentence
            if self._output.bot_speaking:
                # The caller hears the bot already: a reminder now would queue behind it,
                # and the next behind that; the return sentence would wait for them all.
                continue
            elapsed = time.monotonic() - attempt.requested_at
            text = policy.reminder_text(attempt.remaining, elapsed)
            if text:
                await self._gate.announce(text, append_to_context=False)

    async def _reach_someone(self, attempt: _Attempt) -> ConsultLeg:
        """Dial the group until a human accepts; returns the leg of the one who did."""
        # The summary is written while the bot joins the consult room and the phone rings.
        attempt.turns = turns = transcript_from_context(self._context)
        attempt.summary_task = self._spawn(
            summarize_conversation(
                self._summary_llm,
                turns,
                attempt.reason,
                timeout=self._params.summary_timeout,
                max_words=self._briefing_params.summary_max_words,
            ),
            "summary",
        )
        if self._group.strategy == "simultaneous" and len(self._group.targets) > 1:
            if self._group.first_to == "accept":
                return await self._brief_all(attempt)
            return await self._ring_all(attempt)
        return await self._ring_in_turn(attempt)

    async def _ring_in_turn(self, attempt: _Attempt) -> ConsultLeg:
        """One human after another until one accepts (or the group says stop)."""
        targets = self._group.targets
        reasons: list[FailureReason] = []
        policy = self._params.hold_policy()
        for index, target in enumerate(targets):
            attempt.remaining = len(targets) - index - 1
            if index > 0 and policy.exhausted(time.monotonic() - attempt.requested_at):
                raise _TransferFailed(
                    FailureReason.HOLD_TIMEOUT,
                    detail=f"the caller was held the longest allowed; {index} tried",
                )
            current = self._new_try(attempt, index, target)
            try:
                await self._open_try(attempt, current, current_leg=True)
                await self._ring(attempt, current)
                await self._answered(attempt, current)
                decision = await self._brief(attempt, current.leg)
                if decision.kind != "accept":
                    reason = _DECISION_FAILURES[decision.kind]
                    raise _TransferFailed(reason, detail=decision.reason)
            except _TransferFailed as failure:
                self._settle_try(attempt, current, str(failure.reason), failure.sip_status)
                reasons.append(failure.reason)
                if (
                    index == len(targets) - 1
                    or self._caller_gone
                    or self._ended
                    or not self._group.moves_on_after(failure.reason)
                ):
                    raise self._group_failure(failure, reasons) from None
                await self._emit(
                    "target_failed",
                    target=index,
                    reason=str(failure.reason),
                    sip_status=failure.sip_status,
                    remaining=attempt.remaining,
                )
                await self._drop_try(attempt, current)
                await self._set_state(TransferState.HOLDING)  # the caller waits on
                continue
            self._settle_try(attempt, current, "accepted")
            attempt.accepted_by = current
            return current.leg
        raise _TransferFailed(FailureReason.DIAL_FAILED, detail="nobody to dial")

    async def _ring_all(self, attempt: _Attempt) -> ConsultLeg:
        """Every phone at once; the first to answer is briefed, the others stop ringing."""
        tries = await self._open_all(attempt)
        reasons: list[FailureReason] = [
            FailureReason(t.record.outcome) for t in tries if t.record.outcome
        ]
        dials = {
            asyncio.create_task(self._ring(attempt, current), name=f"{self}::ring-{i}"): current
            for i, current in enumerate(tries)
            if current.leg is not None and not current.record.outcome
        }
        winner: _Try | None = None
        pending = set(dials)
        last_failure: _TransferFailed | None = None
        drops: list[asyncio.Task] = []  # failed phones hung up while the others ring
        try:
            while pending and winner is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: dials[t].index):
                    current = dials[task]
                    error = task.exception()
                    if error is None and winner is None:
                        winner = current
                    elif error is None:
                        self._settle_try(attempt, current, "stopped")  # answered a moment late
                    elif isinstance(error, _TransferFailed):
                        self._settle_try(attempt, current, str(error.reason), error.sip_status)
                        reasons.append(error.reason)
                        last_failure = error
                        drops.append(self._spawn(self._drop_try(attempt, current), "drop-try"))
                    else:
                        raise error
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if winner is None:  # with a winner, the teardown waits for these hang-ups
                await asyncio.gather(*drops, return_exceptions=True)
        if winner is None:
            failure = last_failure or _TransferFailed(FailureReason.DIAL_FAILED)
            raise self._group_failure(failure, reasons)
        # The winner is followed at once; the other phones stop meanwhile (a slow
        # hang-up must not delay the briefing), and the teardown waits for them.
        attempt.leg, attempt.briefing = winner.leg, winner.briefing
        losers = [t for t in attempt.open_tries if t is not winner]
        for loser in losers:
            if not loser.record.outcome:
                self._settle_try(attempt, loser, "stopped")
        if losers:
            attempt.side_tasks.append(
                self._spawn(self._stop_losers(attempt, losers), "stop-the-others")
            )
        await self._answered(attempt, winner)
        try:
            decision = await self._brief(attempt, winner.leg)
        except _TransferFailed as failure:
            self._settle_try(attempt, winner, str(failure.reason), failure.sip_status)
            raise
        if decision.kind != "accept":
            reason = _DECISION_FAILURES[decision.kind]
            self._settle_try(attempt, winner, str(reason))
            raise _TransferFailed(reason, detail=decision.reason)
        self._settle_try(attempt, winner, "accepted")
        attempt.accepted_by = winner
        return winner.leg

    async def _stop_losers(self, attempt: _Attempt, losers: list[_Try]):
        """Hang up every other phone of a simultaneous group; say how long it took."""
        started = time.monotonic()
        await asyncio.gather(*(self._drop_try(attempt, loser) for loser in losers))
        await self._emit(
            "others_stopped", count=len(losers), secs=round(time.monotonic() - started, 3)
        )

    async def _brief_all(self, attempt: _Attempt) -> ConsultLeg:
        """Every phone at once; everyone who answers is briefed; the first to accept wins.

        The moment one accepts, the phones still ringing stop and the others being
        briefed are thanked and hung up.
        """
        tries = await self._open_all(attempt)
        reasons: list[FailureReason] = [
            FailureReason(t.record.outcome) for t in tries if t.record.outcome
        ]
        dials = {
            asyncio.create_task(self._ring(attempt, t), name=f"{self}::ring-{t.index}"): t
            for t in tries
            if t.leg is not None and not t.record.outcome
        }
        decisions: dict[asyncio.Task, _Try] = {}
        drops: list[asyncio.Task] = []
        winner: _Try | None = None
        last_failure: _TransferFailed | None = None

        def drop(current: _Try, outcome: str, sip_status: int | None = None):
            self._settle_try(attempt, current, outcome, sip_status)
            drops.append(self._spawn(self._drop_try(attempt, current), "drop-try"))

        try:
            while winner is None and (dials or decisions):
                done, _ = await asyncio.wait(
                    set(dials) | set(decisions), return_when=asyncio.FIRST_COMPLETED
                )
                for task in sorted(done, key=lambda t: (dials.get(t) or decisions[t]).index):
                    if task in dials:
                        current = dials.pop(task)
                        error = task.exception()
                        if isinstance(error, _TransferFailed):
                            reasons.append(error.reason)
                            last_failure = error
                            drop(current, str(error.reason), error.sip_status)
                        elif error is not None:
                            raise error
                        else:
                            await self._note_answer(attempt, current)
                            await self._set_state(TransferState.BRIEFING)
                            decide = self._decide(attempt, current.briefing)
                            decisions[asyncio.create_task(decide)] = current
                        continue
                    current = decisions.pop(task)
                    decision = task.result()
                    if decision.kind == "accept" and winner is None:
                        winner = current
                    else:
                        reason = _DECISION_FAILURES.get(decision.kind, FailureReason.DECLINED)
                        reasons.append(reason)
                        last_failure = _TransferFailed(reason, detail=decision.reason)
                        drop(current, str(reason))
        finally:
            for task in [*dials, *decisions]:
                task.cancel()
            await asyncio.gather(*dials, *decisions, return_exceptions=True)
            if winner is not None:
                await self._stop_the_others(attempt, winner)
            else:  # with a winner, the teardown waits for these hang-ups
                await asyncio.gather(*drops, return_exceptions=True)
        if winner is None:
            failure = last_failure or _TransferFailed(FailureReason.DIAL_FAILED)
            raise self._group_failure(failure, reasons)
        attempt.leg, attempt.briefing = winner.leg, winner.briefing
        attempt.answered = True
        await self._accepted(attempt, winner.briefing)
        self._settle_try(attempt, winner, "accepted")
        attempt.accepted_by = winner
        return winner.leg

    async def _open_all(self, attempt: _Attempt) -> list[_Try]:
        """Open every human's leg and consult room at once; failures are settled."""
        tries = [
            self._new_try(attempt, index, target)
            for index, target in enumerate(self._group.targets)
        ]
        opened = await asyncio.gather(
            *(self._open_try(attempt, current) for current in tries), return_exceptions=True
        )
        for current, outcome in zip(tries, opened, strict=True):
            if isinstance(outcome, _TransferFailed):
                self._settle_try(attempt, current, str(outcome.reason), outcome.sip_status)
                await self._drop_try(attempt, current)
            elif isinstance(outcome, BaseException):
                raise outcome
        return tries

    async def _note_answer(self, attempt: _Attempt, current: _Try):
        """A human of a group picked up (several may, while the group is briefed)."""
        now = time.monotonic()
        if not attempt.answered_at:
            attempt.answered_at = now
            attempt.timings.ring = now - current.dial_started_at
        current.record.answered_at = now - attempt.requested_at
        current.record.human_identity = current.leg.human_identity
        await current.briefing.human_answered()
        await self._emit(
            "human_answered", identity=current.leg.human_identity, target=current.index
        )
        if current.left is not None:
            # They hung up between the answer and now: as a hang-up in the briefing.
            if attempt.leg is current.leg:
                attempt.human_left = current.left
            decision = BriefingDecision("human_left", reason=current.left, via="hangup")
            current.briefing.decide(decision)

    async def _stop_the_others(self, attempt: _Attempt, winner: _Try):
        """Someone accepted: stop every other phone, thanking those being briefed.

        Neither waits for the other, nor the caller for either: the teardown does.
        """
        others = [t for t in attempt.open_tries if t is not winner and not t.record.outcome]
        ringing = []
        for current in others:
            self._settle_try(attempt, current, "stopped")
            if current.record.answered_at is not None:
                thanks = self._spawn(self._thank_and_drop(attempt, current), "thank-and-drop")
                attempt.side_tasks.append(thanks)
            else:
                ringing.append(current)
        if ringing:
            attempt.side_tasks.append(
                self._spawn(self._stop_losers(attempt, ringing), "stop-the-others")
            )

    async def _thank_and_drop(self, attempt: _Attempt, current: _Try):
        """A human briefed in vain hears that a colleague took the call, then is hung up."""
        await _quietly(current.briefing.interrupt(), "interrupt the briefing")
        await _quietly(
            current.briefing.say(self._params.taken_elsewhere_message, timeout=5.0),
            "thank the human",
        )
        await self._drop_try(attempt, current)

    def _new_try(self, attempt: _Attempt, index: int, target: TransferTarget) -> _Try:
        record = TargetAttempt(
            index=index, number=_mask(target.number), display_name=target.display_name
        )
        current = _Try(index, target, record)
        attempt.tries.append(current)
        return current

    def _group_failure(
        self, failure: _TransferFailed, reasons: list[FailureReason]
    ) -> _TransferFailed:
        """The failure the caller hears: the human's own, or the whole group's."""
        if len(self._group.targets) == 1 or len(reasons) <= 1:
            return failure
        reason = group_reason(reasons)
        tried = len(reasons)
        detail = f"none of the {tried} people tried took the call"
        return _TransferFailed(reason, failure.sip_status, detail)

    async def _open_try(self, attempt: _Attempt, current: _Try, *, current_leg: bool = False):
        """Open one human's leg and put the bot in their consult room, before the dial."""
        suffix = "" if current.index == 0 else f"-{current.index}"
        target = current.target
        request = DialRequest(
            target=target,
            consult_room=f"consult-{attempt.id}{suffix}",
            human_identity=f"human-{attempt.id}{suffix}",
            bot_identity=self._bot_identity,
            ring_timeout=self._params.hold_policy().ring_budget(
                target.ring_timeout or self._params.ring_timeout,
                time.monotonic() - attempt.requested_at,
            ),
            caller_room=self._caller_room,
        )
        current.leg = leg = await self._backend.open_leg(request)
        attempt.open_tries.append(current)
        if current_leg:
            attempt.leg = leg
            attempt.human_left = None
        leg.on_human_left(lambda reason: self._on_human_left(attempt, reason, current))
        leg.on_ringing(self._on_ringing)
        await self._join_consult_room(attempt, current, current_leg=current_leg)
        self._spawn(self._hand_over_summary(attempt, current.briefing), "summary-handover")

    async def _ring(self, attempt: _Attempt, current: _Try):
        """Dial one human and wait for the answer; a failed dial is a `_TransferFailed`."""
        leg = current.leg
        current.dial_started_at = time.monotonic()
        current.record.dialed_at = current.dial_started_at - attempt.requested_at
        await self._emit(
            "dialing",
            number=_mask(current.target.number),
            room=leg.room_name,
            target=current.index,
            name=current.target.display_name,
        )
        try:
            await asyncio.wait_for(leg.dial(), leg.dial_timeout)
        except DialError as e:
            attempt.timings.ring = time.monotonic() - current.dial_started_at
            raise _TransferFailed(e.reason, e.sip_status, e.detail) from None
        except TimeoutError:
            raise _TransferFailed(FailureReason.NO_ANSWER, 408, "ring timeout") from None

    async def _answered(self, attempt: _Attempt, current: _Try):
        """The human picked up: the briefing follows them from here."""
        attempt.answered = True
        attempt.answered_at = None  # this human's answer, not an earlier one's
        attempt.dial_started_at = current.dial_started_at
        await self._note_answer(attempt, current)

    def _settle_try(
        self, attempt: _Attempt, current: _Try, outcome: str, sip_status: int | None = None
    ):
        record = current.record
        if record.outcome:
            return
        record.outcome = outcome
        record.sip_status = sip_status
        record.ended_at = time.monotonic() - attempt.requested_at
        self._keep_transcript(current)

    def _keep_transcript(self, current: _Try):
        """Copy what was said in this human's consult room onto their call record.

        The briefing goes on recording until it is closed, so this runs again then.
        """
        if current.briefing is not None and current.briefing.transcript:
            current.record.transcript = [
                {"role": turn.role, "text": turn.text} for turn in current.briefing.transcript
            ]

    async def _drop_try(self, attempt: _Attempt, current: _Try):
        """Hang up a human the group moves past (or who lost a simultaneous race).

        The hang-up runs in a task of its own that the teardown waits for: a caller's
        hang-up cancelling the transfer meanwhile must not stop it halfway.
        """
        if current in attempt.open_tries:
            attempt.open_tries.remove(current)
        task = self._spawn(self._close_try(attempt, current), "close-try")
        attempt.side_tasks.append(task)
        await asyncio.shield(task)

    async def _close_try(self, attempt: _Attempt, current: _Try):
        if current.briefing is not None:
            await _quietly(current.briefing.close(), "close the briefing")
            self._keep_transcript(current)
        if current.leg is not None:
            await _quietly(current.leg.close(), "close the consult leg")
        if attempt.leg is current.leg:
            attempt.leg = None
            attempt.briefing = None
            attempt.answered = False

    async def _join_consult_room(self, attempt: _Attempt, current: _Try, *, current_leg: bool):
        """Put the bot, briefing pipeline running, in the consult room before the dial.

        LiveKit reports to a newcomer only the participants that join after it; in the
        room first, the bot hears the human's first "Hello?".
        """
        leg = current.leg
        try:
            await leg.open_transport()
            current.briefing = briefing = BriefingSession(
                leg=leg,
                params=self._briefing_params,
                reason=attempt.reason,
                human_name=current.target.display_name,
                on_event=self._on_briefing_event,
                relay_to_caller=self._bridge.from_human,
                answered=False,
            )
            if current_leg:
                attempt.briefing = briefing
            await briefing.start()
        except DialError as e:
            raise _TransferFailed(e.reason, e.sip_status, e.detail) from None
        except Exception as e:
            logger.warning(f"{self}: the bot could not join the consult room: {e!r}")
            raise _TransferFailed(
                FailureReason.DIAL_FAILED,
                detail=f"the bot could not join the consult room ({type(e).__name__})",
            ) from None

    async def _hand_over_summary(self, attempt: _Attempt, briefing: BriefingSession):
        summary, _from_llm = await attempt.summary_task
        await briefing.set_summary(summary, attempt.turns)

    async def _brief(self, attempt: _Attempt, leg: ConsultLeg) -> BriefingDecision:
        await self._set_state(TransferState.BRIEFING)
        decision = await self._decide(attempt, attempt.briefing)
        if decision.kind == "accept":
            await self._accepted(attempt, attempt.briefing)
        return decision

    async def _decide(self, attempt: _Attempt, briefing: BriefingSession) -> BriefingDecision:
        """Wait for one human's decision (accept, decline, voicemail, timeout, left)."""
        decision = await briefing.decision(self._params.briefing_timeout)
        if briefing.briefing_started_at is not None:
            attempt.timings.briefing = time.monotonic() - briefing.briefing_started_at
        logger.info(f"{self}: briefing decision {decision.kind} via {decision.via}")
        return decision

    async def _accepted(self, attempt: _Attempt, briefing: BriefingSession):
        """Tell the caller they are being connected and thank the human, at once.

        Neither then waits in silence for the other.
        """
        attempt.accepting = True
        if self._params.connected_message:
            self._output.expect_speech(self._params.connected_message)
            await self._gate.announce(self._params.connected_message)
        await briefing.say(self._briefing_params.connecting_message)

    async def _on_briefing_event(self, event: str, data: dict):
        attempt = self._attempt
        if event == "briefing_started" and attempt and attempt.answered_at:
            attempt.timings.answer_to_briefing = time.monotonic() - attempt.answered_at
        await self._emit(event, **data)

    async def _connect(self, attempt: _Attempt, leg: ConsultLeg):
        await self._set_state(TransferState.CONNECTING)
        accepted_at = time.monotonic()
        if self._params.connected_message:
            # Joined, the bot is silent to the caller: the sentence must be heard first.
            await self._output.wait_heard(CONNECTED_SPEECH_SECS)
        join = Join(
            leg=leg,
            caller_room=self._caller_room,
            can_move=self._backend.supports_move,
            open_bridge=lambda: self._open_bridge(attempt),
            caller_identity=self._caller_identity,
        )
        try:
            attempt.mode = await strategy_for(self._params.connect_mode).join(join)
        except (ModeUnavailableError, ConnectError) as e:
            status = getattr(e, "sip_status", None)
            raise _TransferFailed(FailureReason.CONNECT_FAILED, status, detail=str(e)) from None
        if attempt.human_left is not None:
            # They hung up after accepting, before being joined: the caller comes back.
            raise _TransferFailed(FailureReason.HUMAN_HUNG_UP, detail=attempt.human_left)
        attempt.timings.accept_to_connected = time.monotonic() - accepted_at
        await self._set_state(TransferState.CONNECTED, bridged=attempt.mode == ConnectMode.BRIDGE)
        attempt.result = TransferResult(
            outcome=TransferOutcome.CONNECTED,
            human_identity=leg.human_identity,
            connect_mode=attempt.mode,
            timings=attempt.timings,
            tried=[t.record for t in attempt.tries],
            answered_by=_who(attempt.accepted_by),
            summary=_summary_heard(attempt),
        )
        attempt.timings.total = time.monotonic() - attempt.requested_at
        await self._emit("connected", mode=str(attempt.mode))
        await self._publish_result(attempt)
        attempt.handle.settle(attempt.result)
        if attempt.moved:
            # The human is in the caller's room: the consult room is no longer needed.
            await self._teardown(attempt)
        if attempt.human_left is not None:
            # They left while being joined: as a hang-up right after the connect.
            await self._take_caller_back(attempt)

    def _open_bridge(self, attempt: _Attempt):
        attempt.briefing.enter_bridge()
        self._bridge.start()

    async def _return_to_caller(self, attempt: _Attempt, failure: _TransferFailed):
        """Tell the caller first; the teardown follows (it may take seconds of retries)."""
        self._bridge.stop()
        self._finish(attempt, failure)
        await self._emit(
            "transfer_failed",
            reason=str(failure.reason),
            sip_status=failure.sip_status,
        )
        await self._publish_result(attempt)
        if not (self._caller_gone or self._ended):
            await self._set_state(TransferState.RETURNING)
            step = self._params.next_step(failure.reason)
            attempt.result.next_step = step
            if step == "callback":
                await self._offer_callback(failure)
            elif step == "end_call":
                await self._end_call_politely(failure)
            else:
                opens = self._opens() if failure.reason == FailureReason.AFTER_HOURS else None
                await self._gate.announce(self._params.failure_message(failure.reason, opens=opens))
                await self._gate.note_to_context(
                    f"[warm transfer] The transfer to a human failed ({failure.reason}). "
                    "The caller is back with you; they were told why. Continue helping them."
                )
            await self._emit("returned_to_caller", reason=str(failure.reason), next_step=step)
        attempt.handle.settle(attempt.result)
        await self._teardown(attempt)
        await self._set_state(TransferState.IDLE)

    async def _offer_callback(self, failure: _TransferFailed):
        """Nobody is free: the bot offers a callback and gets the tools to collect it."""
        collector = self._callback
        collector.reset()
        collector.reason = str(failure.reason)
        await self._gate.announce(fill_opens(self._params.callback_offer_message, self._opens()))
        if self._caller_llm is not None and not self._callback_tools_added:
            collector.register(self._caller_llm)
            self._callback_tools_added = True
            tools = []
            if self._context is not None and isinstance(self._context.tools, ToolsSchema):
                tools = list(self._context.tools.standard_tools)
            tools += [t for t in collector.tool_schemas if t.name not in {x.name for x in tools}]
            await self._gate.push_frame(LLMSetToolsFrame(tools=ToolsSchema(standard_tools=tools)))
        await self._gate.note_to_context(
            f"[warm transfer] Nobody could take the call ({failure.reason}); the caller was "
            f"offered a callback. {collector.instructions}"
        )

    async def _end_call_politely(self, failure: _TransferFailed):
        """Nobody is free and the bot is not to go on: a goodbye, then the call ends."""
        await self._gate.announce(fill_opens(self._params.goodbye_message, self._opens()))
        await self._emit("ending_call", reason=str(failure.reason))
        # Upstream to the worker, which ends the pipeline after the goodbye is played.
        await self._gate.push_frame(
            EndWorkerFrame(reason=f"nobody free: {failure.reason}"), FrameDirection.UPSTREAM
        )

    async def _on_callback_requested(self, _collector, request: CallbackRequest):
        """The caller confirmed a callback: it goes on the transfer's result and out."""
        result = self._results[-1] if self._results else None
        if result is not None:
            result.callback = request
        await self._emit(
            "callback_requested",
            number=mask_number(request.number),
            preferred_time=request.preferred_time,
        )
        await self._call_event_handler("on_callback_requested", request)

    def _finish(self, attempt: _Attempt, failure: _TransferFailed):
        if attempt.result is not None:
            return
        attempt.timings.total = time.monotonic() - attempt.requested_at
        for current in attempt.tries:
            if not current.record.outcome:
                self._settle_try(attempt, current, str(failure.reason), failure.sip_status)
        answered = attempt.answered and attempt.leg is not None
        attempt.result = TransferResult(
            outcome=TransferOutcome.FAILED,
            reason=failure.reason,
            human_identity=attempt.leg.human_identity if answered else None,
            timings=attempt.timings,
            sip_status=failure.sip_status,
            detail=failure.detail,
            tried=[t.record for t in attempt.tries],
            summary=_summary_heard(attempt),
        )

    async def _publish_result(self, attempt: _Attempt):
        result = attempt.result
        if result is None or result in self._results:
            return
        self._results.append(result)
        if not self._ended:
            await self._gate.push_frame(TransferResultFrame(result=result))
        await self._call_event_handler("on_transfer_result", result)

    #
    # Events from the legs, the processors and the pipeline
    #

    async def _on_ringing(self):
        await self._emit("ringing")

    async def _on_human_left(self, attempt: _Attempt, reason: str, current: _Try | None = None):
        # Handled in a task of its own: the leg may call this from inside the briefing
        # pipeline, which the handling tears down.
        self._spawn(self._handle_human_left(attempt, reason, current), "human-left")

    async def _handle_human_left(self, attempt: _Attempt, reason: str, current: _Try | None = None):
        if attempt is not self._attempt or self._caller_gone:
            return  # an earlier attempt's leg, or our own hang-up after the caller left
        if current is not None and current.leg is not attempt.leg:
            current.left = reason  # kept: followed later, their briefing ends at once
            if current.briefing is not None and current.record.answered_at is not None:
                # Briefed in a first-to-accept race: their own briefing ends with it.
                current.briefing.decide(BriefingDecision("human_left", reason=reason, via="hangup"))
            return  # a human the group moved past, or one still ringing (its dial says)
        if attempt.torn_down and not attempt.moved:
            return  # already torn down
        await self._emit("human_hung_up", reason=reason)
        if self._state == TransferState.CONNECTED:
            await self._take_caller_back(attempt)
        else:
            attempt.human_left = reason
            if attempt.briefing is not None:
                attempt.briefing.decide(BriefingDecision("human_left", reason=reason, via="hangup"))

    async def _take_caller_back(self, attempt: _Attempt):
        """The human left after being joined: the bot takes the caller back, then tears down."""
        self._bridge.stop()
        if not self._caller_gone and not self._ended:
            await self._set_state(TransferState.RETURNING)
            await self._gate.announce(self._params.human_left_message)
            await self._emit("returned_to_caller", reason="human_left_after_connect")
        await self._teardown(attempt)
        if not self._caller_gone and not self._ended:
            await self._set_state(TransferState.IDLE)

    async def _on_music_started(self):
        attempt = self._attempt
        if self._hold_line_event:
            self._hold_line_event.set()
        if attempt is not None and attempt.timings.request_to_hold is None:
            attempt.timings.request_to_hold = time.monotonic() - attempt.requested_at
        await self._emit("hold_started")

    async def _on_caller_dtmf(self, digit: str):
        if self._state != TransferState.IDLE:
            await self._emit("caller_dtmf", digit=digit)

    async def _on_caller_audio(self, frame: InputAudioRawFrame):
        await self._bridge.from_caller(frame)

    async def _play_to_human(self, frame: InputAudioRawFrame):
        attempt = self._attempt
        if attempt is not None and attempt.briefing is not None:
            await attempt.briefing.relay_to_human(frame)

    def _on_pipeline_start(self):
        self._running = True

    async def _on_pipeline_end(self, cancelled: bool):
        """The caller pipeline is ending: stop the transfer and tear everything down."""
        if self._ended:
            return
        self._ended = True
        # A moved human stays with the caller when only the bot leaves; with the caller
        # gone too, the teardown hangs them up.
        reason = FailureReason.CALLER_HUNG_UP if self._caller_gone else FailureReason.CANCELLED
        try:
            await self._end_under_transfer(reason)
        finally:
            self._bridge.stop()
            await self._stop_tasks()
            await self._callback.cleanup()
            await self._set_state(TransferState.IDLE, push=False)

    #
    # Teardown
    #

    async def _teardown(self, attempt: _Attempt):
        """Close the consult leg on every path: once per attempt, and every caller waits.

        The teardown runs in a task of its own, so a caller cancelled meanwhile (the run
        task, when the caller hangs up during a slow teardown) neither stops it halfway
        nor loses its `teardown_done`; whoever comes next waits for the same teardown.
        The hang-up is decided at the end of every call (`_hang_up_if_due`).
        """
        if attempt.teardown_task is None:
            attempt.torn_down = True
            attempt.teardown_task = asyncio.create_task(
                self._close_attempt(attempt), name=f"{self}::teardown"
            )
        await asyncio.shield(attempt.teardown_task)
        await self._hang_up_if_due(attempt)

    async def _hang_up_if_due(self, attempt: _Attempt):
        """The one decision on a moved human: hung up once the caller is gone too.

        A human still in the consult room is the leg's: closing it hangs them up.
        """
        if attempt.leg is not None and attempt.moved and self._caller_gone:
            await _quietly(attempt.leg.hang_up(), "hang up the moved human")

    async def _close_attempt(self, attempt: _Attempt):
        if attempt.side_tasks:
            await asyncio.wait(attempt.side_tasks, timeout=SIDE_TASKS_SECS)
        others = [t for t in attempt.open_tries if t.leg is not attempt.leg]
        attempt.open_tries = []
        await asyncio.gather(
            *(_quietly(t.briefing.close(), "close the briefing") for t in others if t.briefing)
        )
        await asyncio.gather(
            *(_quietly(t.leg.close(), "close the consult leg") for t in others if t.leg)
        )
        if attempt.briefing is not None:
            await _quietly(attempt.briefing.close(), "close the briefing")
        await self._hang_up_if_due(attempt)
        if attempt.leg is not None:
            await _quietly(attempt.leg.close(), "close the consult leg")
        for current in attempt.tries:
            self._keep_transcript(current)
        summary_task = attempt.summary_task
        if summary_task is not None and not summary_task.done():
            summary_task.cancel()
            await asyncio.gather(summary_task, return_exceptions=True)
        await self._emit("teardown_done", attempt=attempt)

    def _referring(self) -> bool:
        """Whether a REFER of the caller is in flight (the connect of `refer` mode)."""
        return (
            self._state == TransferState.CONNECTING
            and self._params.connect_mode == ConnectMode.REFER
        )

    async def _wait_run_task(self, timeout: float):
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            await asyncio.wait([task], timeout=timeout)

    async def _stop_run_task(self):
        task = self._task
        if task is None or task.done() or task is asyncio.current_task():
            return
        task.cancel()
        done, _ = await asyncio.wait([task], timeout=STOP_RUN_SECS)
        if not done:
            logger.warning(f"{self}: the transfer did not stop in {STOP_RUN_SECS:g} s")

    async def _stop_tasks(self):
        """Stop every task of this controller (the pipeline ended, or is cleaned up)."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self}::{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    #
    # State and events
    #

    async def _set_state(self, state: TransferState, *, bridged: bool = False, push: bool = True):
        previous = self._state
        if previous == state:
            return
        self._state = state
        self._gate.set_state(state)
        if push:
            await self._gate.push_frame(
                TransferStateFrame(state=state, previous=previous, bridged=bridged)
            )
        await self._call_event_handler("on_state_changed", state)

    async def _emit(self, event: str, *, attempt: _Attempt | None = None, **data):
        payload = {"event": event, **{k: v for k, v in data.items() if v is not None}}
        attempt = attempt or self._attempt
        if attempt is not None:
            payload.setdefault("transfer", attempt.number)
        logger.debug(f"{self}: {payload}")
        if self._running and not self._ended:
            await self._gate.push_frame(TransferEventFrame(event=event, data=dict(payload)))
        await self._call_event_handler("on_transfer_event", payload)


_HELD = (TransferState.HOLDING, TransferState.BRIEFING)


def _summary_heard(attempt: _Attempt) -> str | None:
    """The summary a human was briefed with, if any briefing got it."""
    for current in attempt.tries:
        if current.briefing is not None and current.briefing.summary:
            return current.briefing.summary
    return None


def _who(current: _Try | None) -> str | None:
    """The name of the human who took the call, or their masked number."""
    if current is None:
        return None
    return current.target.display_name or _mask(current.target.number)


def _mask(number: str) -> str:
    """Keep the last digits of a number for logs and events."""
    return number if len(number) <= 4 else "…" + number[-4:]


async def _quietly(coro, what: str):
    try:
        await coro
    except Exception as e:
        logger.warning(f"Teardown: could not {what}: {type(e).__name__}: {e}")
