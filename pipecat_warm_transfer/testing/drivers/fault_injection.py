#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Randomized, seeded fault injection over whole offline calls, with invariants.

Each run draws a call from a seed: how the human's phone behaves (answer, busy, no answer,
decline, failure, voicemail), when they press keys or hang up, when the caller hangs up,
whether the server can move participants, which connect mode is asked for, whether the
briefing's services fail, whether a second transfer is requested while one runs, and when
the bot's pipeline is ended or cancelled. After the call, invariants are checked: exactly
one result per accepted transfer with a typed reason, the caller never stuck or left in
dead air, zero leaked rooms, participants, connections and tasks, and no secret in the
logs. A failing run reports its seed and its event trace, which reproduce it.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame

from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BOT_PITCH_HZ,
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.drivers.listening import (
    HOLD_ENDS,
    Listening,
    Voices,
    dead_air,
    listen,
)
from pipecat_warm_transfer.testing.drivers.music_finder import hold_loops, music_times
from pipecat_warm_transfer.testing.scripted_party import HumanScript, tone
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferOutcome

NUMBER = "+15550100"
DEFAULT_SEED = 20261124
DEFAULT_RUNS = 12

#: Ring timeout of every run, and the LiveKit backend's settings in LiveKit runs: LiveKit's
#: deadline for the dial is RING + DIAL_GRACE (the client waits 1 s more for its answer).
RING_TIMEOUT = 2.5
DIAL_GRACE = 1.0
STATUS_POLL = 0.2
#: Reasons that end a transfer from the caller's side whatever the phone did.
_ENDED_BY_CALLER = (FailureReason.CALLER_HUNG_UP, FailureReason.CANCELLED)

#: API faults a run may inject into the LiveKit emulator: (kind, method, value).
API_FAULTS = (
    ("fail", "CreateSIPParticipant", "internal"),
    ("fail", "CreateSIPParticipant", "unavailable"),
    ("latency", "CreateSIPParticipant", None),
    ("drop", "CreateSIPParticipant", None),
    ("fail", "MoveParticipant", "internal"),
    ("fail", "RemoveParticipant", "unavailable"),
    ("fail", "DeleteRoom", "unavailable"),
    ("latency", "DeleteRoom", None),
)
#: What the human says every `HUMAN_SAYS_EVERY` s once answered, so the caller can be
#: checked to hear them once joined (a pitch no other party uses).
HUMAN_CLIP = tone(700, 0.4)
HUMAN_SAYS_EVERY = 1.5
#: A JWT in a log line is a leaked credential.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")


def fuzz_settings() -> tuple[int, int]:
    """`WT_FUZZ_SEED` and `WT_FUZZ_RUNS` from the environment (DESIGN §4)."""
    seed = int(os.environ.get("WT_FUZZ_SEED", DEFAULT_SEED))
    runs = int(os.environ.get("WT_FUZZ_RUNS", DEFAULT_RUNS))
    return seed, runs


@dataclass
class FaultPlan:
    """One randomized call, fully determined by its seed."""

    seed: int
    human: HumanScript
    supports_move: bool
    connect_mode: ConnectMode
    caller_hangs_up_at: float | None
    pipeline_end_at: float | None
    pipeline_cancel: bool
    second_request_at: float | None
    briefing_fails: bool
    call_secs: float
    livekit: bool = False
    faults: list[tuple] = field(default_factory=list)
    caller_output: str = "memory"
    #: The bot's TTS drops the hold line (no audio): the music must take over anyway.
    hold_line_lost: bool = False

    def describe(self) -> str:
        """One line saying what this run does."""
        h = self.human
        actions = [(a[0], round(a[1], 2), *(a[2:] if a[0] == "dtmf" else ())) for a in h.actions]
        voicemail = "+voicemail" if h.voicemail else ""
        human = (
            f"human={h.outcome}{voicemail} sip={h.sip_status} after {h.answer_after:.2f}s "
            f"join={h.join_delay:.2f}s ringing={h.ringing_after:.2f}s actions={actions}"
            f" hang_up_after={h.hang_up_after}"
        )
        return (
            f"seed={self.seed} {human} move={self.supports_move} mode={self.connect_mode} "
            f"caller_hangs_up_at={self.caller_hangs_up_at} end_at={self.pipeline_end_at}"
            f"{'(cancel)' if self.pipeline_cancel else ''} second_request_at="
            f"{self.second_request_at} briefing_fails={self.briefing_fails} "
            f"livekit={self.livekit} faults={self.faults} caller_output={self.caller_output}"
            f"{' hold_line_lost' if self.hold_line_lost else ''}"
        )


