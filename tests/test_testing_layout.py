"""`pipecat_warm_transfer.testing`: the offline world apart from this project's test drivers."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: `testing.__all__` before the drivers moved to `testing.drivers`: outside code uses them.
EXPORTED = {
    "NO_LEAKS", "LeakWatch", "LiveKitEmulator", "default_humans", "serve_forever",
    "CallHarness", "CallReport", "ScriptedLLMService", "ScriptedReply", "ScriptedSTTService",
    "ScriptedToneTTSService", "fast_params", "AudioReceived", "ConnectionClosedError",
    "Disconnected", "DtmfReceived", "FrameCapture", "HumanScript", "InMemoryBackend",
    "InMemoryLeg", "MemoryConnection", "MemoryInputTransport", "MemoryOutputTransport",
    "MemoryRoom", "MemoryRoomError", "MemoryRoomServer", "MemoryTransport",
    "ParticipantAttributesChanged", "ParticipantJoined", "ParticipantLeft", "PipelineRun",
    "RoomMoved", "ScriptedParty", "default_transport_params", "silence", "tone",
}  # fmt: skip


def python(code: str) -> str:
    run = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_every_name_exported_before_the_split_still_is():
    import pipecat_warm_transfer.testing as testing
    from pipecat_warm_transfer.testing.drivers import call_harness

    assert EXPORTED <= set(testing.__all__)
    for name in EXPORTED:
        assert getattr(testing, name) is not None, name
    assert testing.CallHarness is call_harness.CallHarness
    assert "CallHarness" in dir(testing)


def test_the_world_imports_without_the_drivers():
    code = (
        "import sys, pipecat_warm_transfer.testing as t;"
        "from pipecat_warm_transfer.testing.offline_call import OfflineCall;"
        "print(sorted(m for m in sys.modules if '.drivers' in m));"
        "t.fast_params;"
        "print(sorted(m for m in sys.modules if '.drivers' in m))"
    )
    before, after = python(code).splitlines()
    assert before == "[]"
    assert "pipecat_warm_transfer.testing.drivers.call_harness" in after
