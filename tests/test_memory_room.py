"""MemoryRoomServer, MemoryConnection and ScriptedParty: delivery, limits, room service."""

import asyncio

import numpy as np
import pytest

from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs
from pipecat_warm_transfer.testing import (
    AudioReceived,
    ConnectionClosedError,
    Disconnected,
    DtmfReceived,
    MemoryRoomError,
    MemoryRoomServer,
    ParticipantJoined,
    ParticipantLeft,
    RoomMoved,
    ScriptedParty,
    tone,
)

ZERO = {"rooms": 0, "participants": 0, "connections": 0}


@pytest.fixture
async def server():
    before = asyncio.all_tasks()
    server = MemoryRoomServer()
    yield server
    await asyncio.sleep(0)
    assert server.leftovers() == ZERO
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    assert not left, left


def drain(connection):
    """Every event already queued (no waiting)."""
    events = []
    while True:
        event = connection._inbox.get_nowait()
        if event is None:
            return events
        events.append(event)


def secs(samples, rate, start, end):
    return samples[int(start * rate) : int(end * rate)]


async def test_audio_goes_to_others_tagged_and_resampled(server):
    alice = server.connect("r", "alice", sample_rate=16000)
    bob = server.connect("r", "bob", kind="sip", sample_rate=8000)
    assert drain(alice) == [ParticipantJoined("bob", "sip", "joined")]
    assert drain(bob) == [ParticipantJoined("alice", "standard", "present")]

    clip = tone(1000, 0.5, 16000, -20)
    for i in range(0, len(clip), 640):
        assert alice.publish_audio(clip[i : i + 640], 16000)
    got = []
    while bob.queued_audio_secs > 0:
        event = await bob.recv()
        assert isinstance(event, AudioReceived)
        assert event.identity == "alice" and event.sample_rate == 8000
        got.append(event.audio)
    audio = np.frombuffer(b"".join(got), dtype=np.int16)
    assert 3600 < audio.size <= 4000  # 0.5 s at 8 kHz, less what the resampler holds back
    steady = audio[400:-400]
    assert abs(dominant_frequency(steady, 8000) - 1000) < 5
    assert abs(rms_dbfs(steady) + 20) < 0.5
    assert drain(alice) == []  # nothing echoes back to the publisher

    alice.disconnect()
    bob.disconnect()
    server.delete_room("r")


async def test_inbox_is_bounded_and_never_blocks(server):
    small = MemoryRoomServer(max_audio_secs=1.0, max_events=5)
    pub = small.connect("r", "pub")
    sub = small.connect("r", "sub")
    frame = bytes(640)  # 20 ms at 16 kHz
    for _ in range(250):  # 5 s of audio, nobody reading
        assert pub.publish_audio(frame, 16000)
    assert sub.queued_audio_secs <= 1.0 + 1e-6
    assert sub.dropped_audio_frames == 200
    assert sub.dropped_audio_secs == pytest.approx(4.0)
    for _ in range(20):
        pub.send_dtmf("1")
    assert sub.dropped_events == 15 + 1  # the "pub joined" event went first
    assert len(sub._inbox) == 50 + 5
    small.close()
    assert small.leftovers() == ZERO


async def test_dtmf_and_disconnect_events(server):
    a = server.connect("r", "a")
    b = server.connect("r", "b")
    drain(a)
    drain(b)
    assert a.send_dtmf("#")
    with pytest.raises(ValueError):
        a.send_dtmf("x")
    assert await b.recv() == DtmfReceived("a", "#")

    a.disconnect()
    a.disconnect()  # idempotent
    assert not a.publish_audio(bytes(320), 16000)
    assert await b.recv() == ParticipantLeft("a", "standard", "disconnected")
    assert await a.recv() == Disconnected("client_initiated")
    with pytest.raises(ConnectionClosedError):
        await a.recv()
    assert server.leftovers() == {"rooms": 1, "participants": 1, "connections": 1}
    assert server.delete_room("r")
    assert [e async for e in b.events()] == [Disconnected("room_deleted")]
    assert not server.delete_room("r")  # a missing room is not an error


async def test_move_remove_and_delete(server):
    human = server.connect("consult", "human", kind="sip")
    bot = server.connect("consult", "bot")
    caller = server.connect("call", "caller")
    for c in (human, bot, caller):
        drain(c)

    server.move_participant("human", "consult", "call")
    assert human.room_name == "call"
    assert drain(bot) == [ParticipantLeft("human", "sip", "moved")]
    assert drain(caller) == [ParticipantJoined("human", "sip", "moved")]
    assert drain(human) == [
        RoomMoved("consult", "call"),
        ParticipantLeft("bot", "standard", "moved"),
        ParticipantJoined("caller", "standard", "present"),
    ]
    human.publish_audio(bytes(320), 8000)
    assert drain(bot) == []
    assert [type(e) for e in drain(caller)] == [AudioReceived]
    assert server.get_room("call").participants == ["caller", "human"]

    with pytest.raises(MemoryRoomError):
        server.move_participant("nobody", "call", "consult")
    with pytest.raises(MemoryRoomError):
        server.remove_participant("nowhere", "human")

    server.remove_participant("call", "human")
    assert drain(caller) == [ParticipantLeft("human", "sip", "removed")]
    assert drain(human) == [Disconnected("removed")]
    assert server.leftovers() == {"rooms": 2, "participants": 2, "connections": 2}

    assert sorted(server.list_rooms()) == ["call", "consult"]
    server.delete_room("consult")
    server.delete_room("call")
    assert drain(bot) == [Disconnected("room_deleted")]
    assert drain(caller) == [Disconnected("room_deleted")]


