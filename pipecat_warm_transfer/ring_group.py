#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Several humans instead of one number: who is tried, in what order, and what was heard.

A `RingGroup` names the humans and the strategy:

- `sequential`: one after another. A busy line, no answer, voicemail or a failed dial
  moves on to the next; a decline does too unless `on_decline="stop"`.
- `simultaneous`: every phone rings at once. With `first_to="answer"` the first to answer
  gets the briefing and every other phone stops ringing (their legs are hung up at once);
  with `first_to="accept"` everyone who answers is briefed and the first to accept takes
  the call (the others are thanked and hung up, the phones still ringing stop).

Each human tried leaves a `TargetAttempt` (in `types`) on the result: who, how it
ended, its SIP status, and when it rang and answered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.types import FailureReason, TargetAttempt, TransferConfigError

__all__ = ["NEXT_ON", "RingGroup", "TargetAttempt", "group_reason"]

Strategy = Literal["sequential", "simultaneous"]

#: Reasons after which a sequential group moves on to the next human.
NEXT_ON = frozenset(
    {
        FailureReason.NO_ANSWER,
        FailureReason.BUSY,
        FailureReason.VOICEMAIL,
        FailureReason.DIAL_FAILED,
        FailureReason.HUMAN_HUNG_UP,
        FailureReason.BRIEFING_TIMEOUT,
    }
)


@dataclass
class RingGroup:
    """The humans a transfer may reach, and how they are tried.

    Parameters:
        targets: The humans, in order of preference (at least one).
        strategy: `sequential` or `simultaneous`.
        on_decline: Sequential only: `next` tries the next human after a decline,
            `stop` returns the caller at once.
        first_to: Simultaneous only: `answer` (the first to pick up is briefed) or
            `accept` (all who pick up are briefed; the first to accept wins).
        max_targets: Bound on the humans of one group (a simultaneous group dials
            them all at once).
    """

    targets: list[TransferTarget]
    strategy: Strategy = "sequential"
    on_decline: Literal["next", "stop"] = "next"
    first_to: Literal["answer", "accept"] = "answer"
    max_targets: int = field(default=10, repr=False)

    def __post_init__(self):
        if not self.targets:
            raise TransferConfigError("targets: at least one human is required")
        for index, target in enumerate(self.targets):
            if not isinstance(target, TransferTarget):
                raise TransferConfigError(f"targets[{index}]: expected a TransferTarget")
        if len(self.targets) > self.max_targets:
            raise TransferConfigError(f"targets: at most {self.max_targets} humans in a group")
        if self.strategy not in ("sequential", "simultaneous"):
            raise TransferConfigError("strategy: must be sequential or simultaneous")
        if self.on_decline not in ("next", "stop"):
            raise TransferConfigError("on_decline: must be next or stop")
        if self.first_to not in ("answer", "accept"):
            raise TransferConfigError("first_to: must be answer or accept")

    @classmethod
    def of(cls, target: TransferTarget | RingGroup) -> RingGroup:
        """A group from a single target (tried alone) or a group as is."""
        if isinstance(target, RingGroup):
            return target
        if not isinstance(target, TransferTarget):
            raise TransferConfigError("target: expected a TransferTarget or a RingGroup")
        return cls([target])

    def moves_on_after(self, reason: FailureReason) -> bool:
        """Whether a sequential group tries the next human after this outcome."""
        if reason == FailureReason.DECLINED:
            return self.on_decline == "next"
        return reason in NEXT_ON


def group_reason(reasons: list[FailureReason]) -> FailureReason:
    """The one reason of a group nobody took, from each human's.

    A decline says the most (someone chose not to), then voicemail, then busy when every
    line was busy; otherwise nobody answered, or the dials failed.
    """
    if not reasons:
        return FailureReason.DIAL_FAILED
    if len(reasons) == 1:
        return reasons[0]
    for reason in (FailureReason.DECLINED, FailureReason.VOICEMAIL):
        if reason in reasons:
            return reason
    if all(reason == FailureReason.BUSY for reason in reasons):
        return FailureReason.BUSY
    if FailureReason.HUMAN_HUNG_UP in reasons:
        return FailureReason.HUMAN_HUNG_UP
    if FailureReason.NO_ANSWER in reasons or FailureReason.BUSY in reasons:
        return FailureReason.NO_ANSWER
    return reasons[-1]
