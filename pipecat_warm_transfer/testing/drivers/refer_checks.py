#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""SIP REFER in the fault suite: which calls connect by REFER, and what must then hold.

A share of the seeds (`REFER_SHARE`, a draw of its own, so every other draw of a seed
stays what it was) ask for `connect_mode: refer`, with a SIP caller and a carrier that
transfers the call, refuses the REFER, or whose NOTIFY says the human's line failed;
through the emulator, the REFER request itself may also fail or be slow.

The invariants (`refer_problems`):

- A transfer connected by REFER referred the caller's call to the human who accepted,
  and the carrier transferred it (or the call ended while the human's phone rang, which
  LiveKit answers as success).
- Nobody else's number is ever referred, and no REFER happens outside `refer` mode.
- A REFER the carrier refused, or whose target failed, is `connect_failed`, never a
  connect.
- Once referred, the caller's call leaves LiveKit (the carrier's BYE, or LiveKit's own
  hang-up `REFER_BYE_SECS` after the NOTIFY) before the call ends, as `caller_referred`
  (never `caller_hung_up`: nobody hung up).
"""

from __future__ import annotations

import random

from pipecat_warm_transfer.backends.livekit import refer_uri
from pipecat_warm_transfer.testing.livekit_sip_transfer import REFER_BYE_SECS, ReferScript
from pipecat_warm_transfer.types import ConnectMode, FailureReason, TransferOutcome

#: Share of the seeds whose transfers connect by SIP REFER.
REFER_SHARE = 0.15
#: Faults a REFER run through the emulator may add: (kind, method, value).
REFER_FAULTS = (
    ("fail", "TransferSIPParticipant", "unavailable"),
    ("latency", "TransferSIPParticipant", None),
)
#: The emulator's REFER outcomes that hand the call over.
_HANDED_OVER = ("transferred", "call_ended")
#: Reasons a referring transfer may still end with (the call ended under it, or the
#: human left as they were being joined).
_ENDED_UNDER_IT = (
    FailureReason.CALLER_HUNG_UP,
    FailureReason.CANCELLED,
    FailureReason.HUMAN_HUNG_UP,
)


def draw_refer(seed: int, *, livekit: bool) -> tuple[ReferScript | None, list[tuple]]:
    """Whether `seed`'s call connects by REFER: the carrier's script and extra faults.

    Returns:
        `(None, [])` for a call that does not refer; else what the caller's carrier
        does with the REFER, and the faults on `TransferSIPParticipant` (LiveKit only).
    """
    rng = random.Random(seed ^ 0x2EF3)
    if rng.random() >= REFER_SHARE:
        return None, []
    kind = rng.random()
    if kind < 0.7:
        bye = None if rng.random() < 0.2 else rng.uniform(0.0, 0.6)
        script = ReferScript(
            refer_after=rng.uniform(0.02, 0.3),
            notify_after=rng.uniform(0.1, 1.2),
            bye_after=bye,
        )
    elif kind < 0.85:
        script = ReferScript.refused(rng.choice([403, 405, 501, 603]))
    else:
        script = ReferScript.target_fails(rng.choice([480, 486, 603]), after=rng.uniform(0.1, 1.0))
    faults = []
    if livekit:
        for fault_kind, method, value in REFER_FAULTS:
            if rng.random() < 0.1:
                value = rng.uniform(0.1, 1.0) if fault_kind == "latency" else value
                faults.append((fault_kind, method, value))
    return script, faults


def refer_problems(
    script: ReferScript | None, report, numbers: list[str], end_at: float | None
) -> list[str]:
    """What a call's REFERs broke (see the module).

    Args:
        script: The carrier's script (None: the call was not in `refer` mode).
        report: The call's `CallReport`.
        numbers: The numbers dialed, by target index (one for a single human).
        end_at: When the run began to end the call (None: after everything settled);
            a call referred less than `REFER_BYE_SECS` before may still be in LiveKit.
    """
    # In memory the number is kept as asked; LiveKit keeps the URI it sent.
    referrals = [{**r, "to": refer_uri(r["to"])} for r in report.referrals]
    if script is None:
        return [f"a REFER outside refer mode: {referrals}"] if referrals else []
    problems = []
    allowed = _answered(report.events, numbers)
    for referral in referrals:
        if referral["to"] not in allowed:
            problems.append(
                f"the caller was referred to {referral['to']}, not to a human who accepted "
                f"({sorted(allowed)})"
            )
    handed_over = script.accepted and script.notify_status == 200
    for number, result in enumerate(report.results, start=1):
        if result.connect_mode == ConnectMode.REFER:
            problems += _connected_by_refer(number, result, report, referrals, numbers, end_at)
        elif (
            result.outcome == TransferOutcome.CONNECTED
            and result.connect_mode is not None
            and result.connect_mode != ConnectMode.REFER
        ):
            problems.append(f"transfer {number} connected by {result.connect_mode} in refer mode")
        elif not handed_over and result.outcome == TransferOutcome.FAILED:
            mine = [e for e in report.events if e.get("transfer") == number]
            referred = _answered(mine, numbers) & {r["to"] for r in referrals}
            if referred and result.reason not in (
                FailureReason.CONNECT_FAILED,
                *_ENDED_UNDER_IT,
            ):
                problems.append(
                    f"transfer {number}: the REFER failed but the result is {result.reason}"
                )
    if not handed_over and any(r.connect_mode == ConnectMode.REFER for r in report.results):
        problems.append(f"connected by a REFER the carrier did not carry out ({script})")
    return problems


def _connected_by_refer(number, result, report, referrals, numbers, end_at) -> list[str]:
    """One transfer connected by REFER: the REFER to its human, and the caller gone."""
    problems = []
    to = _number_of(result.human_identity, number, report, numbers)
    mine = [r for r in referrals if to is not None and r["to"] == refer_uri(to)]
    if not mine:
        problems.append(f"transfer {number} connected by REFER but {to} was never referred")
    elif mine[-1]["outcome"] not in (None, *_HANDED_OVER):
        problems.append(
            f"transfer {number} connected by a REFER LiveKit reports {mine[-1]['outcome']}"
        )
    connected = next(
        (e for e in report.events if e["event"] == "connected" and e.get("transfer") == number),
        None,
    )
    settled = connected is not None and (
        end_at is None or connected["t"] + REFER_BYE_SECS + 0.5 < end_at
    )
    if settled and report.caller_left_reason is None:
        problems.append(
            f"transfer {number} referred the caller's call at {connected['t']:.2f}s but it "
            "never left LiveKit"
        )
    after = [e["event"] for e in report.events if connected and e["t"] >= connected["t"]]
    if "caller_hung_up" in after:
        problems.append(f"transfer {number}: the referred call's leaving was called a hang-up")
    elif settled and "caller_referred" not in after:
        problems.append(f"transfer {number}: no caller_referred after the REFER")
    return problems


def _answered(events: list[dict], numbers: list[str]) -> set[str]:
    """The REFER targets (`tel:`/`sip:`) of the humans who answered in `events`."""
    targets = {e.get("target") or 0 for e in events if e["event"] == "human_answered"}
    return {refer_uri(numbers[i]) for i in targets if 0 <= i < len(numbers)}


def _number_of(identity: str | None, number: int, report, numbers: list[str]) -> str | None:
    """The number dialed for the human `identity` of transfer `number`."""
    for e in report.events:
        if (
            e["event"] == "human_answered"
            and e.get("transfer") == number
            and e.get("identity") == identity
        ):
            index = e.get("target") or 0
            return numbers[index] if index < len(numbers) else None
    return numbers[0] if len(numbers) == 1 else None
