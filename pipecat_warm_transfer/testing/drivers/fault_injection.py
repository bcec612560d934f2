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

A third of the seeds (`GROUP_SHARE`, a draw of its own, so the others draw the calls they
always drew) dial a ring group of two or three humans instead (`GroupPlan`), with the
races only a group has; `group_checks` holds those calls to the group's invariants too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from loguru import logger
from pipecat.frames.frames import CancelFrame

from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.params import REFER_CONNECTING_MESSAGE, BriefingParams
from pipecat_warm_transfer.ring_group import RingGroup
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BOT_PITCH_HZ,
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.drivers.group_checks import (
    KNOWN_CORE_BUGS,
    GroupJudgement,
    GroupWatch,
    group_problems,
    known_leak,
    line_dials,
    stop_allowance,
)
from pipecat_warm_transfer.testing.drivers.listening import (
    HOLD_ENDS,
    Listening,
    Voices,
    dead_air,
    listen,
)
from pipecat_warm_transfer.testing.drivers.music_finder import hold_loops, music_times
from pipecat_warm_transfer.testing.drivers.refer_checks import draw_refer, refer_problems
from pipecat_warm_transfer.testing.livekit_sip_transfer import ReferScript
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


#: The group's numbers and names, in order (a group has two or three of them).
GROUP_NUMBERS = ("+15550111", "+15550112", "+15550113")
GROUP_NAMES = ("Ann", "Ben", "Cy")

#: The races a group call is drawn around (weights: how often each is drawn).
#: - `race`: two humans of a simultaneous group answer within 60 ms of each other.
#: - `winner_leaves_ringing`: the first to answer hangs up at once, while the others'
#:   phones are being stopped.
#: - `winner_leaves_briefing`: the first to answer hangs up during their briefing.
#: - `caller_leaves_ringing`: the caller hangs up while the phones ring.
#: - `caller_leaves_between`: sequential; the caller hangs up as a human failed, before
#:   the next one answered.
#: - `caller_leaves_briefing`: the caller hangs up while a human is being briefed.
#: - `mixed`: each human answers and accepts, declines or stays silent, or is busy,
#:   unanswered, failing or a voicemail.
INTERLEAVINGS = {
    "race": 2.0,
    "winner_leaves_ringing": 1.5,
    "winner_leaves_briefing": 1.5,
    "caller_leaves_ringing": 1.0,
    "caller_leaves_between": 1.0,
    "caller_leaves_briefing": 1.0,
    "mixed": 3.0,
}


@dataclass
class GroupPlan:
    """The ring group of a call: its humans, strategy, race and where faults land."""

    strategy: str
    humans: list[HumanScript]
    interleaving: str
    on_decline: str = "next"
    #: The caller hangs up `secs` after the first `event` (of `target`, None: any).
    caller_trigger: tuple[str, int | None, float] | None = None
    #: API faults armed when human `k - 1` failed (so they land on human `k`'s dial).
    faults_at: dict[int, list[tuple]] = field(default_factory=dict)

    @property
    def numbers(self) -> dict[str, HumanScript]:
        """The scripted human of each number."""
        return dict(zip(GROUP_NUMBERS, self.humans, strict=False))

    def target(self) -> RingGroup:
        """The group the transfer dials."""
        return RingGroup(
            [
                TransferTarget(number, display_name=name)
                for number, name in zip(GROUP_NUMBERS, GROUP_NAMES, strict=False)
            ][: len(self.humans)],
            strategy=self.strategy,
            on_decline=self.on_decline,
        )

    def all_faults(self) -> list[tuple]:
        """Every fault the group arms later."""
        return [fault for faults in self.faults_at.values() for fault in faults]

    def describe(self) -> str:
        """What this group does, one human after another."""
        humans = " ".join(
            f"{name}:[{_describe_human(h)}]"
            for name, h in zip(GROUP_NAMES, self.humans, strict=False)
        )
        return (
            f"group={self.strategy}({self.interleaving}, on_decline={self.on_decline}) "
            f"caller_trigger={self.caller_trigger} faults_at={self.faults_at} {humans}"
        )


