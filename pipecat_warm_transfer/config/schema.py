#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The bot declaration's schema: pydantic models, published as JSON Schema.

Every section forbids unknown keys. Field rules are not restated here: each field that
maps onto `WarmTransferParams`, `BriefingParams`, `TransferTarget`, `BusinessHours` or the
hold-music source is checked by that class's own validator (`delegate_to`), so the YAML
refuses exactly what the Python API refuses, with the same words.

Durations are seconds, written as a number or with a unit: `30s`, `2m`, `1.5s`,
`250ms`, `1h`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import docstring_parser
from pipecat.flows import FlowConfig
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from pipecat_warm_transfer.audio.hold_music_mixer import MAX_FADE_MS, HoldMusicMixer
from pipecat_warm_transfer.audio.music_source import HoldMusicError, resolve_source, validate_level
from pipecat_warm_transfer.availability import (
    parse_date,
    parse_day,
    parse_interval,
    parse_time_zone,
)
from pipecat_warm_transfer.consult_leg import validate_destination, validate_headers
from pipecat_warm_transfer.params import (
    DEFAULT_BRIEFING_INSTRUCTIONS,
    DEFAULT_FAILURE_MESSAGES,
    BriefingParams,
    WarmTransferParams,
)
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferConfigError

SCHEMA_VERSION = 1

#: `hold_music.source` values that mean the bundled music.
BUILTIN_MUSIC = ("builtin", "bundled")

_DURATION = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(ms|s|m|min|h)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_DURATION_HELP = "Seconds, or a duration with a unit: 30s, 2m, 1.5s, 250ms, 1h."
DURATION_PATTERN = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)\s*(ms|s|m|min|h)?\s*$"

#: The field a prefix like `target.number: ` or `hold music source: ` names in a message.
_MESSAGE_PREFIX = re.compile(r"^(?:[\w.\-\[\]]+|hold music source): ")


def parse_duration(value: Any) -> Any:
    """Turn `30s`, `2m`, `1.5s`, `250ms`, `1h` or a number into seconds (a float).

    Range checks are left to the field's own validator (e.g. `WarmTransferParams`).
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration (e.g. 30s, 2m, 1.5s, 250ms), not true/false")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
        raise ValueError(f"{value!r} is not a duration (e.g. 30s, 2m, 1.5s, 250ms)")
    raise ValueError("expected a duration (e.g. 30s, 2m, 1.5s, 250ms)")


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("expected a finite duration")
    return value


#: Seconds: a number, or a string with a unit (`30s`, `2m`, `1.5s`, `250ms`, `1h`).
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    AfterValidator(_finite),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": _DURATION_HELP,
        }
    ),
]


def problem_text(message: str) -> str:
    """Strip pydantic's `Value error, ` and a reused validator's `field: ` prefix."""
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    message = _MESSAGE_PREFIX.sub("", message, count=1)
    return message.replace("Input should be ", "expected ", 1)


def delegate_to(model: type[BaseModel], field: str) -> AfterValidator:
    """Check a value with one field's validators of a library settings model.

    The value is validated as an assignment to `model.field`, so the library's own rule
    (range, DTMF key, ...) decides, and its message is reused without its prefix.
    """

    def check(value: Any) -> Any:
        try:
            model.__pydantic_validator__.validate_assignment(model.model_construct(), field, value)
        except ValidationError as e:
            raise ValueError(problem_text(str(e.errors()[0].get("msg", "invalid")))) from None
        return value

    return AfterValidator(check)


def _delegate_call(function, *args) -> AfterValidator:
    """Check a value with a library function that raises `TransferConfigError`/`HoldMusicError`."""

    def check(value: Any) -> Any:
        if value is None:
            return value
        try:
            function(value, *args)
        except (TransferConfigError, HoldMusicError) as e:
            raise ValueError(problem_text(str(e))) from None
        return value

    return AfterValidator(check)


def _header_name(name: str) -> str:
    try:
        validate_headers({name: ""}, "headers")
    except TransferConfigError as e:
        raise ValueError(str(e).removeprefix(f"headers.{name}: ")) from None
    return name


def _header_value(value: str) -> str:
    try:
        validate_headers({"X-Header": value}, "headers")
    except TransferConfigError as e:
        raise ValueError(str(e).removeprefix("headers.X-Header: ")) from None
    return value


_WT = WarmTransferParams.model_fields
_BP = BriefingParams.model_fields


def _document(schema: dict[str, Any], cls: type) -> None:
    """Describe a section and its fields in the JSON Schema from the class docstring."""
    doc = docstring_parser.parse(cls.__doc__ or "")
    text = "\n\n".join(p for p in (doc.short_description, doc.long_description) if p)
    if text:
        schema["description"] = text
    properties = schema.get("properties", {})
    for param in doc.params:
        field = properties.get(param.arg_name)
        if field is None or not param.description:
            continue
        described = " ".join(param.description.split())
        if field.get("description") == _DURATION_HELP:
            field["description"] = f"{described} {_DURATION_HELP}"
        elif "description" not in field:
            field["description"] = described


class _Section(BaseModel):
    """A YAML section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_document)


