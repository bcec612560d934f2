#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Runs one demo scenario end to end and writes what it left behind.

Real Pipecat pipelines and workers, the real `WarmTransfer` processors and
`HoldMusicMixer`, real offline speech (eSpeak NG), and the real `LiveKitSipBackend` talking
to the LiveKit API emulator over loopback HTTP with the real `livekit-api` client (the
`bridge` scenario against its open-source mode, without MoveParticipant); the caller, the
humans and the cloud services (STT, LLM) are scripted stand-ins. Dana joins as LiveKit's
SIP service joins a phone caller, so `refer` can hand her call to Sam's number. Files:
`caller.wav`, `human.wav` (what the humans heard: with a ring group, every human who
answered, on the one clock of the call), `events.jsonl`, `report.json`, `timeline.png`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from loguru import logger
from pipecat.frames.frames import (
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipecat_warm_transfer.callback import SIP_PHONE_NUMBER_ATTRIBUTE, mask_number
from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.demo import scenarios as story
from pipecat_warm_transfer.demo.espeak_tts import EspeakTTSService, synthesize
from pipecat_warm_transfer.demo.scenarios import SCENARIOS, Colleague, Scenario
from pipecat_warm_transfer.params import (
    REFER_CONNECTING_MESSAGE,
    BriefingParams,
    WarmTransferParams,
)
from pipecat_warm_transfer.ring_group import RingGroup
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness
from pipecat_warm_transfer.testing.livekit_sip_transfer import ReferScript
from pipecat_warm_transfer.testing.memory_room import Disconnected
from pipecat_warm_transfer.testing.scripted_party import HumanScript
from pipecat_warm_transfer.testing.scripted_services import (
    ScriptedLLMService,
    ScriptedReply,
    ScriptedSTTService,
)
from pipecat_warm_transfer.types import ConnectMode
from pipecat_warm_transfer.warm_transfer import WarmTransfer

RATE = 16000
CALLER_VOICE = "en-us+f3"
BOT_VOICE = "en-us"
HUMAN_VOICE = story.SAM.voice
#: Bound on every wait of the choreography, so a broken run ends by itself.
STEP_TIMEOUT_SECS = 40.0
#: Seconds from the INVITE to the carrier's 180 Ringing in the demo's phone lines.
HUMAN_RINGING_AFTER_SECS = 0.4
#: Quiet that ends one of Dana's lines for her STT: longer than the pauses between the
#: sentences of a line (up to 0.42 s), so a line is one transcript. At 0.3 s her ask was
#: two: the bot started the hold line over "Can I talk to a person?", and the held half
#: became her next line as soon as she was back.
CALLER_END_OF_TURN_SECS = 0.6
#: How often the choreography looks for what it waits for.
POLL_SECS = 0.02
#: Dana's carrier in `refer`: it accepts the REFER, Sam's phone rings this long before
#: he picks up the referred call (the final NOTIFY), then it sends its BYE.
REFER_CARRIER = ReferScript(notify_after=1.5, bye_after=0.2)


class ScenarioError(RuntimeError):
    """The scenario did not run as scripted (an expected event never came)."""


def _speak(text: str, voice: str) -> bytes:
    return synthesize(text, voice=voice, sample_rate=RATE)


def _secs(pcm: bytes) -> float:
    return len(pcm) / (2 * RATE)


def _transfer_params(scenario: Scenario, settings=None) -> WarmTransferParams:
    team = _team_params(scenario)
    if scenario.refers:
        team["connect_mode"] = ConnectMode.REFER
    if settings is not None:
        # The user's own messages, timeouts and level (demo --config); the team's hours,
        # what follows nobody free and a REFER are the scenario's story.
        return settings.params.model_copy(update=team) if team else settings.params
    values = dict(
        hold_message=story.HOLD_LINE,
        hold_reminder="Thanks for holding, I'm still trying to reach them.",
        hold_reminder_every=12.0,
        ring_timeout=8.0,
        briefing_timeout=30.0,
        summary_timeout=2.0,
        connected_message=None,
    )
    if len(scenario.team) > 1 and scenario.strategy == "sequential":
        # Every 9 s: once in each briefing, none in the second before Maria is joined.
        values["hold_reminder"] = story.GROUP_HOLD_REMINDER
        values["hold_reminder_every"] = 9.0
    return WarmTransferParams(**values, **team)


def _team_params(scenario: Scenario) -> dict:
    """The billing team's hours and what follows when nobody is free (team scenarios)."""
    if not scenario.team:
        return {}
    hours = story.team_hours(datetime.now(UTC), closed_today=scenario.closed_today)
    return {"availability": hours, "nobody_free": scenario.nobody_free}


def _target(scenario: Scenario) -> RingGroup | None:
    """The team as a ring group, in turn or all at once (None: Sam's number alone)."""
    if not scenario.team:
        return None
    return RingGroup(
        [
            TransferTarget(c.number, display_name=c.name, ring_timeout=c.ring_timeout)
            for c in scenario.team
        ],
        strategy=scenario.strategy,
        on_decline="next",
    )


def _first_to_answer(scenario: Scenario) -> Colleague:
    """The colleague whose phone is scripted to pick up first (a simultaneous group's)."""
    answering = [c for c in scenario.team if c.phone == "answer"]
    return min(answering, key=lambda c: c.answer_after)


def _per_try(factories: list[Callable]) -> Callable:
    """One factory that builds the n-th human's service on its n-th call.

    A sequential group opens one briefing per human, in order, each building its STT and
    LLM once: the n-th call is the n-th human's (the last repeats).
    """
    calls = itertools.count()

    def build():
        return factories[min(next(calls), len(factories) - 1)]()

    return build


def _briefing_replies(intro: str = story.BRIEFING_INTRO) -> list[ScriptedReply]:
    return [
        ScriptedReply(say=intro),
        ScriptedReply(when="put her through", call=("connect_to_caller", {})),
        ScriptedReply(when="meeting", call=("decline_transfer", {"reason": "in a meeting"})),
    ]


def _colleague_stt(colleague: Colleague) -> ScriptedSTTService:
    lines = [line for line in (colleague.greeting, colleague.reply) if line]
    return ScriptedSTTService(lines, user_id="human")


def _colleague_llm(colleague: Colleague) -> ScriptedLLMService:
    return ScriptedLLMService(_briefing_replies(story.team_briefing_intro(colleague.name)))


def _briefing(scenario: Scenario, settings=None) -> BriefingParams:
    options = dict(settings.briefing_options) if settings is not None else {}
    options["detect_voicemail"] = True  # the voicemail scenario relies on the detector
    tts = partial(EspeakTTSService, voice=BOT_VOICE, sample_rate=RATE)
    if scenario.refers and (settings is None or settings.params.connect_mode != ConnectMode.REFER):
        # The bot hangs up and Sam's phone rings with Dana: he is told so.
        options["connecting_message"] = REFER_CONNECTING_MESSAGE
    if scenario.team and scenario.strategy == "simultaneous":
        # Every phone rings, each with a consult room of its own, built at once in no set
        # order; only the first to answer is briefed: each room's services are theirs.
        first = _first_to_answer(scenario)
        stt, llm = partial(_colleague_stt, first), partial(_colleague_llm, first)
        return BriefingParams(tts=tts, stt=stt, llm=llm, **options)
    if scenario.team:
        # Each colleague's consult room hears that colleague (the n-th briefing, the n-th).
        stt = _per_try([partial(_colleague_stt, c) for c in scenario.team])
        llm = _per_try([partial(_colleague_llm, c) for c in scenario.team])
        return BriefingParams(tts=tts, stt=stt, llm=llm, **options)
    heard = [story.VOICEMAIL_GREETING if scenario.human == "voicemail" else story.HUMAN_GREETING]
    if scenario.human_reply:
        heard.append(scenario.human_reply)
    replies = _briefing_replies()
    return BriefingParams(
        tts=tts,
        stt=lambda: ScriptedSTTService(list(heard), user_id="human"),
        llm=lambda: ScriptedLLMService(list(replies)),
        **options,
    )


class CallerLLM(ScriptedLLMService):
    """The caller's scripted LLM; it also says what a tool's result gives it to say.

    A real LLM reads `request_callback`'s read-back and `confirm_callback`'s closing from
    the tool results in its context and says them; so does this one (the scripted LLM
    says nothing after a tool result).
    """

    async def process_frame(self, frame, direction):
        """Answer as scripted; after a tool result, say its `read_back` or `closing`."""
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            line = _line_to_say(frame.context)
            if line:
                await self.push_frame(LLMFullResponseStartFrame())
                await self.push_frame(LLMTextFrame(line))
                await self.push_frame(LLMFullResponseEndFrame())


def _line_to_say(context) -> str | None:
    messages = context.get_messages()
    last = messages[-1] if messages else None
    if not isinstance(last, dict) or last.get("role") != "tool":
        return None
    try:
        result = json.loads(last.get("content") or "")
    except (TypeError, ValueError):
        return None
    if not isinstance(result, dict):
        return None
    return result.get("read_back") or result.get("closing")


class _Bot:
    """Builds the bot's processors for a scenario and keeps its TTS (what it said)."""

    def __init__(self, scenario: Scenario):
        self._scenario = scenario
        self.tts = EspeakTTSService(voice=BOT_VOICE, sample_rate=RATE)

    def __call__(self, transfer: WarmTransfer) -> list:
        scenario = self._scenario
        context = LLMContext(
            messages=[
                {
                    "role": "system",
                    "content": "You are Acme's billing assistant. Transfer to a person on request.",
                }
            ],
            tools=[transfer.tool_schema],
        )
        aggregators = LLMContextAggregatorPair(
            context,
            user_params=LLMUserAggregatorParams(
                user_turn_strategies=UserTurnStrategies(stop=[SpeechTimeoutUserTurnStopStrategy()])
            ),
        )
        replies = [
            ScriptedReply(
                when="person", call=("transfer_to_human", {"reason": story.TRANSFER_REASON})
            ),
            ScriptedReply(when="later", say=story.BOT_GOODBYE),
        ]
        if scenario.books_callback:
            replies += [
                ScriptedReply(
                    when="tomorrow",
                    call=("request_callback", {"preferred_time": story.CALLBACK_PREFERRED_TIME}),
                ),
                ScriptedReply(when="right", call=("confirm_callback", {"confirmed": True})),
            ]
            # The caller's number, as a bot reads it from her SIP participant's attributes.
            transfer.callback_collector.set_caller_attributes(
                {SIP_PHONE_NUMBER_ATTRIBUTE: story.CALLER_NUMBER}
            )
        llm = CallerLLM(replies, summary=story.SUMMARY)
        llm.register_function("transfer_to_human", transfer.handle_function_call)
        processors = [
            ScriptedSTTService(
                scenario.caller_lines,
                user_id="caller",
                end_silence_secs=CALLER_END_OF_TURN_SECS,
            ),
            aggregators.user(),
            llm,
            self.tts,
        ]
        if scenario.books_callback:
            # The callback tools' results go into the context, and the LLM runs on them.
            processors.append(aggregators.assistant())
        return processors


def _humans(scenario: Scenario, clips: dict) -> dict[str, HumanScript]:
    """Each human's phone, by number."""
    if not scenario.team:
        return {story.CALLER_NUMBER_OF_HUMAN: _human(scenario, clips)}
    return {c.number: _colleague(c, clips) for c in scenario.team}


def _colleague(colleague: Colleague, clips: dict) -> HumanScript:
    ringing = HUMAN_RINGING_AFTER_SECS
    if colleague.phone == "busy":
        return HumanScript(
            outcome="busy", answer_after=colleague.answer_after, ringing_after=ringing
        )
    if colleague.phone == "no_answer":
        # Nobody picks up: LiveKit's own ringing timeout ends the call, with no SIP status.
        return HumanScript(outcome="no_answer", ringing_after=ringing)
    return HumanScript(
        answer_after=colleague.answer_after,
        ringing_after=ringing,
        greeting=clips["people"][colleague.name]["greeting"],
    )


def _human(scenario: Scenario, clips: dict[str, bytes]) -> HumanScript:
    # The carrier's 180 Ringing comes 0.4 s after the INVITE on every line.
    ringing = HUMAN_RINGING_AFTER_SECS
    if scenario.human == "busy":
        return HumanScript(outcome="busy", answer_after=2.0, ringing_after=ringing)
    if scenario.human == "no_answer":
        # Nobody picks up: LiveKit's own ringing timeout ends the call, with no SIP status.
        return HumanScript(outcome="no_answer", ringing_after=ringing)
    if scenario.human == "voicemail":
        return HumanScript(
            answer_after=3.0, ringing_after=ringing, voicemail=True, greeting=clips["voicemail"]
        )
    hang_up = _secs(clips["greeting"]) + 4.0 if scenario.human_hangs_up else None
    return HumanScript(
        answer_after=3.0, ringing_after=ringing, greeting=clips["greeting"], hang_up_after=hang_up
    )


async def _choreograph(call: CallHarness, scenario: Scenario, clips: dict, bot: _Bot):
    """Make the scripted people react to what happens, as people would."""

    async def wait(event: str, nth: int = 1) -> dict:
        if nth == 1:
            try:
                return await call.wait_for(event, timeout=STEP_TIMEOUT_SECS)
            except TimeoutError:
                raise ScenarioError(f"'{event}' never happened") from None
        for _ in range(int(STEP_TIMEOUT_SECS / POLL_SECS)):
            seen = [e for e in call.events if e["event"] == event]
            if len(seen) >= nth:
                return seen[nth - 1]
            await asyncio.sleep(POLL_SECS)
        raise ScenarioError(f"'{event}' #{nth} never happened")

    async def bot_said(words: str):
        """Wait until the bot has said `words` to the caller, to the end."""
        for _ in range(int(STEP_TIMEOUT_SECS / POLL_SECS)):
            if any(words in text for text in bot.tts.spoken):
                break
            await asyncio.sleep(POLL_SECS)
        else:
            raise ScenarioError(f"the bot never said {words!r}")
        try:
            await call.wait_quiet(quiet_secs=0.4, timeout=STEP_TIMEOUT_SECS)
        except TimeoutError:
            raise ScenarioError(f"the bot never stopped after {words!r}") from None

    def human_party():
        parties = call.human_parties()
        return parties[-1] if parties else None

    call.caller.say(0.5, clips["ask"])
    await wait("transfer_requested")

    if scenario.caller_hangs_up:
        await wait("briefing_started")
        call.caller.hang_up(call.caller.now() + 3.0)
        await wait("teardown_done")
        await asyncio.sleep(1.0)
        return

    # Each human who answers replies once the bot has asked them (the n-th briefing's).
    for nth, (intro_secs, reply) in enumerate(clips["replies"], start=1):
        await wait("briefing_started", nth)
        human = human_party()
        human.say(human.now() + intro_secs + 0.6, reply)

    if scenario.refers:
        # Sam is hung up and his phone rings with Dana's call; she leaves LiveKit.
        await wait("connected")
        try:
            async with asyncio.timeout(STEP_TIMEOUT_SECS):
                await call.caller.wait_ended()
        except TimeoutError:
            raise ScenarioError("Dana's call never left LiveKit after the REFER") from None
        await asyncio.sleep(1.0)
        return

    if scenario.outcome == "connected":
        await wait("connected")
        human = human_party()
        start = human.now() + 0.6
        human.say(start, clips["to_caller"])
        call.caller.say(start + _secs(clips["to_caller"]) + 0.5, clips["thanks"])
        await asyncio.sleep(_secs(clips["to_caller"]) + _secs(clips["thanks"]) + 1.6)
        call.caller.hang_up()
        await wait("caller_hung_up")
        await asyncio.sleep(0.8)
        return

    back = await wait("returned_to_caller")
    if scenario.books_callback:
        # The bot offers a callback; Dana says when, hears the read-back, and confirms.
        call.caller.say(call.caller.now() + clips["offer_secs"] + 0.6, clips["callback_time"])
        await bot_said("Is that right?")
        call.caller.say(call.caller.now() + 0.3, clips["confirms"])
        await wait("callback_requested")
        await bot_said("Goodbye")
        await asyncio.sleep(1.2)
        return
    told = clips["told"].get(back.get("reason"), 4.0)
    call.caller.say(call.caller.now() + told + 0.6, clips["after_return"])
    await asyncio.sleep(told + _secs(clips["after_return"]) + 4.5)


async def _render_clips(scenario: Scenario, params: WarmTransferParams) -> dict:
    def render() -> dict:
        clips = {
            "ask": _speak(story.CALLER_ASKS, CALLER_VOICE),
            "thanks": _speak(story.CALLER_THANKS, CALLER_VOICE),
            "after_return": _speak(story.CALLER_AFTER_RETURN, CALLER_VOICE),
            "replies": [],
        }
        if scenario.team:
            clips["people"] = people = {}
            for c in scenario.team:
                people[c.name] = {
                    "greeting": c.greeting and _speak(c.greeting, c.voice),
                    "to_caller": c.to_caller and _speak(c.to_caller, c.voice),
                }
                if c.phone == "answer" and c.reply and not scenario.closed_today:
                    intro = story.team_briefing_intro(c.name)
                    intro_secs = _secs(_speak(intro, BOT_VOICE))
                    clips["replies"].append((intro_secs, _speak(c.reply, c.voice)))
            taker = next((c for c in scenario.team if c.to_caller), None)
            clips["to_caller"] = taker and people[taker.name]["to_caller"]
            clips["greeting"] = taker and people[taker.name]["greeting"]
        else:
            clips["greeting"] = _speak(story.HUMAN_GREETING, HUMAN_VOICE)
            clips["voicemail"] = _speak(story.VOICEMAIL_GREETING, HUMAN_VOICE)
            clips["to_caller"] = _speak(story.HUMAN_TO_CALLER, HUMAN_VOICE)
            if scenario.human_reply:
                intro_secs = _secs(_speak(story.BRIEFING_INTRO, BOT_VOICE))
                clips["replies"].append((intro_secs, _speak(scenario.human_reply, HUMAN_VOICE)))
        clips["told"] = {}
        if scenario.reason is not None:
            hours = params.availability
            opens = hours.describe_next_opening(datetime.now(UTC)) if hours else None
            sentence = params.failure_message(scenario.reason, opens=opens)
            clips["told"] = {str(scenario.reason): _secs(_speak(sentence, BOT_VOICE))}
        if scenario.books_callback:
            clips["offer_secs"] = _secs(_speak(params.callback_offer_message, BOT_VOICE))
            clips["callback_time"] = _speak(story.CALLER_CALLBACK_TIME, CALLER_VOICE)
            clips["confirms"] = _speak(story.CALLER_CONFIRMS, CALLER_VOICE)
        return clips

    return await asyncio.to_thread(render)


def _write_wav(path: Path, audio, length: int):
    samples = np.zeros(length, dtype=np.int16)
    if audio is not None and len(audio):
        n = min(length, len(audio))
        samples[:n] = np.asarray(audio[:n], dtype=np.int16)
    sf.write(str(path), samples, RATE, subtype="PCM_16")


async def run_scenario(
    name: str,
    out_dir: str | Path,
    *,
    on_event: Callable[[dict], None] | None = None,
    config: str | Path | None = None,
    caller_output: str = "livekit",
) -> dict:
    """Run one scenario and write its five files; returns the report.

    The caller hears the bot through Pipecat's real `LiveKitTransport` output and a real
    livekit-rtc `AudioSource` (`caller_output="livekit"`, the path users run), or through
    the memory room's output (`"memory"`).

    With `config`, a bot YAML's transfer settings (messages, hold music, level, timeouts,
    briefing options) replace the demo's own. A run that does not go as scripted still
    writes its files, with `as_scripted` false and an `error` in the report.
    """
    scenario = SCENARIOS[name]
    settings = None
    transfer_kwargs = {}
    if config is not None:
        from pipecat_warm_transfer.config import load_config

        settings = await asyncio.to_thread(lambda: load_config(config).transfer_settings())
        transfer_kwargs["hold_mixer"] = settings.hold_music.mixer()
    params = _transfer_params(scenario, settings)
    clips = await _render_clips(scenario, params)
    bot = _Bot(scenario)
    harness = CallHarness(
        humans=_humans(scenario, clips),
        number=story.CALLER_NUMBER_OF_HUMAN,
        target=_target(scenario),
        params=params,
        briefing=_briefing(scenario, settings),
        transfer_kwargs=transfer_kwargs,
        supports_move=scenario.supports_move,
        sample_rate=RATE,
        bot_processors=bot,
        livekit=True,
        caller_output=caller_output,
        check_leaks=False,  # reported in report.json (`leaks`, `as_scripted`)
        caller_sip=True,  # Dana phones in: LiveKit's SIP service joins her call
    )
    error: ScenarioError | None = None
    async with harness as call:
        call.emulator.sip_transfers.default = REFER_CARRIER
        if on_event is not None:

            @call.transfer.event_handler("on_transfer_event")
            async def _print(_transfer, event: dict):
                on_event({"t": round(call.caller.now(), 3), **event})

        try:
            await _choreograph(call, scenario, clips, bot)
        except ScenarioError as e:
            error = e
    summary = _summarize(name, scenario, call.report, error, _greeting(scenario, clips))
    summary["said_to_caller"] = list(bot.tts.spoken)
    if params.availability is not None:
        summary["availability"] = _availability(params.availability)
    _add_ring_ends(summary["tried"], _ring_ends(call), _numbers(scenario))
    extra_events = []
    if scenario.refers:
        summary["refer"] = refer = _refer_seen(call)
        extra_events = _refer_events(refer)
    humans = _humans_heard(call)
    await asyncio.to_thread(
        _write_outputs, Path(out_dir), scenario, call.report, summary, humans, extra_events
    )
    return summary


def _greeting(scenario: Scenario, clips: dict) -> bytes | None:
    """What the scripted human who took the call said on answering (None: nobody)."""
    if scenario.team:
        return clips["greeting"]
    if scenario.human in ("busy", "no_answer"):
        return None
    return clips["voicemail"] if scenario.human == "voicemail" else clips["greeting"]


def _availability(hours) -> dict:
    """The team's hours as the transfer saw them at the end of the run."""
    now = datetime.now(UTC)
    holiday = hours.holiday(now)
    return {
        "time_zone": hours.time_zone,
        "open": hours.is_open(now),
        "holiday": None if holiday is None else holiday.name or holiday.date.isoformat(),
        "opens": hours.describe_next_opening(now),
    }


def _humans_heard(call: CallHarness):
    """What every human who answered heard, mixed on the call's clock (sample 0 = t0).

    A sequential group has one human on the line at a time, so nothing overlaps: the
    mix is each human's recording in turn. None when nobody answered.
    """
    recordings = [party.recording() for party in call.human_parties()]
    recordings = [r for r in recordings if r is not None and len(r)]
    if not recordings:
        return call.report.human_audio
    mixed = np.zeros(max(len(r) for r in recordings), dtype=np.int32)
    for recording in recordings:
        mixed[: len(recording)] += recording
    return np.clip(mixed, -32768, 32767).astype(np.int16)


def _numbers(scenario: Scenario) -> dict[str | None, str]:
    """Each human's number by display name (None: Sam's number alone)."""
    if not scenario.team:
        return {None: story.CALLER_NUMBER_OF_HUMAN}
    return {c.name: c.number for c in scenario.team}


def _ring_ends(call: CallHarness) -> dict[str, float]:
    """When LiveKit's dial of each number stopped ringing: answered, or ended unanswered.

    Read from the emulator's calls (seconds from sample 0): the server's view, not the
    transfer's.
    """
    ends = {}
    for dial in call.emulator.calls:
        answered = next((t for t, status in dial.statuses if status == "active"), None)
        end = answered if answered is not None else dial.ended_at
        if end is not None:
            ends[dial.request.sip_call_to] = round(end - call.t0, 3)
    return ends


def _add_ring_ends(tried: list[dict], ends: dict[str, float], numbers: dict):
    """Each human tried gets `ring_ended_t`: when LiveKit's dial stopped ringing."""
    for person in tried:
        person["ring_ended_t"] = ends.get(numbers.get(person["name"]))


def _left_at(party) -> float | None:
    """When a scripted party's connection was closed (seconds from sample 0)."""
    return next((t for t, e in party.events if isinstance(e, Disconnected)), None)


def _refer_seen(call: CallHarness) -> dict | None:
    """The REFER as LiveKit saw it (seconds from sample 0).

    Where it sent Dana's call, the carrier's answers, and when Sam's leg and Dana's call
    left their rooms: the server's record, not the transfer's.
    """
    transfers = call.emulator.sip_transfers.transfers
    if not transfers:
        return None
    record = transfers[-1]
    humans = call.human_parties()
    methods = call.emulator.methods_called()
    return {
        "transfer_to": record.transfer_to,
        "outcome": record.outcome,
        "play_dialtone": record.play_dialtone,
        "carrier": [
            {"t": round(at - call.t0, 3), "message": message} for at, message in record.events
        ],
        "human_left_t": _round(_left_at(humans[-1])) if humans else None,
        "human_end_reason": humans[-1].end_reason if humans else None,
        "caller_left_t": _round(_left_at(call.caller)),
        "caller_end_reason": call.caller.end_reason,
        # How the human and the caller were parted or joined, in order (no move here).
        "api_calls": [m for m in methods if m in _JOINING_CALLS],
    }


#: The API calls that hang up, move or refer a participant.
_JOINING_CALLS = ("RemoveParticipant", "MoveParticipant", "TransferSIPParticipant")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _refer_events(refer: dict | None) -> list[dict]:
    """Timeline marks of the REFER (LiveKit's view).

    `refer`: the carrier accepted it (202); `refer_notify`: Sam's phone answered Dana's
    call (the final NOTIFY, 200).
    """
    if refer is None:
        return []
    marks = {"REFER": "refer", "NOTIFY": "refer_notify"}
    events = []
    for answer in refer["carrier"]:
        kind, _, status = answer["message"].partition(" ")
        if kind in marks:
            events.append(
                {
                    "t": answer["t"],
                    "event": marks[kind],
                    "to": _masked(refer["transfer_to"]),
                    "sip_status": int(status),
                    "source": "livekit",
                }
            )
    return events


def _masked(uri: str) -> str:
    """The REFER's target with the number masked to its last digits, as in the events."""
    return "…" + uri[-4:] if len(uri) > 4 else uri


def _tried(result, events: list[dict]) -> list[dict]:
    """Each human tried: name, outcome, ring time, whether and when they answered.

    `*_t` are seconds from sample 0 of the WAVs, as the events' `t` (the result's own
    times count from the transfer request).
    """
    if result is None:
        return []
    requested = [e["t"] for e in events if e["event"] == "transfer_requested"]
    origin = requested[-1] if requested else 0.0

    def at(value):
        return None if value is None else round(origin + value, 3)

    return [
        {
            "name": attempt.display_name,
            "number": attempt.number,
            "outcome": attempt.outcome,
            "sip_status": attempt.sip_status,
            "answered": attempt.answered_at is not None,
            "ring_s": None if attempt.ring is None else round(attempt.ring, 3),
            "dialed_t": at(attempt.dialed_at),
            "answered_t": at(attempt.answered_at),
            "ended_t": at(attempt.ended_at),
            "transcript": [dict(turn) for turn in attempt.transcript],
        }
        for attempt in result.tried
    ]


def _summarize(
    name: str,
    scenario: Scenario,
    report,
    error: ScenarioError | None,
    greeting: bytes | None = None,
) -> dict:
    result = report.results[-1] if report.results else None

    def text(value):
        return None if value is None else str(value)

    summary = {
        "scenario": name,
        "outcome": text(result and result.outcome),
        "reason": text(result and result.reason),
        "connect_mode": text(result and result.connect_mode),
        "sip_status": None if result is None else result.sip_status,
        "timings": {} if result is None else result.timings.as_dict(),
        # DESIGN §5's four kinds; a transfer never torn down counts in `as_scripted`.
        "leaks": {k: report.leaks[k] for k in ("rooms", "participants", "connections", "tasks")},
        "leak_findings": report.leak_findings,
        "duration_s": round(len(report.caller_audio) / RATE, 2),
        # Targets: ≤ 1.0 s after the greeting ends, ≤ 1.5 s after a silent answer.
        "human_waits": report.human_waits(greeting),
        "answered_by": None if result is None else result.answered_by,
        "next_step": None if result is None else result.next_step,
        "tried": _tried(result, report.events),
        "callback": None
        if result is None or result.callback is None
        else result.callback.as_dict(),
        "expected": {
            "outcome": scenario.outcome,
            "reason": text(scenario.reason),
            "connect_mode": text(scenario.connect_mode),
        },
    }
    for key in ("answered_by", "next_step"):
        if getattr(scenario, key) is not None:
            summary["expected"][key] = getattr(scenario, key)
    matches = all(summary[k] == v for k, v in summary["expected"].items())
    if scenario.books_callback:
        matches = matches and bool(summary["callback"] and summary["callback"]["confirmed"])
    summary["as_scripted"] = error is None and matches and not any(report.leaks.values())
    if error is not None:
        summary["error"] = str(error)
    return summary


def _write_outputs(
    out: Path, scenario: Scenario, report, summary: dict, humans=None, extra_events=()
):
    from pipecat_warm_transfer.demo.timeline import draw_timeline

    out.mkdir(parents=True, exist_ok=True)
    human = humans if humans is not None else []
    length = max(len(report.caller_audio), len(human))
    _write_wav(out / "caller.wav", report.caller_audio, length)
    _write_wav(out / "human.wav", humans, length)
    events, lags = _merged(report.events, report.event_lags, extra_events)
    with open(out / "events.jsonl", "w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")
    with open(out / "report.json", "w") as f:
        json.dump(summary, f, indent=2)
    draw_timeline(
        out / "caller.wav",
        out / "human.wav",
        out / "events.jsonl",
        out / "timeline.png",
        title=f"Warm transfer, scenario '{scenario.name}': {scenario.description}",
        event_lags=lags,
    )


def _merged(events: list[dict], lags: list[float], extra) -> tuple[list[dict], list[float]]:
    """The transfer's events and LiveKit's marks in time order, with their lags.

    The caller hears a mark of LiveKit's as it happens: no lag.
    """
    if len(lags) != len(events):
        lags = [0.0] * len(events)
    pairs = list(zip(events, lags, strict=True)) + [(e, 0.0) for e in extra]
    pairs.sort(key=lambda pair: pair[0]["t"])
    return [e for e, _ in pairs], [lag for _, lag in pairs]


def _print_event(event: dict):
    extra = {k: v for k, v in event.items() if k not in ("t", "event", "transfer")}
    detail = " ".join(f"{k}={v}" for k, v in extra.items())
    print(f"  {event['t']:6.2f} s  {event['event']:<20} {detail}", flush=True)


async def _progress(started: float):
    if not sys.stdout.isatty():
        return
    while True:
        await asyncio.sleep(0.5)
        print(f"\r  … {time.monotonic() - started:5.1f} s", end="\r", flush=True)


def _describe_waits(waits: dict) -> str:
    """The human's waits for the bot, for the summary line."""
    if waits["answered_at_s"] is None:
        return "nobody answered"
    if waits["first_words_s"] is None:
        return "the human never heard the bot"
    text = f"human heard the bot {waits['answer_to_first_words_s']:.2f} s after answering"
    if waits["greeting_end_to_first_words_s"] is not None:
        text += f", {waits['greeting_end_to_first_words_s']:.2f} s after their greeting"
    return text


def _describe_team(report: dict) -> list[str]:
    """Who was tried, whether the team was open, what was booked (team scenarios)."""
    lines = []
    named = [t for t in report["tried"] if t["name"]]
    if named:
        tried = ", ".join(f"{t['name']} ({t['outcome'].replace('_', ' ')})" for t in named)
        lines.append(f"tried: {tried}")
    hours = report.get("availability")
    if hours and not hours["open"]:
        why = f" ({hours['holiday']})" if hours["holiday"] else ""
        lines.append(f"the team is closed{why}; back {hours['opens'] or 'later'}")
    callback = report["callback"]
    if callback:
        confirmed = "confirmed" if callback["confirmed"] else "not confirmed"
        lines.append(
            f"callback: {callback['preferred_time']} on {mask_number(callback['number'])}, "
            f"{confirmed}"
        )
    return lines


def run_demo(
    name: str,
    out_dir: str | Path,
    config: str | Path | None = None,
    caller_output: str = "livekit",
) -> int:
    """The `demo` command: run, print the timeline as it happens, say where the files are."""
    scenario = SCENARIOS[name]
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    print(f"▶ scenario '{name}': {scenario.description}")
    started = time.monotonic()

    async def main() -> dict:
        ticker = asyncio.create_task(_progress(started))
        try:
            return await run_scenario(
                name, out_dir, on_event=_print_event, config=config, caller_output=caller_output
            )
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    report = asyncio.run(main())
    out = Path(out_dir)
    outcome = report["outcome"] + (f" ({report['reason']})" if report["reason"] else "")
    mode = f", {report['connect_mode']}" if report["connect_mode"] else ""
    leaks = ", ".join(f"{k} {v}" for k, v in report["leaks"].items())
    print(
        f"■ {outcome}{mode} in {time.monotonic() - started:.1f} s; leaks: {leaks}; "
        f"{_describe_waits(report['human_waits'])}"
    )
    for line in _describe_team(report):
        print(f"  {line}")
    print(f"  files in {out}/: caller.wav human.wav events.jsonl report.json timeline.png")
    print(f"  listen: play {out}/caller.wav   (or aplay / afplay / any audio player)")
    if not report["as_scripted"]:
        print(f"✗ did not run as scripted: {report.get('error') or report['expected']}")
        return 1
    return 0
