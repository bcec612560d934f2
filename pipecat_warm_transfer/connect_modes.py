#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Connect modes: how an accepted human is joined with the caller.

Each mode is one strategy with one `join()`. `move` asks the leg to move the human into
the caller's room, `bridge` opens the bot's `AudioBridge`, and `auto` tries `move` and
falls back to `bridge` when the server cannot move. A new mode (SIP REFER, say) is one
class here plus the leg operation it calls.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from pipecat_warm_transfer.consult_leg import ConsultLeg, MoveUnsupportedError
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
    """

    leg: ConsultLeg
    caller_room: str | None
    can_move: bool
    open_bridge: Callable[[], None]


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
    """The strategy of a configured connect mode (`auto` is move, then bridge)."""
    if mode == ConnectMode.MOVE:
        return MoveStrategy()
    if mode == ConnectMode.BRIDGE:
        return BridgeStrategy()
    return FallbackStrategy(MoveStrategy(), BridgeStrategy())
