#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What must hold after a ring-group call, judged on the legs, the rooms and the line.

The fault suite (`fault_injection`) dials a `RingGroup` in a share of its calls. Events
and `TransferResult.tried` say what the plugin meant to do; `GroupWatch` records what
each consult leg did (when it was opened, dialed, answered or failed, and hung up) and
who was on a call at each event, and `group_problems` holds them to:

- no phone left ringing and no consult leg left open once a transfer is torn down;
- at most one human ever with the caller: the one who accepted a connected transfer;
- `tried` agrees with the events: each human dialed has an attempt with an outcome,
  exactly one `accepted` when connected (and it is `answered_by`), none when the
  transfer failed before anyone accepted;
- simultaneous: every other phone hung up within `STOP_BOUND_SECS` of the first answer
  (`others_stopped.secs`, each loser's leg, and on the emulator each loser's line),
  and the first to answer followed at once, not after the others were hung up;
- sequential: each human dialed only once the one before was settled and hung up;
- a human who hangs up before the transfer is decided is noticed (`human_hung_up`
  within `NOTICE_BOUND_SECS`), whenever it comes: also while the others' phones are
  being stopped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipecat_warm_transfer.testing.drivers.call_harness import CALLER_IDENTITY, CALLER_ROOM
from pipecat_warm_transfer.types import FailureReason

#: Longest a phone of a simultaneous group may go on after the first human answered.
STOP_BOUND_SECS = 1.0
#: Longest the first to answer may wait before the bot follows them (`human_answered`):
#: their "Hello?" is being said meanwhile.
FOLLOW_BOUND_SECS = 0.5
#: Core defects this suite found, all fixed now: a problem tagged with one is also listed in
#: `GroupJudgement.known`, so a campaign's totals say which came back; each has a regular
#: test of its own (named here, in `tests/test_ring_group_faults.py`).
WINNER_WAITS = "the winner waits for the others' hang-up"
HANG_UP_LOST = "a hang-up while the others stop is lost"
DROP_OUTLIVES = "a human being hung up as the call ends outlives the teardown"
KNOWN_CORE_BUGS = {
    WINNER_WAITS: "test_the_winner_is_followed_before_the_others_hang_up",
    HANG_UP_LOST: "test_a_hang_up_while_the_others_stop_is_noticed",
    DROP_OUTLIVES: "test_a_call_ending_while_a_human_is_hung_up_leaves_nothing_running",
}
#: Longest a human's own hang-up may go unnoticed (DESIGN §2: it ends the wait).
NOTICE_BOUND_SECS = 1.0
#: Events are stamped by a handler task, a moment after the fact they report.
EVENT_SLACK_SECS = 0.05
#: The LiveKit backend's wait before a failed teardown call is tried again.
RETRY_BACKOFF_SECS = 0.2
#: Reasons a transfer may fail with after its human accepted: the join failed, or
#: someone left while it was made. The attempt stays `accepted` (the human did).
AFTER_ACCEPT = frozenset({"connect_failed", "human_hung_up", "caller_hung_up", "cancelled"})
OUTCOMES = frozenset({"accepted", "stopped"} | {reason.value for reason in FailureReason})


@dataclass
class LegTimes:
    """One consult leg as the core drove it; seconds from sample 0 of the recordings."""

    room: str
    opened: float
    dial_start: float | None = None
    dial_end: float | None = None
    #: `answered`, or the dial's failure (`DialError` reason, `cancelled`, `error`).
    dial_result: str | None = None
    close_start: float | None = None
    close_end: float | None = None

    @property
    def attempt_id(self) -> str:
        """The transfer attempt's id in the room name (`consult-<id>[-<index>]`)."""
        return self.room.split("-")[1]

    @property
    def index(self) -> int:
        """The human's place in the group (the room name's suffix)."""
        parts = self.room.split("-")
        return int(parts[2]) if len(parts) > 2 else 0


@dataclass
class Snapshot:
    """Who was on a call when an event came: `(identity, room)` of every SIP connection."""

    t: float
    event: str
    transfer: int | None
    humans: frozenset[tuple[str, str]]


@dataclass
class LineDial:
    """One emulator dial, on the recordings' clock."""

    room: str
    joined: float | None
    active: float | None
    ended: float | None
    outcome: str | None


