"""Business hours (weekday openings, time zones across DST, holidays), the next opening and
how it is said, the hold bound and reminders, and their settings in Python and in YAML."""

import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from pipecat_warm_transfer.availability import (
    DEFAULT_HOLD_REMINDER,
    WEEKDAYS,
    BusinessHours,
    HoldPolicy,
    Holiday,
    OpeningInterval,
    elapsed_words,
    hold_reminder,
    remaining_words,
)
from pipecat_warm_transfer.config import ConfigError, load_config
from pipecat_warm_transfer.params import WarmTransferParams
from pipecat_warm_transfer.types import TransferConfigError

NY = ZoneInfo("America/New_York")
WEEKDAYS_9_TO_5 = {day: "09:00-17:30" for day in ("mon", "tue", "wed", "thu", "fri")}


def ny(*args) -> datetime:
    return datetime(*args, tzinfo=NY)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def office() -> BusinessHours:
    return BusinessHours(
        "America/New_York",
        {**WEEKDAYS_9_TO_5, "sat": "10:00-14:00"},
        holidays=["2026-12-25", {"date": "2026-07-03", "name": "Independence Day (observed)"}],
    )


#
# Weekday openings
#


def test_openings_include_their_start_and_exclude_their_end(office):
    assert not office.is_open(ny(2026, 3, 2, 8, 59, 59))  # Monday
    assert office.is_open(ny(2026, 3, 2, 9, 0))
    assert office.is_open(ny(2026, 3, 2, 17, 29, 59, 999999))
    assert not office.is_open(ny(2026, 3, 2, 17, 30))
    assert office.is_open(ny(2026, 3, 7, 10, 0))  # Saturday's own hours
    assert not office.is_open(ny(2026, 3, 7, 14, 0))
    assert not office.is_open(ny(2026, 3, 8, 12, 0))  # Sunday: not listed, closed


def test_a_day_with_a_break_and_one_open_until_midnight():
    hours = BusinessHours(
        "UTC", {"mon": ["13:00-17:00", "09:00-12:00"], "tue": [("20:00", "24:00")]}
    )
    assert hours.hours["mon"] == (
        OpeningInterval(9 * 3600, 12 * 3600),
        OpeningInterval(13 * 3600, 17 * 3600),
    )
    assert hours.is_open(utc(2026, 3, 2, 11, 59))
    assert not hours.is_open(utc(2026, 3, 2, 12, 30))
    assert hours.is_open(utc(2026, 3, 2, 13, 0))
    assert hours.is_open(utc(2026, 3, 3, 23, 59, 59))
    assert not hours.is_open(utc(2026, 3, 4, 0, 0))  # 24:00 ends Tuesday's opening
    assert BusinessHours("UTC", {"mon": (time(9), time(17))}).is_open(utc(2026, 3, 2, 16, 0))


#
# Time zones and DST
#


def test_0859_and_0900_local_in_new_york_on_both_sides_of_the_spring_change(office):
    # Friday 2026-03-06 is EST (UTC-5); Monday 2026-03-09, after the change, EDT (UTC-4).
    assert not office.is_open(utc(2026, 3, 6, 13, 59))  # 08:59 EST
    assert office.is_open(utc(2026, 3, 6, 14, 0))  # 09:00 EST
    assert not office.is_open(utc(2026, 3, 9, 12, 59))  # 08:59 EDT
    assert office.is_open(utc(2026, 3, 9, 13, 0))  # 09:00 EDT
    # The same UTC clock time is an hour apart locally on either side of the change.
    assert office.is_open(utc(2026, 3, 9, 13, 30)) != office.is_open(utc(2026, 3, 6, 13, 30))


def test_the_autumn_change_keeps_openings_on_the_wall_clock(office):
    # Friday 2026-10-30 is EDT; Monday 2026-11-02 is EST.
    assert office.is_open(utc(2026, 10, 30, 13, 0)) and not office.is_open(
        utc(2026, 10, 30, 12, 59)
    )
    assert office.is_open(utc(2026, 11, 2, 14, 0)) and not office.is_open(utc(2026, 11, 2, 13, 59))


