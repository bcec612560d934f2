#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The leg protocol: how the transfer core reaches the human, whatever the telephony.

A backend opens a *consult leg* per transfer: a separate room where the human is dialed
and briefed. The core drives the leg through a fixed life cycle and never touches a
telephony API itself, so LiveKit SIP and the in-memory test world are interchangeable.
It lives in the core; backends depend on it, never the reverse.

Life cycle of a `ConsultLeg` (the core calls these in order, stopping at the first
failure, and always ends with `close()`):

1. `open_transport()` — the bot's Pipecat transport on the consult room, before anyone
   is dialed: the briefing pipeline runs on it and is listening when the human answers.
2. `dial()` — place the call into the consult room and wait until the human answers
   (raises `DialError` with a reason and SIP status on busy, no answer, ...).
3. `move_to(caller_room)` — join the human into the caller's room (`move` mode); raises
   `MoveUnsupportedError` when the server cannot, so `auto` falls back to `bridge`.
   In `refer` mode instead: `find_sip_caller()` (is the caller a SIP call that can be
   referred?), `hang_up()` (the human's line is free again), then `refer_caller()`: the
   caller's carrier calls the human and the caller's call leaves the caller's room.
4. `close()` — teardown: hang the human up unless moved, disconnect the consult room
   connection, delete the room. Idempotent, never raises.
"""

from __future__ import annotations

import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import InitVar, dataclass, field

from pipecat.transports.base_transport import BaseTransport

from pipecat_warm_transfer.types import (
    FailureReason,
    TransferConfigError,
    reason_for_sip_status,
)

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_SIP_URI = re.compile(r"^(sip|sips):[^\s@]+@[^\s]+$|^(sip|sips):[^\s]+$", re.IGNORECASE)
_TEL_URI = re.compile(r"^tel:\+?[0-9\-\.\(\)]{3,32}(;[^\s]*)?$", re.IGNORECASE)
_HEADER_NAME = re.compile(r"^X-[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_DTMF = re.compile(r"^[0-9*#wW]*$")


class DialError(Exception):
    """The human's call did not get answered.

    Parameters:
        reason: The failure reason (busy, no_answer, declined, dial_failed, ...).
        sip_status: The SIP status code, when the server reported one.
        detail: A short description (never a secret).
    """

    def __init__(
        self, reason: FailureReason, sip_status: int | None = None, detail: str | None = None
    ):
        super().__init__(detail or str(reason))
        self.reason = reason
        self.sip_status = sip_status
        self.detail = detail

    @classmethod
    def from_sip_status(cls, status: int | None, detail: str | None = None) -> DialError:
        """Build the error whose reason the SIP status maps to (DESIGN §2)."""
        return cls(reason_for_sip_status(status), status, detail)


class MoveUnsupportedError(Exception):
    """The server cannot move a participant between rooms (e.g. open-source LiveKit)."""


class ConnectError(Exception):
    """Joining caller and human failed for another reason."""


class ReferUnsupportedError(Exception):
    """The caller's call cannot be referred (not a SIP call, or a backend without REFER)."""


class ReferError(ConnectError):
    """The REFER of the caller to the human failed.

    Parameters:
        detail: What happened, the SIP status included (never a secret or a number).
        sip_status: The SIP status the carrier reported (None: none, e.g. a timeout).
    """

    def __init__(self, detail: str, sip_status: int | None = None):
        super().__init__(detail)
        self.sip_status = sip_status

    @property
    def reason(self) -> FailureReason | None:
        """What the SIP status means for the human's line (busy, no_answer, ...), if any."""
        return None if self.sip_status is None else reason_for_sip_status(self.sip_status)


def validate_destination(value: str, field_name: str = "target.number") -> str:
    """Check a phone number (E.164) or a `sip:`/`tel:` URI; return it stripped."""
    if not isinstance(value, str) or not value.strip():
        raise TransferConfigError(f"{field_name}: a phone number or SIP URI is required")
    text = value.strip()
    if any(c in text for c in "\r\n\0"):
        raise TransferConfigError(f"{field_name}: control characters are not allowed")
    if _E164.match(text) or _SIP_URI.match(text) or _TEL_URI.match(text):
        return text
    raise TransferConfigError(
        f"{field_name}: {text!r} is not an E.164 number (+15551234567) or a sip:/tel: URI"
    )


def validate_headers(headers: dict[str, str], field_name: str = "target.headers") -> dict:
    """Check SIP headers: `X-` token names, values without CR/LF (no header injection)."""
    checked: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise TransferConfigError(
                f"{field_name}.{name}: header names must be X- tokens (e.g. X-Reason)"
            )
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise TransferConfigError(f"{field_name}.{name}: the value must be one line of text")
        if len(value) > 1024:
            raise TransferConfigError(f"{field_name}.{name}: the value is over 1024 characters")
        checked[name] = value
    return checked


@dataclass
class TransferTarget:
    """Who to dial, and how (no backend's names: each backend reads what it needs).

    Parameters:
        number: E.164 phone number or `sip:`/`tel:` URI of the human.
        route: The outbound route the backend dials through (for LiveKit, an outbound
            SIP trunk id); the backend's default when None.
        caller_id: The number shown to the human.
        headers: Extra SIP headers (X- names only).
        dtmf: Digits to send after the call connects (e.g. an extension, `ww1234`).
        display_name: The human's name, for the briefing and the events.
        ring_timeout: Seconds this human's phone may ring (default: the transfer's).
        trunk_id: Deprecated name of `route` (keyword only).
    """

    number: str
    route: str | None = None
    caller_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    dtmf: str | None = None
    display_name: str | None = None
    ring_timeout: float | None = None
    trunk_id: InitVar[str | None] = None

    def __post_init__(self, trunk_id: str | None = None):
        if trunk_id is not None:
            warnings.warn(
                "TransferTarget(trunk_id=...) is deprecated: use route=...",
                DeprecationWarning,
                stacklevel=3,
            )
            self.route = self.route or trunk_id
        self.number = validate_destination(self.number, "target.number")
        if self.caller_id is not None:
            self.caller_id = validate_destination(self.caller_id, "target.caller_id")
        self.headers = validate_headers(self.headers, "target.headers")
        if self.dtmf is not None and not _DTMF.match(self.dtmf):
            raise TransferConfigError("target.dtmf: only 0-9, *, # and w (pause) are allowed")
        if self.ring_timeout is not None and not 0 < self.ring_timeout <= 600:
            raise TransferConfigError("target.ring_timeout: must be between 0 and 600 seconds")


@dataclass
class DialRequest:
    """What the core asks a backend to dial.

    Parameters:
        target: The human to dial.
        consult_room: Name of the consult room for this transfer (unique per transfer).
        human_identity: Participant identity for the human in the consult room.
        bot_identity: Participant identity of the bot in the consult room.
        ring_timeout: Seconds to let the phone ring before `no_answer`.
        caller_room: Name of the caller's room (for `move`).
    """

    target: TransferTarget
    consult_room: str
    human_identity: str
    bot_identity: str
    ring_timeout: float
    caller_room: str | None = None


#: Called by a leg when the human leaves the consult (or caller) room.
HumanLeftHandler = Callable[[str], Awaitable[None]]

#: Called by a leg once the human's phone is ringing.
RingingHandler = Callable[[], Awaitable[None]]

#: Seconds the core waits for `dial()` beyond the ring timeout when a leg sets no bound.
DEFAULT_DIAL_MARGIN_SECS = 5.0


class ConsultLeg(ABC):
    """One transfer's consult room and the human dialed into it."""

    def __init__(self, request: DialRequest):
        self.request = request
        self._on_human_left: HumanLeftHandler | None = None
        self._on_ringing: RingingHandler | None = None
        self._rang = False
        self._moved = False
        self._closed = False

    @property
    def moved(self) -> bool:
        """Whether the human was moved to the caller's room."""
        return self._moved

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._closed

    @property
    def room_name(self) -> str:
        """The consult room's name."""
        return self.request.consult_room

    @property
    def human_identity(self) -> str:
        """The human's participant identity."""
        return self.request.human_identity

    def on_human_left(self, handler: HumanLeftHandler) -> None:
        """Register the coroutine called with a reason when the human hangs up."""
        self._on_human_left = handler

    async def _notify_human_left(self, reason: str) -> None:
        if self._on_human_left is not None:
            await self._on_human_left(reason)

    def on_ringing(self, handler: RingingHandler) -> None:
        """Register the coroutine called once when the human's phone starts ringing."""
        self._on_ringing = handler

    async def _notify_ringing(self) -> None:
        if self._rang:
            return
        self._rang = True
        if self._on_ringing is not None:
            await self._on_ringing()

    @property
    def dial_timeout(self) -> float:
        """Seconds the core lets `dial()` run before it gives up on it.

        A leg whose server decides when ringing ends bounds its own dial, and reports a
        longer bound here so that the server's answer (and its reason) always wins.
        """
        return max(0.0, float(self.request.ring_timeout)) + DEFAULT_DIAL_MARGIN_SECS

    @property
    @abstractmethod
    def transport(self) -> BaseTransport:
        """The Pipecat transport on the consult room (the briefing pipeline's ends)."""

    async def open_transport(self) -> BaseTransport:
        """Make the consult room ready for the bot and return its transport.

        Called before `dial()`. The transport connects when the briefing pipeline starts
        on it, so the bot is in the room before the human's phone rings. A leg whose
        room must exist before anyone joins creates it here.
        """
        return self.transport

    @abstractmethod
    async def dial(self) -> None:
        """Place the call and return once the human answered.

        Raises:
            DialError: The call was not answered (busy, no answer, declined, failed).
        """

    @abstractmethod
    async def move_to(self, caller_room: str) -> None:
        """Move the human into the caller's room.

        Raises:
            MoveUnsupportedError: The server cannot move participants.
            ConnectError: The move failed.
        """

    async def find_sip_caller(self, caller_room: str, caller_identity: str | None) -> str:
        """The caller's identity, once checked to be a SIP call the server can refer.

        Called before the human is hung up, so a caller that cannot be referred (a WebRTC
        caller) leaves the human on the line.

        Args:
            caller_room: The caller's room.
            caller_identity: The caller's identity (None: the room's one SIP participant).

        Raises:
            ReferUnsupportedError: No such SIP caller, or this leg cannot refer.
        """
        raise ReferUnsupportedError(f"{type(self).__name__} cannot refer a call")

    async def refer_caller(self, caller_room: str, caller_identity: str, to: str) -> None:
        """Have the caller's carrier transfer the caller's call to `to` (SIP REFER).

        Returns once the human answered; the caller's call then leaves `caller_room`.

        Args:
            caller_room: The caller's room.
            caller_identity: The caller's SIP participant (from `find_sip_caller`).
            to: The human's number or `sip:`/`tel:` URI.

        Raises:
            ReferUnsupportedError: The call cannot be referred.
            ReferError: The carrier refused the REFER or the human's line failed.
            ConnectError: The request failed otherwise.
        """
        raise ReferUnsupportedError(f"{type(self).__name__} cannot refer a call")

    @abstractmethod
    async def hang_up(self) -> None:
        """Hang the human up (remove the SIP participant). Idempotent."""

    @abstractmethod
    async def close(self) -> None:
        """Tear the leg down: hang up unless moved, disconnect, delete the room.

        Idempotent and never raises: teardown errors are logged.
        """


class TransferBackend(ABC):
    """Opens consult legs (LiveKit SIP in production, in-memory rooms in tests)."""

    #: Whether `move` is possible at all (False: `auto` goes straight to `bridge`).
    supports_move: bool = True

    @abstractmethod
    async def open_leg(self, request: DialRequest) -> ConsultLeg:
        """Create the consult leg for one transfer (no call is placed yet)."""

    def check_target(self, target: TransferTarget) -> None:  # noqa: B027 - optional hook
        """Refuse a target this backend cannot dial (called before any call is placed).

        Raises:
            TransferConfigError: One line naming the missing or invalid setting.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Release backend-wide resources (HTTP sessions). Idempotent."""
