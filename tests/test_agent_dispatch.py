"""LiveKit's agent dispatch end to end: the real worker client against the emulator.

Two workers register over real WebSockets on 127.0.0.1; inbound SIP calls are dispatched
by a SIP dispatch rule naming the agent; each worker's calls join the caller's room with
the token LiveKit minted for the job.
"""

import asyncio
import collections

import pytest
from livekit.protocol import agent, agent_dispatch, models, room, sip

from pipecat_warm_transfer.runner.agent_worker import (
    AgentWorker,
    CallAssignment,
    WorkerOptions,
    agent_url,
)
from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator
from pipecat_warm_transfer.testing.memory_room import Disconnected, ParticipantLeft

AGENT = "acme-support"


def dispatch_rule(agent_name: str = AGENT) -> sip.SIPDispatchRuleInfo:
    return sip.SIPDispatchRuleInfo(
        name="inbound calls to the bot",
        rule=sip.SIPDispatchRule(
            dispatch_rule_individual=sip.SIPDispatchRuleIndividual(room_prefix="call")
        ),
        room_config=room.RoomConfiguration(
            agents=[agent_dispatch.RoomAgentDispatch(agent_name=agent_name)]
        ),
    )


class RoomCall:
    """A call body that joins the caller's room with the job's token and stays until the
    caller leaves (or it is stopped). It records what it saw."""

    def __init__(self, emulator: LiveKitEmulator, served: CallAssignment, log: list):
        self.emulator = emulator
        self.served = served
        self.connection = None
        self.log = log
        self._stop = asyncio.Event()

    async def run(self) -> None:
        self.connection = self.emulator.join(
            self.served.token, self.served.room, self.served.identity
        )
        self.log.append(("joined", self.served.room, asyncio.get_running_loop().time()))
        waiter = asyncio.create_task(self._caller_gone())
        stopper = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
            self.connection.disconnect()
            self.log.append(("left", self.served.room, asyncio.get_running_loop().time()))

    async def _caller_gone(self) -> None:
        while True:
            event = await self.connection.recv()
            if isinstance(event, Disconnected):
                return
            if isinstance(event, ParticipantLeft) and event.identity.startswith("sip_"):
                return

    async def stop(self, reason: str) -> None:
        self._stop.set()


def make_worker(emulator, name: str, calls: list, log: list, **options) -> AgentWorker:
    def make_call(served: CallAssignment):
        call = RoomCall(emulator, served, log)
        calls.append((name, served, call))
        return call

    opts = WorkerOptions(agent_name=AGENT, identity="acme-bot", **options)
    return AgentWorker(emulator.url, emulator.api_key, emulator.api_secret, opts, make_call)