def test_any_aware_time_works_and_a_naive_one_is_refused(office):
    london = ZoneInfo("Europe/London")
    assert office.is_open(datetime(2026, 3, 2, 14, 0, tzinfo=london))  # 09:00 in New York
    assert not office.is_open(datetime(2026, 3, 2, 13, 59, tzinfo=london))
    with pytest.raises(ValueError, match="not an aware datetime"):
        office.is_open(datetime(2026, 3, 2, 12, 0))
    with pytest.raises(ValueError, match="not an aware datetime"):
        office.next_opening(datetime(2026, 3, 2, 12, 0))


#
# Holidays
#


def test_a_holiday_closes_its_whole_local_day(office):
    assert office.is_open(ny(2026, 12, 24, 12, 0))
    assert not office.is_open(ny(2026, 12, 25, 12, 0))
    assert office.holiday(ny(2026, 12, 25, 12, 0)) == Holiday(date(2026, 12, 25))
    assert office.holiday(ny(2026, 7, 3, 10, 0)).name == "Independence Day (observed)"
    assert office.holiday(ny(2026, 12, 24, 12, 0)) is None


def test_the_holiday_day_is_the_local_day_not_the_utc_day():
    always = BusinessHours(
        "America/New_York",
        {d: "00:00-24:00" for d in WEEKDAYS},
        holidays=[date(2026, 12, 25)],
    )
    # 2026-12-25 03:00Z is 22:00 on the 24th in New York: open.
    assert always.is_open(utc(2026, 12, 25, 3, 0))
    # 2026-12-26 03:00Z is 22:00 on the 25th in New York: the holiday.
    assert not always.is_open(utc(2026, 12, 26, 3, 0))
    assert always.is_open(utc(2026, 12, 26, 5, 0))  # midnight of the 26th, local


#
# The next opening
#


def test_open_now_is_now_in_the_hours_zone(office):
    at = utc(2026, 3, 2, 15, 0)
    opening = office.next_opening(at)
    assert opening == at and opening.tzinfo == NY and (opening.hour, opening.minute) == (10, 0)


def test_next_opening_across_a_weekend_and_a_dst_change(office):
    # Friday evening, EST, with Saturday's hours: Saturday 10:00.
    assert office.next_opening(ny(2026, 3, 6, 18, 0)) == ny(2026, 3, 7, 10, 0)
    # Saturday after closing: over Sunday (the change) to Monday 09:00 EDT = 13:00Z.
    opening = office.next_opening(ny(2026, 3, 7, 14, 0))
    assert opening == utc(2026, 3, 9, 13, 0)
    assert (opening.hour, opening.minute, opening.utcoffset()) == (9, 0, timedelta(hours=-4))


def test_next_opening_skips_a_holiday(office):
    # Thursday 2026-12-24 after closing; Friday the 25th is a holiday: Saturday 10:00.
    assert office.next_opening(ny(2026, 12, 24, 18, 0)) == ny(2026, 12, 26, 10, 0)
    weekdays = BusinessHours("America/New_York", WEEKDAYS_9_TO_5, holidays=["2026-07-03"])
    # Thursday evening before a Friday holiday: over the holiday and the weekend.
    assert weekdays.next_opening(ny(2026, 7, 2, 17, 30)) == ny(2026, 7, 6, 9, 0)
    # Early on the holiday itself: not that morning.
    assert weekdays.next_opening(ny(2026, 7, 3, 8, 0)) == ny(2026, 7, 6, 9, 0)


def test_later_the_same_day_and_after_a_break():
    hours = BusinessHours("UTC", {"mon": ["09:00-12:00", "13:00-17:00"]})
    assert hours.next_opening(utc(2026, 3, 2, 7, 0)) == utc(2026, 3, 2, 9, 0)
    assert hours.next_opening(utc(2026, 3, 2, 12, 0)) == utc(2026, 3, 2, 13, 0)
    assert hours.next_opening(utc(2026, 3, 2, 17, 0)) == utc(2026, 3, 9, 9, 0)


