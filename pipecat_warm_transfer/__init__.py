#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Warm transfer from a Pipecat voice bot to a human over LiveKit SIP."""

from pipecat_warm_transfer.audio import (
    HoldMusicError,
    HoldMusicLink,
    HoldMusicMixer,
    MixerStartAfterSpeechFrame,
    SharedHoldEngine,
)
from pipecat_warm_transfer.backends import (
    ConnectError,
    ConsultLeg,
    DialError,
    DialRequest,
    LiveKitSipBackend,
    MoveUnsupportedError,
    TransferBackend,
    TransferConfigError,
    TransferTarget,
)
from pipecat_warm_transfer.briefing import BriefingDecision, BriefingSession
from pipecat_warm_transfer.frames import (
    TransferEventFrame,
    TransferRequestFrame,
    TransferResultFrame,
    TransferStateFrame,
    TransferTeardownFrame,
)
from pipecat_warm_transfer.params import BriefingParams, WarmTransferParams
from pipecat_warm_transfer.processors import CallerGate, CallerOutput
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TransferOutcome,
    TransferResult,
    TransferState,
    TransferTimings,
)
from pipecat_warm_transfer.warm_transfer import WarmTransfer

__version__ = "0.1.0"

__all__ = [
    "BriefingDecision",
    "BriefingParams",
    "BriefingSession",
    "CallerGate",
    "CallerOutput",
    "ConnectError",
    "ConnectMode",
    "ConsultLeg",
    "DialError",
    "DialRequest",
    "FailureReason",
    "HoldMusicError",
    "HoldMusicLink",
    "HoldMusicMixer",
    "LiveKitSipBackend",
    "MixerStartAfterSpeechFrame",
    "MoveUnsupportedError",
    "SharedHoldEngine",
    "TransferBackend",
    "TransferConfigError",
    "TransferEventFrame",
    "TransferOutcome",
    "TransferRequestFrame",
    "TransferResult",
    "TransferResultFrame",
    "TransferState",
    "TransferStateFrame",
    "TransferTarget",
    "TransferTeardownFrame",
    "TransferTimings",
    "WarmTransfer",
    "WarmTransferParams",
    "__version__",
]
