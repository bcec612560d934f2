"""Briefing latency: how long the human waits, after answering, to hear the bot.

The issue's targets: the human hears the bot **≤ 1.0 s after their greeting ends**, and
**≤ 1.5 s after answering when they say nothing**.

Whole transfers run one at a time through `CallHarness` with `livekit=True` (the real
`LiveKitSipBackend` and `livekit-api` client against the LiveKit emulator on loopback; the
consult room's media is the emulator's memory room) and `caller_output="livekit"`
(Pipecat's real LiveKit output on the caller's side). Each transfer dials one scripted
human (`HumanScript`): the carrier's 180 Ringing after 0.4 s, an answer after 0.6-2.5 s,
then either a greeting ("Hello?": a 500 Hz tone at -20 dBFS, 0.4-1.2 s long) or nothing,
half and half (alternating); the same seeded humans in every configuration.

The briefing is the voice briefing a user configures (the demo's): scripted STT (a
transcript at the end of each spoken segment), scripted LLM (it answers the kickoff with
the intro at once), tone TTS, and Pipecat's `VoicemailDetector` in front of the output
(`detect_voicemail=True`, the default), whose gate holds the bot's speech until a person
is recognised (the greeting's transcript classified, or silence at the greeting timeout,
1.0 s by default). The scripted services answer instantly. Real ones add their latency:
for a greeting, the LLM starts when the greeting's end is heard (0.4 s of quiet) while the
gate opens ~0.8 s after it (the transcript, then the detector's 0.5 s decision time), so
up to ~0.4 s of LLM + TTS time to first audio is hidden; for a silent human the greeting
timeout starts the LLM and opens the gate at once, so their latency adds in full. (A real
STT's transcript, and a real LLM as the detector's classifier, move the gate later.)

A transfer whose human hears nothing within 8 s of the answer counts as out of target
(`never_heard`), not as an error.

Numbers, from what the human heard (`call.report.human_audio`, whose sample 0 is the
events' clock), by `CallReport.human_waits()` as in the demo's report:

* the **answer** is the emulator's dial going active (the scripted human picks up and
  starts their greeting then);
* the **greeting end** is the answer plus the greeting's length;
* the **first words** are the first 20 ms window of the human's recording after the
  answer above -45 dBFS (checked to be the briefing voice, 330 Hz).

`greeting → words` is reported for the humans who greet, `answer → words` for the silent
ones (the 1.5 s target), each as p50 / p95 / max and the fraction within target; and, on
the caller's side, request → `dialing` (how long before the phone starts ringing).

**The room join is modelled.** The emulator's consult transports join their memory room at
once; a LiveKit room join (signalling, then ICE and DTLS) does not. Each consult
transport's join takes `JOIN_SECS` — 0.5 s (`typical`) or 1.5 s (`slow`), assumed, not
measured — at the end of its processors' `setup()`, where `LiveKitTransport` awaits
`room.connect()`; the pipeline's `StartFrame` waits for it, so `BriefingSession.start()`
returns once the bot is in the room: ours places the call that much later (request →
`dialing`), the baseline starts following the greeting that much after the answer.

**Baseline, same run, same humans**: the order before the bot joined the consult room
ahead of the dial. `WarmTransfer._join_consult_room` is replaced on that call's transfer
by a stand-in that joins nothing; when the dial returns answered, the stand-in builds the
`BriefingSession` with `summary=` (the answer implied at `start()`) and starts it, as the
old `_brief` did: the bot joins the room only after the human picked up. Each human is
transferred once per configuration (order x join), in a seeded random order.

Summary keys: `briefing_greeting_to_words_p95_ms` and `briefing_answer_to_words_p95_ms`
(silent humans), their p50 and max, and `briefing_within_target`, for the early join with
the typical join time; the same p95s and fraction for the slow join (`briefing_slow_join_*`)
and for the baseline (`briefing_old_order_*`, `briefing_old_order_slow_join_*`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    check_profile,
    load_average,
    machine_info,
    percentile,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from pipecat_warm_transfer.audio.metrics import dominant_frequency
from pipecat_warm_transfer.briefing import BriefingSession
from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.scripted_services import (
    ScriptedLLMService,
    ScriptedReply,
    ScriptedSTTService,
)
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService

RATE = 16000
NUMBER = "+15550100"
#: Modelled consult-room join times (seconds; see the module docstring).
JOIN_SECS = {"typical": 0.5, "slow": 1.5}
#: Configurations: (name, order, join). `early`: the bot joins before the dial (ours);
#: `old`: the baseline, the bot joins after the answer.
CONFIGS = (
    ("early", "early", "typical"),
    ("old", "old", "typical"),
    ("early_slow_join", "early", "slow"),
    ("old_slow_join", "old", "slow"),
)
CONFIG_LABELS = {
    "early": "ours: bot joins\nbefore the dial",
    "old": "baseline: bot joins\nafter the answer",
    "early_slow_join": "ours,\nslow join",
    "old_slow_join": "baseline,\nslow join",
}
GREETING_TO_WORDS_TARGET_S = 1.0
ANSWER_TO_WORDS_TARGET_S = 1.5
GREETING_HZ = 500.0
INTRO = "Hi, this is the assistant with a transfer: a caller has a billing question."
#: How long the human's recording runs on after the bot started speaking.
LISTEN_AFTER_SECS = 0.6
#: Longest wait for the bot's first words after the answer before the run counts as a miss.
WORDS_TIMEOUT_SECS = 8.0

PROFILE_SETTINGS = {"quick": {"humans": 6}, "full": {"humans": 30}}

JSON_PATH = RESULTS_DIR / "briefing_latency.json"
PNG_PATH = RESULTS_DIR / "briefing_latency.png"


class BenchmarkSanityError(RuntimeError):
    """A transfer did not go as scripted."""


@dataclass(frozen=True)
class Human:
    """One scripted human of the benchmark."""

    index: int
    answer_after: float
    greeting_secs: float | None  # None: says nothing

    def greeting(self) -> bytes | None:
        return None if self.greeting_secs is None else tone(GREETING_HZ, self.greeting_secs, RATE)

    def script(self) -> HumanScript:
        return HumanScript(
            answer_after=self.answer_after, ringing_after=0.4, greeting=self.greeting()
        )


def humans(count: int, seed: int = 11) -> list[Human]:
    """Half greet ("Hello?" 0.4-1.2 s), half say nothing; answers after 0.6-2.5 s."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        greeting = round(rng.uniform(0.4, 1.2), 2) if i % 2 == 0 else None
        out.append(Human(i, round(rng.uniform(0.6, 2.5), 2), greeting))
    return out