#: Share of runs drawn as a call the human means to take: the hard paths (briefing,
#: accept, move or bridge, the human hanging up after the join, the caller leaving a
#: joined call) are only reached when someone answers and accepts in time.
CONNECT_SHARE = 0.75
#: Share of those that reach the human through the LiveKit emulator.
CONNECT_LIVEKIT_SHARE = 0.9


def draw_plan(seed: int) -> FaultPlan:
    """Draw one call's faults from `seed` (same seed, same call)."""
    rng = random.Random(seed)
    if rng.random() < CONNECT_SHARE:
        return _draw_accepting(seed, rng)
    outcome = rng.choice(["answer", "answer", "answer", "busy", "no_answer", "decline", "fail"])
    human = HumanScript(
        outcome=outcome,
        answer_after=rng.uniform(0.0, 2.0) if outcome != "no_answer" else 10.0,
        voicemail=outcome == "answer" and rng.random() < 0.15,
        greeting=tone(500, rng.uniform(0.2, 0.6)) if rng.random() < 0.8 else None,
    )
    # What only a real line does (the LiveKit emulator plays it; the memory backend ignores
    # it): the carrier's 180, a slow join before LiveKit's ring clock starts, the carrier
    # giving up with its own status instead of LiveKit's ring-out, and an answer that
    # would come after the dial's deadline (LiveKit must end the ringing there).
    human.ringing_after = rng.uniform(0.0, 0.8)
    line = rng.random()
    if line < 0.2:
        human.join_delay = rng.uniform(0.05, 0.8)
    elif line < 0.35:
        # Slower than the margin: LiveKit would ring until join + RING, past the dial's
        # deadline (RING + DIAL_GRACE); half of these humans answer in that window.
        human.join_delay = rng.uniform(DIAL_GRACE + 1.2, DIAL_GRACE + 2.0)
        if outcome == "answer" and rng.random() < 0.5:
            late = RING_TIMEOUT + DIAL_GRACE - human.join_delay
            human.answer_after = rng.uniform(late + 0.1, RING_TIMEOUT - 0.05)
    if outcome == "no_answer" and rng.random() < 0.5:
        human.sip_status = rng.choice([480, 408])
        human.answer_after = rng.uniform(0.3, 2.0)
    if outcome == "answer":
        for k in range(1, 7):
            human.say(k * HUMAN_SAYS_EVERY, HUMAN_CLIP)
        for _ in range(rng.randint(0, 2)):
            human.dtmf(rng.uniform(0.2, 3.0), rng.choice(["1", "1", "2", "5", "#"]))
        if rng.random() < 0.25:
            human.hang_up_after = rng.uniform(0.1, 4.0)
    call_secs = rng.uniform(4.0, 8.0)
    livekit = rng.random() < 0.5
    faults = _draw_faults(rng, share=0.15, max_latency=1.5) if livekit else []
    return FaultPlan(
        seed=seed,
        human=human,
        supports_move=rng.random() < 0.6,
        connect_mode=rng.choice(
            [ConnectMode.AUTO, ConnectMode.AUTO, ConnectMode.MOVE, ConnectMode.BRIDGE]
        ),
        caller_hangs_up_at=rng.uniform(0.2, call_secs) if rng.random() < 0.25 else None,
        pipeline_end_at=rng.uniform(0.3, call_secs) if rng.random() < 0.2 else None,
        pipeline_cancel=rng.random() < 0.5,
        second_request_at=rng.uniform(0.0, 3.0) if rng.random() < 0.3 else None,
        briefing_fails=rng.random() < 0.1,
        call_secs=call_secs,
        livekit=livekit,
        faults=faults,
        caller_output=_caller_output(seed),
        hold_line_lost=_hold_line_lost(seed),
    )


