#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The demo's scenarios: who says what, and what outcome each must end with.

The story is the same in each: Dana was charged twice and asks for a person; the bot puts
her on hold and calls Sam. How Sam's side goes differs per scenario (in `refer`, Dana's
phone call is handed to Sam's number by SIP REFER). The team scenarios call the billing
team instead: its colleagues in turn or all at once (a `RingGroup`), outside its hours,
or Sam alone with a callback booked when he does not answer.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from pipecat_warm_transfer.availability import BusinessHours, Holiday
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


def briefing_intro(name: str) -> str:
    """What the bot tells a colleague who answers, before asking them to take the call."""
    return (
        f"Hi {name}, this is the virtual assistant. I have Dana on the line. She was charged "
        "twice for her subscription this month. Can you take the call?"
    )


BRIEFING_INTRO = briefing_intro("Sam")


def team_briefing_intro(name: str) -> str:
    """The shorter briefing a colleague of the ring group hears (the group tries several)."""
    return f"Hi {name}, it's the virtual assistant. Dana was charged twice. Can you take her call?"


HUMAN_ACCEPTS = "Yes, put her through."
HUMAN_DECLINES = "Sorry, I'm in a meeting right now."
HUMAN_TO_CALLER = "Hi Dana, this is Sam from billing. I've refunded the second charge."
CALLER_THANKS = "Thank you so much!"
VOICEMAIL_GREETING = "Hi, you've reached Sam. I'm not available, please leave a message."
CALLER_AFTER_RETURN = "Okay, I'll try again later. Thanks."
BOT_GOODBYE = "You're welcome. Goodbye!"

#: Where the billing team works: its hours and the callback times are read there.
TEAM_TIME_ZONE = "America/New_York"
#: The number Dana calls from (LiveKit's `sip.phoneNumber` on her SIP participant).
CALLER_NUMBER = "+15550142"
CALLER_CALLBACK_TIME = "Tomorrow at 3 pm, please."
#: The caller's words, as her LLM passes them to `request_callback`.
CALLBACK_PREFERRED_TIME = "tomorrow at 3 pm"
CALLER_CONFIRMS = "Yes, that's right."
#: Said over the music while the group is tried (`{remaining}`: colleagues left to try).
GROUP_HOLD_REMINDER = "Thanks for holding. I'm still trying, {remaining}."
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Colleague:
    """One human of the billing team's ring group, and how their phone and they behave.

    Parameters:
        name: Their display name (in events, `tried` and the timeline's lanes).
        number: Their phone number.
        voice: Their eSpeak NG voice.
        phone: How their phone behaves: answer, busy, no_answer.
        greeting: What they say on answering.
        reply: What they say after the briefing (None: nothing).
        to_caller: What they say to Dana once joined (the one who takes the call).
        answer_after: Seconds their phone rings before it answers (or is busy).
        ring_timeout: Their own ring timeout (None: the transfer's).
    """

    name: str
    number: str
    voice: str
    phone: str = "answer"
    greeting: str | None = None
    reply: str | None = None
    to_caller: str | None = None
    answer_after: float = 1.0
    ring_timeout: float | None = None


PRIYA = Colleague("Priya", "+15550101", "en-us+f4", phone="busy", answer_after=1.2)
SAM = Colleague("Sam", "+15550102", "en-gb+m3", greeting=HUMAN_GREETING, reply=HUMAN_DECLINES)
MARIA = Colleague(
    "Maria",
    "+15550103",
    "en-gb+f2",
    greeting="Hi, Maria speaking.",
    reply=HUMAN_ACCEPTS,
    to_caller="Hi Dana, it's Maria from billing. I've refunded the second charge.",
)
#: The team rung all at once (`ring-all`): Maria picks up first, 2 s in; Priya and Sam
#: would pick up later, had their phones not stopped ringing.
PRIYA_LATE = Colleague("Priya", PRIYA.number, PRIYA.voice, answer_after=6.0)
SAM_LATE = replace(SAM, greeting=None, reply=None, answer_after=5.0)
MARIA_FIRST = replace(MARIA, answer_after=2.0)
#: Sam alone, whose phone rings out after 6 s (nobody else is on the team that day).
SAM_AWAY = Colleague("Sam", CALLER_NUMBER_OF_HUMAN, "en-gb+m3", phone="no_answer", ring_timeout=6.0)


