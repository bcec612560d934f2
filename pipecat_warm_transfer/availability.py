#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""When a human can be reached, and what a caller held for one is told.

`BusinessHours` answers "is anyone there now?" and "when will someone be?" from weekly
openings in one time zone, minus holidays; `HoldPolicy` and `hold_reminder` bound a hold
across every colleague tried and word the reminders from the transfer's state.

Pure and deterministic: no Pipecat, no clock of its own (every method takes the time as
an aware `datetime`), so the transfer, a Flows node and the tests ask the same question
the same way.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pipecat_warm_transfer.types import TransferConfigError

#: Weekday keys of `BusinessHours.hours`, Monday first (as `date.weekday()`).
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: How far ahead `next_opening` looks by default.
SEARCH_DAYS = 14

#: Said over the hold music; `{remaining}` says how many colleagues are left to try.
DEFAULT_HOLD_REMINDER = "Still trying — {remaining}."

#: The placeholders a reminder may use.
REMINDER_PLACEHOLDERS = ("remaining", "elapsed")

_DAY_SECONDS = 24 * 3600
_CLOCK = r"(\d{1,2}):(\d{2})"
_INTERVAL = re.compile(rf"^\s*{_CLOCK}\s*[-–]\s*{_CLOCK}\s*$")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


@dataclass(frozen=True, order=True)
class OpeningInterval:
    """One opening of a weekday, in wall-clock seconds after local midnight.

    Open from `start` (included) to `end` (excluded); `end` may be 86400 (`24:00`, open
    until midnight). Wall-clock, so a 09:00 opening stays 09:00 across a DST change.

    Parameters:
        start: Seconds after midnight the opening starts.
        end: Seconds after midnight it ends.
    """

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True)
class Holiday:
    """A day closed all day, in the hours' time zone.

    Parameters:
        date: The closed day.
        name: What it is called ("Christmas Day"), for what the caller is told.
    """

    date: date
    name: str | None = None


def parse_time_zone(value: Any, field: str = "time_zone") -> ZoneInfo:
    """The IANA time zone named `value` (`America/New_York`), refused when unknown."""
    if isinstance(value, ZoneInfo):
        return value
    if isinstance(value, str) and value:
        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise TransferConfigError(
        f"{field}: {value!r} is not a known IANA time zone (e.g. America/New_York, Europe/London)"
    )


def parse_interval(value: Any, field: str) -> OpeningInterval:
    """One opening: `"09:00-17:30"` or `("09:00", "17:30")` (strings or `time`s).

    An opening ends on the day it starts: a night shift is written as `22:00-24:00`
    on one day and `00:00-06:00` on the next, so each day and each holiday is read on
    its own and a holiday closes exactly its day.
    """
    if isinstance(value, str) and (match := _INTERVAL.match(value)):
        start = _clock_seconds(match.group(1), match.group(2))
        end = _clock_seconds(match.group(3), match.group(4))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        start, end = (_clock_value(v) for v in value)
    else:
        start = end = None
    if start is None or end is None or start >= _DAY_SECONDS:
        raise TransferConfigError(
            f"{field}: {_shown(value)} is not an opening like 09:00-17:30 (24-hour clock)"
        )
    if end == start:
        raise TransferConfigError(f"{field}: {_hhmm(start)}-{_hhmm(end)} is empty")
    if end < start:
        raise TransferConfigError(
            f"{field}: {_hhmm(start)}-{_hhmm(end)} crosses midnight; split it into "
            f"{_hhmm(start)}-24:00 and 00:00-{_hhmm(end)} on the next day"
        )
    return OpeningInterval(start, end)


def parse_day(value: Any, field: str) -> tuple[OpeningInterval, ...]:
    """A weekday's openings, sorted: one opening or a list of them, none overlapping."""
    items = [value] if isinstance(value, (str, tuple)) else value
    if not isinstance(items, list):
        raise TransferConfigError(
            f"{field}: expected an opening like 09:00-17:30 or a list of them"
        )
    intervals = sorted(parse_interval(v, f"{field}[{i}]") for i, v in enumerate(items))
    for before, after in zip(intervals, intervals[1:], strict=False):
        if after.start < before.end:
            raise TransferConfigError(f"{field}: {before} overlaps {after}")
    return tuple(intervals)