def _draw_accepting(seed: int, rng: random.Random) -> FaultPlan:
    """A human who answers and accepts by keypad; what can still go wrong around it."""
    human = HumanScript(
        outcome="answer",
        answer_after=rng.uniform(0.0, 1.5),
        greeting=tone(500, rng.uniform(0.2, 0.5)),
        ringing_after=rng.uniform(0.0, 0.8),
    )
    if rng.random() < 0.2:
        human.join_delay = rng.uniform(0.05, 0.8)
    for k in range(1, 7):
        human.say(k * HUMAN_SAYS_EVERY, HUMAN_CLIP)
    accept_at = rng.uniform(1.2, 2.6)  # the briefing starts about 0.85 s after the answer
    human.dtmf(accept_at, "1")
    if rng.random() < 0.3:
        human.dtmf(accept_at + rng.uniform(0.1, 1.0), rng.choice(["1", "2", "#"]))
    if rng.random() < 0.2:  # leaves once joined, or while being joined
        human.hang_up_after = accept_at + rng.uniform(0.0, 3.0)
    call_secs = rng.uniform(6.0, 9.0)
    # The caller leaves during the briefing (the human must be told), or once joined.
    leaves = rng.random()
    briefed = human.answer_after + 1.0  # the briefing is under way by then
    caller_leaves = None
    if leaves < 0.12:
        caller_leaves = rng.uniform(briefed, briefed + 1.5)
    elif leaves < 0.22:
        caller_leaves = rng.uniform(min(call_secs, human.answer_after + accept_at + 2.0), call_secs)
    livekit = rng.random() < CONNECT_LIVEKIT_SHARE
    faults = _draw_faults(rng, share=0.05, max_latency=1.0) if livekit else []
    return FaultPlan(
        seed=seed,
        human=human,
        supports_move=rng.random() < 0.5,
        connect_mode=rng.choice([ConnectMode.AUTO, ConnectMode.MOVE, ConnectMode.BRIDGE]),
        caller_hangs_up_at=caller_leaves,
        pipeline_end_at=rng.uniform(2.0, call_secs) if rng.random() < 0.1 else None,
        pipeline_cancel=rng.random() < 0.5,
        second_request_at=rng.uniform(0.0, 3.0) if rng.random() < 0.2 else None,
        briefing_fails=rng.random() < 0.05,
        call_secs=call_secs,
        livekit=livekit,
        faults=faults,
        caller_output=_caller_output(seed),
        hold_line_lost=_hold_line_lost(seed),
    )


def _draw_faults(rng: random.Random, *, share: float, max_latency: float) -> list[tuple]:
    """Each of `API_FAULTS` with probability `share`; a latency of up to `max_latency` s."""
    faults = []
    for kind, method, value in API_FAULTS:
        if rng.random() < share:
            faults.append(
                (kind, method, rng.uniform(0.1, max_latency) if kind == "latency" else value)
            )
    return faults


def _caller_output(seed: int) -> str:
    """A third of the calls speak through Pipecat's real LiveKit output.

    A draw of its own, so every other draw of a seed stays what it was.
    """
    return "livekit" if random.Random(seed ^ 0x5EED).random() < 1 / 3 else "memory"


def _hold_line_lost(seed: int) -> bool:
    """One call in ten loses its hold line (a draw of its own, like `caller_output`)."""
    return random.Random(seed ^ 0x401D).random() < 0.1


