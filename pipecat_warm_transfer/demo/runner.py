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
human and the cloud services (STT, LLM) are scripted stand-ins. Files: `caller.wav`, `human.wav`,
`events.jsonl`, `report.json`, `timeline.png`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
from loguru import logger
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.turns.user_stop.speech_timeout_user_turn_stop_strategy import (
    SpeechTimeoutUserTurnStopStrategy,
)
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from pipecat_warm_transfer.demo import scenarios as story
from pipecat_warm_transfer.demo.espeak_tts import EspeakTTSService, synthesize
from pipecat_warm_transfer.demo.scenarios import SCENARIOS, Scenario
from pipecat_warm_transfer.params import BriefingParams, WarmTransferParams
from pipecat_warm_transfer.testing.drivers.call_harness import CallHarness
from pipecat_warm_transfer.testing.scripted_party import HumanScript
from pipecat_warm_transfer.testing.scripted_services import (
    ScriptedLLMService,
    ScriptedReply,
    ScriptedSTTService,
)
from pipecat_warm_transfer.warm_transfer import WarmTransfer

RATE = 16000
CALLER_VOICE = "en-us+f3"
BOT_VOICE = "en-us"
HUMAN_VOICE = "en-gb+m3"
#: Bound on every wait of the choreography, so a broken run ends by itself.
STEP_TIMEOUT_SECS = 40.0
#: Seconds from the INVITE to the carrier's 180 Ringing in the demo's phone lines.
HUMAN_RINGING_AFTER_SECS = 0.4


class ScenarioError(RuntimeError):
    """The scenario did not run as scripted (an expected event never came)."""


def _speak(text: str, voice: str) -> bytes:
    return synthesize(text, voice=voice, sample_rate=RATE)


def _secs(pcm: bytes) -> float:
    return len(pcm) / (2 * RATE)


def _transfer_params(scenario: Scenario, settings=None) -> WarmTransferParams:
    if settings is not None:
        return settings.params  # the user's own messages, timeouts and level (demo --config)
    return WarmTransferParams(
        hold_message=story.HOLD_LINE,
        hold_reminder="Thanks for holding, I'm still trying to reach them.",
        hold_reminder_every=12.0,
        ring_timeout=8.0,
        briefing_timeout=30.0,
        summary_timeout=2.0,
        connected_message=None,
    )


def _briefing(scenario: Scenario, settings=None) -> BriefingParams:
    heard = [story.VOICEMAIL_GREETING if scenario.human == "voicemail" else story.HUMAN_GREETING]
    if scenario.human_reply:
        heard.append(scenario.human_reply)
    replies = [
        ScriptedReply(say=story.BRIEFING_INTRO),
        ScriptedReply(when="put her through", call=("connect_to_caller", {})),
        ScriptedReply(when="meeting", call=("decline_transfer", {"reason": "in a meeting"})),
    ]
    options = dict(settings.briefing_options) if settings is not None else {}
    options["detect_voicemail"] = True  # the voicemail scenario relies on the detector
    return BriefingParams(
        tts=lambda: EspeakTTSService(voice=BOT_VOICE, sample_rate=RATE),
        stt=lambda: ScriptedSTTService(list(heard), user_id="human"),
        llm=lambda: ScriptedLLMService(list(replies)),
        **options,
    )


def _bot(transfer: WarmTransfer) -> list:
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
    llm = ScriptedLLMService(
        [
            ScriptedReply(
                when="person", call=("transfer_to_human", {"reason": story.TRANSFER_REASON})
            ),
            ScriptedReply(when="later", say=story.BOT_GOODBYE),
        ],
        summary=story.SUMMARY,
    )
    llm.register_function("transfer_to_human", transfer.handle_function_call)
    return [
        ScriptedSTTService([story.CALLER_ASKS, story.CALLER_AFTER_RETURN], user_id="caller"),
        aggregators.user(),
        llm,
        EspeakTTSService(voice=BOT_VOICE, sample_rate=RATE),
    ]


def _human(scenario: Scenario, clips: dict[str, bytes], ring_timeout: float) -> HumanScript:
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


async def _choreograph(call: CallHarness, scenario: Scenario, clips: dict[str, bytes]):
    """Make the scripted people react to what happens, as people would."""

    async def wait(event: str) -> dict:
        try:
            return await call.wait_for(event, timeout=STEP_TIMEOUT_SECS)
        except TimeoutError:
            raise ScenarioError(f"'{event}' never happened") from None

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

    if scenario.human_reply:
        await wait("briefing_started")
        human = human_party()
        human.say(human.now() + clips["intro_secs"] + 0.6, clips["reply"])

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
    told = clips["told"].get(back.get("reason"), 4.0)
    call.caller.say(call.caller.now() + told + 0.6, clips["after_return"])
    await asyncio.sleep(told + _secs(clips["after_return"]) + 4.5)