class GroupWatch:
    """Times every consult leg and looks at the rooms at each transfer event.

    Made inside a `CallHarness` block, before the first transfer: it wraps the backend's
    `open_leg` (and each leg's `dial` and `close`) on the instance, so it works for the
    in-memory backend and for LiveKit against the emulator alike.
    """

    def __init__(self, call):
        """Watch `call` (a `CallHarness` inside its `async with`)."""
        self._loop = asyncio.get_running_loop()
        self._t0 = call.t0
        self._server = call.server
        self.legs: list[LegTimes] = []
        self.snapshots: list[Snapshot] = []
        backend = call.backend
        open_leg = backend.open_leg

        async def timed_open_leg(request):
            leg = await open_leg(request)
            self._time(leg)
            return leg

        backend.open_leg = timed_open_leg

        @call.transfer.event_handler("on_transfer_event")
        async def _look(_transfer, event: dict):
            self.snapshots.append(
                Snapshot(self._now(), event["event"], event.get("transfer"), self._humans())
            )

    def _now(self) -> float:
        return self._loop.time() - self._t0

    def _humans(self) -> frozenset[tuple[str, str]]:
        return frozenset(
            (c.identity, c.room_name)
            for c in self._server.open_connections()
            if c.kind == "sip" and c.identity != CALLER_IDENTITY
        )

    def _time(self, leg) -> None:
        times = LegTimes(room=leg.room_name, opened=self._now())
        self.legs.append(times)
        dial, close = leg.dial, leg.close

        async def timed_dial():
            times.dial_start = self._now()
            try:
                await dial()
                times.dial_result = "answered"
            except asyncio.CancelledError:
                times.dial_result = "cancelled"
                raise
            except Exception as e:
                times.dial_result = str(getattr(e, "reason", None) or "error")
                raise
            finally:
                times.dial_end = self._now()

        async def timed_close():
            if times.close_start is None:
                times.close_start = self._now()
            try:
                await close()
            finally:
                if times.close_end is None:
                    times.close_end = self._now()

        leg.dial, leg.close = timed_dial, timed_close


def line_dials(emulator, t0: float) -> list[LineDial]:
    """The emulator's dials on the recordings' clock (joined, active, ended)."""
    dials = []
    for call in emulator.calls:
        times = {status: t - t0 for t, status in reversed(call.statuses)}
        dials.append(
            LineDial(
                room=call.room_name,
                joined=times.get("dialing"),
                active=times.get("active"),
                ended=None if call.ended_at is None else call.ended_at - t0,
                outcome=call.outcome,
            )
        )
    return dials


def stop_allowance(faults: list[tuple]) -> float:
    """Seconds the server itself may add to hanging up a phone, from the armed faults.

    A slow `RemoveParticipant` (a ringing phone may need two: the dial may join late)
    or `DeleteRoom`, and a failed one (tried again after `RETRY_BACKOFF_SECS`).
    """
    allowance = 0.0
    for kind, method, value in faults:
        if method not in ("RemoveParticipant", "DeleteRoom"):
            continue
        if kind == "latency":
            allowance += 2 * value if method == "RemoveParticipant" else value
        elif kind == "fail":
            allowance += RETRY_BACKOFF_SECS + 0.1
    return allowance


@dataclass
class GroupJudgement:
    """The problems of one group call, and the stop times it measured."""

    problems: list[str] = field(default_factory=list)
    #: Transfers of a simultaneous group someone answered: per transfer.
    others_stopped_secs: list[float] = field(default_factory=list)
    #: First answer (the winner's dial returned) → each loser's leg closed.
    loser_hung_up_secs: list[float] = field(default_factory=list)
    #: Emulator: first answer (the winner's line active) → each loser's line ended.
    line_stopped_secs: list[float] = field(default_factory=list)
    #: The winner's dial returned → `human_answered` (the bot follows them).
    follow_secs: list[float] = field(default_factory=list)
    #: Problems of a `KNOWN_CORE_BUGS` entry (fixed defects back again: a failure too).
    known: list[str] = field(default_factory=list)
    #: Checks that could not be judged on this call, and why.
    skipped: list[str] = field(default_factory=list)
    #: (start, end) of the event-loop stalls the harness recorded (`CallReport`).
    stalls: list[tuple[float, float]] = field(default_factory=list, repr=False)

    def late(self, problem: str, start: float, end: float) -> None:
        """A bound missed between `start` and `end`: a problem, unless the loop stalled.

        A stall of the event loop meanwhile is the overloaded machine's, not the
        plugin's: then the check is skipped, with that reason.
        """
        if any(a - 0.2 <= end and start <= b + 0.2 for a, b in self.stalls):
            self.skipped.append(f"{problem} (during an event-loop stall)")
        else:
            self.problems.append(problem)


