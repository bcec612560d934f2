"""LiveKitEmulator read by a second official client: LiveKit's Node server SDK.

`tests/node_client/probe.mjs` runs `livekit-server-sdk` 2.19.2 (pinned in
`tests/node_client/package-lock.json`) against two emulators, a cloud one and an open-source
one, and prints what the SDK observed in each scenario. This project did not write that
client, so what it reads back (error classes, Twirp codes, HTTP statuses, messages, metadata,
decoded answers) is an independent check that the emulator answers as LiveKit's server does.

The SDK is installed with `npm ci` (the Makefile does it when npm is there; otherwise the
first test here does). Without Node.js the module is skipped.
"""

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from livekit.protocol import sip
from protobuf_wire import proto_fields

from pipecat_warm_transfer.testing import HumanScript
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator

if shutil.which("node") is None:
    pytest.skip(
        "Node.js is not installed: the official Node SDK check needs it", allow_module_level=True
    )

# npm ci may take minutes on a cold cache; the probe itself takes about 2 s.
pytestmark = pytest.mark.timeout(420)

NODE_CLIENT = Path(__file__).parent / "node_client"
PROBE = NODE_CLIENT / "probe.mjs"
SDK_VERSION = "2.19.2"
NPM_CI_SECS = 300
PROBE_SECS = 60

KEY = "APInodeprobekey"
SECRET = "node-probe-secret-0123456789abcdef0123"
# The trunk and numbers probe.mjs dials.
TRUNK = "ST_node_trunk"
ANSWERS, BUSY, NO_ANSWER = "+15550100", "+15550101", "+15550102"

SCENARIOS = {
    "dial_answered",
    "list_participants",
    "dial_busy",
    "dial_ring_out",
    "dial_unknown_trunk",
    "delete_missing_room",
    "move_participant_cloud",
    "list_participants_after_move",
    "delete_room",
    "list_participants_deleted_room",
    "wrong_secret_list_participants",
    "wrong_secret_dial",
    "unknown_api_key",
    "no_grant_list_participants",
    "no_grant_dial",
    "oss_dial_async",
    "oss_move_participant",
}
LIVEKIT_ID = r"[23456789A-HJ-NP-Za-km-z]{12}"  # guid.New: 12 shortuuid (base57) characters
BAD_SIGNATURE = "invalid authorization token: token signature is invalid: signature is invalid"


def _error(
    name, code, status, message, *, class_name="ServerError", metadata=None, sip_status=None
):
    """What probe.mjs records for an error (JSON null where the SDK has undefined)."""
    return {
        "className": class_name,
        "name": name,
        "isServerError": True,
        "isSipCallError": class_name == "SipCallError",
        "code": code,
        "codeType": "undefined" if code is None else "string",
        "status": status,
        "message": message,
        "metadata": metadata,
        "sipStatusCode": sip_status[0] if sip_status else None,
        "sipStatus": sip_status[1] if sip_status else None,
    }


# Installing the SDK


