#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Listen to a finished call: did each party hear what each transition promises?

Events say what the plugin meant to do; the recordings say what the caller and the human
heard. `listen` checks, sample for sample (`speech_finder`), that:

- the caller heard the hold line, then no dead air from its end until the hold ended;
- the caller heard why, after every return (the failure or human-left sentence);
- the caller heard the connected sentence, and then the human's voice;
- the human heard the briefing, the connecting sentence after accepting, and the
  caller-left sentence when the caller hung up during the briefing.

A check that cannot be judged on a call (the caller hung up first, the bot's pipeline
ended, the recording is too short) is *skipped with its reason*, never passed in
silence: `Listening.skipped` names each, `Listening.measured` counts the rest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from pipecat_warm_transfer.audio.metrics import windowed_rms_dbfs
from pipecat_warm_transfer.params import WarmTransferParams
from pipecat_warm_transfer.testing.drivers.speech_finder import (
    clip_heard,
    sentence_heard,
    sentence_secs,
)
from pipecat_warm_transfer.types import FailureReason

#: Longest a hold line may take to start playing before the silence counts as dead air
#: (TTS time to first audio plus the transport).
HOLD_LINE_START_SECS = 1.5
#: Dead air: more than this many silent 20 ms frames in a row while held (over 100 ms:
#: a shorter gap, as at the seam of the hold line and the music, reads as a pause).
DEAD_AIR_FRAMES = 5
SILENT_DBFS = -60.0


@dataclass
class Voices:
    """Who says what, as the scripted services render it."""

    bot_pitch_hz: float
    briefing_pitch_hz: float
    params: WarmTransferParams
    connecting_message: str | None = None
    #: What the briefing's TTS said, first sentence first (of the last human's briefing).
    briefing_lines: list[str] = field(default_factory=list)
    #: A clip the human says every `human_clip_every` s once answered (int16), to hear
    #: them once joined.
    human_clip: np.ndarray | None = None
    human_clip_every: float = 1.5


@dataclass
class Listening:
    """What the checks found: problems, counts of checks made, and checks skipped."""

    problems: list[str] = field(default_factory=list)
    measured: Counter = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)

    def skip(self, check: str, why: str) -> None:
        """Record a check that could not be judged on this call, and why."""
        self.skipped.append(f"{check}: {why}")

    def judge(self, check: str, problem: str | None, stalled: bool = False) -> None:
        """Record a check made, and its problem if it failed.

        A failure while the event loop itself stalled (`stalled`: the harness recorded a
        stall over that stretch) is the overloaded machine's, not the plugin's: skipped,
        with that reason.
        """
        if problem and stalled:
            self.skip(check, "failed during an event-loop stall")
            return
        self.measured[check] += 1
        if problem:
            self.problems.append(problem)


#: Events of the caller's call leaving: a hang-up, or their call referred to the human.
_CALLER_LEFT = ("caller_hung_up", "caller_referred")


def listen(report, voices: Voices, *, cutoff: float | None = None) -> Listening:
    """Check what each party heard against the call's events.

    Args:
        report: A finished `CallReport`.
        voices: The scripted voices and the sentences of the transfer's settings.
        cutoff: When the bot's pipeline was ended by the test (nothing is said after).
    """
    result = Listening()
    heard = _heard_events(report)
    ended = cutoff  # the bot's pipeline (the caller's recording stops when they hang up)
    end = len(report.caller_audio) / report.sample_rate
    cutoff = end if cutoff is None else min(cutoff, end)
    caller_left = next((t for t, e in heard if e["event"] in _CALLER_LEFT), None)
    ends = [t for t in (caller_left, cutoff) if t is not None]
    last = min(ends) if ends else end
    _returns(report, voices, heard, last, result)
    _connects(report, voices, heard, last, result)
    _caller_left(report, voices, heard, caller_left, ended, result)
    _briefing(report, voices, heard, result)
    return result


def _heard_events(report) -> list[tuple[float, dict]]:
    """Each event with the moment the caller heard it (LiveKit plays it `event_lags` later)."""
    lags = report.event_lags or [0.0] * len(report.events)
    return [(e["t"] + lag, e) for e, lag in zip(report.events, lags, strict=True)]


def _returns(report, voices, heard, last, result: Listening) -> None:
    """After every return the caller hears why, and then no hold music (`_stray_music`)."""
    rate = report.sample_rate
    failed_at: dict = {}
    for t, e in heard:
        if e["event"] in ("transfer_failed", "human_hung_up"):
            failed_at.setdefault(e.get("transfer"), t)
        if e["event"] != "returned_to_caller":
            continue
        reason = e.get("reason")
        if reason == "human_left_after_connect":
            text = voices.params.human_left_message
        else:
            text = voices.params.failure_message(FailureReason(reason))
        since = failed_at.get(e.get("transfer"), t) - 0.1
        secs = sentence_secs(text, rate, voices.bot_pitch_hz)
        if t + secs > last:
            result.skip("return sentence", f"the call ended at {last:.2f}s, during `{text}`")
            continue
        found = sentence_heard(
            report.caller_audio, text, rate, voices.bot_pitch_hz, (since, t + secs + 4.0)
        )
        if found and not found.whole() and found.start + secs > last:
            # Queued behind the hold line (a failure at once), it began too late to end.
            result.skip("return sentence", f"the call ended at {last:.2f}s, during `{text}`")
            continue
        result.judge(
            "return sentence",
            None
            if found and found.whole()
            else f"the caller did not hear `{text}` after the return at {t:.2f}s ({found})",
            _stalled(report, since, t + secs + 4.0),
        )