def group_problems(
    *,
    strategy: str,
    size: int,
    report,
    watch: GroupWatch,
    dials: list[LineDial],
    allowance: float = 0.0,
    hang_ups: dict[int, float] | None = None,
    cutoff: float | None = None,
) -> GroupJudgement:
    """Check a finished group call (see the module); every transfer of it.

    Args:
        strategy: The group's strategy.
        size: How many humans the group has.
        report: The call's `CallReport`.
        watch: The call's `GroupWatch`.
        dials: The emulator's dials (`line_dials`; empty in memory).
        allowance: Seconds the armed faults may add to hanging up (`stop_allowance`).
        hang_ups: Seconds after answering that human `index` hangs up, by their script.
        cutoff: When the test ended the bot's pipeline (nothing is noticed after).
    """
    judged = GroupJudgement(stalls=list(getattr(report, "loop_stalls", ())))
    events = report.events
    transfer_of_id: dict[str, int] = {}
    for e in events:
        if e["event"] == "dialing" and e.get("room"):
            transfer_of_id.setdefault(e["room"].split("-")[1], e.get("transfer"))
    connected_ids = {r.human_identity for r in report.results if r.connected}
    _one_human_with_the_caller(watch.snapshots, connected_ids, judged)
    for number, result in enumerate(report.results, start=1):
        own = [e for e in events if e.get("transfer") == number]
        legs = sorted(
            (leg for leg in watch.legs if transfer_of_id.get(leg.attempt_id) == number),
            key=lambda leg: leg.index,
        )
        rooms = {leg.room for leg in legs} | {e.get("room") for e in own if e.get("room")}
        line = [d for d in dials if d.room in rooms]
        _tried_agrees(number, strategy, size, result, own, judged)
        _nothing_left(number, result, own, legs, line, watch.snapshots, judged)
        if strategy == "sequential":
            _one_after_another(number, result, legs, judged)
        else:
            _others_stop(number, own, legs, line, allowance, judged)
        _hang_ups_noticed(number, result, own, legs, hang_ups or {}, cutoff, judged)
    known = [p for p in judged.problems if any(f"[{bug}]" in p for bug in KNOWN_CORE_BUGS)]
    judged.problems = [p for p in judged.problems if p not in known]
    judged.known = known
    return judged


def _who(index: int) -> str:
    return f"human {index}"