def _sdk_installed() -> bool:
    manifest = NODE_CLIENT / "node_modules" / "livekit-server-sdk" / "package.json"
    try:
        return json.loads(manifest.read_text())["version"] == SDK_VERSION
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _install_lock():
    """Hold an exclusive lock on tests/node_client (pytest-xdist workers install once)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no parallel-install guard
        yield
        return
    fd = os.open(NODE_CLIENT, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@pytest.fixture(scope="module")
def node_sdk():
    """Make sure `tests/node_client/node_modules` holds the pinned SDK (`npm ci` if not)."""
    if _sdk_installed():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(
            f"livekit-server-sdk {SDK_VERSION} is not installed in {NODE_CLIENT} and npm is not "
            "on PATH: install npm, or run `npm ci --prefix tests/node_client`"
        )
    with _install_lock():
        if _sdk_installed():  # another worker installed it while we waited
            return
        command = [npm, "ci", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                command, cwd=NODE_CLIENT, capture_output=True, text=True, timeout=NPM_CI_SECS
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`npm ci` in {NODE_CLIENT} took more than {NPM_CI_SECS} s")
        if done.returncode != 0 or not _sdk_installed():
            pytest.fail(
                f"`npm ci` in {NODE_CLIENT} failed (exit {done.returncode}), so the official "
                f"Node SDK check cannot run:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )


# Running the probe


def _humans() -> dict[str, HumanScript]:
    return {
        ANSWERS: HumanScript(answer_after=0.05),
        BUSY: HumanScript(outcome="busy", answer_after=0.05),
        NO_ANSWER: HumanScript(outcome="no_answer"),
    }


async def _run_probe() -> dict:
    async with (
        LiveKitEmulator(KEY, SECRET, humans=_humans(), trunks=[TRUNK]) as cloud,
        LiveKitEmulator(KEY, SECRET, oss=True, humans=_humans(), trunks=[TRUNK]) as oss,
    ):
        env = dict(
            os.environ,
            LIVEKIT_URL=cloud.url,
            LIVEKIT_OSS_URL=oss.url,
            LIVEKIT_API_KEY=KEY,
            LIVEKIT_API_SECRET=SECRET,
        )
        started = time.time()
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(PROBE),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), PROBE_SECS)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail(f"probe.mjs did not finish within {PROBE_SECS} s")
        finished = time.time()
        cloud_left, _ = await cloud.settle(), await oss.settle()
        if proc.returncode != 0:
            pytest.fail(f"probe.mjs exited {proc.returncode}:\n{stderr.decode()[-4000:]}")
        return {
            "observed": json.loads(stdout),
            "window": (started, finished),
            "cloud": {
                "requests": list(cloud.requests),
                "grants": list(cloud.request_grants),
                "calls": [(c.call_id, c.outcome, c.sip_status) for c in cloud.calls],
                "ringing": cloud.ringing(),
                "participants": cloud_left["participants"],
                "http_connections": cloud.http_connections(),
            },
            "oss": {
                "requests": list(oss.requests),
                "calls": [(c.call_id, c.outcome, c.sip_status) for c in oss.calls],
                "http_connections": oss.http_connections(),
            },
        }


@pytest.fixture(scope="module")
def run(node_sdk) -> dict:
    """Both emulators and one probe run, shared by this module's tests."""
    return asyncio.run(_run_probe())


@pytest.fixture(scope="module")
def seen(run) -> dict:
    """The probe's observations by scenario."""
    return run["observed"]["scenarios"]


# The client


def test_probe_ran_the_pinned_sdk_through_every_scenario(run):
    observed = run["observed"]
    assert observed["sdkVersion"] == SDK_VERSION
    assert int(observed["node"].lstrip("v").split(".")[0]) >= 19
    assert set(observed["scenarios"]) == SCENARIOS


def test_emulator_decoded_the_sdk_json_requests(run):
    requests = run["cloud"]["requests"]
    # Requests the auth middleware refused (bad secret, unknown key) carry no decoded fields.
    decoded = [(name, fields) for name, fields, _ in requests if fields]
    assert [name for name, _ in decoded] == [
        "CreateSIPParticipant",  # answered
        "ListParticipants",
        "CreateSIPParticipant",  # busy
        "CreateSIPParticipant",  # ring-out
        "CreateSIPParticipant",  # unknown trunk
        "DeleteRoom",  # missing room
        "MoveParticipant",
        "ListParticipants",
        "DeleteRoom",
        "ListParticipants",
        "ListParticipants",  # no grant
        "CreateSIPParticipant",  # no grant
    ]
    _, fields, headers = requests[0]
    assert fields == {
        "sip_trunk_id": TRUNK,
        "sip_call_to": ANSWERS,
        "room_name": "node-room",
        "participant_identity": "node-human",
        "ringing_timeout": "1s",
        "wait_until_answered": True,
    }
    assert headers["Content-Type"] == "application/json;charset=UTF-8"
    assert headers["User-Agent"] == f"livekit-server-sdk-node/{SDK_VERSION}"
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}",
        headers["X-Livekit-Request-Id"],
    )
    assert decoded[6][1] == {
        "room": "node-room",
        "identity": "node-human",
        "destination_room": "node-room-2",
    }
    [(_, oss_dial, _), (_, oss_move, _)] = run["oss"]["requests"]
    assert oss_dial == {
        "sip_trunk_id": TRUNK,
        "sip_call_to": ANSWERS,
        "room_name": "node-oss-room",
        "participant_identity": "node-oss-human",
    }
    assert oss_move == {
        "room": "node-oss-room",
        "identity": "node-oss-human",
        "destination_room": "node-oss-other-room",
    }