def _describe_human(h: HumanScript) -> str:
    actions = [
        (a[0], round(a[1], 2), *(a[2:] if a[0] == "dtmf" else ()))
        for a in h.actions
        if a[0] != "say"
    ]
    voicemail = "+voicemail" if h.voicemail else ""
    return (
        f"{h.outcome}{voicemail} sip={h.sip_status} after {h.answer_after:.2f}s "
        f"join={h.join_delay:.2f}s ringing={h.ringing_after:.2f}s actions={actions}"
        f" hang_up_after={h.hang_up_after}"
    )


#: Where the group suite's seeds start, past the fault suite's own (`group_fuzz_settings`).
GROUP_SEED_OFFSET = 500_000
DEFAULT_GROUP_RUNS = 20


def group_fuzz_settings() -> tuple[int, int]:
    """The group suite's first seed and count: `WT_GROUP_SEED` and `WT_GROUP_RUNS`.

    The first seed defaults to `WT_FUZZ_SEED` + `GROUP_SEED_OFFSET`, so the two suites
    draw different calls from one `WT_FUZZ_SEED`.
    """
    seed, _runs = fuzz_settings()
    first = int(os.environ.get("WT_GROUP_SEED", seed + GROUP_SEED_OFFSET))
    return first, int(os.environ.get("WT_GROUP_RUNS", DEFAULT_GROUP_RUNS))


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
    #: A ring group instead of the one human (then `human` is its first).
    group: GroupPlan | None = None
    #: What the caller's carrier does with a REFER, in `refer` mode (`refer_checks`).
    refer: ReferScript | None = None

    @property
    def humans(self) -> dict[str, HumanScript]:
        """The scripted human of each number the call may dial."""
        return self.group.numbers if self.group else {NUMBER: self.human}

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
        if self.group is not None:
            human = self.group.describe()
        return (
            f"seed={self.seed} {human} move={self.supports_move} mode={self.connect_mode} "
            f"caller_hangs_up_at={self.caller_hangs_up_at} end_at={self.pipeline_end_at}"
            f"{'(cancel)' if self.pipeline_cancel else ''} second_request_at="
            f"{self.second_request_at} briefing_fails={self.briefing_fails} "
            f"livekit={self.livekit} faults={self.faults} caller_output={self.caller_output}"
            f"{' hold_line_lost' if self.hold_line_lost else ''}"
            f"{f' refer={self.refer}' if self.refer else ''}"
        )


#: Share of runs drawn as a call the human means to take: the hard paths (briefing,
#: accept, move or bridge, the human hanging up after the join, the caller leaving a
#: joined call) are only reached when someone answers and accepts in time.
CONNECT_SHARE = 0.75
#: Share of those that reach the human through the LiveKit emulator.
CONNECT_LIVEKIT_SHARE = 0.9


#: Share of the seeds that dial a ring group (`_dials_a_group`).
GROUP_SHARE = 1 / 3
#: Share of group calls that reach their humans through the LiveKit emulator.
GROUP_LIVEKIT_SHARE = 0.6


def draw_plan(seed: int, *, group: bool | None = None) -> FaultPlan:
    """Draw one call's faults from `seed` (same seed, same call).

    Args:
        seed: The call's seed.
        group: Dial a ring group (True), the one human (False), or as the seed says
            (None: a third of the seeds dial a group).
    """
    if group is None:
        group = _dials_a_group(seed)
    plan = draw_group_plan(seed) if group else _draw_one_human(seed)
    script, faults = draw_refer(seed, livekit=plan.livekit)
    if script is not None:
        plan.connect_mode, plan.refer = ConnectMode.REFER, script
        plan.faults = plan.faults + faults
    return plan


def _draw_one_human(seed: int) -> FaultPlan:
    """A call to the one human (`NUMBER`)."""
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


def _dials_a_group(seed: int) -> bool:
    """A draw of its own, so a seed that dials one human draws the call it always drew."""
    return random.Random(seed ^ 0x6209).random() < GROUP_SHARE


