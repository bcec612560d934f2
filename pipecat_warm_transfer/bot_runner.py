#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Compatibility: the runner's public names, from where they now live.

New code imports them from their modules:

- `pipecat_warm_transfer.runner.builder`: one call's bot from a YAML declaration
  (`BotCall`, `build_bot`, `hold_mixer`, `transport_params`, `run_call`).
- `pipecat_warm_transfer.runner.livekit_serving`: serving calls on LiveKit, the `run`
  command (`LiveKitAccess`, `livekit_call`, `run_livekit`). The polling helpers
  `waiting_sip_rooms` and `CONSULT_ROOM_PREFIX` are gone: LiveKit's agent dispatch
  assigns each call to one process.

The names here are the same objects, so patching one here does not change what the
runner calls: patch it in its own module (e.g. `livekit_serving.livekit_call`).
"""

from pipecat_warm_transfer.runner.builder import (
    CALLER_LEFT_GRACE_SECS,
    LIVEKIT_OUTPUT_QUEUE_MS,
    BotCall,
    build_bot,
    hold_mixer,
    run_call,
    transport_params,
)
from pipecat_warm_transfer.runner.livekit_serving import (
    SHUTDOWN_SECS,
    LiveKitAccess,
    livekit_call,
    run_livekit,
)

__all__ = [
    "CALLER_LEFT_GRACE_SECS",
    "LIVEKIT_OUTPUT_QUEUE_MS",
    "SHUTDOWN_SECS",
    "BotCall",
    "LiveKitAccess",
    "build_bot",
    "hold_mixer",
    "livekit_call",
    "run_call",
    "run_livekit",
    "transport_params",
]
