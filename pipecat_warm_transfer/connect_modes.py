#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Connect modes: how an accepted human is joined with the caller.

Each mode is one strategy with one `join()`. `move` asks the leg to move the human into
the caller's room, `bridge` opens the bot's `AudioBridge`, and `auto` tries `move` and
falls back to `bridge` when the server cannot move. `refer` hangs the human up and has the
caller's carrier transfer the caller's SIP call to the human (SIP REFER): nobody stays in
the media path. A new mode is one class here plus the leg operation it calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from pipecat_warm_transfer.consult_leg import (
    ConsultLeg,
    MoveUnsupportedError,
    ReferUnsupportedError,
)
from pipecat_warm_transfer.types import ConnectMode


class ModeUnavailableError(Exception):
    """This mode cannot join these two (the server or the set-up lacks what it needs)."""


@dataclass
class Join:
    """What a strategy may use to join the human with the caller.

    Parameters:
        leg: The consult leg the human answered on.
        caller_room: The caller's room name (None: unknown, no move possible).
        can_move: Whether the backend may move participants at all.
        open_bridge: Starts the bot's audio bridge between the two rooms.
        caller_identity: The caller's identity in their room (None: for `refer`, the
            room's one SIP participant).
    """

    leg: ConsultLeg
    caller_room: str | None
    can_move: bool
    open_bridge: Callable[[], None]
    caller_identity: str | None = None


class ConnectStrategy(ABC):
    """One way to join the human with the caller."""

    @abstractmethod
    async def join(self, join: Join) -> ConnectMode:
        """Join them and return the mode that did it.

        Raises:
            ModeUnavailableError: This mode cannot be used here.
            ConnectError: The mode failed.
        """


class MoveStrategy(ConnectStrategy):
    """Move the human into the caller's room (LiveKit `MoveParticipant`)."""

    async def join(self, join: Join) -> ConnectMode:
        """Move the human; `ModeUnavailableError` when the server cannot."""
        if not join.can_move or not join.caller_room:
            raise ModeUnavailableError("move unavailable")
        try:
            await join.leg.move_to(join.caller_room)
        except MoveUnsupportedError as e:
            raise ModeUnavailableError(f"move unsupported: {e}") from None
        return ConnectMode.MOVE


class BridgeStrategy(ConnectStrategy):
    """Keep the bot between the rooms and relay audio both ways."""

    async def join(self, join: Join) -> ConnectMode:
        """Open the bridge (works on any server)."""
        join.open_bridge()
        return ConnectMode.BRIDGE


class ReferStrategy(ConnectStrategy):
    """Transfer the caller's SIP call to the human's number (SIP REFER); the bot leaves.

    The human, told by the connecting message that their phone will ring, is hung up
    first so their line is free; then the caller's carrier calls them with the caller.
    A caller that is not a SIP call is found out before the hang-up (`ModeUnavailableError`,
    the human still on the line). A REFER that fails raises `ReferError` (the human is
    gone then: the caller is taken back).
    """

    async def join(self, join: Join) -> ConnectMode:
        """Refer the caller to the accepted target's number."""
        if not join.caller_room:
            raise ModeUnavailableError("refer unavailable: the caller's room is unknown")
        leg = join.leg
        try:
            caller = await leg.find_sip_caller(join.caller_room, join.caller_identity)
        except ReferUnsupportedError as e:
            raise ModeUnavailableError(f"refer unavailable: {e}") from None
        await leg.hang_up()
        try:
            await leg.refer_caller(join.caller_room, caller, leg.request.target.number)
        except ReferUnsupportedError as e:
            raise ModeUnavailableError(f"refer unavailable: {e}") from None
        return ConnectMode.REFER


class FallbackStrategy(ConnectStrategy):
    """Try strategies in order; the next one when a mode is unavailable."""

    def __init__(self, *strategies: ConnectStrategy):
        """Initialize with the strategies to try, first choice first."""
        self._strategies = strategies

    async def join(self, join: Join) -> ConnectMode:
        """Join with the first strategy that is available."""
        unavailable: ModeUnavailableError | None = None
        for strategy in self._strategies:
            try:
                return await strategy.join(join)
            except ModeUnavailableError as e:
                unavailable = e
        raise unavailable or ModeUnavailableError("no connect mode")


def strategy_for(mode: ConnectMode) -> ConnectStrategy:
    """The strategy of a configured connect mode (`auto` is move, then bridge).

    `refer` has no fallback: bridging after the human was hung up is not possible.
    """
    if mode == ConnectMode.MOVE:
        return MoveStrategy()
    if mode == ConnectMode.BRIDGE:
        return BridgeStrategy()
    if mode == ConnectMode.REFER:
        return ReferStrategy()
    return FallbackStrategy(MoveStrategy(), BridgeStrategy())