class LiveKitSection(_Section):
    """The LiveKit deployment (use `${ENV}` for the key and secret).

    Parameters:
        url: Server URL (`wss://…` or `https://…`); default `LIVEKIT_URL`.
        api_key: API key; default `LIVEKIT_API_KEY`.
        api_secret: API secret; default `LIVEKIT_API_SECRET`.
        bot_identity: The bot's participant identity in the caller's room.
        room_prefix: The room name prefix of the SIP dispatch rule `dispatch-rule`
            prints (LiveKit names each call's room `PREFIX_<number>_<random>`).
        agent_name: The agent name the SIP dispatch rule sends calls to (LiveKit's
            agent dispatch); default: `bot.name`.
        max_calls: Calls one process serves at once; it reports full at this many.
        load_threshold: The load (calls over `max_calls`, or CPU share if higher) at
            which a process reports full and LiveKit sends calls elsewhere.
        drain_timeout: On SIGTERM, how long a process waits for its calls to end
            before ending them (it takes no new call meanwhile).
    """

    url: Annotated[str, Field(min_length=1)] | None = None
    api_key: Annotated[SecretStr, Field(min_length=1)] | None = None
    api_secret: Annotated[SecretStr, Field(min_length=1)] | None = None
    bot_identity: Annotated[str, Field(min_length=1, max_length=128)] = "transfer-bot"
    room_prefix: str | None = None
    agent_name: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    max_calls: Annotated[int, Field(ge=1, le=1000)] = 10
    load_threshold: Annotated[float, Field(gt=0, le=1)] = 0.75
    drain_timeout: Duration = 600.0

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(
            ("wss://", "ws://", "https://", "http://")
        ):
            raise ValueError("must start with wss://, ws://, https:// or http://")
        return value


class ServiceSection(_Section):
    """One Pipecat service, by provider name.

    Parameters:
        provider: A name from Pipecat's service registry (`deepgram`, `openai`,
            `cartesia`, `elevenlabs`, `google`, ...), `scripted` (offline tests), or an
            import path `package.module:ClassName`.
        options: Keyword arguments of the service's constructor (`api_key`, ...).
        settings: Fields of the service's `Settings` (`model`, `voice`, `language`, ...).
    """

    kind: ClassVar[str] = ""

    provider: Annotated[str, Field(min_length=1)]
    options: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("provider")
    @classmethod
    def _known(cls, value: str) -> str:
        from pipecat_warm_transfer.config.services import resolve_provider

        resolve_provider(cls.kind, value)
        return value


class STTSection(ServiceSection):
    """A speech-to-text service (`deepgram`, `openai`, `google`, `scripted`, ...)."""

    kind: ClassVar[str] = "stt"


