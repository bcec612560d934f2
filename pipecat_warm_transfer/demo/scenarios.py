#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The demo's scenarios: who says what, and what outcome each must end with.

The story is the same in each: Dana was charged twice and asks for a person; the bot puts
her on hold and calls Sam. How Sam's side goes differs per scenario.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipecat_warm_transfer.types import ConnectMode, FailureReason

CALLER_NUMBER_OF_HUMAN = "+15550100"

CALLER_ASKS = "Hi, I was charged twice for my subscription this month. Can I talk to a person?"
TRANSFER_REASON = "Charged twice for the subscription this month; asked for a person."
SUMMARY = (
    "Dana was charged twice for her subscription this month and would like a refund. "
    "She asked to speak with a person."
)
HOLD_LINE = "Of course. Please hold while I connect you with a colleague."
HUMAN_GREETING = "Hello, this is Sam."
BRIEFING_INTRO = (
    "Hi Sam, this is the virtual assistant. I have Dana on the line. She was charged twice "
    "for her subscription this month. Can you take the call?"
)
HUMAN_ACCEPTS = "Yes, put her through."
HUMAN_DECLINES = "Sorry, I'm in a meeting right now."
HUMAN_TO_CALLER = "Hi Dana, this is Sam from billing. I've refunded the second charge."
CALLER_THANKS = "Thank you so much!"
VOICEMAIL_GREETING = "Hi, you've reached Sam. I'm not available, please leave a message."
CALLER_AFTER_RETURN = "Okay, I'll try again later. Thanks."
BOT_GOODBYE = "You're welcome. Goodbye!"


@dataclass(frozen=True)
class Scenario:
    """One demo scenario and the result it must end with.

    Parameters:
        name: The `--scenario` name.
        description: One line for `--list`.
        human: How the human's phone behaves: answer, busy, no_answer, voicemail.
        human_reply: What the human says after the briefing (None: nothing).
        human_hangs_up: The human hangs up during the briefing.
        caller_hangs_up: The caller hangs up during the briefing.
        supports_move: Whether the emulated server supports MoveParticipant.
        outcome: The expected outcome (`connected` or `failed`).
        reason: The expected failure reason.
        connect_mode: The expected connect mode.
    """

    name: str
    description: str
    human: str = "answer"
    human_reply: str | None = HUMAN_ACCEPTS
    human_hangs_up: bool = False
    caller_hangs_up: bool = False
    supports_move: bool = True
    outcome: str = "connected"
    reason: FailureReason | None = None
    connect_mode: ConnectMode | None = ConnectMode.MOVE


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("success", "Sam answers, is briefed, accepts; Dana is moved to Sam."),
        Scenario(
            "bridge",
            "As success, on a server without MoveParticipant: the bot relays both ways.",
            supports_move=False,
            connect_mode=ConnectMode.BRIDGE,
        ),
        Scenario(
            "no-answer",
            "Sam's phone rings out; Dana is told and the bot carries on.",
            human="no_answer",
            human_reply=None,
            outcome="failed",
            reason=FailureReason.NO_ANSWER,
            connect_mode=None,
        ),
        Scenario(
            "busy",
            "Sam's line is busy (SIP 486); Dana is told at once.",
            human="busy",
            human_reply=None,
            outcome="failed",
            reason=FailureReason.BUSY,
            connect_mode=None,
        ),
        Scenario(
            "decline",
            "Sam is briefed and declines; Dana is told.",
            human_reply=HUMAN_DECLINES,
            outcome="failed",
            reason=FailureReason.DECLINED,
            connect_mode=None,
        ),
        Scenario(
            "voicemail",
            "Sam's voicemail answers; Pipecat's VoicemailDetector spots it.",
            human="voicemail",
            human_reply=None,
            outcome="failed",
            reason=FailureReason.VOICEMAIL,
            connect_mode=None,
        ),
        Scenario(
            "caller-hangup",
            "Dana hangs up while Sam is being briefed; Sam is told.",
            human_reply=None,
            caller_hangs_up=True,
            outcome="failed",
            reason=FailureReason.CALLER_HUNG_UP,
            connect_mode=None,
        ),
        Scenario(
            "human-hangup",
            "Sam hangs up during the briefing; Dana is told and the bot carries on.",
            human_reply=None,
            human_hangs_up=True,
            outcome="failed",
            reason=FailureReason.HUMAN_HUNG_UP,
            connect_mode=None,
        ),
    )
}