def _tried_agrees(number, strategy, size, result, own, judged: GroupJudgement) -> None:
    """`result.tried` against the `dialing`, `human_answered`, `target_failed` events."""
    problems = judged.problems
    at = f"transfer {number}"
    dialed = [e["target"] for e in own if e["event"] == "dialing"]
    if len(set(dialed)) != len(dialed):
        problems.append(f"{at}: a human was dialed twice ({dialed})")
    tried = {a.index: a for a in result.tried}
    if len(tried) != len(result.tried):
        problems.append(f"{at}: a human appears twice in tried")
    for index in dialed:
        attempt = tried.get(index)
        if attempt is None:
            problems.append(f"{at}: {_who(index)} was dialed but is not in tried")
        elif not attempt.outcome or attempt.dialed_at is None:
            problems.append(f"{at}: {_who(index)} was dialed but has no outcome ({attempt})")
    for attempt in result.tried:
        if attempt.outcome not in OUTCOMES:
            problems.append(f"{at}: {_who(attempt.index)} has outcome {attempt.outcome!r}")
        if attempt.dialed_at is not None and attempt.index not in dialed:
            problems.append(f"{at}: {_who(attempt.index)} dialed with no dialing event")
    accepted = [a for a in result.tried if a.outcome == "accepted"]
    if result.connected:
        if len(accepted) != 1:
            problems.append(f"{at}: connected with {len(accepted)} accepted in tried")
        else:
            (winner,) = accepted
            if result.answered_by != (winner.display_name or winner.number):
                problems.append(
                    f"{at}: answered_by {result.answered_by!r} but {_who(winner.index)} "
                    f"({winner.display_name}) accepted"
                )
            if result.human_identity != winner.human_identity:
                problems.append(f"{at}: joined {result.human_identity}, not who accepted")
    elif accepted and (len(accepted) > 1 or str(result.reason) not in AFTER_ACCEPT):
        problems.append(f"{at}: failed ({result.reason}) with {len(accepted)} accepted in tried")
    answers = [e for e in own if e["event"] == "human_answered"]
    for e in answers:
        attempt = tried.get(e.get("target"))
        if attempt is None or attempt.answered_at is None:
            problems.append(f"{at}: {_who(e.get('target'))} answered but tried says not")
    for e in own:
        if e["event"] != "target_failed":
            continue
        attempt = tried.get(e.get("target"))
        if attempt is None or attempt.outcome != e.get("reason"):
            outcome = None if attempt is None else attempt.outcome
            problems.append(
                f"{at}: {_who(e.get('target'))} failed with {e.get('reason')} "
                f"but tried says {outcome}"
            )
    indices = [a.index for a in result.tried]
    if strategy == "sequential":
        if indices != list(range(len(indices))):
            problems.append(f"{at}: sequential group tried in order {indices}")
        if any(a.outcome == "stopped" for a in result.tried):
            problems.append(f"{at}: a sequential group stopped a phone")
        if accepted and accepted[0] is not result.tried[-1]:
            problems.append(f"{at}: someone was dialed after a human accepted")
    else:
        if indices and sorted(indices) != list(range(size)):
            problems.append(f"{at}: simultaneous group tried {indices} of {size}")
        if len(answers) > 1:
            problems.append(f"{at}: {len(answers)} humans were followed in one simultaneous race")


def _one_human_with_the_caller(snapshots, connected_ids, judged: GroupJudgement) -> None:
    """At every event: at most one human in the caller's room, one who took the call."""
    for snap in snapshots:
        with_caller = sorted(i for i, room in snap.humans if room == CALLER_ROOM)
        if len(with_caller) > 1:
            judged.problems.append(f"{len(with_caller)} humans with the caller at {snap.event}")
        stray = [i for i in with_caller if i not in connected_ids]
        if stray:
            judged.problems.append(
                f"{stray} with the caller at {snap.event} {snap.t:.2f}s without a connected "
                "transfer"
            )


def _nothing_left(number, result, own, legs, line, snapshots, judged: GroupJudgement) -> None:
    """By the transfer's `teardown_done`: every leg closed, no dial ringing, no human on.

    The one exception is the human a move put in the caller's room.
    """
    problems = judged.problems
    at = f"transfer {number}"
    done = next((e["t"] for e in own if e["event"] == "teardown_done"), None)
    if done is None:
        return  # the leak check names a transfer never torn down
    by = done + EVENT_SLACK_SECS
    for leg in legs:
        if leg.close_end is None or leg.close_end > by:
            problems.append(f"{at}: {_who(leg.index)}'s leg was still open at teardown_done")
        if leg.dial_start is not None and (leg.dial_end is None or leg.dial_end > by):
            problems.append(f"{at}: {_who(leg.index)}'s dial was still going at teardown_done")
    for dial in line:
        if dial.outcome is None:
            problems.append(f"{at}: the phone in {dial.room} was still ringing after the call")
        elif dial.ended is not None and dial.ended > by:
            problems.append(
                f"{at}: the phone in {dial.room} rang until {dial.ended:.2f}s, after "
                f"teardown_done at {done:.2f}s"
            )
    snap = next((s for s in snapshots if s.event == "teardown_done" and s.transfer == number), None)
    if snap is not None:
        consult = {leg.room for leg in legs} | {d.room for d in line}
        left = sorted(i for i, room in snap.humans if room in consult)
        if left:
            problems.append(f"{at}: {left} still on a consult call at teardown_done")
    joined = next((s for s in snapshots if s.event == "connected" and s.transfer == number), None)
    if joined is not None:
        others = sorted(i for i, _ in joined.humans if i != result.human_identity)
        if others:
            problems.append(f"{at}: {others} still on a call when the caller was joined")