class LLMSection(ServiceSection):
    """A language model service (`openai`, `anthropic`, `google`, `scripted`, ...)."""

    kind: ClassVar[str] = "llm"


class TTSSection(ServiceSection):
    """A text-to-speech service (`cartesia`, `elevenlabs`, `openai`, `scripted`, ...)."""

    kind: ClassVar[str] = "tts"


class ServicesSection(_Section):
    """The bot's speech-to-text, language model and text-to-speech services."""

    stt: STTSection
    llm: LLMSection
    tts: TTSSection


class BriefingServices(_Section):
    """Services of the briefing pipeline; each defaults to the bot's own."""

    stt: STTSection | None = None
    llm: LLMSection | None = None
    tts: TTSSection | None = None


class BotSection(_Section):
    """What the bot is and how it listens.

    Parameters:
        name: A name for logs.
        prompt: The LLM's system instruction (with a flow, each node's `role_message`
            takes over).
        greeting: Said when the caller joins (None: the LLM speaks first, or the
            flow's initial node).
        vad: `silero` (voice activity detection) or `none`.
        turn_end: `smart_turn` (Pipecat's end-of-turn model) or `speech_timeout`.
        sample_rate: Audio rate of the pipeline.
    """

    name: Annotated[str, Field(min_length=1)] = "warm-transfer-bot"
    prompt: str | None = None
    greeting: str | None = None
    vad: Literal["silero", "none"] = "silero"
    turn_end: Literal["smart_turn", "speech_timeout"] = "smart_turn"
    sample_rate: Literal[8000, 16000, 24000, 48000] = 16000