def draw_group_plan(seed: int) -> FaultPlan:
    """A ring-group call from `seed`: two or three humans around one of `INTERLEAVINGS`."""
    rng = random.Random(seed)
    names = list(INTERLEAVINGS)
    interleaving = rng.choices(names, weights=[INTERLEAVINGS[n] for n in names])[0]
    size = rng.choice([2, 2, 3])
    strategy = rng.choice(["sequential", "simultaneous"])
    livekit = rng.random() < GROUP_LIVEKIT_SHARE
    trigger = None
    caller_leaves = None
    first = rng.uniform(0.3, 1.5)  # when the first human answers
    if interleaving == "race":
        strategy = "simultaneous"
        humans = [_accepting(rng, first), _accepting(rng, first + rng.uniform(0.0, 0.06))]
        humans += [_any_human(rng, livekit) for _ in range(size - 2)]
    elif interleaving in ("winner_leaves_ringing", "winner_leaves_briefing"):
        if interleaving == "winner_leaves_ringing":
            strategy = "simultaneous"
        winner = _accepting(rng, first, accept=False)
        winner.hang_up_after = (
            rng.uniform(0.0, 0.2)
            if interleaving == "winner_leaves_ringing"
            else rng.uniform(0.9, 2.5)
        )
        humans = [winner] + [
            _accepting(rng, first + rng.uniform(0.1, 1.5)) for _ in range(size - 1)
        ]
    elif interleaving == "caller_leaves_ringing":
        humans = [_accepting(rng, rng.uniform(1.0, 2.4)) for _ in range(size)]
        target = None
        if strategy == "sequential":
            # The humans before `target` fail at once: the caller leaves while it rings.
            target = rng.randrange(size)
            for k in range(target):
                humans[k] = HumanScript(outcome="busy", answer_after=rng.uniform(0.1, 0.6))
        soonest = min(h.answer_after for h in humans[target or 0 :])
        trigger = ("dialing", target, rng.uniform(0.05, soonest - 0.1))
    elif interleaving == "caller_leaves_between":
        strategy = "sequential"
        humans = [_failing_fast(rng)] + [_accepting(rng, first) for _ in range(size - 1)]
        trigger = ("target_failed", 0, rng.uniform(0.0, 0.4))
    elif interleaving == "caller_leaves_briefing":
        humans = [_accepting(rng, first, accept_at=rng.uniform(2.6, 3.2))] + [
            _any_human(rng, livekit) for _ in range(size - 1)
        ]
        trigger = ("briefing_started", None, rng.uniform(0.0, 1.2))
    else:
        humans = [_any_human(rng, livekit) for _ in range(size)]
        if rng.random() < 0.15:
            caller_leaves = rng.uniform(0.5, 8.0)
    ordered = ("winner_leaves_briefing", "caller_leaves_ringing", "caller_leaves_between")
    if strategy == "simultaneous" or interleaving not in ordered:
        rng.shuffle(humans)  # the one the race is about may be anyone in the group
    faults: list[tuple] = []
    faults_at: dict[int, list[tuple]] = {}
    if livekit:
        faults = _draw_faults(rng, share=0.06, max_latency=1.0)
        if strategy == "sequential":
            for k in range(1, size):
                if rng.random() < 0.25:
                    kind, method, value = rng.choice(API_FAULTS)
                    value = rng.uniform(0.1, 1.0) if kind == "latency" else value
                    faults_at[k] = [(kind, method, value)]
    group = GroupPlan(
        strategy=strategy,
        humans=humans,
        interleaving=interleaving,
        on_decline=rng.choice(["next", "next", "stop"])
        if interleaving != "caller_leaves_between"
        else "next",
        caller_trigger=trigger,
        faults_at=faults_at,
    )
    call_secs = rng.uniform(6.0, 10.0)
    pipeline_end_at = rng.uniform(2.0, call_secs) if rng.random() < 0.08 else None
    return FaultPlan(
        seed=seed,
        human=humans[0],
        supports_move=rng.random() < 0.5,
        # Move on a server without it fails at once: drawn less, so more calls connect.
        connect_mode=rng.choice(
            [ConnectMode.AUTO, ConnectMode.AUTO, ConnectMode.MOVE, ConnectMode.BRIDGE]
        ),
        caller_hangs_up_at=caller_leaves,
        pipeline_end_at=pipeline_end_at,
        pipeline_cancel=rng.random() < 0.5,
        second_request_at=rng.uniform(0.0, 3.0) if rng.random() < 0.1 else None,
        briefing_fails=rng.random() < 0.04,
        call_secs=call_secs,
        livekit=livekit,
        faults=faults,
        caller_output=_caller_output(seed),
        hold_line_lost=_hold_line_lost(seed),
        group=group,
    )