def _one_after_another(number, result, legs, judged: GroupJudgement) -> None:
    """Sequential: the next human is dialed only once the one before was hung up."""
    at = f"transfer {number}"
    for before, after in zip(legs, legs[1:], strict=False):
        if before.close_end is None or after.opened < before.close_end:
            judged.problems.append(
                f"{at}: {_who(after.index)} opened at {after.opened:.2f}s before "
                f"{_who(before.index)} was hung up ({before.close_end})"
            )
    tried = result.tried
    for before, after in zip(tried, tried[1:], strict=False):
        if after.dialed_at is None:
            continue  # never dialed (its consult room could not be opened)
        if before.ended_at is None or after.dialed_at < before.ended_at:
            judged.problems.append(
                f"{at}: {_who(after.index)} dialed at {after.dialed_at} before "
                f"{_who(before.index)} settled at {before.ended_at}"
            )


def _others_stop(number, own, legs, line, allowance, judged: GroupJudgement) -> None:
    """Simultaneous: once someone answered, every other phone stops within the bound.

    A loser whose SIP participant joined only after the first answer (or never did) was
    not ringing yet: its leg waits for it to join to hang it up, which its line shows
    (how long that phone rang after the first answer), not its leg's close.
    """
    at = f"transfer {number}"
    answered = next((e for e in own if e["event"] == "human_answered"), None)
    if answered is None:
        return  # nobody answered: the phones ended by themselves or with the transfer
    bound = STOP_BOUND_SECS + allowance
    winner = next((leg for leg in legs if leg.index == answered.get("target")), None)
    first = min((d.active for d in line if d.active is not None), default=None)
    late = set()
    if first is not None:
        late = {d.room for d in line if d.active is None and (d.joined is None or d.joined > first)}
    stopped = next((e for e in own if e["event"] == "others_stopped"), None)
    if stopped is not None:
        judged.others_stopped_secs.append(stopped["secs"])
        if stopped["secs"] > bound and late:
            judged.skipped.append(f"{at}: others_stopped: {sorted(late)} joined late")
        elif stopped["secs"] > bound:
            judged.late(
                f"{at}: others_stopped after {stopped['secs']:.2f}s (bound {bound:.2f}s)",
                stopped["t"] - stopped["secs"],
                stopped["t"],
            )
    if winner is None or winner.dial_end is None:
        return
    follow = answered["t"] - winner.dial_end
    judged.follow_secs.append(round(follow, 3))
    # The core was waiting (for the failed phones' hang-ups) before it followed the
    # winner: the others' phones were hung up only after that wait, the same defect.
    waited = f"[{WINNER_WAITS}] " if follow > FOLLOW_BOUND_SECS + allowance else ""
    if waited:
        judged.late(
            f"{at}: [{WINNER_WAITS}] {_who(winner.index)} answered at {winner.dial_end:.2f}s "
            f"but was followed only at {answered['t']:.2f}s",
            winner.dial_end,
            answered["t"],
        )
    for leg in legs:
        if leg is winner or leg.dial_start is None or leg.close_end is None:
            continue  # never dialed, or never closed (`_nothing_left` names it)
        if (
            leg.dial_end is not None
            and leg.dial_end <= winner.dial_end
            and leg.dial_result != "answered"
        ):
            continue  # its dial had failed before the answer: no phone left to stop
        secs = max(0.0, leg.close_end - winner.dial_end)
        judged.loser_hung_up_secs.append(round(secs, 3))
        if secs > bound and leg.room in late:
            judged.skipped.append(f"{at}: {_who(leg.index)} hung up late: joined late")
        elif secs > bound:
            judged.late(
                f"{at}: {waited}{_who(leg.index)} hung up {secs:.2f}s after the first answer "
                f"(bound {bound:.2f}s)",
                winner.dial_end,
                leg.close_end,
            )
    if first is None:
        return
    for dial in line:
        if dial.active == first or dial.ended is None or dial.ended <= first:
            continue
        # What the loser's phone did after the first answer (it may have joined later).
        secs = dial.ended - max(first, dial.joined if dial.joined is not None else first)
        judged.line_stopped_secs.append(round(secs, 3))
        if secs > bound:
            judged.late(
                f"{at}: {waited}the phone in {dial.room} rang {secs:.2f}s after the first answer",
                first,
                dial.ended,
            )