class TargetSection(_Section):
    """Who to dial (checked by `TransferTarget`'s own rules).

    Parameters:
        number: E.164 number (`+15551234567`) or `sip:`/`tel:` URI.
        trunk_id: LiveKit outbound trunk (default `LIVEKIT_SIP_OUTBOUND_TRUNK`).
        caller_id: Number shown to the human (default `LIVEKIT_SIP_NUMBER`).
        headers: Extra SIP headers (`X-` names, one-line values).
        dtmf: Digits sent after answer (`ww1234`: wait, then extension 1234).
        display_name: The human's name, for the briefing.
        ring_timeout: How long this human's phone may ring (default: the transfer's).
    """

    number: Annotated[str, _delegate_call(validate_destination, "number")]
    trunk_id: Annotated[str, Field(min_length=1)] | None = None
    caller_id: Annotated[str, _delegate_call(validate_destination, "caller_id")] | None = None
    headers: dict[
        Annotated[str, AfterValidator(_header_name)], Annotated[str, AfterValidator(_header_value)]
    ] = Field(default_factory=dict)
    dtmf: str | None = None
    display_name: str | None = None
    ring_timeout: Annotated[Duration, Field(gt=0, le=600)] | None = None

    @field_validator("number", "caller_id", mode="before")
    @classmethod
    def _quoted(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                f"YAML reads {value} as a number (and drops a leading +): quote it, "
                'e.g. "+15551234567"'
            )
        return value

    @field_validator("dtmf", mode="before")
    @classmethod
    def _dtmf_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("dtmf")
    @classmethod
    def _dtmf(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from pipecat_warm_transfer.consult_leg import TransferTarget

        try:
            TransferTarget("+15550100", dtmf=value)
        except TransferConfigError as e:
            raise ValueError(problem_text(str(e))) from None
        return value


class HoldMusicSection(_Section):
    """The music the caller hears while held, and the reminders said over it.

    Parameters:
        source: `builtin` (the bundled loop) or a wav/flac/ogg/mp3 file (relative to
            the YAML file).
        level_dbfs: Music RMS level, -90 to 0 dBFS.
        fade: Fade in/out duration.
        duck_db: How far the music drops under the bot's voice.
        telephone_band: Band-limit the music to 300-3400 Hz.
        shared_engine: Let the process's shared hold engine play steady held music
            (the same audio for a fraction of the CPU; see `SharedHoldEngine`).
        reminder: Said over the music every `reminder_every` (None: no reminders);
            `{remaining}` (colleagues left to try, in words) and `{elapsed}` (time
            held) are filled in.
        reminder_every: Time between reminders (None: no reminders).
    """

    source: Annotated[str, Field(min_length=1)] = "builtin"
    level_dbfs: Annotated[float, _delegate_call(validate_level, "level_dbfs")] = _WT[
        "hold_music_level_dbfs"
    ].default
    fade: Duration = 0.25
    duck_db: float = 12.0
    telephone_band: bool = False
    shared_engine: bool = _WT["shared_hold_engine"].default
    reminder: Annotated[str, delegate_to(WarmTransferParams, "hold_reminder")] | None = _WT[
        "hold_reminder"
    ].default
    reminder_every: Annotated[Duration, delegate_to(WarmTransferParams, "hold_reminder_every")] | (
        None
    ) = _WT["hold_reminder_every"].default

    @field_validator("source")
    @classmethod
    def _source(cls, value: str, info: ValidationInfo) -> str:
        if value in BUILTIN_MUSIC:
            return value
        base = (info.context or {}).get("base_dir")
        path = Path(value).expanduser()
        if base is not None and not path.is_absolute():
            path = Path(base) / path
        try:
            resolve_source(path)
        except HoldMusicError as e:
            raise ValueError(problem_text(str(e))) from None
        return value

    @field_validator("fade")
    @classmethod
    def _fade(cls, value: float) -> float:
        try:
            HoldMusicMixer(fade_ms=value * 1000.0)
        except HoldMusicError:
            raise ValueError(
                f"{value:g} s is out of range (0 to {MAX_FADE_MS / 1000:g} s)"
            ) from None
        return value

    @field_validator("duck_db")
    @classmethod
    def _duck(cls, value: float) -> float:
        try:
            HoldMusicMixer(duck_db=value)
        except HoldMusicError as e:
            raise ValueError(problem_text(str(e))) from None
        return value


class FailureMessages(_Section):
    """One sentence per failure reason, told to the caller when the transfer fails."""

    no_answer: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.NO_ANSWER
    ]
    busy: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[FailureReason.BUSY]
    declined: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[FailureReason.DECLINED]
    voicemail: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.VOICEMAIL
    ]
    human_hung_up: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.HUMAN_HUNG_UP
    ]
    dial_failed: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.DIAL_FAILED
    ]
    briefing_timeout: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.BRIEFING_TIMEOUT
    ]
    connect_failed: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.CONNECT_FAILED
    ]
    cancelled: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.CANCELLED
    ]
    after_hours: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.AFTER_HOURS
    ]
    hold_timeout: Annotated[str, Field(min_length=1)] = DEFAULT_FAILURE_MESSAGES[
        FailureReason.HOLD_TIMEOUT
    ]


class CallerMessages(_Section):
    """What the bot says to the caller during a transfer.

    Parameters:
        hold: Said before the hold music starts.
        connected: Said just before the human is joined (None: nothing).
        human_left: Said when the human hangs up after being joined.
        failure: One sentence per failure reason (`{opens}`: when the team is back).
        callback_offer: Said when nobody is free and a callback is offered.
        goodbye: Said before the call ends when nobody is free (`nobody_free: end_call`).
    """

    hold: Annotated[str, Field(min_length=1)] = _WT["hold_message"].default
    connected: str | None = _WT["connected_message"].default
    human_left: Annotated[str, Field(min_length=1)] = _WT["human_left_message"].default
    failure: FailureMessages = Field(default_factory=FailureMessages)
    callback_offer: Annotated[str, Field(min_length=1)] = _WT["callback_offer_message"].default
    goodbye: Annotated[str, Field(min_length=1)] = _WT["goodbye_message"].default