def test_nothing_opens_within_the_search():
    mondays = BusinessHours(
        "UTC", {"mon": "09:00-17:00"}, holidays=["2026-03-09", "2026-03-16", "2026-03-23"]
    )
    at = utc(2026, 3, 2, 18, 0)
    assert mondays.next_opening(at) is None  # 14 days: the next three Mondays are holidays
    assert mondays.next_opening(at, within_days=28) == utc(2026, 3, 30, 9, 0)
    assert mondays.describe_next_opening(at) is None
    assert BusinessHours("UTC", {}).next_opening(at) is None


def test_an_opening_skipped_by_the_clock_opens_when_it_jumps():
    # Santiago's clocks jump from 00:00 to 01:00 on Sunday 2026-09-06.
    santiago = ZoneInfo("America/Santiago")
    sundays = BusinessHours("America/Santiago", {"sun": "00:00-24:00"})
    opening = sundays.next_opening(datetime(2026, 9, 5, 12, 0, tzinfo=santiago))
    assert opening == utc(2026, 9, 6, 4, 0)
    assert (opening.hour, opening.minute) == (1, 0) and sundays.is_open(opening)
    # A second earlier (in UTC: arithmetic in a zone is on the wall clock) it was Saturday.
    assert not sundays.is_open(opening.astimezone(UTC) - timedelta(seconds=1))
    # New York's 02:30 does not exist on 2026-03-08: an opening then starts at the jump.
    early = BusinessHours("America/New_York", {"sun": "02:30-05:00"})
    assert early.next_opening(ny(2026, 3, 7, 12, 0)) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT
    # A 02:00-02:30 opening that day never happens at all: the next Sunday's.
    gone = BusinessHours("America/New_York", {"sun": "02:00-02:30"})
    assert gone.next_opening(ny(2026, 3, 7, 12, 0)) == ny(2026, 3, 15, 2, 0)


def test_an_opening_the_autumn_clock_passes_twice_opens_twice():
    hours = BusinessHours("America/New_York", {"sun": "01:00-01:30"})
    first_pass_over = utc(2026, 11, 1, 5, 40)  # 01:40 EDT; the clock shows 01:00 again at 06:00Z
    assert not hours.is_open(first_pass_over)
    opening = hours.next_opening(first_pass_over)
    # In UTC: an instant of the repeated hour never equals one of another zone (PEP 495).
    assert opening.astimezone(UTC) == utc(2026, 11, 1, 6, 0) and opening.fold == 1
    assert hours.is_open(utc(2026, 11, 1, 6, 10))


#
# Saying when it opens
#


def test_describe_next_opening_wording(office):
    assert office.describe_next_opening(ny(2026, 3, 2, 12, 0)) == "now"
    assert office.describe_next_opening(ny(2026, 3, 2, 7, 30)) == "today at 9:00"
    assert office.describe_next_opening(ny(2026, 3, 2, 18, 0)) == "tomorrow at 9:00"
    assert office.describe_next_opening(ny(2026, 3, 6, 18, 0)) == "tomorrow at 10:00"
    assert office.describe_next_opening(ny(2026, 3, 7, 15, 0)) == "on Monday at 9:00"
    assert office.describe_next_opening(ny(2026, 12, 24, 18, 0)) == "on Saturday at 10:00"
    lunch = BusinessHours("UTC", {"mon": ["09:00-12:00", "13:30-17:00"]})
    assert lunch.describe_next_opening(utc(2026, 3, 2, 12, 15)) == "today at 13:30"
    assert (
        lunch.describe_next_opening(utc(2026, 3, 2, 12, 15), twelve_hour=True) == "today at 1:30 PM"
    )
    assert lunch.describe_next_opening(utc(2026, 3, 1, 12), twelve_hour=True) == (
        "tomorrow at 9:00 AM"
    )


def test_an_opening_a_week_or_more_away_names_the_date():
    mondays = BusinessHours("America/New_York", {"mon": "09:00-17:00"}, holidays=["2026-12-28"])
    assert mondays.describe_next_opening(ny(2026, 12, 21, 18, 0)) == (
        "on Monday, January 4 at 9:00"
    )
    # Exactly a week ahead is no longer "on Monday" (that would be heard as this week's).
    assert mondays.describe_next_opening(ny(2026, 12, 14, 18, 0)) == (
        "on Monday, December 21 at 9:00"
    )