async def until(predicate, timeout: float = 10.0, step: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


async def start(*workers: AgentWorker):
    """Run the workers until they are registered; returns the coroutine that stops them."""
    runs = [asyncio.create_task(worker.run()) for worker in workers]
    await until(lambda: all(worker.registered for worker in workers))

    async def stop() -> None:
        for worker in workers:
            await worker.close()
        await asyncio.gather(*runs, return_exceptions=True)

    return stop


def test_agent_url():
    assert agent_url("https://x.livekit.cloud") == "wss://x.livekit.cloud/agent"
    assert agent_url("http://127.0.0.1:7880/") == "ws://127.0.0.1:7880/agent"
    assert agent_url("wss://x.livekit.cloud") == "wss://x.livekit.cloud/agent"


async def test_two_workers_serve_each_call_exactly_once():
    async with LiveKitEmulator(dispatch_seed=7) as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls: list = []
        log: list = []
        workers = {
            name: make_worker(lk, name, calls, log, max_calls=20, status_interval=0.1)
            for name in ("w1", "w2")
        }
        stop = await start(*workers.values())
        inbound = []
        for i in range(24):
            inbound.append(lk.inbound_call(f"+1555010{i:04d}"))
            await asyncio.sleep(0.02)
        await until(lambda: len(calls) == 24)
        await until(lambda: sum(1 for e in log if e[0] == "joined") == 24)
        # Each room holds its caller and exactly one bot, of kind agent.
        for call in inbound:
            memory_room = lk.rooms.get_room(call.room)
            kinds = sorted(c.kind for c in memory_room.connections())
            assert kinds == ["agent", "sip"], call.room
        rooms_served = collections.Counter(served.room for _name, served, _call in calls)
        assert set(rooms_served) == {c.room for c in inbound}
        assert max(rooms_served.values()) == 1
        per_worker = collections.Counter(name for name, _served, _call in calls)
        assert min(per_worker.values()) >= 6, per_worker  # spread by load
        for record in lk.agents.jobs:
            assert record.outcome == "assigned" and record.job.agent_name == AGENT
        for call in inbound:
            call.hang_up()
        await until(lambda: all(w.active_calls == 0 for w in workers.values()))
        # LiveKit ended each job when the agent left (or the worker reported it ended).
        await until(lambda: all(not w.running for w in lk.agents.workers.values()))
        await stop()


async def served_by(calls, name):
    return [served for worker, served, _call in calls if worker == name]


async def test_a_full_worker_declines_and_the_other_takes_the_call():
    async with LiveKitEmulator(dispatch_seed=3) as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        small = make_worker(lk, "small", calls, log, max_calls=2, load_threshold=1.0)
        big = make_worker(lk, "big", calls, log, max_calls=50)
        stop = await start(small, big)
        inbound = [lk.inbound_call(f"+1555020{i:04d}") for i in range(12)]
        await until(lambda: sum(1 for e in log if e[0] == "joined") == 12)
        assert small.active_calls <= 2
        assert len(await served_by(calls, "small")) <= 2
        assert len(await served_by(calls, "big")) >= 10
        assert all(r.outcome == "assigned" for r in lk.agents.jobs)
        # The server asked the small worker and moved on when it declined.
        declined = [r for r in lk.agents.jobs if len(r.offered_to) > 1]
        small_id = small.worker_id
        assert all(r.offered_to[0] == small_id for r in declined)
        for call in inbound:
            call.hang_up()
        await stop()


async def test_no_worker_for_the_agent_leaves_the_caller_alone_as_livekit_does():
    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(dispatch_rule("another-agent"))
        calls, log = [], []
        worker = make_worker(lk, "w", calls, log)
        stop = await start(worker)
        call = lk.inbound_call("+15550300001")
        await asyncio.gather(*call.jobs)
        assert [r.outcome for r in lk.agents.jobs] == ["no_worker"]
        assert calls == []
        assert [c.kind for c in lk.rooms.get_room(call.room).connections()] == ["sip"]
        call.hang_up()
        await stop()


class CrashingWorker(AgentWorker):
    """A worker whose process dies: nothing more leaves it, not even a goodbye."""

    def crash(self, emulator: LiveKitEmulator) -> None:
        for call, _task in self._calls.values():
            emulator.vanish(call.connection)
        self._closed.set()
        self._ws._response.connection.transport.abort()
        for _call, task in list(self._calls.values()):
            task.cancel()


async def test_a_killed_worker_is_forgotten_and_new_calls_go_to_the_survivor():
    async with LiveKitEmulator(dispatch_seed=11, stale_participant_secs=0.5) as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []

        def make_call(served):
            call = RoomCall(lk, served, log)
            calls.append(("doomed", served, call))
            return call

        opts = WorkerOptions(agent_name=AGENT, identity="acme-bot", max_calls=50)
        doomed = CrashingWorker(lk.url, lk.api_key, lk.api_secret, opts, make_call)
        survivor = make_worker(lk, "survivor", calls, log, max_calls=50)
        stop = await start(doomed, survivor)
        first = [lk.inbound_call(f"+1555040{i:04d}") for i in range(8)]
        await until(lambda: sum(1 for e in log if e[0] == "joined") == 8)
        assert doomed.active_calls > 0
        doomed_rooms = [s.room for name, s, _c in calls if name == "doomed"]
        doomed_id = doomed.worker_id
        doomed.crash(lk)
        await until(lambda: doomed_id not in lk.agents.workers)
        # Its bots stay in their rooms, silent, until LiveKit gives up on them.
        bots = {
            r: [c for c in lk.rooms.get_room(r).connections() if c.kind == "agent"]
            for r in doomed_rooms
        }
        assert all(len(b) == 1 for b in bots.values())
        await until(
            lambda: all(
                [c.kind for c in lk.rooms.get_room(r).connections()] == ["sip"]
                for r in doomed_rooms
            ),
            timeout=5,
        )
        # The callers saw the bot time out, and stay (LiveKit does not hang them up).
        stranded = [c for c in first if c.room in doomed_rooms]
        for call in stranded:
            events = []
            while True:
                event = await asyncio.wait_for(call.connection.recv(), 1)
                events.append(event)
                if isinstance(event, ParticipantLeft):
                    break
            assert event.reason == "connection_timeout" and event.kind == "agent"
            assert call.connection.connected
        # New calls go to the survivor only.
        before = len(calls)
        second = [lk.inbound_call(f"+1555041{i:04d}") for i in range(6)]
        await until(lambda: len(calls) == before + 6)
        assert {name for name, _s, _c in calls[before:]} == {"survivor"}
        for record in lk.agents.jobs[-6:]:
            assert record.offered_to == [survivor.worker_id]
        for call in first + second:
            call.hang_up()
        await stop()


async def test_drain_takes_no_new_call_and_drops_none():
    async with LiveKitEmulator(dispatch_seed=5) as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        leaving = make_worker(lk, "leaving", calls, log, max_calls=50)
        staying = make_worker(lk, "staying", calls, log, max_calls=50)
        stop = await start(leaving, staying)
        first = [lk.inbound_call(f"+1555050{i:04d}") for i in range(10)]
        await until(lambda: sum(1 for e in log if e[0] == "joined") == 10)
        held = [s.room for name, s, _c in calls if name == "leaving"]
        assert held
        drain = asyncio.create_task(leaving.drain(timeout=30))
        server_side = lk.agents.workers[leaving.worker_id]
        await until(lambda: server_side.status == agent.WorkerStatus.WS_FULL)
        before = len(calls)
        second = [lk.inbound_call(f"+1555051{i:04d}") for i in range(8)]
        await until(lambda: len(calls) == before + 8)
        assert {name for name, _s, _c in calls[before:]} == {"staying"}
        # The draining worker's calls go on until their callers hang up.
        await asyncio.sleep(0.2)
        assert not drain.done() and leaving.active_calls == len(held)
        hang_ups = {}
        for call in first:
            if call.room in held:
                hang_ups[call.room] = asyncio.get_running_loop().time()
                call.hang_up()
        assert await drain is True
        left = {room: at for kind, room, at in log if kind == "left"}
        for room, hung_up_at in hang_ups.items():
            assert left[room] >= hung_up_at  # the bot stayed until the caller left
        for call in first + second:
            call.hang_up()
        await stop()


async def test_a_drain_timeout_ends_the_calls_left_cleanly():
    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        worker = make_worker(lk, "w", calls, log)
        stop = await start(worker)
        inbound = [lk.inbound_call(f"+1555060{i:04d}") for i in range(3)]
        await until(lambda: worker.active_calls == 3)
        assert await worker.drain(timeout=0.2) is False
        assert worker.active_calls == 0
        assert all(call._stop.is_set() for _n, _s, call in calls)
        for call in inbound:  # each caller saw the bot leave
            room = lk.rooms.get_room(call.room)
            assert [c.kind for c in room.connections()] == ["sip"]
            call.hang_up()
        await stop()


async def test_livekit_terminates_the_job_when_its_bot_is_removed():
    from livekit import api

    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        worker = make_worker(lk, "w", calls, log)
        stop = await start(worker)
        call = lk.inbound_call("+15550700001")
        await until(lambda: worker.active_calls == 1)
        lkapi = api.LiveKitAPI(lk.url, lk.api_key, lk.api_secret)
        try:
            await lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room=call.room, identity="acme-bot")
            )
        finally:
            await lkapi.aclose()
        await until(lambda: worker.active_calls == 0)
        (record,) = lk.agents.jobs
        assert record.terminations == ["agent_left_room"]
        assert record.job.state.status == agent.JobStatus.JS_FAILED
        assert record.job.state.error == "agent worker left the room"
        call.hang_up()
        await stop()


