#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Transfer backends: how the core reaches the human (LiveKit SIP, in-memory)."""

from pipecat_warm_transfer.backends.livekit import (
    LiveKitConsultLeg,
    LiveKitSipBackend,
    TransportFactory,
    default_consult_params,
    livekit_transport_factory,
)
from pipecat_warm_transfer.consult_leg import (
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
    "LiveKitConsultLeg",
    "LiveKitSipBackend",
    "TransportFactory",
    "default_consult_params",
    "livekit_transport_factory",
    "ConnectError",
    "ConsultLeg",
    "DialError",
    "DialRequest",
    "MoveUnsupportedError",
    "TransferBackend",
    "TransferConfigError",
    "TransferTarget",
]