#
# The hold bound and the reminders
#


@pytest.mark.parametrize(
    ("remaining", "said"),
    [
        (3, "Still trying — three colleagues left to try."),
        (2, "Still trying — two colleagues left to try."),
        (1, "Still trying — one colleague left to try."),
        (0, "Still trying — this is the last colleague to try."),
    ],
)
def test_the_default_reminder_says_how_many_colleagues_are_left(remaining, said):
    assert hold_reminder(DEFAULT_HOLD_REMINDER, remaining, 45.0) == said


def test_reminder_counts_and_times_in_words():
    assert remaining_words(21) == "twenty-one colleagues left to try"
    assert remaining_words(250) == "250 colleagues left to try"
    said = [elapsed_words(s) for s in (4, 12, 44, 58, 61, 89, 90, 600, 3600, 3900)]
    assert said == [
        "a few seconds",
        "ten seconds",
        "forty-five seconds",
        "one minute",
        "one minute",
        "one minute",
        "two minutes",
        "ten minutes",
        "one hour",
        "one hour and five minutes",
    ]
    text = hold_reminder("Thanks for holding {elapsed}; {remaining}. {{ok}}", 1, 125)
    assert text == "Thanks for holding two minutes; one colleague left to try. {ok}"
    with pytest.raises(ValueError, match="remaining_targets"):
        remaining_words(-1)
    with pytest.raises(ValueError, match="elapsed_secs"):
        elapsed_words(-3)


def test_a_reminder_with_an_unknown_placeholder_is_refused():
    with pytest.raises(TransferConfigError) as info:
        hold_reminder("Still trying {colleagues}", 1, 0)
    assert str(info.value) == (
        "hold_reminder: unknown placeholder {colleagues} (use {remaining} or {elapsed})"
    )
    with pytest.raises(TransferConfigError, match="unmatched brace"):
        HoldPolicy(reminder="Still trying {remaining")


def test_the_hold_policy_bounds_the_whole_transfer():
    policy = HoldPolicy(max_total_hold=90.0)
    assert policy.hold_left(30.0) == 60.0 and not policy.exhausted(30.0)
    assert policy.ring_budget(30.0, 30.0) == 30.0  # the ring timeout fits
    assert policy.ring_budget(30.0, 75.0) == 15.0  # the last colleague rings for what is left
    assert policy.hold_left(120.0) == 0.0 and policy.exhausted(90.0)
    assert policy.reminder_text(2, 40.0) == "Still trying — two colleagues left to try."
    unbounded = HoldPolicy(reminder=None)
    assert unbounded.hold_left(10_000) is None and not unbounded.exhausted(10_000)
    assert unbounded.ring_budget(30.0, 10_000) == 30.0
    assert unbounded.reminder_text(2, 40.0) is None
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(TransferConfigError, match=r"^max_total_hold: "):
            HoldPolicy(max_total_hold=bad)


