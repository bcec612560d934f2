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
    """

    outcome: TransferOutcome
    reason: FailureReason | None = None
    human_identity: str | None = None
    connect_mode: ConnectMode | None = None
    timings: TransferTimings = field(default_factory=TransferTimings)
    sip_status: int | None = None
    detail: str | None = None

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
        }
