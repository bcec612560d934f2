#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The offline world for tests and the demo: LiveKit emulator, in-memory rooms, scripted people.

What your own CI can test your bot with:

- `LiveKitEmulator`: LiveKit's server API (SIP + room service) on loopback, in memory.
- `MemoryRoomServer`: rooms, connections and the room service (move, remove, delete),
  with `leftovers()` counting what is still open.
- `MemoryTransport`: a Pipecat transport on a memory room, with LiveKit's events.
- `ScriptedParty`: a phone user that talks on cue and records what it hears.
- `HumanScript` and `InMemoryBackend`: scripted humans behind a `TransferBackend`.
- `ScriptedSTTService`, `ScriptedLLMService`, `ScriptedToneTTSService`: scripted services.
- `PipelineRun` and `FrameCapture`: run a pipeline in the background, record its frames.
- `LeakWatch`: what each transfer left behind, counted when it says it is torn down.
- `OfflineCall`: a scripted caller into your own bot's pipeline on a `LiveKitEmulator`;
  the pytest fixtures `livekit_emulator`, `scripted_humans` and `offline_call`
  (`pipecat_warm_transfer.testing.pytest_plugin`) make one for each test.

The drivers of this project's own test campaigns (the call harness, the fault suite, the
soak and their listening checks) live in `pipecat_warm_transfer.testing.drivers`.
`CallHarness`, `CallReport` and `fast_params` are still importable from here, loaded on
first use: importing the world does not import the drivers.
"""

import importlib

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
from pipecat_warm_transfer.testing.offline_call import OfflineCall
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
    "OfflineCall",
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

#: Drivers still exported here, by name, with the module each is loaded from on first use.
_DRIVERS = {
    "CallHarness": "pipecat_warm_transfer.testing.drivers.call_harness",
    "CallReport": "pipecat_warm_transfer.testing.drivers.call_harness",
    "fast_params": "pipecat_warm_transfer.testing.drivers.call_harness",
}


def __getattr__(name: str):
    """Load a driver exported by this package on first use."""
    module = _DRIVERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_DRIVERS))
