#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""States, outcomes and failure reasons of a warm transfer.

The string values of `FailureReason`, `TransferOutcome` and `TransferState` are a public
contract (events, reports, Flows branching): keep them stable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TransferConfigError(ValueError):
    """A transfer setting refused before any call is placed; one line naming the field."""


class TransferState(StrEnum):
    """Where a transfer is: `idle → holding → briefing → connecting → connected`.

    After a failure: `returning → idle`.
    """

    IDLE = "idle"
    HOLDING = "holding"
    BRIEFING = "briefing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RETURNING = "returning"


class TransferOutcome(StrEnum):
    """How a transfer ended."""

    CONNECTED = "connected"
    FAILED = "failed"


class FailureReason(StrEnum):
    """Why a transfer failed (the values are a contract)."""

    NO_ANSWER = "no_answer"
    BUSY = "busy"
    DECLINED = "declined"
    VOICEMAIL = "voicemail"
    HUMAN_HUNG_UP = "human_hung_up"
    CALLER_HUNG_UP = "caller_hung_up"
    DIAL_FAILED = "dial_failed"
    BRIEFING_TIMEOUT = "briefing_timeout"
    CONNECT_FAILED = "connect_failed"
    CANCELLED = "cancelled"
    AFTER_HOURS = "after_hours"
    HOLD_TIMEOUT = "hold_timeout"


#: The reasons that mean "nobody could take the call" (not a fault): what happens next is
#: the `nobody_free` policy's (back to the bot, a callback request, or a polite end).
NOBODY_FREE = frozenset(
    {
        FailureReason.NO_ANSWER,
        FailureReason.BUSY,
        FailureReason.DECLINED,
        FailureReason.VOICEMAIL,
        FailureReason.BRIEFING_TIMEOUT,
        FailureReason.AFTER_HOURS,
        FailureReason.HOLD_TIMEOUT,
    }
)


def reason_for_sip_status(status: int | None) -> FailureReason:
    """Map a SIP final status code to a failure reason (DESIGN §2).

    486/600 → busy; 408/480/487 → no_answer; 603 → declined; anything else → dial_failed.
    """
    if status in (486, 600):
        return FailureReason.BUSY
    if status in (408, 480, 487):
        return FailureReason.NO_ANSWER
    if status == 603:
        return FailureReason.DECLINED
    return FailureReason.DIAL_FAILED


class ConnectMode(StrEnum):
    """How caller and human are joined.

    `move` puts the human into the caller's room (LiveKit MoveParticipant); `bridge` has
    the bot relay audio both ways; `auto` tries `move` and falls back to `bridge`;
    `refer` hangs the human up and has the caller's carrier transfer the caller's SIP call
    to the human's number (SIP REFER, LiveKit TransferSIPParticipant): the bot and LiveKit
    leave the media path. `refer` needs a SIP caller and a trunk that accepts REFER; it
    has no fallback (a REFER that fails is `connect_failed`).
    """

    AUTO = "auto"
    MOVE = "move"
    BRIDGE = "bridge"
    REFER = "refer"


@dataclass
class TransferTimings:
    """Seconds between the milestones of one transfer (None when not reached).

    Parameters:
        request_to_hold: Transfer request → hold music audible (after the hold line).
        ring: Dial start → human answered (or the dial's failure).
        answer_to_briefing: Human answered → the briefing's first words.
        briefing: Briefing start → the human's decision.
        accept_to_connected: Connect start (after the human heard the connecting message)
            → caller connected to the human: the control plane's own time (move or bridge).
        total: Transfer request → result.
    """

    request_to_hold: float | None = None
    ring: float | None = None
    answer_to_briefing: float | None = None
    briefing: float | None = None
    accept_to_connected: float | None = None
    total: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """Timings as a JSON-ready dict, rounded to the millisecond."""
        return {k: None if v is None else round(v, 3) for k, v in self.__dict__.items()}