def parse_date(value: Any, field: str) -> date:
    """A calendar day: a `date` or an ISO `YYYY-MM-DD` string."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise TransferConfigError(f"{field}: {_shown(value)} is not a date (YYYY-MM-DD)")


def parse_holiday(value: Any, field: str) -> Holiday:
    """A holiday: a `Holiday`, a date, or a mapping `{"date": ..., "name": ...}`."""
    if isinstance(value, Holiday):
        return Holiday(parse_date(value.date, f"{field}.date"), _holiday_name(value.name, field))
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - {"date", "name"}, key=str)
        if unknown:
            raise TransferConfigError(f"{field}.{unknown[0]}: unknown field (use date and name)")
        if "date" not in value:
            raise TransferConfigError(f"{field}.date: required field is missing")
        return Holiday(
            parse_date(value["date"], f"{field}.date"), _holiday_name(value.get("name"), field)
        )
    return Holiday(parse_date(value, field))


def _holiday_name(name: Any, field: str) -> str | None:
    if name is None or (isinstance(name, str) and name.strip()):
        return name
    raise TransferConfigError(f"{field}.name: expected a non-empty name or none")


class BusinessHours:
    """When humans answer: weekly openings in one time zone, minus holidays.

    Openings are wall-clock times in `time_zone` (09:00 is 09:00 in winter and summer);
    each ends on the day it starts (see `parse_interval`). A weekday left out is closed.
    A holiday closes its whole local day. Every method takes an aware `datetime`.
    """

    def __init__(
        self,
        time_zone: str,
        hours: Mapping[str, Any],
        holidays: Iterable[Any] = (),
    ):
        """Check and store the hours; every problem is a one-line `TransferConfigError`.

        Args:
            time_zone: IANA name, e.g. `America/New_York`.
            hours: Weekday (`mon` … `sun`) to openings: `"09:00-17:30"`,
                `("09:00", "17:30")`, or a list of them.
            holidays: Dates (`date` or `"2026-12-25"`), `Holiday`s, or mappings
                `{"date": ..., "name": ...}`.

        Raises:
            TransferConfigError: An unknown zone, weekday, or an ill-formed, crossing or
                overlapping opening, or a bad or repeated holiday.
        """
        self._zone = parse_time_zone(time_zone)
        self.time_zone = self._zone.key
        if not isinstance(hours, Mapping):
            raise TransferConfigError("hours: expected a mapping of weekdays (mon … sun)")
        for key in hours:
            if key not in WEEKDAYS:
                raise TransferConfigError(
                    f"hours: unknown weekday {key!r} (use mon, tue, wed, thu, fri, sat or sun)"
                )
        self.hours: dict[str, tuple[OpeningInterval, ...]] = {
            day: parse_day(hours[day], f"hours.{day}") if day in hours else () for day in WEEKDAYS
        }
        self.holidays: dict[date, Holiday] = {}
        for index, value in enumerate(holidays):
            holiday = parse_holiday(value, f"holidays[{index}]")
            if holiday.date in self.holidays:
                raise TransferConfigError(
                    f"holidays[{index}]: {holiday.date.isoformat()} is listed twice"
                )
            self.holidays[holiday.date] = holiday

    @property
    def zone(self) -> ZoneInfo:
        """The time zone the openings and holidays are read in."""
        return self._zone

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BusinessHours):
            return NotImplemented
        return (self.time_zone, self.hours, self.holidays) == (
            other.time_zone,
            other.hours,
            other.holidays,
        )

    def __hash__(self) -> int:
        return hash((self.time_zone, tuple(self.hours.items()), tuple(self.holidays)))

    def __repr__(self) -> str:
        hours = {d: [str(i) for i in v] for d, v in self.hours.items() if v}
        return f"BusinessHours({self.time_zone!r}, {hours}, holidays={len(self.holidays)})"

    def local(self, at: datetime) -> datetime:
        """`at` in the hours' time zone (a naive `datetime` is refused: its zone is a guess)."""
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise ValueError(
                f"at: {at!r} is not an aware datetime (use e.g. datetime.now(timezone.utc))"
            )
        return at.astimezone(self._zone)

    def holiday(self, at: datetime) -> Holiday | None:
        """The holiday that closes `at`'s local day, if any (to say why nobody is there)."""
        return self.holidays.get(self.local(at).date())

    def is_open(self, at: datetime) -> bool:
        """Whether `at` falls in an opening on a day that is not a holiday."""
        local = self.local(at)
        if local.date() in self.holidays:
            return False
        seconds = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return any(i.start <= seconds < i.end for i in self.hours[WEEKDAYS[local.weekday()]])

    def next_opening(self, at: datetime, *, within_days: int = SEARCH_DAYS) -> datetime | None:
        """The first moment at or after `at` when the hours are open, in their zone.

        `at` itself (in the zone) when already open; None when nothing opens within
        `within_days` local days. An opening whose start a DST change skips opens when the
        clock jumps; one the clock passes twice (the autumn repeat) opens both times.
        """
        local = self.local(at)
        if self.is_open(local):
            return local
        for offset in range(within_days + 1):
            day = local.date() + timedelta(days=offset)
            if day in self.holidays:
                continue
            starts = sorted(
                (
                    instant
                    for interval in self.hours[WEEKDAYS[day.weekday()]]
                    for instant in _instants(day, interval.start, self._zone)
                ),
                key=datetime.timestamp,
            )
            for start in starts:
                # Timestamps: datetimes of one zone compare by wall clock, folds ignored.
                if start.timestamp() > local.timestamp() and self.is_open(start):
                    return start
        return None

    def describe_next_opening(
        self, at: datetime, *, within_days: int = SEARCH_DAYS, twelve_hour: bool = False
    ) -> str | None:
        """When the hours next open, as words to follow "We open …".

        "now", "today at 13:00", "tomorrow at 9:00", "on Monday at 9:00" (within the
        week), "on Monday, January 12 at 9:00" (further). None when nothing opens within
        `within_days`, so the caller is never told a made-up time.

        Args:
            at: The current time (aware).
            within_days: How far ahead to look.
            twelve_hour: "9:00 AM" instead of "9:00".
        """
        opening = self.next_opening(at, within_days=within_days)
        if opening is None:
            return None
        local = self.local(at)
        if opening.timestamp() == local.timestamp():
            return "now"
        clock = _spoken_clock(opening, twelve_hour)
        days = (opening.date() - local.date()).days
        if days == 0:
            return f"today at {clock}"
        if days == 1:
            return f"tomorrow at {clock}"
        weekday = _DAY_NAMES[opening.weekday()]
        if days < 7:
            return f"on {weekday} at {clock}"
        month = _MONTH_NAMES[opening.month - 1]
        return f"on {weekday}, {month} {opening.day} at {clock}"