#: Events after which a transfer is decided (a later hang-up is another matter).
_DECIDED = (
    "connected",
    "transfer_failed",
    "caller_hung_up",
    "caller_referred",
    "teardown_done",
    "cancelled",
)


def _hang_ups_noticed(number, result, own, legs, hang_ups, cutoff, judged) -> None:
    """A human followed by the bot who hangs up before anything was decided is noticed.

    When they hung up is read from their script: `hang_up_after` seconds after their dial
    returned (at the latest: the line answered a moment before the core heard of it).
    """
    at = f"transfer {number}"
    requested = next((e["t"] for e in own if e["event"] == "transfer_requested"), 0.0)
    decided = [e["t"] for e in own if e["event"] in _DECIDED]
    if cutoff is not None:
        decided.append(cutoff)
    tried = {a.index: a for a in result.tried}
    for answered in (e for e in own if e["event"] == "human_answered"):
        index = answered.get("target")
        after = hang_ups.get(index)
        leg = next((leg for leg in legs if leg.index == index), None)
        if after is None or leg is None or leg.dial_end is None:
            continue
        hung_up = leg.dial_end + after
        if leg.close_start is not None and leg.close_start <= hung_up:
            continue  # the bot hung up on them first
        attempt = tried.get(index)
        if (
            attempt is not None
            and attempt.ended_at is not None
            and requested + attempt.ended_at < hung_up - EVENT_SLACK_SECS
        ):
            continue  # they had decided (or were moved past) before
        if any(t <= hung_up + EVENT_SLACK_SECS for t in decided):
            continue
        noticed = [
            e["t"]
            for e in own
            if e["event"] == "human_hung_up"
            and hung_up - FOLLOW_BOUND_SECS <= e["t"] <= hung_up + NOTICE_BOUND_SECS
        ]
        if not noticed:
            ends = sorted(decided)
            # Before `human_answered`: while the others' phones were being hung up.
            tag = f"[{HANG_UP_LOST}] " if hung_up < answered["t"] else ""
            judged.late(
                f"{at}: {tag}{_who(index)} hung up at {hung_up:.2f}s but no human_hung_up "
                f"followed (the transfer ended {result.reason or result.outcome} at "
                f"{ends[0] if ends else None})",
                hung_up,
                hung_up + NOTICE_BOUND_SECS,
            )


def known_leak(report) -> str | None:
    """The leak `DROP_OUTLIVES` leaves, tagged; None for any other leak.

    The call ended (caller or pipeline) while the group was hanging a human up: that
    human's try had already left the transfer's open tries, and their briefing's close,
    cancelled halfway, is not waited for again, so `teardown_done` comes while their leg
    or briefing is still closing. Only at that `teardown_done` (all gone by the end of
    the call), only on a transfer the call ended after the group dropped someone, and
    only that human's room or their briefing's tasks.
    """
    ended = {
        number
        for number, result in enumerate(report.results, start=1)
        if str(result.reason) in ("caller_hung_up", "cancelled")
    }
    rooms: dict[int, set[str]] = {}
    kept: dict[int, str] = {}
    for e in report.events:
        number = e.get("transfer")
        if e["event"] == "dialing":
            rooms.setdefault(number, set()).add(e.get("room"))
        elif e["event"] == "human_answered":
            kept[number] = e.get("identity")
    if not report.leak_findings:
        return None
    for finding in report.leak_findings:
        where, _, what = finding.partition(": ")
        number = where.removeprefix("teardown_done of transfer ")
        if not number.isdigit() or int(number) not in ended:
            return None
        dropped = {
            room
            for room in rooms.get(int(number), ())
            if room and not (kept.get(int(number)) or "").endswith(room.removeprefix("consult"))
        }
        briefing = what.startswith("tasks ") and what[6:].startswith(
            ("briefing-", "PipelineWorker#")
        )
        if not briefing and not any(room in what for room in dropped):
            return None
    return f"[{DROP_OUTLIVES}] leaks {report.leaks}: {report.leak_findings}"
