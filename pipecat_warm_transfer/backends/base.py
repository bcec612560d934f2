#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The leg protocol, re-exported where backends used to find it.

It lives in the core now (`pipecat_warm_transfer.consult_leg`): backends depend on the
core, never the reverse.
"""

from pipecat_warm_transfer.consult_leg import (
    DEFAULT_DIAL_MARGIN_SECS,
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    HumanLeftHandler,
    MoveUnsupportedError,
    RingingHandler,
    TransferBackend,
    TransferConfigError,
    TransferTarget,
    validate_destination,
    validate_headers,
)

__all__ = [
    "DEFAULT_DIAL_MARGIN_SECS",
    "ConnectError",
    "ConsultLeg",
    "DialError",
    "DialRequest",
    "HumanLeftHandler",
    "MoveUnsupportedError",
    "RingingHandler",
    "TransferBackend",
    "TransferConfigError",
    "TransferTarget",
    "validate_destination",
    "validate_headers",
]