def team_hours(now: datetime, *, closed_today: bool = False) -> BusinessHours:
    """The billing team's hours in `TEAM_TIME_ZONE`.

    Around the clock, or weekdays 09:00-17:00 with a holiday on today's date in the
    team's zone at `now` (the demo's real time): the team is closed whenever the
    `after-hours` scenario runs, and the caller is told when it is back.
    """
    if not closed_today:
        return BusinessHours(TEAM_TIME_ZONE, {day: "00:00-24:00" for day in _WEEKDAYS})
    today = now.astimezone(ZoneInfo(TEAM_TIME_ZONE)).date()
    return BusinessHours(
        TEAM_TIME_ZONE,
        {day: "09:00-17:00" for day in _WEEKDAYS[:5]},
        holidays=[Holiday(today, "Acme team day")],
    )


@dataclass(frozen=True)
class Scenario:
    """One demo scenario and the result it must end with.

    Parameters:
        name: The `--scenario` name.
        description: One line for `--list`.
        human: How Sam's phone behaves when he is dialed alone: answer, busy,
            no_answer, voicemail (a team's colleagues are each a `Colleague`).
        human_reply: What Sam alone says after the briefing (None: nothing).
        human_hangs_up: Sam alone hangs up during the briefing.
        caller_hangs_up: The caller hangs up during the briefing.
        supports_move: Whether the emulated server supports MoveParticipant.
        outcome: The expected outcome (`connected` or `failed`).
        reason: The expected failure reason.
        connect_mode: The expected connect mode.
        team: The billing team, tried in turn as a `RingGroup` (empty: Sam's number
            alone, unnamed, as in the first scenarios).
        closed_today: The team's hours have a holiday today (`team_hours`).
        nobody_free: What follows when nobody could take the call (`WarmTransferParams`).
        answered_by: The expected `answered_by` (checked when set).
        next_step: The expected `next_step` after a failure (checked when set).
        strategy: How the team is rung: `sequential` (in turn) or `simultaneous`
            (all at once, the first to answer is briefed).
        configured_mode: The transfer's `connect_mode` setting (`auto`: move, falling
            back to bridge; `refer`: the caller's SIP call is referred to Sam's number).
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
    team: tuple[Colleague, ...] = ()
    closed_today: bool = False
    nobody_free: str = "return"
    answered_by: str | None = None
    next_step: str | None = None
    strategy: str = "sequential"
    configured_mode: ConnectMode = ConnectMode.AUTO

    @property
    def refers(self) -> bool:
        """Whether the caller's call is handed over by SIP REFER (the bot leaves)."""
        return self.configured_mode == ConnectMode.REFER

    @property
    def books_callback(self) -> bool:
        """Whether the caller is offered a callback and books one."""
        return self.nobody_free == "callback"

    @property
    def caller_lines(self) -> list[str]:
        """What the caller says, in order (her scripted STT's lines)."""
        if self.books_callback:
            return [CALLER_ASKS, CALLER_CALLBACK_TIME, CALLER_CONFIRMS]
        return [CALLER_ASKS, CALLER_AFTER_RETURN]


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
        Scenario(
            "refer",
            "Sam accepts and is hung up; Dana's call is referred to his number (SIP REFER).",
            configured_mode=ConnectMode.REFER,
            connect_mode=ConnectMode.REFER,
        ),
        Scenario(
            "ring-group",
            "The billing team in turn: Priya is busy, Sam declines, Maria takes the call.",
            team=(PRIYA, SAM, MARIA),
            answered_by="Maria",
        ),
        Scenario(
            "ring-all",
            "The billing team all at once: Maria answers first; the other phones stop ringing.",
            team=(PRIYA_LATE, SAM_LATE, MARIA_FIRST),
            strategy="simultaneous",
            answered_by="Maria",
        ),
        Scenario(
            "after-hours",
            "The team is closed today (a holiday): nobody is dialed; Dana hears when it's back.",
            team=(PRIYA, SAM, MARIA),
            closed_today=True,
            human_reply=None,
            outcome="failed",
            reason=FailureReason.AFTER_HOURS,
            connect_mode=None,
            next_step="return",
        ),
        Scenario(
            "callback",
            "Sam doesn't answer; Dana books a callback for tomorrow at 3 pm and confirms it.",
            team=(SAM_AWAY,),
            nobody_free="callback",
            human_reply=None,
            outcome="failed",
            reason=FailureReason.NO_ANSWER,
            connect_mode=None,
            next_step="callback",
        ),
    )
}