#
# Settings in Python: one line naming the field
#


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"time_zone": "Mars/Olympus_Mons", "hours": {}},
            "time_zone: 'Mars/Olympus_Mons' is not a known IANA time zone "
            "(e.g. America/New_York, Europe/London)",
        ),
        (
            {"time_zone": "UTC", "hours": {"monday": "09:00-17:00"}},
            "hours: unknown weekday 'monday' (use mon, tue, wed, thu, fri, sat or sun)",
        ),
        (
            {"time_zone": "UTC", "hours": {"mon": "9am-5pm"}},
            "hours.mon[0]: '9am-5pm' is not an opening like 09:00-17:30 (24-hour clock)",
        ),
        (
            {"time_zone": "UTC", "hours": {"tue": ["09:00-12:00", "12:00-25:00"]}},
            "hours.tue[1]: '12:00-25:00' is not an opening like 09:00-17:30 (24-hour clock)",
        ),
        (
            {"time_zone": "UTC", "hours": {"fri": "22:00-06:00"}},
            "hours.fri[0]: 22:00-06:00 crosses midnight; split it into 22:00-24:00 and "
            "00:00-06:00 on the next day",
        ),
        (
            {"time_zone": "UTC", "hours": {"wed": "09:00-09:00"}},
            "hours.wed[0]: 09:00-09:00 is empty",
        ),
        (
            {"time_zone": "UTC", "hours": {"mon": ["13:00-17:30", "09:00-13:30"]}},
            "hours.mon: 09:00-13:30 overlaps 13:00-17:30",
        ),
        (
            {"time_zone": "UTC", "hours": {}, "holidays": ["2026-02-30"]},
            "holidays[0]: '2026-02-30' is not a date (YYYY-MM-DD)",
        ),
        (
            {"time_zone": "UTC", "hours": {}, "holidays": ["2026-12-25", date(2026, 12, 25)]},
            "holidays[1]: 2026-12-25 is listed twice",
        ),
        (
            {"time_zone": "UTC", "hours": {}, "holidays": [{"date": "2026-12-25", "nmae": "x"}]},
            "holidays[0].nmae: unknown field (use date and name)",
        ),
    ],
)
def test_business_hours_refuse_bad_settings_in_one_line(kwargs, message):
    with pytest.raises(TransferConfigError) as info:
        BusinessHours(**kwargs)
    assert str(info.value) == message


def test_warm_transfer_params_carry_the_availability_and_the_hold_bound(office):
    params = WarmTransferParams(availability=office, max_total_hold=120.0)
    assert params.availability is office and params.max_total_hold == 120.0
    assert params.hold_policy() == HoldPolicy(120.0, params.hold_reminder)
    assert WarmTransferParams().availability is None and WarmTransferParams().max_total_hold is None
    cases = [
        ({"max_total_hold": 0}, "WarmTransferParams.max_total_hold: 0.0 s is out of range"),
        ({"max_total_hold": 7200}, "WarmTransferParams.max_total_hold: 7200.0 s is out of range"),
        (
            {"availability": {"time_zone": "UTC"}},
            "WarmTransferParams.availability: Input should be an instance of BusinessHours",
        ),
        (
            {"hold_reminder": "Still trying {remianing}"},
            "WarmTransferParams.hold_reminder: unknown placeholder {remianing}",
        ),
    ]
    for kwargs, start in cases:
        with pytest.raises(TransferConfigError) as info:
            WarmTransferParams(**kwargs)
        assert str(info.value).startswith(start) and "\n" not in str(info.value)


#
# Settings in YAML
#