def _briefing() -> BriefingParams:
    return BriefingParams(
        tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ, sample_rate=RATE),
        stt=lambda: ScriptedSTTService(["Hello?"], user_id="human"),
        llm=lambda: ScriptedLLMService([ScriptedReply(say=INTRO)]),
        detect_voicemail=True,
    )


class _JoinAfterAnswer:
    """The old order, on one transfer: no bot in the consult room until the answer.

    Stands in for the `BriefingSession` the transfer would start before the dial; the
    summary hand-over is ignored, and at the answer the real session is built with the
    summary and started (it joins the room then), as `_brief` did before.
    """

    def __init__(self, transfer, attempt, leg):
        self._transfer = transfer
        self._attempt = attempt
        self._leg = leg

    async def set_summary(self, summary: str, turns=None):
        pass  # the session gets it at construction, after the answer

    async def human_answered(self):
        transfer, attempt = self._transfer, self._attempt
        summary, _from_llm = await attempt.summary_task
        attempt.briefing = session = BriefingSession(
            leg=self._leg,
            params=transfer._briefing_params,
            summary=summary,
            reason=attempt.reason,
            turns=attempt.turns,
            human_name=transfer._target.display_name,
            on_event=transfer._on_briefing_event,
            relay_to_caller=transfer._bridge.from_human,
        )
        await session.start()