def _connects(report, voices, heard, last, result: Listening) -> None:
    """The connected sentence, then the human's voice, reach the caller."""
    rate = report.sample_rate
    for t, e in heard:
        if e["event"] != "connected":
            continue
        text = voices.params.connected_message
        if text:
            secs = sentence_secs(text, rate, voices.bot_pitch_hz)
            # Said on the accept, during the briefing: in `refer` mode the human then hears
            # a long sentence before the join, so the join may come well after it.
            briefed = [
                u
                for u, x in heard
                if x["event"] == "briefing_started"
                and x.get("transfer") == e.get("transfer")
                and u < t
            ]
            since = min(t - secs - 5.0, briefed[-1]) if briefed else t - secs - 5.0
            found = sentence_heard(
                report.caller_audio, text, rate, voices.bot_pitch_hz, (since, t + 1.0)
            )
            if t + 0.5 > last and not (found and found.whole()):
                # A referred call leaves right after: heard whole, it is judged all the same.
                result.skip("connected sentence", f"the call ended at {last:.2f}s")
            else:
                result.judge(
                    "connected sentence",
                    None
                    if found and found.whole()
                    else f"the caller did not hear `{text}` before the join at {t:.2f}s",
                    _stalled(report, since, t + 1.0),
                )
        clip = voices.human_clip
        if clip is None:
            continue
        if e.get("mode") == "refer":
            # The caller's carrier calls the human: they talk outside LiveKit.
            result.skip("human heard", "referred: caller and human talk outside LiveKit")
            continue
        # Joined by a bridge, the human is heard until the bot's teardown ends it.
        ends = ("human_hung_up", "returned_to_caller", "caller_hung_up")
        if e.get("mode") == "bridge":
            ends += ("teardown_done",)
        left = [u for u, x in heard if x["event"] in ends and u > t]
        until = min([last, *left])
        found = clip_heard(report.caller_audio, clip, rate, (t, until))
        heard_whole = (
            found is not None and found.whole() and found.start + len(clip) / rate <= until + 0.1
        )
        if not heard_whole and until - t < voices.human_clip_every + len(clip) / rate + 0.3:
            result.skip("human heard", f"joined at {t:.2f}s, over by {until:.2f}s")
            continue
        result.judge(
            "human heard",
            None
            if heard_whole
            else f"joined at {t:.2f}s but the caller never heard the human ({found})",
            _stalled(report, t, until),
        )


def _caller_left(report, voices, heard, caller_left, cutoff, result: Listening) -> None:
    """A human being briefed when the caller hangs up is told so."""
    if caller_left is None:
        return
    number = None
    for t, e in heard:
        if t > caller_left:
            break
        if e["event"] == "briefing_started":
            number = e.get("transfer")
        # `target_failed`: a group moved past the human being briefed.
        ends = ("connected", "transfer_failed", "teardown_done", "target_failed")
        if e["event"] in ends and e.get("transfer") == number:
            number = None
    if number is None:
        return  # nobody was being briefed
    last_briefed = [e.get("transfer") for _, e in heard if e["event"] == "briefing_started"]
    if last_briefed[-1] != number:
        result.skip("caller-left sentence", "a later transfer's human is the one recorded")
        return
    text = voices.params.caller_left_message
    rate = report.sample_rate
    secs = sentence_secs(text, rate, voices.briefing_pitch_hz)
    gone = [
        t
        for t, e in heard
        if e["event"] == "human_hung_up" and e.get("transfer") == number and t <= caller_left + secs
    ]
    # The human's recording stops when they hang up (after the caller, no event says so).
    human_end = len(report.human_audio) / rate if report.human_audio is not None else 0.0
    hung_up = report.human_hung_up_first and human_end < caller_left + secs
    if (
        gone
        or hung_up
        or report.human_audio is None
        or (cutoff is not None and cutoff < caller_left + 0.3)
    ):
        result.skip("caller-left sentence", "the human or the bot was gone first")
        return
    found = sentence_heard(
        report.human_audio,
        text,
        rate,
        voices.briefing_pitch_hz,
        (caller_left - 0.2, caller_left + 8.0),
    )
    result.judge(
        "caller-left sentence",
        None
        if found and found.whole()
        else f"the human was not told `{text}` after the caller left at {caller_left:.2f}s",
        _stalled(report, caller_left, caller_left + secs + 1.0),
    )