def test_emulator_saw_the_sdk_grants(run):
    grants = {}
    for method, granted in run["cloud"]["grants"]:
        grants.setdefault(method, granted)  # the first call of each method
    assert grants["CreateSIPParticipant"]["sip"] == {"call": True}
    assert grants["ListParticipants"]["video"]["room_admin"] is True
    assert grants["ListParticipants"]["video"]["room"] == "node-room"
    move = grants["MoveParticipant"]["video"]
    assert (move["room_admin"], move["room"], move["destination_room"]) == (
        True,
        "node-room",
        "node-room-2",
    )


# CreateSIPParticipant


def test_answered_dial_returns_the_participant(run, seen):
    answered = seen["dial_answered"]
    assert answered["ok"] is True
    info = answered["result"]
    assert info["className"] == "SIPParticipantInfo"
    assert re.fullmatch("PA_" + LIVEKIT_ID, info["participantId"])
    assert info["participantIdentity"] == "node-human"
    assert info["roomName"] == "node-room"
    assert re.fullmatch("SCL_" + LIVEKIT_ID, info["sipCallId"])
    # The SDK pins the ring window it sent and waits 2 s longer than it.
    assert info["optsAfter"] == {"ringingTimeout": 1, "timeout": 3}
    assert run["cloud"]["calls"][0] == (info["sipCallId"], "answered", None)


def test_list_participants_shows_the_sip_participant(run, seen):
    listed = seen["list_participants"]
    assert listed["ok"] is True
    [participant] = listed["result"]
    info = seen["dial_answered"]["result"]
    attributes = participant.pop("attributes")
    joined_at, joined_at_ms = int(participant.pop("joinedAt")), int(participant.pop("joinedAtMs"))
    assert participant == {
        "sid": info["participantId"],
        "identity": "node-human",
        "name": "",
        "metadata": "",
        "kind": "SIP",
        "state": "ACTIVE",
    }
    call_tag, call_id_full = attributes.pop("sip.callTag"), attributes.pop("sip.callIDFull")
    assert attributes == {
        "sip.callStatus": "active",
        "sip.callID": info["sipCallId"],
        "sip.trunkID": TRUNK,
        "sip.phoneNumber": ANSWERS,
        "sip.hostname": "sip.offline.test",
        "sip.trunkPhoneNumber": "+15550199",
    }
    assert re.fullmatch(r"[0-9a-f]{8}", call_tag)
    assert re.fullmatch(r"[0-9A-Za-z]{20,28}", call_id_full)
    started, finished = run["window"]
    assert started - 1 <= joined_at_ms / 1000 <= finished + 1
    assert joined_at == joined_at_ms // 1000


def test_busy_is_a_sip_call_error(run, seen):
    busy = seen["dial_busy"]
    assert busy["ok"] is False
    error = busy["error"]
    details = error["metadata"]["error_details"]
    assert error == _error(
        "SipCallError",
        "resource_exhausted",
        429,
        "SIP call failed: 486 Busy Here (resource_exhausted)",
        class_name="SipCallError",
        metadata={"error_details": details, "sip_status": "Busy Here", "sip_status_code": "486"},
        sip_status=(486, "Busy Here"),
    )
    # google.rpc.Status{code: 8 RESOURCE_EXHAUSTED, message, details: [Any(livekit.SIPStatus)]}
    status = dict(proto_fields(base64.b64decode(details)))
    assert status[1] == 8
    assert status[2] == b"INVITE failed: sip status: 486: Busy Here"
    detail = dict(proto_fields(status[3]))
    assert detail[1] == b"type.googleapis.com/livekit.SIPStatus"
    assert sip.SIPStatus.FromString(detail[2]) == sip.SIPStatus(code=486, status="Busy Here")
    assert run["cloud"]["calls"][1][1:] == ("failed", 486)