async def test_duplicate_identity_and_independent_servers(server):
    other = MemoryRoomServer(auto_delete_empty=True)
    first = server.connect("r", "same")
    watcher = server.connect("r", "watcher")
    drain(watcher)
    second = server.connect("r", "same")
    assert first.disconnect_reason == "duplicate_identity" and second.connected
    assert drain(watcher) == [
        ParticipantLeft("same", "standard", "duplicate_identity"),
        ParticipantJoined("same", "standard", "joined"),
    ]
    lone = other.connect("r", "same")
    assert other.leftovers() == {"rooms": 1, "participants": 1, "connections": 1}
    assert server.leftovers() == {"rooms": 1, "participants": 2, "connections": 2}
    lone.disconnect()
    assert other.leftovers() == ZERO  # auto_delete_empty
    server.delete_room("r")


async def test_scripted_parties_talk_dtmf_and_hang_up(server):
    rate = 16000
    t0 = asyncio.get_running_loop().time()
    alice = ScriptedParty(server, "r", "alice", sample_rate=rate, t0=t0)
    bob = ScriptedParty(server, "r", "bob", sample_rate=8000, t0=t0, kind="sip")
    alice.say(0.2, tone(500, 0.4, rate, -18)).dtmf(0.7, "7").hang_up(0.9)
    bob.say(0.1, tone(700, 0.3, 8000, -24))
    await bob.start()
    await alice.start()
    async with asyncio.timeout(3):
        assert await alice.wait_ended() == "hung_up"
    await asyncio.sleep(0.05)

    heard = bob.heard_from("alice")
    assert 0.85 * 8000 < heard.size < 0.97 * 8000  # a live stream until the hang-up
    assert rms_dbfs(secs(heard, 8000, 0.0, 0.19)) < -80  # silence frames before the clip
    assert abs(rms_dbfs(secs(heard, 8000, 0.25, 0.55)) + 18) < 1.0
    assert abs(dominant_frequency(secs(heard, 8000, 0.25, 0.55), 8000) - 500) < 3
    assert rms_dbfs(secs(heard, 8000, 0.7, 0.85)) < -80
    # The clip starts where it was scheduled (one frame of tolerance).
    levels = [rms_dbfs(secs(heard, 8000, t, t + 0.01)) for t in np.arange(0.15, 0.26, 0.01)]
    onset = 0.15 + 0.01 * next(i for i, level in enumerate(levels) if level > -40)
    assert 0.18 <= onset <= 0.26  # plus the resampler's delay (about 37 ms)

    assert [(round(t, 1), who, d) for t, who, d in bob.dtmf_heard] == [(0.7, "alice", "7")]
    assert any(
        isinstance(e, ParticipantLeft) and e.identity == "alice" and e.reason == "disconnected"
        for _, e in bob.events
    )
    mine = alice.heard_from("bob")
    assert abs(dominant_frequency(secs(mine, rate, 0.12, 0.38), rate) - 700) < 3
    assert abs(rms_dbfs(secs(mine, rate, 0.12, 0.38)) + 24) < 1.0

    await alice.close()
    await bob.close()
    assert bob.end_reason == "closed"
    server.delete_room("r")


async def test_party_mixes_publishers_with_saturation(server):
    rate = 8000
    t0 = asyncio.get_running_loop().time()
    listener = ScriptedParty(server, "r", "listener", sample_rate=rate, t0=t0)
    loud = np.full(int(0.3 * rate), 30000, dtype=np.int16).tobytes()
    a = ScriptedParty(server, "r", "a", sample_rate=rate, t0=t0).say(0.1, loud)
    b = ScriptedParty(server, "r", "b", sample_rate=rate, t0=t0).say(0.1, loud)
    for party in (listener, a, b):
        await party.start()
    async with asyncio.timeout(2):
        await a.wait_idle()
        await b.wait_idle()
    await asyncio.sleep(0.1)
    mixed = secs(listener.recording(), rate, 0.15, 0.35)
    assert mixed.min() == 32767  # 30000 + 30000 saturates instead of wrapping
    assert sorted(listener.heard_identities()) == ["a", "b"]
    for party in (listener, a, b):
        await party.close()
    assert server.get_room("r").participants == []
    server.delete_room("r")


def test_tone_level_and_pitch():
    clip = np.frombuffer(tone(440, 1.0, 16000, -12), dtype=np.int16)
    assert clip.size == 16000
    assert abs(rms_dbfs(clip) + 12) < 0.05
    assert abs(dominant_frequency(clip, 16000) - 440) < 0.5