@dataclass
class TargetAttempt:
    """One human tried, and how it ended.

    Parameters:
        index: The human's place in the group.
        number: The number, masked to its last digits (never the whole number).
        display_name: The human's name, when given.
        outcome: `accepted`, a `FailureReason` value, or `stopped` (a simultaneous
            group's other phones once someone answered). A failed result may list one
            `accepted` human: they accepted, then the join failed (`connect_failed`,
            a refused REFER) or someone left while it was made; the result's reason
            says which, and its `answered_by` is None (nobody took the call).
        sip_status: The SIP status of a failed dial.
        human_identity: The human's participant identity in the consult room.
        dialed_at: Seconds from the transfer request to the dial.
        answered_at: Seconds from the transfer request to the answer (None: no answer).
        ended_at: Seconds from the transfer request to this human's outcome.
        transcript: What was said in this human's consult room, in order: `{"role":
            "human" | "bot", "text": ...}` (the human's greeting included).
    """

    index: int
    number: str
    display_name: str | None = None
    outcome: str = ""
    sip_status: int | None = None
    human_identity: str | None = None
    dialed_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    transcript: list[dict] = field(default_factory=list)

    @property
    def ring(self) -> float | None:
        """Dial → answer, or dial → outcome when nobody answered (seconds)."""
        if self.dialed_at is None:
            return None
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return None if end is None else end - self.dialed_at

    def as_dict(self) -> dict:
        """JSON-ready, times rounded to the millisecond."""

        def r(value):
            return None if value is None else round(value, 3)

        return {
            "index": self.index,
            "number": self.number,
            "display_name": self.display_name,
            "outcome": self.outcome,
            "sip_status": self.sip_status,
            "human_identity": self.human_identity,
            "dialed_at": r(self.dialed_at),
            "answered_at": r(self.answered_at),
            "ended_at": r(self.ended_at),
            "ring": r(self.ring),
            "transcript": [dict(turn) for turn in self.transcript],
        }


@dataclass
class TransferResult:
    """The one result of a transfer.

    Parameters:
        outcome: `connected` or `failed`.
        reason: Why it failed (None when connected).
        human_identity: The human's participant identity, when dialed.
        connect_mode: The mode that joined caller and human (None when failed).
        timings: Milestone timings.
        sip_status: The SIP status of a failed dial, kept for `dial_failed` and others.
        detail: A human-readable detail of the failure (never a secret).
        tried: Each human tried, in the order they were dialed (a ring group's).
        answered_by: The human who took the call (display name, or masked number).
        next_step: After a failure: `return` (back to the bot), `callback` (a callback
            request is being collected) or `end_call` (the call was ended politely).
        callback: The `CallbackRequest` the caller confirmed (set when they confirm).
        summary: The summary of the caller's conversation the humans were briefed with.
    """

    outcome: TransferOutcome
    reason: FailureReason | None = None
    human_identity: str | None = None
    connect_mode: ConnectMode | None = None
    timings: TransferTimings = field(default_factory=TransferTimings)
    sip_status: int | None = None
    detail: str | None = None
    tried: list[TargetAttempt] = field(default_factory=list)
    answered_by: str | None = None
    next_step: str | None = None
    callback: Any = None
    summary: str | None = None

    @property
    def consult_transcript(self) -> list[dict]:
        """What was said with the human who took the call (or the last one who answered)."""
        for attempt in reversed(self.tried):
            if attempt.transcript:
                return attempt.transcript
        return []

    @property
    def connected(self) -> bool:
        """Whether caller and human were joined."""
        return self.outcome == TransferOutcome.CONNECTED

    def as_dict(self) -> dict:
        """The result as a JSON-ready dict."""
        return {
            "outcome": str(self.outcome),
            "reason": None if self.reason is None else str(self.reason),
            "human_identity": self.human_identity,
            "connect_mode": None if self.connect_mode is None else str(self.connect_mode),
            "timings": self.timings.as_dict(),
            "sip_status": self.sip_status,
            "detail": self.detail,
            "tried": [attempt.as_dict() for attempt in self.tried],
            "answered_by": self.answered_by,
            "next_step": self.next_step,
            "callback": None if self.callback is None else self.callback.as_dict(),
            "summary": self.summary,
        }
