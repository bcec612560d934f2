#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""`TransferHandle`: what `WarmTransfer.start_transfer()` returns.

Awaiting it yields the settled `TransferResult`, as awaiting LiveKit's `WarmTransferTask`
does; its truth says whether the transfer started at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

from pipecat_warm_transfer.types import TransferResult


class TransferHandle:
    """One requested transfer: truthy when it started; awaitable for its result.

    A refused request is falsy, says why in `refusal`, and awaits to None.
    """

    def __init__(self, *, refusal: str | None = None):
        """Initialize the handle.

        Args:
            refusal: Why the transfer did not start (None: it started).
        """
        self.refusal = refusal
        self._result: asyncio.Future[TransferResult | None] = (
            asyncio.get_running_loop().create_future()
        )
        if refusal is not None:
            self._result.set_result(None)

    def __bool__(self) -> bool:
        """Whether the transfer started."""
        return self.refusal is None

    def __await__(self) -> Generator[Any, None, TransferResult | None]:
        """Wait until the transfer settled: connected, or failed and the caller told."""
        return asyncio.shield(self._result).__await__()

    def done(self) -> bool:
        """Whether the result is in."""
        return self._result.done()

    def result(self) -> TransferResult | None:
        """The result (None while the transfer runs, or when it was refused)."""
        return self._result.result() if self._result.done() else None

    def settle(self, result: TransferResult | None) -> None:
        """Set the result (the first one wins); used by the controller."""
        if not self._result.done():
            self._result.set_result(result)

    def __repr__(self) -> str:
        state = "refused" if self.refusal else ("settled" if self.done() else "running")
        return f"TransferHandle({state})"