def _slow_join(backend, secs: float) -> None:
    """Make each consult transport's room join take `secs`, where LiveKit's takes place.

    Pipecat's `LiveKitTransport` joins its room (`room.connect()`, shared by its input and
    output) in the processors' `setup()`, and the pipeline holds its `StartFrame` until
    every processor is set up: the briefing pipeline starts only once the bot is in the
    room. The emulator's transports are `MemoryTransport`s, which join at once (at
    `start()`); the delay goes at the end of their input's and output's `setup()`.
    """
    factory = backend.transport_factory

    def slow_factory(*args, **kwargs):
        transport = factory(*args, **kwargs)
        joined = asyncio.Event()
        joining = False

        async def join():
            nonlocal joining
            if not joining:
                joining = True
                await asyncio.sleep(secs)
                joined.set()
            await joined.wait()

        for processor in (transport.input(), transport.output()):
            setup = processor.setup

            async def slow_setup(frame_setup, setup=setup):
                await setup(frame_setup)
                await join()

            processor.setup = slow_setup
        return transport

    backend.transport_factory = slow_factory  # this call's backend only


def _join_after_answer(transfer) -> None:
    async def join_consult_room(attempt, leg):
        return _JoinAfterAnswer(transfer, attempt, leg)

    transfer._join_consult_room = join_consult_room  # this transfer only