@dataclass
class FaultRun:
    """What one run did and which invariants it broke."""

    plan: FaultPlan
    events: list[dict]
    results: list[Any]
    accepted: int
    leaks: dict[str, int]
    violations: list[str]
    #: What was listened for: checks made and checks skipped (with why).
    listening: Listening = field(default_factory=Listening)
    #: The emulator's scripted faults that took effect (kind, method).
    faults_fired: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> dict:
        """What this run reached, for the suite's totals (`summarize`)."""
        connected = [r for r in self.results if r.outcome == TransferOutcome.CONNECTED]
        return {
            "livekit": self.plan.livekit,
            "caller_output": self.plan.caller_output,
            "connected": [str(r.connect_mode) for r in connected],
            "faults_armed": len(self.plan.faults),
            "faults_fired": [f"{kind} {method}" for kind, method in self.faults_fired],
            "measured": dict(self.listening.measured),
            "skipped": [s.split(":")[0] for s in self.listening.skipped],
            "violations": len(self.violations),
            "seed": self.plan.seed,
            "problems": [v[:300] for v in self.violations],
        }

    def trace(self) -> str:
        """The plan and the event trace, to reproduce a failure."""
        lines = [self.plan.describe()]
        lines += [f"  {e['t']:6.2f} {e['event']} {_extra(e)}" for e in self.events]
        lines += [f"  results: {[r.as_dict() for r in self.results]}"]
        lines += [f"  leaks: {self.leaks}"]
        lines += [f"  skipped: {self.listening.skipped}"]
        return "\n".join(lines)


def _extra(event: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "event", "transfer"))


def _briefing(plan: FaultPlan, voices: list) -> BriefingParams:
    """The briefing's services; each briefing's TTS is kept in `voices` to listen for."""

    def tts():
        if plan.briefing_fails:
            raise RuntimeError("briefing TTS failed to start")
        service = ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ)
        voices.append(service)
        return service

    return BriefingParams(tts=tts, greeting_timeout=0.8)


async def run_plan(
    plan: FaultPlan,
    *,
    secrets: tuple[str, ...] = (),
    backend_factory: Callable | None = None,
) -> FaultRun:
    """Run one randomized call and check the invariants."""
    log: list[str] = []
    sink = logger.add(lambda m: log.append(str(m)), level="DEBUG")
    accepted = 0
    params = fast_params(
        connect_mode=plan.connect_mode,
        ring_timeout=RING_TIMEOUT,
        briefing_timeout=3.5,
        max_transfers=3,
        connected_message="Connecting you now.",
    )
    briefing_voices: list[ScriptedToneTTSService] = []
    briefing = _briefing(plan, briefing_voices)
    harness = CallHarness(
        humans={NUMBER: plan.human},
        params=params,
        briefing=briefing,
        supports_move=plan.supports_move,
        backend_factory=backend_factory,
        livekit=plan.livekit,
        backend_kwargs={"dial_grace": DIAL_GRACE, "status_poll_interval": STATUS_POLL},
        caller_output=plan.caller_output,
        bot_processors=(
            (lambda t: [ScriptedToneTTSService(pitch_hz=BOT_PITCH_HZ, silent_on=(t.hold_message,))])
            if plan.hold_line_lost
            else None
        ),
        check_leaks=False,  # judged with the other invariants, with the run's trace
        caller_script=(
            (lambda p: p.hang_up(plan.caller_hangs_up_at)) if plan.caller_hangs_up_at else None
        ),
    )
    try:
        async with harness as call:
            loop = asyncio.get_running_loop()
            if call.emulator is not None:
                secrets = (*secrets, call.emulator.api_secret)
                _inject(call.emulator, plan.faults)

            async def at(secs: float):
                await asyncio.sleep(max(0.0, secs - (loop.time() - call.t0)))

            accepted += bool(await call.transfer.start_transfer("fuzz"))
            tasks = []
            if plan.second_request_at is not None:

                async def second():
                    nonlocal accepted
                    await at(plan.second_request_at)
                    accepted += bool(await call.transfer.start_transfer("again"))

                tasks.append(asyncio.create_task(second()))
            end_at = plan.pipeline_end_at if plan.pipeline_end_at is not None else plan.call_secs
            await at(end_at)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if plan.pipeline_end_at is not None and plan.pipeline_cancel:
                await call.worker.queue_frame(CancelFrame())
            elif plan.pipeline_end_at is None:
                # Let a transfer in flight finish, as a call would, before hanging up.
                try:
                    await call.wait_idle(timeout=8.0)
                except TimeoutError:
                    pass
            stuck_state = call.transfer.state
    finally:
        logger.remove(sink)
    report = harness.report
    violations = _check(plan, report, accepted, log, secrets, stuck_state)
    voices = Voices(
        bot_pitch_hz=BOT_PITCH_HZ,
        briefing_pitch_hz=BRIEFING_PITCH_HZ,
        params=params,
        connecting_message=briefing.connecting_message,
        briefing_lines=briefing_voices[-1].spoken if briefing_voices else [],
        human_clip=np.frombuffer(HUMAN_CLIP, dtype=np.int16),
        human_clip_every=HUMAN_SAYS_EVERY,
    )
    heard = listen(report, voices, cutoff=plan.pipeline_end_at)
    dead_air(report, voices, plan.pipeline_end_at, heard)
    violations += heard.problems
    return FaultRun(
        plan,
        report.events,
        report.results,
        accepted,
        report.leaks,
        violations,
        heard,
        report.faults_fired,
    )