class HumanMessages(_Section):
    """What the bot says to the human.

    Parameters:
        intro: Read to the human in `dtmf` briefing mode; `{summary}` and `{reason}`
            are filled in.
        connecting: Said after the human accepts.
        caller_left: Said to a briefed human when the caller hangs up.
    """

    intro: Annotated[str, Field(min_length=1)] = _BP["intro"].default
    connecting: Annotated[str, Field(min_length=1)] = _BP["connecting_message"].default
    caller_left: Annotated[str, Field(min_length=1)] = _WT["caller_left_message"].default


class MessagesSection(_Section):
    """Every sentence the transfer says, to the caller and to the human."""

    caller: CallerMessages = Field(default_factory=CallerMessages)
    human: HumanMessages = Field(default_factory=HumanMessages)


class BriefingSection(_Section):
    """How the human is briefed before being connected.

    Parameters:
        mode: `voice` (the human talks with the briefing LLM and decides by voice or
            keys) or `dtmf` (a read summary; the human decides by keys).
        instructions: The briefing LLM's system instructions.
        start: `wait_for_greeting` (speak after the human's "Hello?") or `immediate`.
        greeting_timeout: Wait for the greeting before speaking anyway.
        accept_digit: DTMF key that accepts the transfer.
        decline_digit: DTMF key that declines it.
        summary_max_words: Length bound of the conversation summary.
        detect_voicemail: Run Pipecat's voicemail detector on the human's leg.
        services: Services of the briefing pipeline (default: the bot's).
    """

    mode: Literal["voice", "dtmf"] = "voice"
    instructions: Annotated[str, Field(min_length=1)] = DEFAULT_BRIEFING_INSTRUCTIONS
    start: Literal["wait_for_greeting", "immediate"] = _BP["start"].default
    greeting_timeout: Annotated[Duration, delegate_to(BriefingParams, "greeting_timeout")] = _BP[
        "greeting_timeout"
    ].default
    accept_digit: Annotated[str, delegate_to(BriefingParams, "accept_digit")] = _BP[
        "accept_digit"
    ].default
    decline_digit: Annotated[str, delegate_to(BriefingParams, "decline_digit")] = _BP[
        "decline_digit"
    ].default
    summary_max_words: Annotated[int, delegate_to(BriefingParams, "summary_max_words")] = _BP[
        "summary_max_words"
    ].default
    detect_voicemail: bool = _BP["detect_voicemail"].default
    services: BriefingServices = Field(default_factory=BriefingServices)

    @field_validator("accept_digit", "decline_digit", mode="before")
    @classmethod
    def _digit_text(cls, value: Any) -> Any:
        # `accept_digit: 1` is an integer in YAML: a key is meant.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("decline_digit")
    @classmethod
    def _distinct_digits(cls, value: str, info: ValidationInfo) -> str:
        if value == info.data.get("accept_digit"):
            raise ValueError(f"{value!r} is also the accept_digit; the two keys must differ")
        return value


def _checked(function, *args):
    """Run a library parser that raises `TransferConfigError`, as a pydantic error."""
    try:
        return function(*args)
    except TransferConfigError as e:
        raise ValueError(problem_text(str(e))) from None


def _one_or_more(value: Any) -> Any:
    """A day's hours: one opening is checked where it is written, then listed."""
    if isinstance(value, list):
        return value
    if value is None:
        return []
    _checked(parse_interval, value, "opening")
    return [value]


_OPENING_SCHEMA = {"type": "string", "pattern": r"^\s*\d{1,2}:\d{2}\s*[-–]\s*\d{1,2}:\d{2}\s*$"}

#: One opening, `09:00-17:30` (24-hour clock, wall time in the section's zone).
Opening = Annotated[
    Any,
    _delegate_call(parse_interval, "opening"),
    WithJsonSchema(_OPENING_SCHEMA),
]