def _accepting(
    rng: random.Random, answer_after: float, *, accept: bool = True, accept_at: float | None = None
) -> HumanScript:
    """A human who answers after `answer_after` s, speaks, and accepts by keypad."""
    human = HumanScript(
        outcome="answer",
        answer_after=answer_after,
        greeting=tone(500, rng.uniform(0.2, 0.4)),
        ringing_after=rng.uniform(0.0, 0.5),
    )
    for k in range(1, 7):
        human.say(k * HUMAN_SAYS_EVERY, HUMAN_CLIP)
    if accept:
        # The briefing starts about 0.85 s after the answer.
        human.dtmf(accept_at if accept_at is not None else rng.uniform(1.2, 2.4), "1")
    return human


def _failing_fast(rng: random.Random) -> HumanScript:
    """A human the group moves past soon: busy, a carrier's no answer, failing, declining."""
    kind = rng.choice(["busy", "no_answer", "fail", "decline", "decline_by_key"])
    answer_after = rng.uniform(0.1, 1.0)
    if kind == "decline_by_key":
        return _accepting(rng, answer_after, accept=False).dtmf(rng.uniform(0.9, 1.6), "2")
    human = HumanScript(outcome=kind, answer_after=answer_after)
    if kind == "no_answer":
        human.sip_status = rng.choice([480, 408])
    return human


def _any_human(rng: random.Random, livekit: bool) -> HumanScript:
    """Any human: accepts, declines, stays silent, busy, unanswered, failing, voicemail."""
    kind = rng.choice(
        ["accept", "accept", "accept", "decline", "silent", "busy", "no_answer", "fail", "vm"]
    )
    answer_after = rng.uniform(0.2, 2.2)
    if kind == "accept":
        human = _accepting(rng, answer_after)
    elif kind in ("decline", "silent", "vm"):
        human = _accepting(rng, answer_after, accept=False)
        human.voicemail = kind == "vm"
        if kind == "decline":
            human.dtmf(rng.uniform(0.9, 2.2), rng.choice(["2", "2", "#"]))
            human.outcome = "answer" if rng.random() < 0.7 else "decline"  # or the carrier's 603
    elif kind == "no_answer":
        human = HumanScript(outcome="no_answer", answer_after=10.0)
        if rng.random() < 0.5:
            human.sip_status = rng.choice([480, 408])
            human.answer_after = rng.uniform(0.3, 2.0)
    else:
        human = HumanScript(outcome=kind, answer_after=answer_after)
    human.ringing_after = rng.uniform(0.0, 0.8)
    if livekit:
        line = rng.random()
        if line < 0.2:
            human.join_delay = rng.uniform(0.05, 0.8)
        elif line < 0.28:  # slower than the dial's margin (see `draw_plan`)
            human.join_delay = rng.uniform(DIAL_GRACE + 1.2, DIAL_GRACE + 2.0)
    if human.outcome == "answer" and rng.random() < 0.1:
        human.hang_up_after = rng.uniform(0.1, 3.0)
    return human


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
    #: A group call's own checks and the stop times they measured.
    group: GroupJudgement | None = None

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
            "group": self._group_summary(),
        }

    def _group_summary(self) -> dict | None:
        group, judged = self.plan.group, self.group
        if group is None or judged is None:
            return None
        return {
            "seed": self.plan.seed,
            "strategy": group.strategy,
            "size": len(group.humans),
            "interleaving": group.interleaving,
            "outcomes": [str(r.reason or r.outcome) for r in self.results],
            "tried": [[a.outcome for a in r.tried] for r in self.results],
            "others_stopped_secs": judged.others_stopped_secs,
            "loser_hung_up_secs": judged.loser_hung_up_secs,
            "line_stopped_secs": judged.line_stopped_secs,
            "follow_secs": judged.follow_secs,
            "known": [p[:300] for p in judged.known],
            "skipped": judged.skipped,
        }

    def trace(self) -> str:
        """The plan and the event trace, to reproduce a failure."""
        lines = [self.plan.describe()]
        lines += [f"  {e['t']:6.2f} {e['event']} {_extra(e)}" for e in self.events]
        lines += [f"  results: {[r.as_dict() for r in self.results]}"]
        lines += [f"  leaks: {self.leaks}"]
        lines += [f"  skipped: {self.listening.skipped}"]
        if self.group is not None:
            lines += [f"  group skipped: {self.group.skipped}", f"  known: {self.group.known}"]
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
    group = plan.group
    harness = CallHarness(
        humans=plan.humans,
        target=group.target() if group else None,
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
        caller_sip=plan.refer is not None,
        refer=plan.refer,
    )
    try:
        async with harness as call:
            loop = asyncio.get_running_loop()
            watch = GroupWatch(call) if group else None
            triggered = _follow_group(call, group) if group else []
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
            for task in tasks + triggered:
                task.cancel()
            await asyncio.gather(*tasks, *triggered, return_exceptions=True)
            if plan.pipeline_end_at is not None and plan.pipeline_cancel:
                await call.worker.queue_frame(CancelFrame())
            elif plan.pipeline_end_at is None:
                # Let a transfer in flight finish, as a call would, before hanging up.
                try:
                    await call.wait_idle(timeout=8.0)
                except TimeoutError:
                    pass
            stuck_state = call.transfer.state
            ended_at = loop.time() - call.t0  # the run ends the call from here
    finally:
        logger.remove(sink)
    report = harness.report
    violations = _check(plan, report, accepted, log, secrets, stuck_state)
    violations += refer_problems(plan.refer, report, list(plan.humans), ended_at)
    judged = None
    if group is not None:
        emulator = harness.emulator
        judged = group_problems(
            strategy=group.strategy,
            size=len(group.humans),
            report=report,
            watch=watch,
            dials=line_dials(emulator, harness.t0) if emulator is not None else [],
            allowance=stop_allowance(plan.faults + group.all_faults()),
            hang_ups={
                index: human.hang_up_after
                for index, human in enumerate(group.humans)
                if human.hang_up_after is not None
            },
            cutoff=plan.pipeline_end_at,
        )
        violations += judged.problems
        leak = known_leak(report)
        if leak is not None:
            violations = [v for v in violations if not v.startswith("leaks ")]
            judged.known.append(leak)
        report = _heard_by_the_last_answered(report, harness)
    spoke = [voice.spoken for voice in briefing_voices if voice.spoken]
    voices = Voices(
        bot_pitch_hz=BOT_PITCH_HZ,
        briefing_pitch_hz=BRIEFING_PITCH_HZ,
        params=params,
        connecting_message=(
            REFER_CONNECTING_MESSAGE if plan.refer is not None else briefing.connecting_message
        ),
        briefing_lines=spoke[-1] if spoke else [],
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
        judged,
    )


