#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""LiveKit's agent dispatch and SIP inbound calls, as the emulator serves them.

`AgentDispatch` is the server side of the agent worker protocol: the `/agent` WebSocket
(`AgentService.ServeHTTP`), registration, load reports, the offer of each job to one
worker picked at random weighted by free capacity, retries on a decline, the join token
of an accepted job, job termination when the agent's participant leaves the room, and
deregistration (with its jobs forgotten) when the worker's connection drops.

`SipInbound` is the SIP service's side of an inbound call: the dispatch rule turns the
call into a room name, a participant identity and attributes
(livekit/protocol `sip.EvaluateDispatchRule`); the room is created with the rule's room
config, whose agents are dispatched as the room is created (livekit/livekit
`pkg/rtc/room.go` NewRoom, launchRoomAgents), and the caller joins as a SIP participant.

Each behaviour is listed with its source in the emulator's `FIDELITY` table.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, agent_dispatch, models, room, sip
from loguru import logger

from pipecat_warm_transfer.testing.livekit_sip_line import new_id
from pipecat_warm_transfer.testing.memory_room import MemoryConnection, MemoryRoomServer

#: pkg/agent/worker.go: RegisterTimeout, AssignJobTimeout.
REGISTER_TIMEOUT = 10.0
ASSIGN_JOB_TIMEOUT = 10.0
#: pkg/agent/worker.go: AgentNameAttributeKey.
AGENT_NAME_ATTRIBUTE = "lk.agent_name"
#: How long a participant whose client died stays in the room: ICE disconnected (10 s)
#: and failed (5 s) timeouts, then the disconnect cleanup (5 s): pkg/rtc/transport.go
#: iceDisconnectedTimeout/iceFailedTimeout, pkg/rtc/participant.go disconnectCleanupDuration.
STALE_PARTICIPANT_SECS = 20.0
#: pkg/service/agentservice.go NewAgentService: the server info a worker is told
#: (version/version.go, pkg/rtc/types/protocol_version.go at the commit read).
SERVER_VERSION = "1.11.0"
SERVER_PROTOCOL = 17


@dataclass
class JobRecord:
    """One job the server launched, and what became of it.

    Parameters:
        job: The job as sent to the workers (its state updated as the server's is).
        offered_to: Worker ids asked, in order.
        worker_id: The worker that took it ("" when nobody did).
        outcome: `assigned`, `no_worker` (ResourceExhausted), `timeout` (a worker did
            not answer in time), `terminated` (a worker said terminate) or `closed`.
        launched_at: Event-loop time the room asked for it.
        assigned_at: Event-loop time the assignment was sent (None: not assigned).
        terminations: Reasons the server sent a JobTermination for it.
    """

    job: agent.Job
    offered_to: list[str] = field(default_factory=list)
    worker_id: str = ""
    outcome: str = ""
    launched_at: float = 0.0
    assigned_at: float | None = None
    terminations: list[str] = field(default_factory=list)


class _Worker:
    """A registered worker: its socket, registration and reported load."""

    def __init__(self, ws: web.WebSocketResponse, api_key: str, api_secret: str):
        self.ws = ws
        self.id = new_id("AW_")
        self.api_key = api_key
        self.api_secret = api_secret
        self.agent_name = ""
        self.namespace = ""
        self.job_type = agent.JobType.JT_ROOM
        self.permissions = models.ParticipantPermission()
        self.version = ""
        self.status = agent.WorkerStatus.WS_AVAILABLE
        self.load = 0.0
        self.running: dict[str, agent.Job] = {}
        self.availability: dict[str, asyncio.Future[agent.AvailabilityResponse]] = {}
        self.closed = asyncio.Event()
        self.updates: list[agent.UpdateWorkerStatus] = []
        self.migrations: list[list[str]] = []  # job ids reported after a reconnect

    async def send(self, message: agent.ServerMessage) -> None:
        if self.closed.is_set() or self.ws.closed:
            raise WorkerClosed()
        try:
            await self.ws.send_bytes(message.SerializeToString())
        except (ConnectionError, RuntimeError) as e:
            raise WorkerClosed() from e

    def update_job(self, update: agent.UpdateJobStatus) -> agent.JobState | None:
        """Worker.UpdateJobStatus: unknown jobs are ignored; ended jobs are forgotten."""
        job = self.running.get(update.job_id)
        if job is None:
            return None
        now = time.time_ns()
        job.state.updated_at = now
        if job.state.status == agent.JobStatus.JS_PENDING and update.status != job.state.status:
            job.state.started_at = now
        job.state.status = update.status
        job.state.error = update.error
        if update.status in (agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED):
            job.state.ended_at = now
            del self.running[update.job_id]
        state = agent.JobState()
        state.CopyFrom(job.state)
        return state