@dataclass(frozen=True)
class HoldPolicy:
    """How long a caller may be held over a whole transfer, and what they hear meanwhile.

    The bound counts every colleague tried, so a ring group never keeps a caller longer
    than promised; `ring_budget` shortens the next ring to what is left of it.

    Parameters:
        max_total_hold: Seconds the caller may be held across every target (None:
            unbounded).
        reminder: Reminder template said over the music; `{remaining}` and `{elapsed}`
            are filled in (None: no reminders).
    """

    max_total_hold: float | None = None
    reminder: str | None = DEFAULT_HOLD_REMINDER

    def __post_init__(self):
        check_max_hold(self.max_total_hold, "max_total_hold")
        if self.reminder is not None:
            check_reminder(self.reminder, "reminder")

    def hold_left(self, elapsed_secs: float) -> float | None:
        """Seconds the caller may still be held (never negative); None when unbounded."""
        if self.max_total_hold is None:
            return None
        return max(0.0, self.max_total_hold - elapsed_secs)

    def exhausted(self, elapsed_secs: float) -> bool:
        """Whether the hold has run out: no further colleague should be tried."""
        left = self.hold_left(elapsed_secs)
        return left is not None and left <= 0.0

    def ring_budget(self, ring_timeout: float, elapsed_secs: float) -> float:
        """How long the next colleague may ring: the ring timeout, cut to the hold left."""
        left = self.hold_left(elapsed_secs)
        return ring_timeout if left is None else min(ring_timeout, left)

    def reminder_text(self, remaining_targets: int, elapsed_secs: float) -> str | None:
        """The reminder for this moment of the transfer, or None without reminders."""
        if self.reminder is None:
            return None
        return hold_reminder(self.reminder, remaining_targets, elapsed_secs)


def check_max_hold(value: float | None, field: str) -> float | None:
    """Refuse a hold bound that is not a positive, finite number of seconds."""
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TransferConfigError(f"{field}: expected seconds, not {_shown(value)}")
    if not math.isfinite(value) or value <= 0:
        raise TransferConfigError(f"{field}: {value!r} s is out of range (more than 0 s)")
    return value