def _follow_group(call, group: GroupPlan) -> list[asyncio.Task]:
    """Arm what a group does on cue: the caller's hang-up, faults on a later human's dial.

    Returns:
        The tasks it starts (the run cancels them at the end).
    """
    tasks: list[asyncio.Task] = []
    done: set = set()

    async def hang_up_after(secs: float):
        await asyncio.sleep(secs)
        call.caller.hang_up()

    @call.transfer.event_handler("on_transfer_event")
    async def _on_event(_transfer, event: dict):
        name, target = event["event"], event.get("target")
        trigger = group.caller_trigger
        if (
            trigger is not None
            and "caller" not in done
            and name == trigger[0]
            and trigger[1] in (None, target)
        ):
            done.add("caller")
            tasks.append(asyncio.create_task(hang_up_after(trigger[2]), name="fuzz-caller"))
        faults = group.faults_at.get((target or 0) + 1)
        if name == "target_failed" and faults and call.emulator is not None and target not in done:
            # Human `target` failed: the next dial is the next human's.
            done.add(target)
            _inject(call.emulator, faults)

    return tasks


def _heard_by_the_last_answered(report, harness):
    """The report with the human recording of whoever answered last (the one briefed).

    The harness keeps the last human *dialed*: in a group, one who lost the race, or who
    never answered, may come after the one who was briefed.
    """
    answered = [e for e in report.events if e["event"] == "human_answered"]
    if not answered:
        return report
    parties = {party.identity: party for party in harness.human_parties()}
    party = parties.get(answered[-1].get("identity"))
    if party is None:
        return report
    return dataclasses.replace(
        report,
        human_audio=party.recording(),
        human_hung_up_first=party.end_reason == "hung_up",
    )