def summarize(summaries: list[dict]) -> dict:
    """Totals over runs: how many reached each hard path, checks made and skipped."""
    runs = len(summaries)
    total: dict[str, Any] = {"runs": runs, "violations": sum(s["violations"] for s in summaries)}
    through = [s for s in summaries if s["livekit"] and s["connected"]]
    total["connected"] = sum(bool(s["connected"]) for s in summaries)
    total["connected_through_emulator"] = len(through)
    for mode in ("move", "bridge"):
        total[f"connected_through_emulator_{mode}"] = sum(mode in s["connected"] for s in through)
    total["faults_armed"] = sum(s["faults_armed"] for s in summaries)
    fired: dict[str, int] = {}
    measured: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for s in summaries:
        for f in s["faults_fired"]:
            fired[f] = fired.get(f, 0) + 1
        for k, n in s["measured"].items():
            measured[k] = measured.get(k, 0) + n
        for k in s["skipped"]:
            skipped[k] = skipped.get(k, 0) + 1
    total["faults_fired"] = dict(sorted(fired.items()))
    total["checks_made"] = dict(sorted(measured.items()))
    total["checks_skipped"] = dict(sorted(skipped.items()))
    # Each failing run's seed and what it broke: `WT_FUZZ_SEED=<seed> WT_FUZZ_RUNS=1`.
    total["failing"] = [
        {"seed": s["seed"], "problems": s["problems"]} for s in summaries if s.get("problems")
    ]
    return total


def _inject(emulator, faults: list[tuple]):
    for kind, method, value in faults:
        if kind == "fail":
            emulator.fail_next(method, value)
        elif kind == "latency":
            emulator.latency(method, value)
        elif kind == "drop":
            emulator.drop_next(method)


def _check(plan, report, accepted, log, secrets, final_state) -> list[str]:
    problems = []
    if len(report.results) != accepted:
        problems.append(f"{accepted} transfers accepted but {len(report.results)} results")
    for result in report.results:
        if result.outcome == TransferOutcome.FAILED and not isinstance(
            result.reason, FailureReason
        ):
            problems.append(f"failed without a typed reason: {result}")
        if result.outcome == TransferOutcome.CONNECTED and result.connect_mode is None:
            problems.append("connected without a connect mode")
    if plan.pipeline_end_at is None and str(final_state) not in ("idle", "connected"):
        problems.append(f"caller stuck in state {final_state}")
    if any(report.leaks.values()):
        problems.append(f"leaks {report.leaks}: {report.leak_findings}")
    problems += _stray_music(report)
    if report.refused_captures:
        problems.append(f"LiveKit refused {report.refused_captures} captures (frames lost)")
    problems += _line_problems(report)
    for secret in secrets:
        if secret and any(secret in line for line in log):
            problems.append("a secret reached the logs")
    if any(_JWT.search(line) for line in log):
        problems.append("a token reached the logs")
    return problems