def test_livekit_ring_out_is_canceled_not_a_sip_call_error(run, seen):
    ring_out = seen["dial_ring_out"]
    assert ring_out["ok"] is False
    assert ring_out["error"] == _error(
        "Request Timeout", "canceled", 408, "twirp error unknown: sip request timed out"
    )
    assert 950 <= ring_out["elapsedMs"] < 5000  # ringingTimeout: 1 s
    assert run["cloud"]["calls"][2][1:] == ("ringing_timeout", None)


def test_unknown_trunk_is_not_found(run, seen):
    unknown = seen["dial_unknown_trunk"]
    assert unknown["ok"] is False
    assert unknown["error"] == _error(
        "Not Found", "not_found", 404, "requested sip trunk does not exist"
    )
    assert len(run["cloud"]["calls"]) == 3  # nothing was dialed


# RoomService


def test_delete_missing_room_is_not_found(seen):
    missing = seen["delete_missing_room"]
    assert missing["ok"] is False
    assert missing["error"] == _error(
        "Not Found", "not_found", 404, "twirp error unknown: requested room does not exist"
    )


def test_empty_answers_parse_as_json(seen):
    # moveParticipant and deleteRoom return nothing, but the SDK parses every 2xx body.
    assert seen["move_participant_cloud"] == {
        "ok": True,
        "result": None,
        "elapsedMs": seen["move_participant_cloud"]["elapsedMs"],
    }
    assert seen["list_participants_after_move"]["result"] == ["node-human"]
    assert seen["delete_room"]["ok"] is True and seen["delete_room"]["result"] is None
    assert seen["list_participants_deleted_room"] == {
        "ok": True,
        "result": [],
        "elapsedMs": seen["list_participants_deleted_room"]["elapsedMs"],
    }


def test_move_participant_on_open_source_server_is_not_implemented(run, seen):
    dialed = seen["oss_dial_async"]
    assert dialed["ok"] is True
    assert dialed["result"]["participantIdentity"] == "node-oss-human"
    assert dialed["result"]["roomName"] == "node-oss-room"
    assert re.fullmatch("PA_" + LIVEKIT_ID, dialed["result"]["participantId"])
    assert re.fullmatch("SCL_" + LIVEKIT_ID, dialed["result"]["sipCallId"])
    assert run["oss"]["calls"][0][0] == dialed["result"]["sipCallId"]
    moved = seen["oss_move_participant"]
    assert moved["ok"] is False
    assert moved["error"] == _error(
        "Internal Server Error", "unknown", 500, "twirp error unknown: not implemented"
    )


# Authentication and grants


@pytest.mark.parametrize("scenario", ["wrong_secret_list_participants", "wrong_secret_dial"])
def test_wrong_secret_is_a_plain_text_401(seen, scenario):
    refused = seen[scenario]
    assert refused["ok"] is False
    assert refused["error"] == _error("Unauthorized", None, 401, BAD_SIGNATURE)


def test_unknown_api_key_is_a_plain_text_401(seen):
    refused = seen["unknown_api_key"]
    assert refused["ok"] is False
    assert refused["error"] == _error("Unauthorized", None, 401, "invalid API key")


@pytest.mark.parametrize("scenario", ["no_grant_list_participants", "no_grant_dial"])
def test_token_without_the_grant_is_unauthenticated(seen, scenario):
    refused = seen[scenario]
    assert refused["ok"] is False
    assert refused["error"] == _error("Unauthorized", "unauthenticated", 401, "permissions denied")


def test_nothing_left_ringing_or_connected(run):
    # Node's fetch keeps connections alive; they close when the probe exits.
    assert run["cloud"]["ringing"] == []
    assert run["cloud"]["participants"] == 0  # failed dials left, the answered one was deleted
    assert run["cloud"]["http_connections"] == 0
    assert run["oss"]["http_connections"] == 0