BOT = """\
services:
  stt: {provider: scripted}
  llm: {provider: scripted}
  tts: {provider: scripted}
transfer:
  target:
    number: "+15551234567"
  max_hold: 3m
  hold_music:
    reminder: Still trying — {remaining}.
  availability:
    time_zone: America/New_York
    hours:
      mon: 09:00-17:30
      tue: [09:00-12:00, 13:00-17:30]
      wed:
        - 09:00-12:00
        - 13:00-17:30
      sat: []
    holidays:
      - 2026-12-25
      - {date: 2026-07-03, name: Independence Day (observed)}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "bot.yaml"
    path.write_text(text, encoding="utf-8")
    return path, load_config(path, environ={})


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "bot.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return [str(p).removeprefix(f"{path}:") for p in info.value.problems]


def test_the_yaml_section_maps_onto_business_hours_and_the_hold_bound(tmp_path):
    _, loaded = load(tmp_path, BOT)
    params = loaded.transfer_settings().params
    assert params.max_total_hold == 180.0
    assert params.hold_reminder == "Still trying — {remaining}."
    assert params.availability == BusinessHours(
        "America/New_York",
        {
            "mon": "09:00-17:30",
            "tue": ["09:00-12:00", "13:00-17:30"],
            "wed": ["09:00-12:00", "13:00-17:30"],
        },
        holidays=[date(2026, 12, 25), Holiday(date(2026, 7, 3), "Independence Day (observed)")],
    )
    assert params.availability.holiday(ny(2026, 7, 3, 12, 0)).name == "Independence Day (observed)"
    assert params.availability.describe_next_opening(ny(2026, 3, 3, 12, 30)) == "today at 13:00"


def test_without_the_section_there_are_no_hours_and_no_bound(tmp_path):
    text = BOT.split("  max_hold:")[0]
    _, loaded = load(tmp_path, text)
    params = loaded.transfer_settings().params
    assert params.availability is None and params.max_total_hold is None


YAML_ERRORS = [
    (
        "time_zone: America/New_York",
        "time_zone: Eastern",
        "transfer.availability.time_zone: 'Eastern' is not a known IANA time zone "
        "(e.g. America/New_York, Europe/London)",
    ),
    (
        "      mon: 09:00-17:30",
        "      monday: 09:00-17:30",
        "transfer.availability.hours.monday: unknown field (did you mean 'mon'?)",
    ),
    (
        "      mon: 09:00-17:30",
        "      mon: 9-5",
        "transfer.availability.hours.mon: '9-5' is not an opening like 09:00-17:30 (24-hour clock)",
    ),
    (
        "        - 13:00-17:30",
        "        - 13:00-17:60",
        "transfer.availability.hours.wed[1]: '13:00-17:60' is not an opening like 09:00-17:30 "
        "(24-hour clock)",
    ),
    (
        "      tue: [09:00-12:00, 13:00-17:30]",
        "      tue: [09:00-12:00, 11:00-17:30]",
        "transfer.availability.hours.tue: 09:00-12:00 overlaps 11:00-17:30",
    ),
    (
        "      mon: 09:00-17:30",
        "      mon: 22:00-02:00",
        "transfer.availability.hours.mon: 22:00-02:00 crosses midnight; split it into "
        "22:00-24:00 and 00:00-02:00 on the next day",
    ),
    (
        "      - 2026-12-25",
        "      - 25/12/2026",
        "transfer.availability.holidays[0]: '25/12/2026' is not a date (YYYY-MM-DD)",
    ),
    (
        "      - 2026-12-25",
        "      - 2026-07-03",
        "transfer.availability.holidays: 2026-07-03 is listed twice",
    ),
    (
        "{date: 2026-07-03, name: Independence Day (observed)}",
        "{date: 2026-07-03, nmae: Independence Day (observed)}",
        "transfer.availability.holidays[1].nmae: unknown field (did you mean 'name'?)",
    ),
    (
        "  max_hold: 3m",
        "  max_hold: -30s",
        "transfer.max_hold: -30.0 s is out of range (more than 0 to 3600 s)",
    ),
    (
        "  max_hold: 3m",
        "  max_hold: forever",
        "transfer.max_hold: 'forever' is not a duration (e.g. 30s, 2m, 1.5s, 250ms)",
    ),
    (
        "    reminder: Still trying — {remaining}.",
        "    reminder: Still trying — {left}.",
        "transfer.hold_music.reminder: unknown placeholder {left} (use {remaining} or {elapsed})",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), YAML_ERRORS, ids=[e[1] for e in YAML_ERRORS])
def test_each_yaml_problem_is_one_line_naming_its_field_and_line(tmp_path, old, new, message):
    assert BOT.count(old) == 1
    text = BOT.replace(old, new)
    # A repeated holiday is a problem of the list; every other one is where it is written.
    needle = "holidays:" if "listed twice" in message else new.strip()
    line = next(n for n, t in enumerate(text.splitlines(), 1) if needle in t)
    found = problems(tmp_path, text)
    assert found == [f"{line}: {message}"]


def test_the_json_schema_describes_and_accepts_the_section(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from pipecat_warm_transfer.config import bot_config_schema, load_yaml

    schema = bot_config_schema()
    path, _ = load(tmp_path, BOT)
    data = json.loads(json.dumps(load_yaml(path, environ={}).data, default=str))  # dates as text
    jsonschema.validate(data, schema)
    data["transfer"]["availability"]["hours"]["wed"] = "9 to 5"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)
    defs = schema["$defs"]
    transfer = defs["TransferSection"]["properties"]
    assert "every colleague tried" in transfer["max_hold"]["description"]
    assert set(defs["HoursSection"]["properties"]) == {
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
    }
    assert defs["AvailabilitySection"]["required"] == ["time_zone", "hours"]