def check_reminder(template: str, field: str = "hold_reminder") -> str:
    """Refuse a reminder with unknown placeholders or a stray brace.

    Allowed: `{remaining}` (colleagues left to try, in words) and `{elapsed}` (time held,
    in words); `{{` and `}}` are literal braces.
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        raise TransferConfigError(
            f"{field}: {template!r} has an unmatched brace (write {{{{ or }}}} for a literal one)"
        ) from None
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in REMINDER_PLACEHOLDERS or spec or conversion:
            raise TransferConfigError(
                f"{field}: unknown placeholder {{{name}}} (use {{remaining}} or {{elapsed}})"
            )
    return template


def hold_reminder(template: str, remaining_targets: int, elapsed_secs: float) -> str:
    """A reminder that says what is happening, read well by a TTS.

    Args:
        template: The wording, with `{remaining}` and/or `{elapsed}`.
        remaining_targets: Colleagues still to try after the one ringing now.
        elapsed_secs: Seconds the caller has been held so far.

    Returns:
        e.g. "Still trying — two colleagues left to try." or, with `{elapsed}`,
        "You've been holding for about two minutes."
    """
    check_reminder(template)
    return template.format(
        remaining=remaining_words(remaining_targets), elapsed=elapsed_words(elapsed_secs)
    )


def remaining_words(remaining_targets: int) -> str:
    """Colleagues left to try, in words, as `{remaining}` says them.

    "two colleagues left to try", "one colleague left to try", and with none left after
    the one ringing, "this is the last colleague to try".
    """
    if not isinstance(remaining_targets, int) or isinstance(remaining_targets, bool):
        raise ValueError(f"remaining_targets: {remaining_targets!r} is not a count")
    if remaining_targets < 0:
        raise ValueError(f"remaining_targets: {remaining_targets!r} is not a count")
    if remaining_targets == 0:
        return "this is the last colleague to try"
    noun = "colleague" if remaining_targets == 1 else "colleagues"
    return f"{number_words(remaining_targets)} {noun} left to try"


def elapsed_words(elapsed_secs: float) -> str:
    """Time held, as said aloud: "a few seconds", "forty seconds", "two minutes", "one hour".

    Seconds are rounded to five under a minute, minutes to the nearest one above.
    """
    if not math.isfinite(elapsed_secs) or elapsed_secs < 0:
        raise ValueError(f"elapsed_secs: {elapsed_secs!r} is not a duration")
    if elapsed_secs < 10:
        return "a few seconds"
    if elapsed_secs < 57.5:
        return f"{number_words(5 * int(elapsed_secs / 5 + 0.5))} seconds"
    hours, minutes = divmod(int(elapsed_secs / 60 + 0.5), 60)
    parts = [_counted(hours, "hour"), _counted(minutes, "minute")]
    return " and ".join(p for p in parts if p)


def number_words(n: int) -> str:
    """0-99 in words ("twenty-one"); larger numbers as digits, which TTS reads fine."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    return str(n)


def _counted(n: int, noun: str) -> str:
    if n == 0:
        return ""
    return f"{number_words(n)} {noun}{'' if n == 1 else 's'}"


def _instants(day: date, seconds: int, zone: ZoneInfo) -> list[datetime]:
    """The instants the local clock shows `seconds` after midnight on `day`.

    One normally, two in the autumn repeat, and in a spring gap the jump itself (the
    first instant the clock shows that time or later).
    """
    wall = datetime.combine(day, time()) + timedelta(seconds=seconds)
    found = {}
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            found[instant] = instant.astimezone(zone)
    if found:
        return [found[k] for k in sorted(found)]
    bounds = [wall.replace(tzinfo=zone, fold=f).timestamp() for f in (0, 1)]
    low, high = math.floor(min(bounds)), math.ceil(max(bounds))
    while high - low > 1:  # the clock is before `wall` at low, at or after it at high
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return [datetime.fromtimestamp(high, zone)]


def _clock_seconds(hours: str, minutes: str) -> int | None:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        return None
    return h * 3600 + m * 60


def _clock_value(value: Any) -> int | None:
    if isinstance(value, time):
        if value.tzinfo is not None:
            return None
        return value.hour * 3600 + value.minute * 60 + value.second
    if isinstance(value, str) and (match := re.fullmatch(rf"\s*{_CLOCK}\s*", value)):
        return _clock_seconds(match.group(1), match.group(2))
    return None


def _hhmm(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def _spoken_clock(at: datetime, twelve_hour: bool) -> str:
    if not twelve_hour:
        return f"{at.hour}:{at.minute:02d}"
    hour = at.hour % 12 or 12
    return f"{hour}:{at.minute:02d} {'AM' if at.hour < 12 else 'PM'}"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
