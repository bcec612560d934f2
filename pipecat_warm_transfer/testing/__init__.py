#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The offline media world for tests and the demo: in-memory rooms, transport and humans.

- `MemoryRoomServer`: rooms, connections and the room service (move, remove, delete),
  with `leftovers()` counting what is still open.
- `MemoryTransport`: a Pipecat transport on a memory room, with LiveKit's events.
- `ScriptedParty`: a phone user that talks on cue and records what it hears.
- `HumanScript` and `InMemoryBackend`: scripted humans behind a `TransferBackend`.
- `PipelineRun` and `FrameCapture`: run a pipeline in the background, record its frames.
"""

from pipecat_warm_transfer.testing.call_harness import CallHarness, CallReport, fast_params
from pipecat_warm_transfer.testing.harness import FrameCapture, PipelineRun
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS, LeakWatch
from pipecat_warm_transfer.testing.livekit_emulator import (
    LiveKitEmulator,
    default_humans,
    serve_forever,
)
from pipecat_warm_transfer.testing.memory_backend import (
    InMemoryBackend,
    InMemoryLeg,
    default_transport_params,
)
from pipecat_warm_transfer.testing.memory_room import (
    AudioReceived,
    ConnectionClosedError,
    Disconnected,
    DtmfReceived,
    MemoryConnection,
    MemoryRoom,
    MemoryRoomError,
    MemoryRoomServer,
    ParticipantAttributesChanged,
    ParticipantJoined,
    ParticipantLeft,
    RoomMoved,
)
from pipecat_warm_transfer.testing.memory_transport import (
    MemoryInputTransport,
    MemoryOutputTransport,
    MemoryTransport,
)
from pipecat_warm_transfer.testing.scripted_party import (
    HumanScript,
    ScriptedParty,
    silence,
    tone,
)
from pipecat_warm_transfer.testing.scripted_services import (
    ScriptedLLMService,
    ScriptedReply,
    ScriptedSTTService,
)
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService

__all__ = [
    "NO_LEAKS",
    "LeakWatch",
    "LiveKitEmulator",
    "default_humans",
    "serve_forever",
    "CallHarness",
    "CallReport",
    "ScriptedLLMService",
    "ScriptedReply",
    "ScriptedSTTService",
    "ScriptedToneTTSService",
    "fast_params",
    "AudioReceived",
    "ConnectionClosedError",
    "Disconnected",
    "DtmfReceived",
    "FrameCapture",
    "HumanScript",
    "InMemoryBackend",
    "InMemoryLeg",
    "MemoryConnection",
    "MemoryInputTransport",
    "MemoryOutputTransport",
    "MemoryRoom",
    "MemoryRoomError",
    "MemoryRoomServer",
    "MemoryTransport",
    "ParticipantAttributesChanged",
    "ParticipantJoined",
    "ParticipantLeft",
    "PipelineRun",
    "RoomMoved",
    "ScriptedParty",
    "default_transport_params",
    "silence",
    "tone",
]