async def _one_transfer(human: Human, config: str, order: str, join: str) -> dict[str, Any]:
    started = time.perf_counter()
    async with CallHarness(
        humans={NUMBER: human.script()},
        number=NUMBER,
        params=fast_params(ring_timeout=8.0, briefing_timeout=15.0),
        briefing=_briefing(),
        sample_rate=RATE,
        livekit=True,
        caller_output="livekit",
    ) as call:
        _slow_join(call.backend, JOIN_SECS[join])
        if order == "old":
            _join_after_answer(call.transfer)
        if not await call.transfer.start_transfer("billing question"):
            raise BenchmarkSanityError("the transfer did not start")
        await call.wait_for("human_answered", timeout=human.answer_after + 10.0)
        spoke = True
        try:
            await call.wait_for("briefing_started", timeout=WORDS_TIMEOUT_SECS)
        except TimeoutError:
            spoke = False
        await asyncio.sleep(LISTEN_AFTER_SECS)
        await call.worker.cancel(reason="benchmark done")
    report = call.report
    waits = report.human_waits(human.greeting())
    if waits["answered_at_s"] is None:
        raise BenchmarkSanityError(f"human {human.index} ({config}): no answer recorded")
    voice_hz = None
    if waits["first_words_s"] is not None:
        at = int(waits["first_words_s"] * RATE)
        voice_hz = dominant_frequency(report.human_audio[at : at + RATE // 5], RATE)
        if abs(voice_hz - BRIEFING_PITCH_HZ) > 25:
            raise BenchmarkSanityError(
                f"human {human.index} ({config}): first heard {voice_hz:.0f} Hz, not the bot"
            )
    if spoke != (waits["first_words_s"] is not None):
        raise BenchmarkSanityError(
            f"human {human.index} ({config}): briefing_started {spoke}, words {waits}"
        )
    events = {e["event"]: e["t"] for e in reversed(report.events)}
    return {
        "human": human.index,
        "config": config,
        "order": order,
        "join_s": JOIN_SECS[join],
        "greets": human.greeting_secs is not None,
        "greeting_secs": human.greeting_secs,
        "answer_after_s": human.answer_after,
        **waits,
        "request_to_dialing_s": round(events["dialing"] - events["transfer_requested"], 3),
        "briefing_started_event_s": events.get("briefing_started"),
        "human_answered_event_s": events.get("human_answered"),
        "voice_hz": None if voice_hz is None else round(voice_hz, 1),
        "wall_s": round(time.perf_counter() - started, 2),
    }


async def _run(people: list[Human], seed: int = 5) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    samples: list[dict[str, Any]] = []
    for human in people:
        configs = list(CONFIGS)
        rng.shuffle(configs)
        for config, order, join in configs:
            sample = await _one_transfer(human, config, order, join)
            samples.append(sample)
            key = "greeting_end_to_first_words_s" if sample["greets"] else "answer_to_first_words_s"
            what = "greeting → words" if sample["greets"] else "answer → words (silent)"
            value = sample[key]
            shown = "never" if value is None else f"{value:.3f} s"
            progress(
                f"  briefing_latency human {human.index + 1}/{len(people)} [{config}]: "
                f"{what} {shown}  [{sample['wall_s']:.1f} s]"
            )
    return samples


def _stats(values: list[float | None], target: float | None) -> dict[str, Any]:
    """p50/p95/max in ms and the fraction within target (never heard counts as out)."""
    heard = [v for v in values if v is not None]
    ms = [1000 * v for v in heard]
    stats: dict[str, Any] = {
        "count": len(values),
        "never_heard": len(values) - len(heard),
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p95_ms": round(percentile(ms, 95), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "min_ms": round(min(ms), 1) if ms else None,
    }
    if target is not None:
        stats["target_ms"] = 1000 * target
        within = sum(v <= target for v in heard)
        stats["within"] = within
        stats["within_target"] = round(within / len(values), 3) if values else None
    return stats


def _within_target(figures: dict[str, Any]) -> float | None:
    """Fraction of all transfers (greeting and silent humans) within their target."""
    parts = (figures["greeting_to_words"], figures["answer_to_words_silent"])
    count = sum(p["count"] for p in parts)
    return round(sum(p["within"] for p in parts) / count, 3) if count else None


def _figures(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for config, _order, _join in CONFIGS:
        rows = [s for s in samples if s["config"] == config]
        greeting = [s["greeting_end_to_first_words_s"] for s in rows if s["greets"]]
        silent = [s["answer_to_first_words_s"] for s in rows if not s["greets"]]
        greeted_answer = [s["answer_to_first_words_s"] for s in rows if s["greets"]]
        out[config] = {
            "greeting_to_words": _stats(greeting, GREETING_TO_WORDS_TARGET_S),
            "answer_to_words_silent": _stats(silent, ANSWER_TO_WORDS_TARGET_S),
            # For the record: a greeting human's whole wait from the answer (no target).
            "answer_to_words_greeting": _stats(greeted_answer, None),
            # The caller's side: how long before the phone starts ringing.
            "request_to_dialing": _stats([s["request_to_dialing_s"] for s in rows], None),
        }
    return out


def _plot(samples: list[dict[str, Any]], figures: dict, profile: str, path: Path) -> None:
    plt = pyplot()
    panels = [
        (True, "greeting_end_to_first_words_s", GREETING_TO_WORDS_TARGET_S, "greeting_to_words"),
        (False, "answer_to_first_words_s", ANSWER_TO_WORDS_TARGET_S, "answer_to_words_silent"),
    ]
    titles = {
        "greeting_to_words": "Human greets: greeting end → bot's first words",
        "answer_to_words_silent": "Human says nothing: answer → bot's first words",
    }
    colors = {"early": "#2a9d8f", "old": "#e76f51"}
    configs = [c for c, _o, _j in CONFIGS]
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, (greets, key, target, name) in zip(axes, panels, strict=True):
        top = target
        for j, (config, order, _join) in enumerate(CONFIGS):
            rows = [s for s in samples if s["config"] == config and s["greets"] == greets]
            values = [s[key] for s in rows if s[key] is not None]
            x = np.full(len(values), j) + np.linspace(-0.15, 0.15, len(values))
            ax.scatter(x, values, color=colors[order], alpha=0.8, zorder=3)
            missed = len(rows) - len(values)
            stats = figures[config][name]
            if values:
                top = max(top, max(values))
                p50 = stats["p50_ms"] / 1000
                ax.hlines(p50, j - 0.25, j + 0.25, color="black", linewidth=2, zorder=4)
                label = f"p50 {stats['p50_ms']:.0f}\np95 {stats['p95_ms']:.0f} ms"
                ax.annotate(label, (j + 0.22, p50), fontsize=7, va="center")
            if missed:
                ax.annotate(f"{missed} never heard", (j, 0.02), ha="center", fontsize=8)
        ax.axhline(target, color="#c1121f", linestyle="--", linewidth=1)
        ax.text(-0.55, target * 1.02, f"target {target:g} s", color="#c1121f", fontsize=8)
        ax.set_xticks(range(len(configs)), [CONFIG_LABELS[c] for c in configs], fontsize=8)
        ax.set_xlim(-0.6, len(configs) - 0.1)
        ax.set_ylim(0, top * 1.15)
        ax.set_ylabel("seconds (on the human's recording)")
        ax.set_title(titles[name], fontsize=10)
        ax.grid(axis="y", alpha=0.25)
    fig.suptitle(
        f"When the human first hears the bot, one dot per transfer (LiveKit emulator, "
        f"scripted services; room join modelled: typical {JOIN_SECS['typical']:g} s, "
        f"slow {JOIN_SECS['slow']:g} s), profile {profile}",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path)


def run(profile: str) -> dict[str, Any]:
    """Run the briefing latency benchmark; write its JSON and PNG; return summary keys."""
    check_profile(profile)
    count = PROFILE_SETTINGS[profile]["humans"]
    people = humans(count)
    t0 = time.perf_counter()
    greeters = sum(h.greeting_secs is not None for h in people)
    progress(
        f"briefing_latency: {count} humans ({greeters} greet), each transferred "
        f"{len(CONFIGS)} times: {', '.join(c for c, _o, _j in CONFIGS)}"
    )
    load_before = load_average()
    samples = asyncio.run(_run(people))
    figures = _figures(samples)
    early = figures["early"]
    greeting, silent = early["greeting_to_words"], early["answer_to_words_silent"]
    summary: dict[str, Any] = {
        "briefing_greeting_to_words_p50_ms": greeting["p50_ms"],
        "briefing_greeting_to_words_p95_ms": greeting["p95_ms"],
        "briefing_greeting_to_words_max_ms": greeting["max_ms"],
        "briefing_answer_to_words_p50_ms": silent["p50_ms"],
        "briefing_answer_to_words_p95_ms": silent["p95_ms"],
        "briefing_answer_to_words_max_ms": silent["max_ms"],
        "briefing_within_target": _within_target(early),
        "briefing_request_to_dialing_p50_ms": early["request_to_dialing"]["p50_ms"],
    }
    prefixes = {
        "early_slow_join": "briefing_slow_join",
        "old": "briefing_old_order",
        "old_slow_join": "briefing_old_order_slow_join",
    }
    for config, prefix in prefixes.items():
        figure = figures[config]
        summary[f"{prefix}_greeting_to_words_p95_ms"] = figure["greeting_to_words"]["p95_ms"]
        summary[f"{prefix}_answer_to_words_p95_ms"] = figure["answer_to_words_silent"]["p95_ms"]
        summary[f"{prefix}_within_target"] = _within_target(figure)
    summary["briefing_targets_met"] = _within_target(early) == 1.0
    summary["briefing_modelled_join_s"] = dict(JOIN_SECS)
    summary["briefing_profile"] = profile
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "briefing_latency",
        "profile": profile,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": load_average()},
        "setup": {
            "backend": "LiveKitSipBackend + livekit-api against the LiveKit emulator",
            "caller_output": "livekit (Pipecat's LiveKit output, real livekit-rtc source)",
            "humans": "180 Ringing at 0.4 s, answer at 0.6-2.5 s; half greet (500 Hz tone, "
            "-20 dBFS, 0.4-1.2 s), half say nothing",
            "briefing": "scripted STT + LLM (instant), tone TTS, VoicemailDetector gate, "
            "greeting_timeout 1.0 s",
            "first_words": "first 20 ms window of the human's recording after the answer "
            "above -45 dBFS",
            "targets_s": {
                "greeting_to_words": GREETING_TO_WORDS_TARGET_S,
                "answer_to_words_silent": ANSWER_TO_WORDS_TARGET_S,
            },
            "join_s": {"modelled, not measured": JOIN_SECS},
            "baseline": "session built with summary= and started after the dial returned",
            "configs": [{"name": c, "order": o, "join_s": JOIN_SECS[j]} for c, o, j in CONFIGS],
        },
        "summary": summary,
        "figures": figures,
        "samples": samples,
    }
    write_json(JSON_PATH, document)
    _plot(samples, figures, profile, PNG_PATH)

    def line(stats: dict) -> str:
        return (
            f"p50 {stats['p50_ms']} / p95 {stats['p95_ms']} / max {stats['max_ms']} ms, "
            f"{stats['within']}/{stats['count']} within {stats['target_ms']:.0f} ms"
        )

    for config, order, join in CONFIGS:
        figure = figures[config]
        progress(f"briefing_latency [{config}: {order} order, {JOIN_SECS[join]:g} s join]:")
        progress(f"  greeting end → first words: {line(figure['greeting_to_words'])}")
        progress(f"  answer → first words (silent): {line(figure['answer_to_words_silent'])}")
    progress(f"briefing_latency: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