async def test_the_agent_socket_answers_as_livekit_does():
    import aiohttp
    from livekit import api as lkapi

    async with LiveKitEmulator() as lk:
        lk.agents.register_timeout = 0.3
        async with aiohttp.ClientSession() as session:
            async with session.get(lk.url + "/agent") as response:
                assert response.status == 404
            plain = (
                lkapi.AccessToken(lk.api_key, lk.api_secret)
                .with_identity("u")
                .with_grants(lkapi.VideoGrants(room_join=True, room="r"))
                .to_jwt()
            )
            headers = {"Authorization": f"Bearer {plain}"}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(agent_url(lk.url), headers=headers)
            assert refused.value.status == 401
            token = (
                lkapi.AccessToken(lk.api_key, lk.api_secret)
                .with_grants(lkapi.VideoGrants(agent=True))
                .to_jwt()
            )
            headers = {"Authorization": f"Bearer {token}"}
            # A ping before registering is answered; silence past the deadline closes.
            async with session.ws_connect(agent_url(lk.url), headers=headers) as ws:
                ping = agent.WorkerMessage(ping=agent.WorkerPing(timestamp=1234))
                await ws.send_bytes(ping.SerializeToString())
                pong = agent.ServerMessage.FromString((await ws.receive(timeout=2)).data)
                assert pong.pong.last_timestamp == 1234 and pong.pong.timestamp > 0
                closed = await ws.receive(timeout=2)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert lk.agents.registrations == []