def _line_problems(report) -> list[str]:
    """What the LiveKit line says happened, against what the transfer reported.

    - No phone is still ringing after teardown (a dial the client gave up on is hung up).
    - A dial LiveKit rang out is `no_answer` without a SIP status, never `dial_failed`.
    - A phone that rang for three status reads had a `ringing` event.
    """
    problems = []
    if report.ringing_dials:
        problems.append(f"{report.ringing_dials} phone(s) still ringing after teardown")
    transfer_of_room = {
        e.get("room"): e.get("transfer") for e in report.events if e["event"] == "dialing"
    }
    ringing = {e.get("transfer") for e in report.events if e["event"] == "ringing"}
    for dial in report.dials:
        number = transfer_of_room.get(dial["room"])
        index = (number or 0) - 1
        result = report.results[index] if 0 <= index < len(report.results) else None
        if result is None or result.reason in _ENDED_BY_CALLER:
            continue
        if dial["outcome"] == "ringing_timeout" and not (
            result.reason == FailureReason.NO_ANSWER and result.sip_status is None
        ):
            problems.append(
                f"LiveKit rang out transfer {number} but it was reported "
                f"{result.reason} (SIP {result.sip_status})"
            )
        if dial["ringing_secs"] >= 3 * STATUS_POLL and number not in ringing:
            problems.append(
                f"transfer {number} rang {dial['ringing_secs']} s with no ringing event"
            )
    return problems


#: Time after a hold ends for the fade-out (250 ms) and what the transport still holds.
_MUSIC_TAIL_SECS = 0.6


#: Events after which the caller is no longer held: the music must be gone by then.
_CALLER_BACK = ("connected", "returned_to_caller", "caller_hung_up", "cancelled")


def _hold_windows(report, ends=HOLD_ENDS) -> list[tuple[float, float]]:
    """Say when each hold began and ended, in seconds, as the caller heard it.

    (hold_started, the first of `ends` of the same transfer after it, or of the call);
    a hold line that ends after its transfer already ended (a fast failure) starts no
    hold. On LiveKit an event's moment plays `event_lags` later than it happened.
    """
    lags = report.event_lags or [0.0] * len(report.events)
    heard = [(e["t"] + lag, e) for e, lag in zip(report.events, lags, strict=True)]
    last = len(report.caller_audio) / report.sample_rate
    windows = []
    for start, hold in [(t, e) for t, e in heard if e["event"] == "hold_started"]:
        own = [
            t
            for t, e in heard
            if e["event"] in ends
            and e.get("transfer", hold.get("transfer")) == hold.get("transfer")
        ]
        if any(t <= start for t in own):
            continue  # the transfer was over before its hold line ended
        after = [t for t in own if t > start]
        windows.append((start, min(after) if after else last))
    return windows


def _stray_music(report) -> list[str]:
    """The caller hears steady hold music only while held (until connected or back).

    Found sample for sample (`music_finder`): a block of what the caller heard that
    equals a slice of the hold loop is the hold music, whatever else is said.
    """
    rate = report.sample_rate
    audio = report.caller_audio
    requested = [e["t"] for e in report.events if e["event"] == "transfer_requested"]
    allowed = [
        (min([t for t in requested if t <= start] or [start]), end + _MUSIC_TAIL_SECS)
        for start, end in _hold_windows(report, _CALLER_BACK)
    ]
    stray = [
        t
        for t in music_times(audio, hold_loops(rate), rate)
        if not any(a <= t <= b for a, b in allowed)
    ]
    if len(stray) >= 5:  # 50 ms and more
        return [f"hold music at {stray[0]:.2f}s outside any hold ({len(stray) * 10} ms)"]
    return []
