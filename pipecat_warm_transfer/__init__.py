#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Warm transfer from a Pipecat voice bot to a human over LiveKit SIP.

The public names are imported on first use (PEP 562): importing the package, or its
`pipecat-warm-transfer` command, does not import Pipecat. So the command can set up
logging before Pipecat's import-time banner, and `--version` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipecat_warm_transfer.audio import (
        HoldMusicError,
        HoldMusicLink,
        HoldMusicMixer,
        MixerStartAfterSpeechFrame,
        SharedHoldEngine,
    )
    from pipecat_warm_transfer.availability import BusinessHours
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
    from pipecat_warm_transfer.callback import CallbackCollector, CallbackRequest
    from pipecat_warm_transfer.consult_leg import ReferError
    from pipecat_warm_transfer.frames import (
        TransferEventFrame,
        TransferRequestFrame,
        TransferResultFrame,
        TransferStateFrame,
        TransferTeardownFrame,
    )
    from pipecat_warm_transfer.params import BriefingParams, WarmTransferParams
    from pipecat_warm_transfer.processors import CallerGate, CallerOutput
    from pipecat_warm_transfer.ring_group import RingGroup
    from pipecat_warm_transfer.types import (
        ConnectMode,
        FailureReason,
        TargetAttempt,
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
    "BusinessHours",
    "CallbackCollector",
    "CallbackRequest",
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
    "ReferError",
    "RingGroup",
    "SharedHoldEngine",
    "TargetAttempt",
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

#: Where each public name lives, imported by `__getattr__` the first time it is asked for.
_EXPORTS = {
    "BriefingDecision": "pipecat_warm_transfer.briefing",
    "BriefingParams": "pipecat_warm_transfer.params",
    "BriefingSession": "pipecat_warm_transfer.briefing",
    "BusinessHours": "pipecat_warm_transfer.availability",
    "CallbackCollector": "pipecat_warm_transfer.callback",
    "CallbackRequest": "pipecat_warm_transfer.callback",
    "CallerGate": "pipecat_warm_transfer.processors",
    "CallerOutput": "pipecat_warm_transfer.processors",
    "ConnectError": "pipecat_warm_transfer.backends",
    "ConnectMode": "pipecat_warm_transfer.types",
    "ConsultLeg": "pipecat_warm_transfer.backends",
    "DialError": "pipecat_warm_transfer.backends",
    "DialRequest": "pipecat_warm_transfer.backends",
    "FailureReason": "pipecat_warm_transfer.types",
    "HoldMusicError": "pipecat_warm_transfer.audio",
    "HoldMusicLink": "pipecat_warm_transfer.audio",
    "HoldMusicMixer": "pipecat_warm_transfer.audio",
    "LiveKitSipBackend": "pipecat_warm_transfer.backends",
    "MixerStartAfterSpeechFrame": "pipecat_warm_transfer.audio",
    "MoveUnsupportedError": "pipecat_warm_transfer.backends",
    "ReferError": "pipecat_warm_transfer.consult_leg",
    "RingGroup": "pipecat_warm_transfer.ring_group",
    "SharedHoldEngine": "pipecat_warm_transfer.audio",
    "TargetAttempt": "pipecat_warm_transfer.types",
    "TransferBackend": "pipecat_warm_transfer.backends",
    "TransferConfigError": "pipecat_warm_transfer.backends",
    "TransferEventFrame": "pipecat_warm_transfer.frames",
    "TransferOutcome": "pipecat_warm_transfer.types",
    "TransferRequestFrame": "pipecat_warm_transfer.frames",
    "TransferResult": "pipecat_warm_transfer.types",
    "TransferResultFrame": "pipecat_warm_transfer.frames",
    "TransferState": "pipecat_warm_transfer.types",
    "TransferStateFrame": "pipecat_warm_transfer.frames",
    "TransferTarget": "pipecat_warm_transfer.backends",
    "TransferTeardownFrame": "pipecat_warm_transfer.frames",
    "TransferTimings": "pipecat_warm_transfer.types",
    "WarmTransfer": "pipecat_warm_transfer.warm_transfer",
    "WarmTransferParams": "pipecat_warm_transfer.params",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