async def test_a_worker_reregisters_when_livekit_drops_it_and_its_calls_go_on():
    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        worker = make_worker(lk, "w", calls, log)
        stop = await start(worker)
        call = lk.inbound_call("+15550800001")
        await until(lambda: worker.active_calls == 1)
        first_id = worker.worker_id
        await lk.agents.workers[first_id].ws.close()  # the server restarts its agent service
        await until(lambda: worker.registered and worker.worker_id != first_id, timeout=5)
        assert worker.active_calls == 1  # the call never noticed
        assert [name for _id, name in lk.agents.registrations] == [AGENT, AGENT]
        second = lk.inbound_call("+15550800002")
        await until(lambda: worker.active_calls == 2)
        for c in (call, second):
            c.hang_up()
        await stop()


async def test_the_job_token_is_livekits_agent_token():
    from livekit import api

    async with LiveKitEmulator() as lk:
        lk.add_dispatch_rule(dispatch_rule())
        calls, log = [], []
        worker = make_worker(lk, "w", calls, log)
        stop = await start(worker)
        call = lk.inbound_call("+15550900001")
        await until(lambda: len(calls) == 1)
        served = calls[0][1]
        claims = api.TokenVerifier(lk.api_key, lk.api_secret).verify(served.token)
        assert claims.identity == "acme-bot" and claims.kind == "agent"
        assert claims.video.room == call.room and claims.video.room_join and claims.video.agent
        assert claims.video.can_publish and claims.video.can_subscribe
        assert not claims.video.room_admin and not claims.video.room_create
        assert claims.attributes == {"lk.agent_name": AGENT}
        assert served.url == lk.url  # no url in the assignment: the worker's own
        (record,) = lk.agents.jobs
        assert record.job.state.participant_identity == "acme-bot"
        assert record.job.state.worker_id == worker.worker_id
        call.hang_up()
        await stop()