def summarize(summaries: list[dict]) -> dict:
    """Totals over runs: how many reached each hard path, checks made and skipped."""
    runs = len(summaries)
    total: dict[str, Any] = {"runs": runs, "violations": sum(s["violations"] for s in summaries)}
    through = [s for s in summaries if s["livekit"] and s["connected"]]
    total["connected"] = sum(bool(s["connected"]) for s in summaries)
    total["connected_through_emulator"] = len(through)
    for mode in ("move", "bridge", "refer"):
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
    groups = [s["group"] for s in summaries if s.get("group")]
    if groups:
        total["group"] = _group_totals(groups)
    return total


#: The group calls' measured times, summed up by `_group_totals`.
GROUP_TIMES = ("others_stopped_secs", "loser_hung_up_secs", "line_stopped_secs", "follow_secs")


def _group_totals(groups: list[dict]) -> dict:
    """Group calls by strategy and race, their outcomes, and their stop times' spread."""
    totals: dict[str, Any] = {"runs": len(groups)}
    for key in ("strategy", "interleaving"):
        counts: dict[str, int] = {}
        for g in groups:
            counts[g[key]] = counts.get(g[key], 0) + 1
        totals[key] = dict(sorted(counts.items()))
    outcomes: dict[str, int] = {}
    for g in groups:
        for outcome in g["outcomes"]:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    totals["outcomes"] = dict(sorted(outcomes.items()))
    for key in GROUP_TIMES:
        totals[key] = spread([v for g in groups for v in g[key]])
    # Each known core defect (`KNOWN_CORE_BUGS`): the seeds that ran into it.
    totals["known_core_bugs"] = {
        bug: seeds
        for bug in KNOWN_CORE_BUGS
        if (seeds := [g["seed"] for g in groups if any(f"[{bug}]" in p for p in g["known"])])
    }
    return totals


def spread(values: list[float]) -> dict:
    """How many, the median, the 95th percentile and the maximum (s)."""
    if not values:
        return {"n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"n": len(ordered), "p50": at(0.5), "p95": at(0.95), "max": round(ordered[-1], 3)}


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
    problems += _line_problems(report, group=plan.group is not None)
    for secret in secrets:
        if secret and any(secret in line for line in log):
            problems.append("a secret reached the logs")
    if any(_JWT.search(line) for line in log):
        problems.append("a token reached the logs")
    return problems


def _line_problems(report, *, group: bool = False) -> list[str]:
    """What the LiveKit line says happened, against what the transfer reported.

    - No phone is still ringing after teardown (a dial the client gave up on is hung up).
    - A dial LiveKit rang out is `no_answer` without a SIP status, never `dial_failed`
      (in a `group`, that human's own outcome in `tried`).
    - A phone that rang for three status reads had a `ringing` event.
    """
    problems = []
    if report.ringing_dials:
        problems.append(f"{report.ringing_dials} phone(s) still ringing after teardown")
    transfer_of_room = {
        e.get("room"): (e.get("transfer"), e.get("target", 0))
        for e in report.events
        if e["event"] == "dialing"
    }
    ringing = {e.get("transfer") for e in report.events if e["event"] == "ringing"}
    for dial in report.dials:
        number, target = transfer_of_room.get(dial["room"], (None, 0))
        index = (number or 0) - 1
        result = report.results[index] if 0 <= index < len(report.results) else None
        if result is None:
            continue
        reason, status = result.reason, result.sip_status
        if group:
            attempt = next((a for a in result.tried if a.index == target), None)
            if attempt is None or attempt.outcome == "stopped":
                continue
            reason, status = attempt.outcome, attempt.sip_status
        if reason in _ENDED_BY_CALLER:
            continue
        if dial["outcome"] == "ringing_timeout" and not (
            reason == FailureReason.NO_ANSWER and status is None
        ):
            who = f"transfer {number}" + (f" human {target}" if group else "")
            problems.append(f"LiveKit rang out {who} but it was reported {reason} (SIP {status})")
        if dial["ringing_secs"] >= 3 * STATUS_POLL and number not in ringing:
            problems.append(
                f"transfer {number} rang {dial['ringing_secs']} s with no ringing event"
            )
    return problems


#: Time after a hold ends for the fade-out (250 ms) and what the transport still holds.
_MUSIC_TAIL_SECS = 0.6


#: Events after which the caller is no longer held: the music must be gone by then.
_CALLER_BACK = ("connected", "returned_to_caller", "caller_hung_up", "caller_referred", "cancelled")


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