def _briefing(report, voices, heard, result: Listening) -> None:
    """The human heard the briefing's first line, and the connecting sentence on accept."""
    started = [t for t, e in heard if e["event"] == "briefing_started"]
    if not started or report.human_audio is None:
        return
    rate = report.sample_rate
    lines = voices.briefing_lines
    if not lines:
        result.skip("briefing heard", "the briefing said nothing")
    else:
        found = sentence_heard(report.human_audio, lines[0], rate, voices.briefing_pitch_hz)
        if found is None and _cut_short(report, heard, started[-1], lines[0], voices):
            result.skip("briefing heard", "the human or the bot was gone first")
        else:
            result.judge(
                "briefing heard",
                None if found else f"the human never heard the briefing's `{lines[0]}`",
            )
    text = voices.connecting_message
    accepted = any(e["event"] == "connected" for _, e in heard)
    if text and accepted and text in lines:
        found = sentence_heard(report.human_audio, text, rate, voices.briefing_pitch_hz)
        result.judge(
            "connecting sentence",
            None if found and found.whole() else f"the human did not hear `{text}` after accepting",
        )


def _cut_short(report, heard, start: float, text: str, voices: Voices) -> bool:
    secs = sentence_secs(text, report.sample_rate, voices.briefing_pitch_hz)
    ends = [
        t
        for t, e in heard
        if e["event"] in ("human_hung_up", "caller_hung_up", "teardown_done", "transfer_failed")
        and t > start
    ]
    return bool(ends) and min(ends) < start + secs + 0.5


#: Events that end a hold (the music fades out from there).
HOLD_ENDS = ("connected", "transfer_failed", *_CALLER_LEFT, "teardown_done", "cancelled")


def hold_windows(report) -> list[tuple[float, float]]:
    """(request, end of the hold) of each transfer, in s as the caller heard them.

    A REFER with LiveKit's ringing tone ends the hold where LiveKit took it: from there
    the caller hears the tone's cadence (1 s on, 4 s off), not the room.
    """
    heard = _heard_events(report)
    last = len(report.caller_audio) / report.sample_rate
    rings = [r["t"] for r in getattr(report, "referrals", ()) if r.get("ringback")]
    windows = []
    for start, request in [(t, e) for t, e in heard if e["event"] == "transfer_requested"]:
        number = request.get("transfer")
        ends = [
            t
            for t, e in heard
            if t >= start and e["event"] in HOLD_ENDS and e.get("transfer", number) == number
        ]
        ends += [t for t in rings if t >= start]
        windows.append((start, min(ends) if ends else last))
    return windows


def dead_air(report, voices: Voices, cutoff: float | None, result: Listening) -> None:
    """No dead air while held: from the end of the hold line to the end of the hold.

    The hold line is found in the recording; its end is where the music must take over.
    A hold line never heard must not mean silence either: from `HOLD_LINE_START_SECS`
    after the request, the caller must hear something.
    """
    rate = report.sample_rate
    audio = report.caller_audio
    text = voices.params.hold_message
    secs = sentence_secs(text, rate, voices.bot_pitch_hz)
    stalls = report.loop_stalls
    for requested, end in hold_windows(report):
        if cutoff is not None:
            end = min(end, cutoff)
        found = sentence_heard(
            audio, text, rate, voices.bot_pitch_hz, (requested, requested + 10.0)
        )
        start = found.start + secs if found else requested + HOLD_LINE_START_SECS
        if end - start < 0.1:
            result.skip("dead air", f"the hold ended {end - start:+.2f}s after the hold line")
            continue
        window = audio[int(start * rate) : int(end * rate)]
        silent = windowed_rms_dbfs(window, rate, 20) < SILENT_DBFS
        runs = [(i, n) for i, n in true_runs(silent) if n > DEAD_AIR_FRAMES]
        excused = [r for r in runs if _during(stalls, start + 0.02 * r[0], 0.02 * r[1])]
        if excused:
            result.skip("dead air", f"{len(excused)} silence(s) during event-loop stalls")
        real = [r for r in runs if r not in excused]
        result.judge(
            "dead air",
            None
            if not real
            else f"dead air of {real[0][1] * 20} ms while held at {start + 0.02 * real[0][0]:.2f}s"
            + ("" if found else " (the hold line was never heard)"),
        )


def _stalled(report, start: float, end: float) -> bool:
    """Whether the event loop stalled (as the harness recorded) between start and end."""
    return _during(report.loop_stalls, start, end - start)


def _during(stalls, at: float, secs: float) -> bool:
    return any(a - 0.2 <= at + secs and at <= b + 0.2 for a, b in stalls)


def true_runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in `flags`."""
    runs, start = [], None
    for i, flag in enumerate(flags):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - start))
            start = None
    if start is not None:
        runs.append((start, len(flags) - start))
    return runs