#: A weekday's hours: one opening or a list of them, none overlapping.
DayHours = Annotated[
    list[Opening],
    BeforeValidator(_one_or_more),
    _delegate_call(parse_day, "hours"),
    WithJsonSchema(
        {
            "anyOf": [
                _OPENING_SCHEMA,
                {"type": "array", "items": _OPENING_SCHEMA},
                {"type": "null"},
            ]
        }
    ),
]


class HoursSection(_Section):
    """Opening hours per weekday: `09:00-17:30`, or a list (`[09:00-12:00, 13:00-17:30]`).

    Wall-clock times in the section's `time_zone`, 24-hour. A day left out is closed.
    An opening ends on its own day: a night shift is `22:00-24:00`, then `00:00-06:00`
    on the next day.

    Parameters:
        mon: Monday.
        tue: Tuesday.
        wed: Wednesday.
        thu: Thursday.
        fri: Friday.
        sat: Saturday.
        sun: Sunday.
    """

    mon: DayHours = Field(default_factory=list)
    tue: DayHours = Field(default_factory=list)
    wed: DayHours = Field(default_factory=list)
    thu: DayHours = Field(default_factory=list)
    fri: DayHours = Field(default_factory=list)
    sat: DayHours = Field(default_factory=list)
    sun: DayHours = Field(default_factory=list)


def _date_or_holiday(schema: dict[str, Any]) -> None:
    """In the JSON Schema, a holiday is a bare date or the mapping with its name."""
    schema["items"] = {"anyOf": [{"type": "string", "format": "date"}, schema["items"]]}


def _holiday_mapping(value: Any) -> Any:
    """A bare date is a holiday without a name; it is checked where it is written."""
    if isinstance(value, Mapping):
        return value
    return {"date": _checked(parse_date, value, "date")}


class HolidaySection(_Section):
    """A holiday with its name.

    Parameters:
        date: The day, `YYYY-MM-DD`.
        name: What it is called (`Christmas Day`).
    """

    date: Annotated[dt.date, BeforeValidator(lambda value: _checked(parse_date, value, "date"))]
    name: Annotated[str, Field(min_length=1)] | None = None


class AvailabilitySection(_Section):
    """When humans answer; outside these hours nobody is dialed.

    Parameters:
        time_zone: IANA time zone the hours and holidays are read in
            (`America/New_York`, `Europe/London`).
        hours: Openings per weekday.
        holidays: Days closed all day: `2026-12-25`, or
            `{date: 2026-12-25, name: Christmas Day}`.
    """

    time_zone: Annotated[str, _delegate_call(parse_time_zone, "time_zone")]
    hours: HoursSection
    holidays: list[Annotated[HolidaySection, BeforeValidator(_holiday_mapping)]] = Field(
        default_factory=list, json_schema_extra=_date_or_holiday
    )

    @field_validator("holidays")
    @classmethod
    def _once(cls, value: list[HolidaySection]) -> list[HolidaySection]:
        seen: set[dt.date] = set()
        for holiday in value:
            if holiday.date in seen:
                raise ValueError(f"{holiday.date.isoformat()} is listed twice")
            seen.add(holiday.date)
        return value


