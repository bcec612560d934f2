#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Transfer backends: how the core reaches the human (LiveKit SIP, in-memory)."""

from pipecat_warm_transfer.backends.base import (
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    MoveUnsupportedError,
    TransferBackend,
    TransferConfigError,
    TransferTarget,
)

__all__ = [
    "ConnectError",
    "ConsultLeg",
    "DialError",
    "DialRequest",
    "MoveUnsupportedError",
    "TransferBackend",
    "TransferConfigError",
    "TransferTarget",
]
