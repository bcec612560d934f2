#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Public frames of a warm transfer.

Routing changes travel as `SystemFrame`s so queued audio cannot overtake them and an
interruption cannot drop them: a caller must never hear the bot after being put on hold,
nor miss the human after being connected.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipecat.frames.frames import SystemFrame

from pipecat_warm_transfer.types import TransferResult, TransferState


@dataclass
class TransferRequestFrame(SystemFrame):
    """Ask the `WarmTransfer` whose `caller_gate()` sees it to start a transfer.

    Parameters:
        reason: Why the caller wants a human (told to the human in the briefing).
    """

    reason: str = ""


@dataclass
class TransferStateFrame(SystemFrame):
    """The transfer moved to a new state; `caller_output()` switches routing on it.

    Parameters:
        state: The new state.
        previous: The state before.
        bridged: Whether the human's audio is relayed through the bot (bridge mode).
    """

    state: TransferState
    previous: TransferState
    bridged: bool = False


@dataclass
class TransferResultFrame(SystemFrame):
    """The transfer's one result (Flows and observers branch on it).

    Parameters:
        result: The transfer result.
    """

    result: TransferResult


@dataclass
class TransferEventFrame(SystemFrame):
    """A timeline event of the transfer (the `events.jsonl` vocabulary).

    Parameters:
        event: The event name, e.g. `hold_started`.
        data: Extra fields of the event.
    """

    event: str
    data: dict = field(default_factory=dict)


@dataclass
class TransferTeardownFrame(SystemFrame):
    """Close the consult leg.

    The briefing pipeline's last processor hangs the human up (unless moved) and ends its
    pipeline (disconnecting the consult room); the leg then deletes the room. A system
    frame, so nothing on the human side (an interruption, a voicemail gate that closed)
    can hold it back or drop it.
    """