class TransferSection(_Section):
    """The warm transfer: who, how long, what is heard and said.

    Parameters:
        target: Who to dial (one human).
        targets: Several humans (a ring group), instead of `target`.
        strategy: How a ring group is tried: `sequential` or `simultaneous`.
        on_decline: Sequential groups: after a decline, `next` human or `stop`.
        first_to: Simultaneous groups: the first to `answer` is briefed, or all who answer
            are briefed and the first to `accept` takes the call.
        nobody_free: When nobody can take the call: `return` (back to the bot),
            `callback` (the bot collects a callback request) or `end_call`.
        nobody_free_by_reason: The same per reason (`after_hours: callback`).
        connect_mode: `auto` (move, falling back to bridge), `move`, `bridge`, or `refer`
            (the caller's SIP call is transferred to the human's number by SIP REFER; the
            human's `connecting` message then says their phone will ring).
        ring_timeout: How long the human's phone may ring.
        briefing_timeout: How long the human may take to accept or decline.
        summary_timeout: Time allowed to the summary LLM call.
        max_transfers: Transfers allowed per call.
        max_hold: The longest the caller is held over the whole transfer, every
            colleague tried (None: no bound).
        availability: When humans answer (None: always).
        hold_music: Music and reminders while held.
        messages: Every sentence said to the caller and to the human.
        briefing: How the human is briefed.
    """

    target: TargetSection | None = None
    targets: Annotated[list[TargetSection], Field(min_length=1, max_length=10)] | None = None
    strategy: Literal["sequential", "simultaneous"] = "sequential"
    on_decline: Literal["next", "stop"] = "next"
    first_to: Literal["answer", "accept"] = "answer"
    nobody_free: Literal["return", "callback", "end_call"] = "return"
    nobody_free_by_reason: dict[
        Literal[
            "no_answer",
            "busy",
            "declined",
            "voicemail",
            "briefing_timeout",
            "after_hours",
            "hold_timeout",
        ],
        Literal["return", "callback", "end_call"],
    ] = Field(default_factory=dict)
    connect_mode: ConnectMode = _WT["connect_mode"].default
    ring_timeout: Annotated[Duration, delegate_to(WarmTransferParams, "ring_timeout")] = _WT[
        "ring_timeout"
    ].default
    briefing_timeout: Annotated[Duration, delegate_to(WarmTransferParams, "briefing_timeout")] = (
        _WT["briefing_timeout"].default
    )
    summary_timeout: Annotated[Duration, delegate_to(WarmTransferParams, "summary_timeout")] = _WT[
        "summary_timeout"
    ].default
    max_transfers: Annotated[int, Field(ge=1, le=100)] = _WT["max_transfers"].default
    max_hold: Annotated[Duration, delegate_to(WarmTransferParams, "max_total_hold")] | None = None
    availability: AvailabilitySection | None = None
    hold_music: HoldMusicSection = Field(default_factory=HoldMusicSection)
    messages: MessagesSection = Field(default_factory=MessagesSection)
    briefing: BriefingSection = Field(default_factory=BriefingSection)

    @model_validator(mode="after")
    def _one_kind_of_target(self):
        if (self.target is None) == (self.targets is None):
            raise ValueError("name either target (one human) or targets (a ring group)")
        return self

    @property
    def humans(self) -> list[TargetSection]:
        """Every human of the transfer, in order (one, or the ring group)."""
        return [self.target] if self.target is not None else list(self.targets or [])


class BotConfig(_Section):
    """A voice bot with a warm transfer to a human, declared in YAML.

    Parameters:
        version: Schema version (1).
        livekit: The LiveKit deployment (`run` only; defaults come from `LIVEKIT_*`).
        bot: Prompt, greeting and listening.
        services: STT, LLM and TTS.
        transfer: The warm transfer.
        flow: A Pipecat Flows config (inline, or `!include flow.yaml`).
        flow_handlers: Python modules holding the flow's other direct functions and
            action handlers (`myapp.flow_tools`).
    """

    model_config = ConfigDict(extra="forbid", title="pipecat-warm-transfer bot")

    version: Literal[1] = SCHEMA_VERSION
    livekit: LiveKitSection = Field(default_factory=LiveKitSection)
    bot: BotSection = Field(default_factory=BotSection)
    services: ServicesSection
    transfer: TransferSection
    flow: FlowConfig | None = None
    flow_handlers: list[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*$")]] = Field(
        default_factory=list
    )

    def resolve_path(self, value: str, base: Path | None) -> Path:
        """A path from the YAML, relative to the YAML file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() or base is None else base / path


def bot_config_schema() -> dict[str, Any]:
    """The JSON Schema of the bot YAML (what `pipecat-warm-transfer schema` prints)."""
    schema = BotConfig.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
