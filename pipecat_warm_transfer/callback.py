#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A callback request, collected by the caller's LLM when no human is free.

When a transfer cannot reach anyone, the caller is offered a call back instead of a dead
end. `CallbackCollector` owns the two tools the caller's LLM uses for that, as
`WarmTransfer` owns `transfer_to_human`: `request_callback(number?, preferred_time)`
stores a pending request and returns the read-back the LLM must say (the number digit by
digit, the time as understood), and `confirm_callback(confirmed)` settles it. A
confirmed request fires `on_callback_requested(collector, request)` with a structured
`CallbackRequest` ready for a CRM.

The caller's words for the time are always kept; `not_before`/`not_after` are filled
only when the words are understood by a small deterministic parser (English: today,
tomorrow, weekday names, morning/afternoon/evening, "at 3 pm", "after 2 pm", "between 2
and 4 pm", ISO dates and times). Anything it does not understand leaves both bounds
None rather than guessing. Phone numbers are masked in logs (all but the last 4 digits).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.services.llm_service import FunctionCallParams
from pipecat.utils.base_object import BaseObject

from pipecat_warm_transfer.consult_leg import validate_destination
from pipecat_warm_transfer.types import TransferConfigError

#: The SIP participant attribute LiveKit sets to the caller's number on inbound calls.
SIP_PHONE_NUMBER_ATTRIBUTE = "sip.phoneNumber"

#: Local hours (start, end) of each part of the day.
DAY_PARTS: dict[str, tuple[int, int]] = {
    "morning": (8, 12),
    "afternoon": (12, 17),
    "evening": (17, 20),
}
#: Local hours a day with no part or time given stands for (the union of the parts).
CALLING_HOURS = (8, 20)
#: Length of the window a single time ("at 3 pm") stands for.
POINT_WINDOW = timedelta(hours=1)
#: Longest `preferred_time` kept (the LLM's argument goes to a CRM).
MAX_PREFERRED_TIME_CHARS = 200

REQUEST_TOOL = "request_callback"
CONFIRM_TOOL = "confirm_callback"


class CallbackState(StrEnum):
    """Where the collection is: `idle → pending → confirmed`; a refusal goes back to idle."""

    IDLE = "idle"
    PENDING = "pending"
    CONFIRMED = "confirmed"


def mask_number(number: str | None) -> str:
    """The number for logs: every digit but the last four replaced by `*`."""
    if not number:
        return "<none>"
    total = sum(c.isdigit() for c in number)
    seen = 0
    masked = []
    for c in number:
        if c.isdigit():
            seen += 1
            masked.append(c if seen > total - 4 else "*")
        else:
            masked.append(c)
    return "".join(masked)


def normalize_number(value: str, field_name: str = "number") -> str:
    """Return a spoken or written phone number as E.164, or raise `TransferConfigError`.

    Separators (spaces, dashes, dots, brackets, slashes), a `tel:` prefix and the `00`
    international prefix are accepted, as callers and LLMs write numbers that way. No
    country code is guessed: a number without one is refused.
    """
    if not isinstance(value, str):
        raise TransferConfigError(f"{field_name}: a phone number is required")
    text = value.strip()
    if text.lower().startswith("tel:"):
        text = text[4:]
    text = re.sub(r"[\s\-./()]", "", text)
    if text.startswith("00"):
        text = "+" + text[2:]
    checked = validate_destination(text, field_name)
    if not checked.startswith("+"):
        raise TransferConfigError(f"{field_name}: not an E.164 number (+15551234567)")
    return checked


def caller_number_from_attributes(attributes: Mapping[str, str] | None) -> str | None:
    """The caller's E.164 number from a SIP participant's attributes, when it has one.

    LiveKit sets `sip.phoneNumber` on an inbound caller; a missing or malformed value
    gives None (the LLM then asks for the number).
    """
    value = (attributes or {}).get(SIP_PHONE_NUMBER_ATTRIBUTE)
    if not value:
        return None
    try:
        return normalize_number(value, SIP_PHONE_NUMBER_ATTRIBUTE)
    except TransferConfigError:
        logger.debug(f"Callback: caller number {mask_number(value)} is not E.164; not used")
        return None


def spoken_number(number: str) -> str:
    """The number as the TTS must read it: digit by digit (`+1 5 5 5 0 1 0 0`)."""
    digits = [c for c in number if c.isdigit()]
    if not digits:
        return number
    prefix = "+" if number.startswith("+") else ""
    return prefix + " ".join(digits)


@dataclass(repr=False)
class CallbackRequest:
    """What the caller asked for: a call back on a number, at a time.

    Parameters:
        number: The E.164 number to call back.
        preferred_time: The caller's words for when (e.g. "tomorrow morning").
        not_before: Start of the window those words stand for (aware), when understood.
        not_after: End of that window (aware), when understood.
        confirmed: Whether the caller confirmed the read-back.
        reason: Why nobody took the call (e.g. a `FailureReason` value).
        time_zone: The zone the words were read in (IANA name).
        number_is_caller_id: Whether the number is the one the caller called from.
        requested_at: When the request was made (aware).
    """

    number: str
    preferred_time: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    confirmed: bool = False
    reason: str | None = None
    time_zone: str | None = None
    number_is_caller_id: bool = False
    requested_at: datetime | None = None

    def __post_init__(self):
        self.number = normalize_number(self.number, "number")
        for name in ("not_before", "not_after", "requested_at"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
                raise TransferConfigError(f"{name}: an aware datetime is required")
        if (self.not_before is None) != (self.not_after is None):
            raise TransferConfigError("not_before/not_after: give both or neither")
        if self.not_before is not None and self.not_after <= self.not_before:
            raise TransferConfigError("not_after: must be later than not_before")
        if self.reason is not None:
            self.reason = str(self.reason)

    @property
    def masked_number(self) -> str:
        """The number with all but its last 4 digits masked (for logs)."""
        return mask_number(self.number)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 times) for a CRM or an event log."""
        return {
            "number": self.number,
            "preferred_time": self.preferred_time,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "confirmed": self.confirmed,
            "reason": self.reason,
            "time_zone": self.time_zone,
            "number_is_caller_id": self.number_is_caller_id,
            "requested_at": _iso(self.requested_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallbackRequest:
        """Rebuild a request from `as_dict()`'s output."""
        return cls(
            number=data["number"],
            preferred_time=data.get("preferred_time") or "",
            not_before=_from_iso(data.get("not_before")),
            not_after=_from_iso(data.get("not_after")),
            confirmed=bool(data.get("confirmed", False)),
            reason=data.get("reason"),
            time_zone=data.get("time_zone"),
            number_is_caller_id=bool(data.get("number_is_caller_id", False)),
            requested_at=_from_iso(data.get("requested_at")),
        )

    def __repr__(self) -> str:
        """The request with its number masked, so logging it leaks no number."""
        return (
            f"CallbackRequest(number={self.masked_number!r}, "
            f"preferred_time={self.preferred_time!r}, not_before={_iso(self.not_before)}, "
            f"not_after={_iso(self.not_after)}, confirmed={self.confirmed}, "
            f"reason={self.reason!r})"
        )


class CallbackCollector(BaseObject):
    """Collects a callback request through the caller's LLM.

    Event handlers:

    - ``on_callback_requested(collector, request: CallbackRequest)`` — the caller
      confirmed the read-back; `request.confirmed` is True.

    Example::

        callback = CallbackCollector(
            caller_number=caller_number_from_attributes(sip_participant.attributes),
            time_zone="Europe/Paris",
        )
        callback.register(llm)
        context.set_tools(ToolsSchema([*tools, *callback.tool_schemas]))

        @callback.event_handler("on_callback_requested")
        async def on_callback(collector, request):
            await crm.create_task(request.as_dict())
    """

    def __init__(
        self,
        *,
        caller_number: str | None = None,
        time_zone: str | tzinfo = "UTC",
        reason: str | None = None,
        now: Callable[[], datetime] | None = None,
        name: str | None = None,
    ):
        """Initialize the collector.

        Args:
            caller_number: The number the caller called from (E.164), offered as the
                default; see `caller_number_from_attributes`.
            time_zone: The zone the caller's words are read in (IANA name or tzinfo).
            reason: Why nobody took the call (copied into the request).
            now: The clock (returns an aware datetime); the system clock when None.
            name: Optional object name.
        """
        super().__init__(name=name)
        self._zone = _zone(time_zone)
        self._caller_number = (
            normalize_number(caller_number, "caller_number") if caller_number else None
        )
        self._reason = str(reason) if reason is not None else None
        self._now = now or (lambda: datetime.now(self._zone))
        self._state = CallbackState.IDLE
        self._request: CallbackRequest | None = None
        self._register_event_handler("on_callback_requested")

    #
    # What the user (or the transfer core) wires in
    #

    @property
    def tool_schemas(self) -> list[FunctionSchema]:
        """The caller LLM's `request_callback` and `confirm_callback` tools."""
        return [
            FunctionSchema(
                name=REQUEST_TOOL,
                description=(
                    "Record that the caller wants a human to call them back. Returns a "
                    "read-back sentence: say it and ask the caller to confirm."
                ),
                properties={
                    "number": {
                        "type": "string",
                        "description": (
                            "Number to call back, E.164 with the country code "
                            "(+15551234567). Leave it out to use the number the caller is "
                            "calling from."
                        ),
                    },
                    "preferred_time": {
                        "type": "string",
                        "description": (
                            "When the caller wants the call, in their words "
                            "(e.g. 'tomorrow morning', 'Monday at 3 pm')."
                        ),
                    },
                },
                required=["preferred_time"],
            ),
            FunctionSchema(
                name=CONFIRM_TOOL,
                description=(
                    "The caller's answer to the callback read-back: true if they confirmed "
                    "it, false if something is wrong."
                ),
                properties={
                    "confirmed": {
                        "type": "boolean",
                        "description": "Whether the caller confirmed the read-back.",
                    }
                },
                required=["confirmed"],
            ),
        ]

    def register(self, llm) -> None:
        """Register both tool handlers on the caller's LLM service."""
        llm.register_function(REQUEST_TOOL, self.handle_request_callback)
        llm.register_function(CONFIRM_TOOL, self.handle_confirm_callback)

    @property
    def instructions(self) -> str:
        """The system instruction for the caller's LLM in "collect a callback" mode."""
        where = (
            "whether we should call them back on the number they are calling from or on another one"
            if self._caller_number
            else "which number we should call them back on, with the country code"
        )
        return (
            "No colleague is free to take the call right now. Offer the caller a call "
            f"back: ask when suits them and {where}. Then call {REQUEST_TOOL}, say the "
            f"read-back it returns, and call {CONFIRM_TOOL} with the caller's answer."
        )

    @property
    def state(self) -> CallbackState:
        """Where the collection is."""
        return self._state

    @property
    def request(self) -> CallbackRequest | None:
        """The pending or confirmed request (None when idle)."""
        return self._request

    @property
    def caller_number(self) -> str | None:
        """The default number to call back (the caller's own, when known)."""
        return self._caller_number

    def set_caller_number(self, number: str | None):
        """Set the default number (refused with `TransferConfigError` when not E.164)."""
        self._caller_number = normalize_number(number, "caller_number") if number else None

    def set_caller_attributes(self, attributes: Mapping[str, str] | None):
        """Take the default number from the caller's SIP participant attributes."""
        self._caller_number = caller_number_from_attributes(attributes)

    @property
    def reason(self) -> str | None:
        """Why nobody took the call (copied into each new request)."""
        return self._reason

    @reason.setter
    def reason(self, value: str | None):
        self._reason = str(value) if value is not None else None

    def reset(self):
        """Forget any request and go back to idle (e.g. to collect another one)."""
        self._state = CallbackState.IDLE
        self._request = None

    #
    # Tool handlers
    #

    async def handle_request_callback(self, params: FunctionCallParams):
        """Handler of `request_callback`: store a pending request, return its read-back."""
        args = params.arguments or {}
        if self._state == CallbackState.CONFIRMED:
            await params.result_callback(
                {
                    "status": "already_confirmed",
                    "instruction": (
                        "A call back is already booked and confirmed. Tell the caller so; "
                        "do not book another one."
                    ),
                }
            )
            return
        words = _clean_words(args.get("preferred_time"))
        if not words:
            await params.result_callback(
                {
                    "status": "need_time",
                    "instruction": "Ask the caller when they would like us to call back.",
                }
            )
            return
        given = args.get("number")
        given = given.strip() if isinstance(given, str) else None
        if given:
            try:
                number = normalize_number(given, "number")
            except TransferConfigError:
                logger.info(f"{self}: callback number {mask_number(given)} refused (not E.164)")
                await params.result_callback(
                    {
                        "status": "invalid_number",
                        "instruction": (
                            "That phone number is not valid. Ask the caller to say the "
                            "number again, digit by digit, with the country code."
                        ),
                    }
                )
                return
        elif self._caller_number:
            number = self._caller_number
        else:
            await params.result_callback(
                {
                    "status": "need_number",
                    "instruction": (
                        "Ask the caller which number we should call them back on, with "
                        "the country code."
                    ),
                }
            )
            return

        now = self._now()
        not_before, not_after = parse_preferred_time(words, now=now, time_zone=self._zone)
        self._request = request = CallbackRequest(
            number=number,
            preferred_time=words,
            not_before=not_before,
            not_after=not_after,
            reason=self._reason,
            time_zone=_zone_name(self._zone),
            number_is_caller_id=number == self._caller_number,
            requested_at=now,
        )
        self._state = CallbackState.PENDING
        read_back = self.read_back(request, now=now)
        logger.info(f"{self}: callback pending: {request!r}")
        await params.result_callback(
            {
                "status": "pending_confirmation",
                "read_back": read_back,
                "instruction": (
                    f"Say the read-back exactly, then call {CONFIRM_TOOL} with the caller's answer."
                ),
            }
        )

    async def handle_confirm_callback(self, params: FunctionCallParams):
        """Handler of `confirm_callback`: confirm (and announce) or clear the request."""
        if self._state == CallbackState.IDLE or self._request is None:
            await params.result_callback(
                {
                    "status": "no_request",
                    "instruction": (
                        "There is no call back to confirm yet. Ask the caller when and on "
                        f"which number to call back, then call {REQUEST_TOOL}."
                    ),
                }
            )
            return
        if self._state == CallbackState.CONFIRMED:
            await params.result_callback(
                {
                    "status": "already_confirmed",
                    "instruction": "The call back is already confirmed; close the call.",
                }
            )
            return
        confirmed = _as_bool((params.arguments or {}).get("confirmed"))
        if confirmed is None:
            await params.result_callback(
                {
                    "status": "need_answer",
                    "instruction": (
                        "Ask the caller whether the read-back is right, then call "
                        f"{CONFIRM_TOOL} with true or false."
                    ),
                }
            )
            return
        request = self._request
        if not confirmed:
            logger.info(f"{self}: callback read-back refused by the caller; asking again")
            self.reset()
            await params.result_callback(
                {
                    "status": "not_confirmed",
                    "instruction": (
                        "Ask the caller again when and on which number to call them back, "
                        f"then call {REQUEST_TOOL} with the corrected details."
                    ),
                }
            )
            return
        request.confirmed = True
        self._state = CallbackState.CONFIRMED
        logger.info(f"{self}: callback confirmed: {request!r}")
        await self._call_event_handler("on_callback_requested", request)
        await params.result_callback(
            {
                "status": "confirmed",
                "closing": (
                    f"Thank you. Someone will call you back {self._when(request)}. Goodbye!"
                ),
                "instruction": "Thank the caller, tell them when to expect the call, say goodbye.",
            }
        )

    def read_back(self, request: CallbackRequest, *, now: datetime | None = None) -> str:
        """The sentence the LLM says so the caller can confirm the request."""
        own = "the number you are calling from, " if request.number_is_caller_id else ""
        return (
            f"Let me confirm: we will call you back on {own}{spoken_number(request.number)}, "
            f"{self._when(request, now)}. Is that right?"
        )

    def _when(self, request: CallbackRequest, now: datetime | None = None) -> str:
        if request.not_before is None:
            return f"as you asked: {request.preferred_time}"
        return describe_window(
            request.not_before, request.not_after, now=now or self._now(), time_zone=self._zone
        )


#
# The caller's words for a time
#

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

#: Words that may surround a time without changing it. Anything else left over after the
#: known phrases (e.g. "not", "week", "later") makes the words unparseable.
_FILLER = frozenset(
    """a about all and any anytime around at be best by call calling can could day do
    during fine for free good great i i'd i'm ideally if in is it it's just like maybe me
    o'clock oclock ok okay on or perfect please possible prefer preferably ring sometime
    suits that that's the then there this time us we would works you""".split()
)

_ISO = re.compile(r"\b(\d{4}-\d{2}-\d{2})(?:[t ](\d{2}:\d{2}(?::\d{2})?)(z|[+-]\d{2}:?\d{2})?)?\b")
_CLOCK = r"(\d{1,2})(?:[:.h](\d{2}))?\s*(am|pm)?"
_BETWEEN = re.compile(rf"\b(?:between|from)\s+{_CLOCK}\s+(?:and|to|until|till|-)\s+{_CLOCK}")
_AFTER = re.compile(rf"\b(after|from|before|by|until|till)\s+{_CLOCK}(?!\d)")
_AT = re.compile(rf"\b(?:at|around|about|for)\s+{_CLOCK}(?!\d)")
_BARE = re.compile(r"\b(\d{1,2})(?:[:.h](\d{2}))?\s*(am|pm)\b|\b(\d{1,2})[:h](\d{2})\b")
_OCLOCK = re.compile(r"\b(\d{1,2})\s*o'?clock\b")
_NOON = re.compile(r"\b(?:noon|midday)\b")


@dataclass
class _Clock:
    hour: int
    minute: int
    meridiem: str | None
    explicit_24h: bool

    def resolve(self, part_hint: str | None) -> time | None:
        """The time of day, reading an hour without am/pm with the part of day given.

        Without a part, a bare 1–7 is afternoon and 8–11 morning (business hours).
        """
        h, m = self.hour, self.minute
        if m > 59:
            return None
        if self.meridiem:
            if not 1 <= h <= 12:
                return None
            h = h % 12 + (12 if self.meridiem == "pm" else 0)
        elif not self.explicit_24h and 1 <= h <= 11:
            if part_hint in ("afternoon", "evening") or (part_hint is None and h <= 7):
                h += 12
        if h > 23:
            return None
        return time(h, m)


def _clock(hour: str, minute: str | None, meridiem: str | None) -> _Clock:
    return _Clock(
        hour=int(hour),
        minute=int(minute or 0),
        meridiem=meridiem,
        explicit_24h=int(hour) >= 13 or int(hour) == 0 or hour.startswith("0"),
    )


def parse_preferred_time(
    words: str, *, now: datetime, time_zone: str | tzinfo
) -> tuple[datetime | None, datetime | None]:
    """The window (not_before, not_after) a caller's words stand for, or (None, None).

    Deterministic and modest on purpose: words it does not fully understand give
    (None, None) rather than a guess. Understood: today, tonight, tomorrow, the day after
    tomorrow, weekday names ("Monday", "next Monday"), morning (08–12), afternoon
    (12–17), evening (17–20), noon, "at 3 pm", "15:30", "after 2 pm", "before 5 pm",
    "between 2 and 4 pm", ISO dates and date-times. A day alone means calling hours
    (08–20); a single time means a one-hour window. A window already over rolls to the
    next day when no day was given (to next week for a weekday); a past "today" gives
    None. The start is never before `now`.

    Args:
        words: The caller's words.
        now: The reference time (aware).
        time_zone: The zone the words are read in.

    Returns:
        Aware datetimes in `time_zone`, or (None, None).
    """
    if now.tzinfo is None:
        raise ValueError("now: an aware datetime is required")
    zone = _zone(time_zone)
    local_now = now.astimezone(zone)
    today = local_now.date()
    heard = _listen(words, today, zone)
    if heard is None or not heard.anything:
        return None, None
    if heard.stamp is not None:
        day, step = heard.stamp.date(), None
    elif heard.dates:
        day = next(iter(heard.dates))
        step = 7 if heard.weekday_only else None
    else:
        day, step = today, 1
    floor = local_now.replace(second=0, microsecond=0)

    def over(span: tuple[datetime, datetime] | None) -> bool:
        # A window is over at its end; a single time as soon as it has passed.
        return span is not None and (span[1] <= local_now or (heard.single and span[0] < floor))

    span = heard.window(day, zone)
    if over(span) and step is not None:
        span = heard.window(day + timedelta(days=step), zone)
    if span is None or over(span):
        return None, None
    start, end = span
    return max(start, floor), end


@dataclass
class _Heard:
    """What the parser understood of the caller's words."""

    dates: set[date]
    weekday_only: bool
    parts: set[str]
    stamp: datetime | None
    at: _Clock | None
    after: _Clock | None
    before: _Clock | None
    between: tuple[_Clock, _Clock] | None

    @property
    def single(self) -> bool:
        """Whether the words name a single time ("at 3 pm"), not a window."""
        return self.stamp is not None or self.at is not None

    @property
    def anything(self) -> bool:
        return bool(
            self.dates or self.parts or self.stamp or self.at or self.after or self.before
        ) or (self.between is not None)

    def window(self, day: date, zone: tzinfo) -> tuple[datetime, datetime] | None:
        """The window on `day` (None when a time does not exist, e.g. "13 pm")."""
        if self.stamp is not None:
            return self.stamp, self.stamp + POINT_WINDOW
        first, last = _part_hours(self.parts)
        hint = next(iter(self.parts)) if len(self.parts) == 1 else None

        def on_day(clock: _Clock) -> datetime | None:
            at = clock.resolve(hint)
            return None if at is None else datetime.combine(day, at, zone)

        start_of = datetime.combine(day, time(first), zone)
        end_of = datetime.combine(day, time(last), zone)
        if self.at is not None:
            start = on_day(self.at)
            return None if start is None else (start, start + POINT_WINDOW)
        if self.between is not None:
            start, end = on_day(self.between[0]), on_day(self.between[1])
            if start is None or end is None or end <= start:
                return None
            return start, end
        if self.after is not None:
            start = on_day(self.after)
            return None if start is None else (start, max(end_of, start + POINT_WINDOW))
        if self.before is not None:
            end = on_day(self.before)
            return None if end is None else (min(start_of, end - POINT_WINDOW), end)
        return start_of, end_of


def _listen(words: str, today: date, zone: tzinfo) -> _Heard | None:
    """Take the known phrases out of the words; None when anything else is left."""
    text = " " + words.lower().replace("’", "'") + " "
    text = re.sub(r"\b([ap])\.\s?m\b\.?", r"\1m", text)

    def take(pattern: re.Pattern[str] | str) -> list[re.Match[str]]:
        nonlocal text
        pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        found = list(pattern.finditer(text))
        text = pattern.sub(" ", text)
        return found

    dates: set[date] = set()
    stamps: list[datetime] = []
    points: list[_Clock] = []
    afters: list[_Clock] = []
    befores: list[_Clock] = []
    betweens: list[tuple[_Clock, _Clock]] = []
    for m in take(_ISO):
        stamp = m.group(1) + ("T" + m.group(2) + (m.group(3) or "") if m.group(2) else "")
        try:
            parsed = datetime.fromisoformat(stamp.upper())
        except ValueError:
            return None
        if m.group(2):
            aware = parsed.replace(tzinfo=zone) if parsed.tzinfo is None else parsed
            stamps.append(aware.astimezone(zone))
        else:
            dates.add(parsed.date())
    for m in take(_BETWEEN):
        start, end = _clock(*m.group(1, 2, 3)), _clock(*m.group(4, 5, 6))
        if start.meridiem is None and end.meridiem is not None and not start.explicit_24h:
            # "between 2 and 4 pm": the pm is both ends', unless that reverses them.
            same = _Clock(start.hour, start.minute, end.meridiem, False)
            if (same.resolve(None) or time.max) <= (end.resolve(None) or time.min):
                start = same
        betweens.append((start, end))
    for m in take(_AFTER):
        clock = _clock(*m.group(2, 3, 4))
        (afters if m.group(1) in ("after", "from") else befores).append(clock)
    for m in take(_AT):
        points.append(_clock(*m.group(1, 2, 3)))
    for m in take(_BARE):
        if m.group(1):
            points.append(_clock(*m.group(1, 2, 3)))
        else:
            points.append(_clock(m.group(4), m.group(5), None))
    for m in take(_OCLOCK):
        points.append(_clock(m.group(1), None, None))
    for _ in take(_NOON):
        points.append(_Clock(12, 0, "pm", False))

    parts = {"evening"} if re.search(r"\btonight\b", text) else set()
    for _ in take(r"\bday after tomorrow\b"):
        dates.add(today + timedelta(days=2))
    for _ in take(r"\btomorrow\b"):
        dates.add(today + timedelta(days=1))
    for _ in take(r"\b(?:today|tonight)\b|\bthis (?=morning|afternoon|evening)"):
        dates.add(today)
    explicit = bool(dates)
    weekdays = {
        (_WEEKDAYS.index(m.group(2)), bool(m.group(1) and "next" in m.group(1)))
        for m in take(rf"\b(next\s+|this\s+)?({'|'.join(_WEEKDAYS)})\b")
    }
    for weekday, strictly_next in weekdays:
        ahead = (weekday - today.weekday()) % 7 or (7 if strictly_next else 0)
        dates.add(today + timedelta(days=ahead))
    for m in take(r"\b(morning|afternoon|evening)s?\b"):
        parts.add(m.group(1))

    if any(word not in _FILLER for word in re.findall(r"[a-z0-9']+", text)):
        return None  # words not understood: no guess
    times = len(stamps) + len(points) + len(afters) + len(befores) + len(betweens)
    if len(dates) > 1 or times > 1 or (stamps and (dates or parts)):
        return None  # two days, two times, or an ISO time with more words: ambiguous
    return _Heard(
        dates=dates,
        weekday_only=bool(weekdays) and not explicit,
        parts=parts,
        stamp=stamps[0] if stamps else None,
        at=points[0] if points else None,
        after=afters[0] if afters else None,
        before=befores[0] if befores else None,
        between=betweens[0] if betweens else None,
    )


def describe_window(
    not_before: datetime, not_after: datetime, *, now: datetime, time_zone: str | tzinfo
) -> str:
    """A window as words for the read-back: "tomorrow, Saturday, between 8 am and noon".

    The caller confirms the time the CRM gets, not only their own words.
    """
    zone = _zone(time_zone)
    start, end = not_before.astimezone(zone), not_after.astimezone(zone)
    today = now.astimezone(zone).date()
    if start.date() == today:
        day = "today"
    elif start.date() == today + timedelta(days=1):
        day = f"tomorrow, {start:%A}"
    else:
        day = f"on {start:%A}, {start:%B} {start.day}"
    if end - start <= POINT_WINDOW:
        return f"{day}, at {_spoken_clock(start)}"
    if end.date() != start.date():
        return f"{day}, from {_spoken_clock(start)}"
    return f"{day}, between {_spoken_clock(start)} and {_spoken_clock(end)}"


def _spoken_clock(moment: datetime) -> str:
    if moment.hour == 12 and moment.minute == 0:
        return "noon"
    if moment.hour == 0 and moment.minute == 0:
        return "midnight"
    hour = moment.hour % 12 or 12
    meridiem = "am" if moment.hour < 12 else "pm"
    return f"{hour}:{moment.minute:02d} {meridiem}" if moment.minute else f"{hour} {meridiem}"


def _part_hours(parts: set[str]) -> tuple[int, int]:
    if not parts:
        return CALLING_HOURS
    hours = [DAY_PARTS[p] for p in parts]
    return min(h[0] for h in hours), max(h[1] for h in hours)


def _zone(value: str | tzinfo) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise TransferConfigError(f"time_zone: unknown time zone {value!r}") from None


def _zone_name(zone: tzinfo) -> str:
    return getattr(zone, "key", None) or str(zone)


def _clean_words(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    text = " ".join("".join(c if c.isprintable() else " " for c in value).split())
    return text[:MAX_PREFERRED_TIME_CHARS]


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "yes", "y", "1"):
            return True
        if text in ("false", "no", "n", "0"):
            return False
    return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