class WorkerClosed(Exception):
    """The worker's connection is gone (agent.ErrWorkerClosed)."""


class AgentDispatch:
    """LiveKit's agent service and its room dispatch, in memory.

    Parameters:
        rooms: The room server whose departures end agent jobs.
        seed: Seed of the weighted random pick of a worker (None: random).
        availability_timeout: How long a worker has to answer an offer (10 s).
        register_timeout: How long a new connection has to register (10 s).

    Attributes:
        jobs: Every job launched, oldest first.
        registrations: `(worker_id, agent_name)` of each registration, oldest first.
    """

    def __init__(
        self,
        rooms: MemoryRoomServer,
        *,
        seed: int | None = None,
        availability_timeout: float = ASSIGN_JOB_TIMEOUT,
        register_timeout: float = REGISTER_TIMEOUT,
    ):
        self.rooms = rooms
        self._random = random.Random(seed)
        self.availability_timeout = availability_timeout
        self.register_timeout = register_timeout
        self.workers: dict[str, _Worker] = {}
        self.jobs: list[JobRecord] = []
        self.registrations: list[tuple[str, str]] = []
        self._job_to_worker: dict[str, _Worker] = {}
        self._agent_participants: dict[tuple[str, str], JobRecord] = {}
        self._tasks: set[asyncio.Task] = set()
        rooms.departure_listeners.append(self._participant_left)

    # The /agent endpoint

    async def serve(self, request: web.BaseRequest, api_key: str, api_secret: str):
        """Serve one worker connection until it closes (AgentHandler.HandleConnection)."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        worker = _Worker(ws, api_key, api_secret)
        try:
            if not await self._handshake(worker):
                return ws
            self._register(worker)
            async for raw in ws:
                if raw.type != WSMsgType.BINARY or not await self._handle(worker, raw.data):
                    break
        finally:
            self._deregister(worker)
            if not ws.closed:
                await ws.close()
        return ws

    async def _handshake(self, worker: _Worker) -> bool:
        """HandshakeAgentWorker: pings are answered; the first Register registers."""
        deadline = asyncio.get_running_loop().time() + self.register_timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                raw = await worker.ws.receive(timeout=remaining)
            except TimeoutError:
                return False
            if raw.type != WSMsgType.BINARY:
                return False
            try:
                message = agent.WorkerMessage.FromString(raw.data)
            except Exception:
                return False
            which = message.WhichOneof("message")
            if which == "ping":
                await self._pong(worker, message.ping)
                continue
            if which != "register":
                return False  # WorkerRegisterer: any other signal is unimplemented
            register = message.register
            if register.type not in agent.JobType.values():
                return False  # ErrUnknownJobType
            worker.agent_name = register.agent_name
            worker.namespace = register.namespace
            worker.job_type = register.type
            worker.version = register.version
            if register.HasField("allowed_permissions"):
                worker.permissions.CopyFrom(register.allowed_permissions)
            else:
                worker.permissions = models.ParticipantPermission(
                    can_subscribe=True,
                    can_publish=True,
                    can_publish_data=True,
                    can_update_metadata=True,
                )
            answer = agent.ServerMessage()
            answer.register.worker_id = worker.id
            info = answer.register.server_info
            info.edition = models.ServerInfo.Edition.Standard
            info.version = SERVER_VERSION
            info.protocol = SERVER_PROTOCOL
            info.agent_protocol = 1
            info.node_id = "ND_emulator"
            await worker.send(answer)
            return True

    async def _handle(self, worker: _Worker, data: bytes) -> bool:
        """DispatchWorkerSignal for a registered worker; False closes the connection."""
        try:
            message = agent.WorkerMessage.FromString(data)
        except Exception:
            return False
        which = message.WhichOneof("message")
        if which == "availability":
            future = worker.availability.pop(message.availability.job_id, None)
            if future is not None and not future.done():
                future.set_result(message.availability)
        elif which == "update_job":
            worker.update_job(message.update_job)
        elif which == "update_worker":
            update = message.update_worker
            worker.updates.append(update)
            if update.HasField("status"):
                worker.status = update.status
            worker.load = update.load
        elif which == "ping":
            await self._pong(worker, message.ping)
        elif which == "simulate_job":
            self._simulate(worker, message.simulate_job)
        elif which == "migrate_job":
            # HandleMigrateJob does nothing on open-source LiveKit; kept for the record.
            worker.migrations.append(list(message.migrate_job.job_ids))
        else:
            return False  # a second Register, or an unknown signal
        return True

    def _simulate(self, worker: _Worker, simulate: agent.SimulateJobRequest) -> None:
        """Worker.HandleSimulateJob: a job for this worker alone (publisher with a participant)."""
        job = agent.Job(
            id=new_id("AJ_"),
            type=agent.JobType.JT_PUBLISHER
            if simulate.HasField("participant")
            else agent.JobType.JT_ROOM,
            namespace=worker.namespace,
            agent_name=worker.agent_name,
        )
        job.room.CopyFrom(simulate.room)
        if simulate.HasField("participant"):
            job.participant.CopyFrom(simulate.participant)
        record = JobRecord(job=job, launched_at=asyncio.get_running_loop().time())
        record.offered_to.append(worker.id)
        self.jobs.append(record)

        async def assign() -> None:
            try:
                record.outcome = await self._assign(worker, record)
            except (WorkerClosed, TimeoutError, asyncio.CancelledError):
                record.outcome = "closed"  # "unable to simulate job": only logged

        task = asyncio.get_running_loop().create_task(assign())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pong(self, worker: _Worker, ping: agent.WorkerPing) -> None:
        pong = agent.ServerMessage()
        pong.pong.last_timestamp = ping.timestamp
        pong.pong.timestamp = int(time.time() * 1000)
        await worker.send(pong)

    def _register(self, worker: _Worker) -> None:
        self.workers[worker.id] = worker
        self.registrations.append((worker.id, worker.agent_name))
        logger.debug(f"AgentDispatch: worker {worker.id} registered as {worker.agent_name!r}")

    def _deregister(self, worker: _Worker) -> None:
        """deregisterWorker: its running jobs are forgotten (no state update)."""
        worker.closed.set()
        for future in worker.availability.values():
            if not future.done():
                future.cancel()
        if self.workers.pop(worker.id, None) is None:
            return
        for job_id in list(worker.running):
            self._job_to_worker.pop(job_id, None)
        logger.debug(f"AgentDispatch: worker {worker.id} deregistered")

    # Jobs

    def launch_room_jobs(
        self, room_info: models.Room, dispatches: list[agent_dispatch.RoomAgentDispatch]
    ) -> list[asyncio.Task]:
        """Launch a room's agent dispatches (NewRoom → launchRoomAgents).

        With no dispatch in the room config, one dispatch with an empty agent name is
        made: every worker registered without a name gets the room (automatic dispatch).
        """
        tasks = []
        for dispatch in dispatches or [agent_dispatch.RoomAgentDispatch()]:
            job = agent.Job(
                id=new_id("AJ_"),
                dispatch_id=new_id("AD_"),
                type=agent.JobType.JT_ROOM,
                room=room_info,
                agent_name=dispatch.agent_name,
                metadata=dispatch.metadata,
            )
            record = JobRecord(job=job, launched_at=asyncio.get_running_loop().time())
            self.jobs.append(record)
            task = asyncio.create_task(self._job_request(record), name=f"job-{job.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def _job_request(self, record: JobRecord) -> None:
        """AgentHandler.JobRequest: offer to weighted-random workers until one takes it."""
        job = record.job
        attempted: set[str] = set()
        while True:
            worker = self._select(job, attempted)
            if worker is None:
                record.outcome = record.outcome or "no_worker"
                logger.debug(f"AgentDispatch: no worker available to handle job {job.id}")
                return
            attempted.add(worker.id)
            record.offered_to.append(worker.id)
            try:
                outcome = await self._assign(worker, record)
            except WorkerClosed:
                continue  # ErrWorkerClosed: retried on another worker
            except TimeoutError:
                record.outcome = "timeout"  # ErrAvailabilityTimeout: not retried
                return
            if outcome != "not_available":
                record.outcome = outcome
                return

    def _select(self, job: agent.Job, ignore: set[str]) -> _Worker | None:
        """selectWorkerWeightedByLoad: weight max(0, 1 - load) among available workers."""
        weights = {
            worker: max(0.0, 1.0 - worker.load)
            for worker in self.workers.values()
            if worker.id not in ignore
            and worker.agent_name == job.agent_name
            and worker.namespace == job.namespace
            and worker.job_type == job.type
            and worker.status == agent.WorkerStatus.WS_AVAILABLE
            and not worker.closed.is_set()
        }
        total = sum(weights.values())
        if total == 0:
            return None
        pick = self._random.random() * total
        for worker, weight in weights.items():
            pick -= weight
            if pick <= 0:
                return worker
        return next(iter(weights))

    async def _assign(self, worker: _Worker, record: JobRecord) -> str:
        """Worker.AssignJob: offer, wait for the answer, then send the assignment."""
        job = agent.Job()
        job.CopyFrom(record.job)
        now = time.time_ns()
        job.state.worker_id = worker.id
        job.state.updated_at = now
        job.state.started_at = now
        job.state.status = agent.JobStatus.JS_RUNNING
        future: asyncio.Future[agent.AvailabilityResponse] = (
            asyncio.get_running_loop().create_future()
        )
        worker.availability[job.id] = future
        try:
            offer = agent.ServerMessage()
            offer.availability.job.CopyFrom(job)
            await worker.send(offer)
            try:
                answer = await asyncio.wait_for(future, self.availability_timeout)
            except asyncio.CancelledError:
                if worker.closed.is_set():
                    raise WorkerClosed() from None
                raise
        finally:
            worker.availability.pop(job.id, None)
        if answer.terminate:
            return "terminated"
        if not answer.available:
            return "not_available"
        job.state.participant_identity = answer.participant_identity
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        token = agent_token(
            worker.api_key,
            worker.api_secret,
            job.room.name,
            answer.participant_identity,
            answer.participant_name,
            answer.participant_metadata,
            attributes,
            worker.permissions,
        )
        assignment = agent.ServerMessage()
        assignment.assignment.job.CopyFrom(job)
        assignment.assignment.token = token
        await worker.send(assignment)
        worker.running[job.id] = job
        self._job_to_worker[job.id] = worker
        record.job = job
        record.worker_id = worker.id
        record.assigned_at = asyncio.get_running_loop().time()
        self._agent_participants[(job.room.name, answer.participant_identity)] = record
        return "assigned"

    def _participant_left(self, room_name: str, identity: str, kind: str, reason: str) -> None:
        """Room.RemoveParticipant: an agent leaving ends its job (AGENT_LEFT_ROOM)."""
        record = self._agent_participants.pop((room_name, identity), None)
        if record is None:
            return
        task = asyncio.get_running_loop().create_task(self._terminate(record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _terminate(self, record: JobRecord) -> None:
        """AgentHandler.JobTerminate → Worker.TerminateJob (NotFound when forgotten)."""
        worker = self._job_to_worker.get(record.job.id)
        if worker is None or record.job.id not in worker.running:
            return  # "no worker for jobID" / ErrJobNotFound: only logged by the room
        record.terminations.append("agent_left_room")
        message = agent.ServerMessage()
        message.termination.job_id = record.job.id
        try:
            await worker.send(message)
        except WorkerClosed:
            pass
        worker.update_job(
            agent.UpdateJobStatus(
                job_id=record.job.id,
                status=agent.JobStatus.JS_FAILED,
                error="agent worker left the room",
            )
        )
        self._job_to_worker.pop(record.job.id, None)

    async def close(self) -> None:
        """Close every worker connection (the server going away) and stop job requests."""
        for worker in list(self.workers.values()):
            await worker.ws.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self.rooms.departure_listeners[:] = [
            listener
            for listener in self.rooms.departure_listeners
            if listener != self._participant_left
        ]

    def job_of_room(self, room_name: str) -> list[JobRecord]:
        """The jobs launched for a room."""
        return [record for record in self.jobs if record.job.room.name == room_name]


def agent_token(
    api_key: str,
    api_secret: str,
    room_name: str,
    identity: str,
    name: str,
    metadata: str,
    attributes: dict[str, str],
    permissions: models.ParticipantPermission,
) -> str:
    """The join token the server mints for an accepted job (protocol agent.BuildAgentToken)."""
    grants = api.VideoGrants(
        room_join=True,
        agent=True,
        room=room_name,
        can_subscribe=permissions.can_subscribe,
        can_publish=permissions.can_publish,
        can_publish_data=permissions.can_publish_data,
        hidden=permissions.hidden,
        can_update_own_metadata=permissions.can_update_metadata,
        can_subscribe_metrics=permissions.can_subscribe_metrics,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_grants(grants)
        .with_identity(identity)
        .with_name(name)
        .with_kind("agent")
        .with_ttl(timedelta(hours=1))
        .with_metadata(metadata)
        .with_attributes(attributes)
        .to_jwt()
    )


@dataclass
class InboundCall:
    """A SIP call that reached LiveKit and the room the dispatch rule put it in.

    Parameters:
        room: The room name.
        identity: The caller's participant identity (`sip_<number>`).
        connection: The caller's connection (`hang_up()` leaves the room).
        attributes: The caller's participant attributes.
        jobs: The agent job requests launched for the room.
        joined_at: Event-loop time the caller joined.
    """

    room: str
    identity: str
    connection: MemoryConnection
    attributes: dict[str, str]
    jobs: list[asyncio.Task]
    joined_at: float

    def hang_up(self) -> None:
        """The caller hangs up: the SIP participant leaves the room."""
        self.connection.disconnect()


def evaluate_dispatch_rule(
    rule: sip.SIPDispatchRuleInfo, *, from_number: str, to_number: str, host: str, call_id: str
) -> tuple[str, str, str, dict[str, str]]:
    """sip.EvaluateDispatchRule: the room name, identity, name and attributes of a call.

    Returns:
        `(room, identity, name, attributes)`.

    Raises:
        ValueError: A direct rule with a PIN (the caller would be asked for it).
    """
    attributes = dict(rule.attributes)
    attributes["sip.callID"] = call_id
    attributes["sip.trunkID"] = ""
    identity, name = "sip_" + from_number, "Phone " + from_number
    if rule.hide_phone_number:
        digest = hashlib.sha256(from_number.encode()).hexdigest()[:16]
        identity = "sip_" + digest
        shown = from_number[-4:] if len(from_number) > 4 else from_number[-1:]
        name = "Phone " + shown
    else:
        attributes["sip.phoneNumber"] = from_number
        attributes["sip.hostname"] = host
        attributes["sip.trunkPhoneNumber"] = to_number
    which = rule.rule.WhichOneof("rule")
    if which == "dispatch_rule_individual":
        individual = rule.rule.dispatch_rule_individual
        room_name = from_number
        if individual.room_prefix:
            room_name = individual.room_prefix + "_" + from_number
        if not individual.no_randomness:
            room_name += "_" + new_id("")
    elif which == "dispatch_rule_callee":
        callee = rule.rule.dispatch_rule_callee
        room_name = to_number
        if callee.room_prefix:
            room_name = callee.room_prefix + "_" + to_number
        if callee.randomize:
            room_name += "_" + new_id("")
    elif which == "dispatch_rule_direct":
        if rule.rule.dispatch_rule_direct.pin:
            raise ValueError("a direct rule with a PIN asks the caller for it first")
        room_name = rule.rule.dispatch_rule_direct.room_name
    else:
        raise ValueError("the dispatch rule has no rule")
    attributes["sip.ruleID"] = rule.sip_dispatch_rule_id
    return room_name, identity, name, attributes


class SipInbound:
    """Inbound SIP calls, dispatched by the emulator's dispatch rules.

    Parameters:
        rooms: The room server calls join.
        dispatch: The agent dispatch rooms launch their agents on.
        room_created: Called with a new room's name and room config (the emulator
            records the room as CreateRoom would).
    """

    def __init__(
        self,
        rooms: MemoryRoomServer,
        dispatch: AgentDispatch,
        room_created: Callable[[str, room.RoomConfiguration | None], models.Room],
    ):
        self.rooms = rooms
        self.dispatch = dispatch
        self._room_created = room_created
        self.rules: list[sip.SIPDispatchRuleInfo] = []
        self.calls: list[InboundCall] = []

    def add_rule(self, rule: sip.SIPDispatchRuleInfo) -> sip.SIPDispatchRuleInfo:
        """Install a dispatch rule (as CreateSIPDispatchRule does); returns it with its id."""
        info = sip.SIPDispatchRuleInfo()
        info.CopyFrom(rule)
        if not info.sip_dispatch_rule_id:
            info.sip_dispatch_rule_id = new_id("SDR_")
        self.rules.append(info)
        return info

    def call(
        self, from_number: str, to_number: str = "+15550001000", *, host: str = "sip.example.com"
    ) -> InboundCall:
        """A call arrives: the first rule places it in a room, which launches its agents.

        Raises:
            LookupError: No dispatch rule is installed (LiveKit rejects the call).
        """
        if not self.rules:
            raise LookupError("no dispatch rule: LiveKit's SIP service rejects the call")
        rule = self.rules[0]
        room_name, identity, name, attributes = evaluate_dispatch_rule(
            rule,
            from_number=from_number,
            to_number=to_number,
            host=host,
            call_id=new_id("SCL_"),
        )
        config = rule.room_config if rule.HasField("room_config") else None
        existed = self.rooms.get_room(room_name) is not None
        info = self._room_created(room_name, config)
        connection = self.rooms.connect(room_name, identity, "sip", attributes=attributes)
        jobs = []
        if not existed:
            jobs = self.dispatch.launch_room_jobs(info, list(config.agents) if config else [])
        call = InboundCall(
            room=room_name,
            identity=identity,
            connection=connection,
            attributes=attributes,
            jobs=jobs,
            joined_at=asyncio.get_running_loop().time(),
        )
        self.calls.append(call)
        return call