async def test_worker_messages_after_registration():
    import aiohttp
    from livekit import api as lkapi

    async with LiveKitEmulator() as lk:
        token = (
            lkapi.AccessToken(lk.api_key, lk.api_secret)
            .with_grants(lkapi.VideoGrants(agent=True))
            .to_jwt()
        )
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": f"Bearer {token}"}
            async with session.ws_connect(agent_url(lk.url), headers=headers) as ws:
                register = agent.WorkerMessage()
                register.register.type = agent.JobType.JT_ROOM
                register.register.agent_name = "x"
                await ws.send_bytes(register.SerializeToString())
                answer = agent.ServerMessage.FromString((await ws.receive(timeout=2)).data)
                assert answer.register.worker_id.startswith("AW_")
                assert len(answer.register.worker_id) == 15
                assert answer.register.server_info.agent_protocol == 1
                (server_side,) = lk.agents.workers.values()
                full = agent.UpdateWorkerStatus(status=agent.WorkerStatus.WS_FULL, load=0.9)
                await ws.send_bytes(agent.WorkerMessage(update_worker=full).SerializeToString())
                unknown = agent.UpdateJobStatus(job_id="AJ_nope", status=agent.JobStatus.JS_SUCCESS)
                await ws.send_bytes(agent.WorkerMessage(update_job=unknown).SerializeToString())
                migrate = agent.MigrateJobRequest(job_ids=["AJ_nope"])
                await ws.send_bytes(agent.WorkerMessage(migrate_job=migrate).SerializeToString())
                await until(lambda: server_side.load == pytest.approx(0.9))
                assert server_side.migrations == [["AJ_nope"]]  # and nothing else happens
                # SimulateJob: a job for this worker alone, offered as any other.
                simulate = agent.SimulateJobRequest(room=models.Room(name="sim-room"))
                await ws.send_bytes(agent.WorkerMessage(simulate_job=simulate).SerializeToString())
                offer = agent.ServerMessage.FromString((await ws.receive(timeout=2)).data)
                assert offer.availability.job.room.name == "sim-room"
                assert offer.availability.job.type == agent.JobType.JT_ROOM
                assert offer.availability.job.agent_name == "x"
                decline = agent.AvailabilityResponse(job_id=offer.availability.job.id)
                await ws.send_bytes(agent.WorkerMessage(availability=decline).SerializeToString())
                await until(lambda: lk.agents.jobs and lk.agents.jobs[-1].outcome)
                assert lk.agents.jobs[-1].outcome == "not_available"
                assert server_side.status == agent.WorkerStatus.WS_FULL
                assert not ws.closed
                # A second Register is not a registered worker's message: the socket closes.
                await ws.send_bytes(register.SerializeToString())
                closed = await ws.receive(timeout=2)
                assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await until(lambda: not lk.agents.workers)


async def test_a_room_config_without_agents_dispatches_to_unnamed_workers():
    async with LiveKitEmulator() as lk:
        rule = dispatch_rule()
        rule.ClearField("room_config")
        lk.add_dispatch_rule(rule)
        calls, log = [], []
        named = make_worker(lk, "named", calls, log)
        stop = await start(named)
        call = lk.inbound_call("+15551000001")
        await asyncio.gather(*call.jobs)
        (record,) = lk.agents.jobs
        assert record.job.agent_name == "" and record.outcome == "no_worker"
        assert calls == []  # a named worker gets explicit dispatches only
        call.hang_up()
        await stop()


def test_dispatch_rules_name_rooms_and_callers_as_livekit_does():
    from pipecat_warm_transfer.testing.livekit_agent_dispatch import evaluate_dispatch_rule

    rule = dispatch_rule()
    rule.sip_dispatch_rule_id = "SDR_abc"
    room_name, identity, name, attrs = evaluate_dispatch_rule(
        rule, from_number="+15550100", to_number="+15550999", host="pbx.example", call_id="SCL_1"
    )
    prefix, number, suffix = room_name.split("_")
    assert (prefix, number, len(suffix)) == ("call", "+15550100", 12)
    assert identity == "sip_+15550100" and name == "Phone +15550100"
    assert attrs == {
        "sip.callID": "SCL_1",
        "sip.trunkID": "",
        "sip.phoneNumber": "+15550100",
        "sip.hostname": "pbx.example",
        "sip.trunkPhoneNumber": "+15550999",
        "sip.ruleID": "SDR_abc",
    }
    callee = sip.SIPDispatchRuleInfo(
        rule=sip.SIPDispatchRule(
            dispatch_rule_callee=sip.SIPDispatchRuleCallee(room_prefix="desk")
        ),
        hide_phone_number=True,
    )
    room_name, identity, name, attrs = evaluate_dispatch_rule(
        callee, from_number="+15550100", to_number="+15550999", host="h", call_id="SCL_2"
    )
    assert room_name == "desk_+15550999"
    assert identity.startswith("sip_") and len(identity) == 4 + 16 and "+1555" not in identity
    assert name == "Phone 0100" and "sip.phoneNumber" not in attrs
