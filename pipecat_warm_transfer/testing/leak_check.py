#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""What each transfer left behind, counted when it says it is torn down.

Counting only after a test's own clean-up hides the plugin's leaks: the harness closes
every leg and hangs up every human itself. So `LeakWatch` looks at the server and the
event loop at each `teardown_done`, and once more when the bot's pipeline has ended,
before anything else is closed. It names every room, participant, ringing dial, open
connection and task that should be gone by then.

What may stay: the caller's room with the caller and the bot, and a human joined to the
caller by a move (the call goes on without the bot) until either of them hangs up.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pipecat_warm_transfer.testing.memory_room import MemoryRoomServer

#: The keys of a leak count (the demo's `report.json` has the first four).
LEAK_KINDS = ("rooms", "participants", "connections", "tasks", "teardowns")
NO_LEAKS = dict.fromkeys(LEAK_KINDS, 0)


@dataclass
class LeakCheck:
    """One look: where it was taken and what was still there, by kind."""

    at: str
    found: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in LEAK_KINDS})

    def counts(self) -> dict[str, int]:
        """How many of each kind."""
        return {kind: len(items) for kind, items in self.found.items()}

    def describe(self) -> list[str]:
        """One line per leftover, saying where it was seen."""
        return [f"{self.at}: {kind} {item}" for kind, items in self.found.items() for item in items]


class LeakWatch:
    """Looks for leftovers at every `teardown_done` and at the end of the call.

    Feed it every transfer event (`on_event`); call `at_end()` once the bot's pipeline
    has ended and before any clean-up.
    """

    def __init__(
        self,
        server: MemoryRoomServer,
        *,
        caller_room: str,
        caller_identity: str,
        bot_identity: str,
        emulator=None,
        own_tasks: tuple[str, ...] = (),
    ):
        """Watch `server` (and the emulator's dials, when there is one).

        Args:
            server: The rooms every party is in.
            caller_room: The caller's room (it stays).
            caller_identity: The caller (stays until they hang up).
            bot_identity: The bot (stays in the caller's room until its pipeline ends).
            emulator: A `LiveKitEmulator`, whose ringing dials are leaks too.
            own_tasks: Name prefixes of the caller pipeline's own tasks (not leaks); may
                be set later, once the pipeline exists.
        """
        self._server = server
        self._caller_room = caller_room
        self._caller = caller_identity
        self._bot = bot_identity
        self._emulator = emulator
        self.own_tasks = own_tasks
        self.checks: list[LeakCheck] = []
        self._requested = 0
        self._torn_down = 0
        self._caller_left = False
        self._joined_human: str | None = None  # moved into the caller's room
        self._joined_room: str | None = None  # the consult room it came from
        self._humans: dict[int, str] = {}
        self._rooms: dict[int, str] = {}  # the room of the human who answered
        self._dialed: dict[tuple[int, int], str] = {}  # each human's room, by group place

    def on_event(self, event: dict) -> None:
        """Follow the transfer; look for leftovers at `teardown_done`."""
        name, number = event["event"], event.get("transfer")
        if name == "transfer_requested":
            self._requested += 1
        elif name == "dialing":
            self._dialed[(number, event.get("target", 0))] = event.get("room")
        elif name == "human_answered":
            self._humans[number] = event.get("identity")
            self._rooms[number] = self._dialed.get((number, event.get("target", 0)))
        elif name == "connected" and event.get("mode") == "move":
            self._joined_human = self._humans.get(number)
            self._joined_room = self._rooms.get(number)
        elif name in ("caller_hung_up", "caller_referred"):
            self._caller_left = True
        elif name == "human_hung_up" and number is not None:
            if self._humans.get(number) == self._joined_human:
                self._joined_human = None
        elif name == "teardown_done":
            self._torn_down += 1
            self.checks.append(self._look(f"teardown_done of transfer {number}", final=False))

    @property
    def teardowns_pending(self) -> int:
        """Transfers requested that have not said `teardown_done` yet."""
        return self._requested - self._torn_down

    def at_end(self) -> LeakCheck:
        """Look once more: the pipeline has ended, nothing else has been closed."""
        check = self._look("end of call", final=True)
        missing = self._requested - self._torn_down
        check.found["teardowns"] += [f"transfer never torn down ({i + 1})" for i in range(missing)]
        self.checks.append(check)
        return check

    def counts(self) -> dict[str, int]:
        """Leftovers over every look, by kind."""
        total = dict(NO_LEAKS)
        for check in self.checks:
            for kind, n in check.counts().items():
                total[kind] += n
        return total

    def describe(self) -> list[str]:
        """Every leftover seen, one line each."""
        return [line for check in self.checks for line in check.describe()]

    def _allowed(self, final: bool) -> set[str]:
        allowed = set() if self._caller_left else {self._caller}
        if not final:
            allowed.add(self._bot)
        # Once the caller leaves, the plugin hangs the joined human up after the
        # teardown it may be in: by the end of the call, not by that `teardown_done`.
        if self._joined_human is not None and (not final or not self._caller_left):
            allowed.add(self._joined_human)
        return allowed

    def _look(self, at: str, *, final: bool) -> LeakCheck:
        check = LeakCheck(at)
        found = check.found
        allowed = self._allowed(final)
        for name in self._server.list_rooms():
            room = self._server.get_room(name)
            if name != self._caller_room:
                found["rooms"].append(name)
            for identity in room.participants if room is not None else ():
                if name != self._caller_room or identity not in allowed:
                    found["participants"].append(f"{identity} in {name}")
        if self._emulator is not None:
            found["participants"] += [
                f"a dial ringing into {c.room_name}" for c in self._emulator.ringing()
            ]
        for connection in self._server.open_connections():
            room, identity = connection.room_name, connection.identity
            if room != self._caller_room or identity not in allowed:
                found["connections"].append(f"{identity} connected to {room}")
        found["tasks"] = self._tasks(final)
        return check

    def _tasks(self, final: bool) -> list[str]:
        """Tasks of a consult leg, a briefing, or (at the end) the transfer itself."""
        current = asyncio.current_task()
        names = []
        for task in asyncio.all_tasks():
            if task is current or task.done():
                continue
            name = task.get_name()
            if name.startswith("ScriptedParty("):
                continue  # a scripted phone: counted as a participant while connected
            joined = self._joined_room is not None and self._joined_room in name
            leg = "consult-" in name and not (joined and (not final or not self._caller_left))
            briefing = name.startswith("briefing-") or (
                name.startswith("PipelineWorker#") and not name.startswith(self.own_tasks)
            )
            transfer = name.startswith("WarmTransfer#") and (final or name.endswith("::summary"))
            if leg or briefing or transfer:
                names.append(name)
        return sorted(names)