async def _render_clips(scenario: Scenario, params: WarmTransferParams) -> dict:
    def render() -> dict:
        clips = {
            "ask": _speak(story.CALLER_ASKS, CALLER_VOICE),
            "greeting": _speak(story.HUMAN_GREETING, HUMAN_VOICE),
            "voicemail": _speak(story.VOICEMAIL_GREETING, HUMAN_VOICE),
            "to_caller": _speak(story.HUMAN_TO_CALLER, HUMAN_VOICE),
            "thanks": _speak(story.CALLER_THANKS, CALLER_VOICE),
            "after_return": _speak(story.CALLER_AFTER_RETURN, CALLER_VOICE),
            "intro_secs": _secs(_speak(story.BRIEFING_INTRO, BOT_VOICE)),
        }
        if scenario.human_reply:
            clips["reply"] = _speak(scenario.human_reply, HUMAN_VOICE)
        if scenario.reason is not None:
            sentence = params.failure_message(scenario.reason)
            clips["told"] = {str(scenario.reason): _secs(_speak(sentence, BOT_VOICE))}
        else:
            clips["told"] = {}
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
    harness = CallHarness(
        humans={story.CALLER_NUMBER_OF_HUMAN: _human(scenario, clips, params.ring_timeout)},
        number=story.CALLER_NUMBER_OF_HUMAN,
        params=params,
        briefing=_briefing(scenario, settings),
        transfer_kwargs=transfer_kwargs,
        supports_move=scenario.supports_move,
        sample_rate=RATE,
        bot_processors=_bot,
        livekit=True,
        caller_output=caller_output,
        check_leaks=False,  # reported in report.json (`leaks`, `as_scripted`)
    )
    error: ScenarioError | None = None
    async with harness as call:
        if on_event is not None:

            @call.transfer.event_handler("on_transfer_event")
            async def _print(_transfer, event: dict):
                on_event({"t": round(call.caller.now(), 3), **event})

        try:
            await _choreograph(call, scenario, clips)
        except ScenarioError as e:
            error = e
    summary = _summarize(name, scenario, call.report, error, _greeting(scenario, clips))
    await asyncio.to_thread(_write_outputs, Path(out_dir), scenario, call.report, summary)
    return summary


def _greeting(scenario: Scenario, clips: dict) -> bytes | None:
    """What the scripted human says on answering (None: nobody answers)."""
    if scenario.human in ("busy", "no_answer"):
        return None
    return clips["voicemail"] if scenario.human == "voicemail" else clips["greeting"]


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
        "expected": {
            "outcome": scenario.outcome,
            "reason": text(scenario.reason),
            "connect_mode": text(scenario.connect_mode),
        },
    }
    matches = all(summary[k] == v for k, v in summary["expected"].items())
    summary["as_scripted"] = error is None and matches and not any(report.leaks.values())
    if error is not None:
        summary["error"] = str(error)
    return summary


def _write_outputs(out: Path, scenario: Scenario, report, summary: dict):
    from pipecat_warm_transfer.demo.timeline import draw_timeline

    out.mkdir(parents=True, exist_ok=True)
    human = report.human_audio if report.human_audio is not None else []
    length = max(len(report.caller_audio), len(human))
    _write_wav(out / "caller.wav", report.caller_audio, length)
    _write_wav(out / "human.wav", report.human_audio, length)
    with open(out / "events.jsonl", "w") as f:
        for event in report.events:
            f.write(json.dumps(event) + "\n")
    with open(out / "report.json", "w") as f:
        json.dump(summary, f, indent=2)
    draw_timeline(
        out / "caller.wav",
        out / "human.wav",
        out / "events.jsonl",
        out / "timeline.png",
        title=f"Warm transfer, scenario '{scenario.name}': {scenario.description}",
        event_lags=report.event_lags,
    )


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
    print(f"  files in {out}/: caller.wav human.wav events.jsonl report.json timeline.png")
    print(f"  listen: play {out}/caller.wav   (or aplay / afplay / any audio player)")
    if not report["as_scripted"]:
        print(f"✗ did not run as scripted: {report.get('error') or report['expected']}")
        return 1
    return 0
