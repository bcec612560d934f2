#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""LiveKit's agent dispatch, worker side: LiveKit decides which process takes each call.

A worker keeps one WebSocket open to the server's `/agent` endpoint, authenticated by an
API token with the `agent` grant, and registers for room jobs under an agent name. A SIP
dispatch rule whose room config names that agent makes the server create one job per
inbound call's room. The server offers the job to one registered worker, picked at random
and weighted by its free capacity (1 - load), and moves on to the next if it declines.
The worker that accepts gets a join token for that room. So each call reaches exactly one
process and nobody polls.

The worker reports its load and status every 2.5 s, as LiveKit's own worker library does,
and declines jobs while full or draining. `drain()` (SIGTERM) takes no new call and waits
for the current ones to end; calls still running at the drain timeout are ended cleanly.

The messages are LiveKit's (`livekit.protocol.agent`); the server side read for this is
livekit/livekit `pkg/service/agentservice.go` and `pkg/agent/worker.go`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from livekit import api
from livekit.protocol import agent, models
from loguru import logger

from pipecat_warm_transfer import __version__

#: How often the worker reports its load and status (LiveKit's worker library: 2.5 s).
STATUS_INTERVAL_SECS = 2.5
#: How long an accepted job waits for its assignment (LiveKit's worker library: 7.5 s).
ASSIGNMENT_TIMEOUT_SECS = 7.5
#: How long the server's register answer may take (its own deadline is 10 s).
REGISTER_TIMEOUT_SECS = 10.0
#: The attribute LiveKit gives an agent's participant (pkg/agent/worker.go).
AGENT_NAME_ATTRIBUTE = "lk.agent_name"


@dataclass(frozen=True)
class CallAssignment:
    """One inbound call LiveKit gave this worker.

    Parameters:
        job_id: LiveKit's job id (the call id in logs).
        room: The caller's room.
        url: The server to join (the worker's own unless the server names another).
        token: The join token LiveKit minted for this room and identity.
        identity: The bot's identity in the room.
        dispatch_id: The agent dispatch the job belongs to.
        metadata: The dispatch's metadata (from the dispatch rule's room config).
    """

    job_id: str
    room: str
    url: str
    token: str = field(repr=False)
    identity: str
    dispatch_id: str = ""
    metadata: str = ""


class ServedCall(Protocol):
    """A call a worker runs: it runs until the caller leaves and can be ended early."""

    async def run(self) -> None:
        """Serve the call until it ends."""
        ...

    async def stop(self, reason: str) -> None:
        """End the call now, cleanly (any transfer torn down, the caller told)."""
        ...


class CpuShare:
    """This process's CPU use as a share of the machine, between two readings."""

    def __init__(self):
        self._cores = os.cpu_count() or 1
        self._last = (time.monotonic(), time.process_time())

    def __call__(self) -> float:
        """The share (0..1) used since the last reading."""
        now = (time.monotonic(), time.process_time())
        wall = now[0] - self._last[0]
        cpu = now[1] - self._last[1]
        self._last = now
        if wall <= 0:
            return 0.0
        return min(1.0, cpu / (wall * self._cores))


@dataclass
class WorkerOptions:
    """How a worker registers and how much it takes.

    Parameters:
        agent_name: The name dispatch rules use to send calls to these workers.
        identity: The bot's participant identity in each caller's room.
        participant_name: The bot's display name in the room.
        max_calls: Calls served at once; the worker reports full at this many.
        load_threshold: The load (0..1) at which the worker reports full and declines.
        drain_timeout: Seconds a drain waits for calls to end before ending them.
        status_interval: Seconds between load reports.
    """

    agent_name: str
    identity: str
    participant_name: str | None = None
    max_calls: int = 10
    load_threshold: float = 0.75
    drain_timeout: float = 600.0
    status_interval: float = STATUS_INTERVAL_SECS

    def __post_init__(self):
        if not self.agent_name:
            raise ValueError("agent_name is required: a dispatch rule names the agent")
        if self.max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        if not 0 < self.load_threshold <= 1:
            raise ValueError("load_threshold must be in (0, 1]")


class AgentWorker:
    """One process's registration with LiveKit's agent dispatch.

    `run()` connects, registers and serves until `close()`, reconnecting with backoff
    when the connection drops (calls in progress go on). Each assigned job becomes a
    call made by `make_call(assignment)`, run in its own task with the room and job id
    bound to its log lines.

    Parameters:
        url: LiveKit server URL (`https://`, `wss://`, ...).
        api_key: API key (the worker's token carries the `agent` grant only).
        api_secret: API secret.
        options: Agent name, identity and capacity.
        make_call: Builds the call of one assignment.
        cpu_load: A reading of CPU use (0..1) folded into the load; None: calls only.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        api_secret: str,
        options: WorkerOptions,
        make_call: Callable[[CallAssignment], ServedCall],
        *,
        cpu_load: Callable[[], float] | None = None,
    ):
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self.options = options
        self._make_call = make_call
        self._cpu_load = cpu_load
        self._cpu = 0.0
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = asyncio.Event()
        self._draining = False
        self._reserved = 0
        self._pending: dict[str, asyncio.Future[agent.JobAssignment]] = {}
        self._calls: dict[str, tuple[ServedCall, asyncio.Task]] = {}
        self._tasks: set[asyncio.Task] = set()
        self._send_lock = asyncio.Lock()
        self.worker_id: str | None = None
        self.server_version: str | None = None
        self.calls_served = 0

    # State an orchestrator reads

    @property
    def registered(self) -> bool:
        """Whether the worker is registered with LiveKit right now."""
        return self.worker_id is not None and self._ws is not None and not self._ws.closed

    @property
    def draining(self) -> bool:
        """Whether the worker takes no new calls."""
        return self._draining

    @property
    def active_calls(self) -> int:
        """Calls in progress."""
        return len(self._calls)

    @property
    def load(self) -> float:
        """The load LiveKit sees (0..1): calls over capacity, or the CPU share if higher."""
        calls = (len(self._calls) + self._reserved) / self.options.max_calls
        return round(min(1.0, max(calls, self._cpu)), 4)

    @property
    def available(self) -> bool:
        """Whether the worker would take one more call now."""
        return not self._draining and self.load < self.options.load_threshold

    def status(self) -> dict:
        """A snapshot for health checks and logs."""
        return {
            "worker_id": self.worker_id,
            "agent_name": self.options.agent_name,
            "registered": self.registered,
            "draining": self._draining,
            "active_calls": self.active_calls,
            "max_calls": self.options.max_calls,
            "load": self.load,
            "calls_served": self.calls_served,
        }

    # Life cycle

    async def run(self, *, max_retries: int = 16) -> None:
        """Connect, register and serve until `close()`.

        Args:
            max_retries: Failed connection attempts in a row before giving up.

        Raises:
            ConnectionError: LiveKit could not be reached `max_retries` times in a row.
        """
        self._session = aiohttp.ClientSession()
        failures = 0
        try:
            while not self._closed.is_set():
                try:
                    await self._connect_and_serve()
                    failures = 0
                except (aiohttp.ClientError, OSError, TimeoutError, RegisterError) as e:
                    if self._closed.is_set():
                        break
                    failures += 1
                    if failures > max_retries:
                        raise ConnectionError(
                            f"could not register with LiveKit at {self._url} after "
                            f"{max_retries} attempts: {e}"
                        ) from None
                    delay = min(2.0 * (failures - 1), 10.0)
                    logger.warning(
                        f"agent worker: connection failed ({type(e).__name__}: {e}); "
                        f"retrying in {delay:.0f} s"
                    )
                    await self._sleep_unless_closed(delay)
                else:
                    if not self._closed.is_set():
                        logger.warning("agent worker: LiveKit closed the connection; reconnecting")
                        await self._sleep_unless_closed(0.5)
        finally:
            self.worker_id = None
            await self._end_calls("worker closed")
            await self._session.close()

    async def drain(self, timeout: float | None = None) -> bool:
        """Take no new call; wait for the current ones, then end what is left.

        Args:
            timeout: Seconds to wait (default `options.drain_timeout`).

        Returns:
            True when every call ended by itself within the timeout.
        """
        timeout = self.options.drain_timeout if timeout is None else timeout
        if not self._draining:
            self._draining = True
            logger.info(f"agent worker: draining ({self.active_calls} call(s) in progress)")
            await self._send_status()
        tasks = [task for _call, task in self._calls.values()]
        ended = True
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            ended = not pending
        if not ended:
            logger.warning(
                f"agent worker: drain timeout; ending {self.active_calls} call(s) still running"
            )
            await self._end_calls("drain timeout")
        return ended

    async def close(self) -> None:
        """Stop serving: end every call cleanly and close the connection."""
        self._closed.set()
        await self._end_calls("worker closed")
        if self._ws is not None:
            await self._ws.close()

    # The connection

    async def _connect_and_serve(self) -> None:
        token = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_grants(api.VideoGrants(agent=True))
            .to_jwt()
        )
        ws = await self._session.ws_connect(
            agent_url(self._url),
            headers={"Authorization": f"Bearer {token}"},
            heartbeat=30.0,
        )
        try:
            await self._register(ws)
            self._ws = ws
            if self._calls:
                # The server forgot our jobs with the old connection; tell it what runs.
                await self._send(
                    agent.WorkerMessage(
                        migrate_job=agent.MigrateJobRequest(job_ids=list(self._calls))
                    )
                )
            await self._send_status()
            status_task = asyncio.create_task(self._report_status(), name="agent-worker-status")
            try:
                await self._receive(ws)
            finally:
                status_task.cancel()
                await asyncio.gather(status_task, return_exceptions=True)
        finally:
            self._ws = None
            self.worker_id = None
            for future in self._pending.values():
                future.cancel()
            self._pending.clear()
            await ws.close()

    async def _register(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        message = agent.WorkerMessage()
        message.register.type = agent.JobType.JT_ROOM
        message.register.agent_name = self.options.agent_name
        message.register.version = __version__
        message.register.allowed_permissions.CopyFrom(
            models.ParticipantPermission(
                can_publish=True,
                can_subscribe=True,
                can_publish_data=True,
                can_update_metadata=True,
                agent=True,
            )
        )
        await ws.send_bytes(message.SerializeToString())
        reply = await ws.receive(timeout=REGISTER_TIMEOUT_SECS)
        if reply.type != aiohttp.WSMsgType.BINARY:
            raise RegisterError(f"LiveKit answered the registration with {reply.type.name}")
        answer = agent.ServerMessage.FromString(reply.data)
        if not answer.HasField("register"):
            raise RegisterError("LiveKit's first message was not the registration answer")
        self.worker_id = answer.register.worker_id
        self.server_version = answer.register.server_info.version
        logger.info(
            f"agent worker {self.worker_id}: registered as {self.options.agent_name!r} "
            f"(LiveKit {self.server_version or '?'}); up to {self.options.max_calls} calls"
        )

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for raw in ws:
            if raw.type != aiohttp.WSMsgType.BINARY:
                continue
            message = agent.ServerMessage.FromString(raw.data)
            which = message.WhichOneof("message")
            if which == "availability":
                self._spawn(self._answer_availability(message.availability.job))
            elif which == "assignment":
                self._take_assignment(message.assignment)
            elif which == "termination":
                self._terminate(message.termination.job_id)

    async def _send(self, message: agent.WorkerMessage) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        async with self._send_lock:
            try:
                await ws.send_bytes(message.SerializeToString())
            except (aiohttp.ClientError, ConnectionError) as e:
                logger.debug(f"agent worker: send failed: {type(e).__name__}")

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(self.options.status_interval)
            await self._send_status()

    async def _send_status(self) -> None:
        if self._cpu_load is not None:
            self._cpu = self._cpu_load()
        full = not self.available
        update = agent.UpdateWorkerStatus(
            status=agent.WorkerStatus.WS_FULL if full else agent.WorkerStatus.WS_AVAILABLE,
            load=self.load,
            job_count=self.active_calls,
        )
        await self._send(agent.WorkerMessage(update_worker=update))

    # Jobs

    async def _answer_availability(self, job: agent.Job) -> None:
        if self._cpu_load is not None:
            self._cpu = self._cpu_load()
        if not self.available:
            await self._send(
                agent.WorkerMessage(
                    availability=agent.AvailabilityResponse(job_id=job.id, available=False)
                )
            )
            logger.info(f"agent worker: declined a call for {job.room.name} (load {self.load})")
            return
        self._reserved += 1
        try:
            future: asyncio.Future[agent.JobAssignment] = asyncio.get_running_loop().create_future()
            self._pending[job.id] = future
            answer = agent.AvailabilityResponse(
                job_id=job.id,
                available=True,
                participant_identity=self.options.identity,
                participant_name=self.options.participant_name or self.options.identity,
            )
            answer.participant_attributes[AGENT_NAME_ATTRIBUTE] = self.options.agent_name
            await self._send(agent.WorkerMessage(availability=answer))
            try:
                assignment = await asyncio.wait_for(future, ASSIGNMENT_TIMEOUT_SECS)
            except TimeoutError:
                logger.warning(f"agent worker: no assignment for job {job.id}; forgot it")
                return
            except asyncio.CancelledError:
                return  # the connection dropped; the server forgot the job too
            finally:
                self._pending.pop(job.id, None)
            self._start_call(assignment)
        finally:
            self._reserved -= 1

    def _take_assignment(self, assignment: agent.JobAssignment) -> None:
        future = self._pending.get(assignment.job.id)
        if future is None or future.done():
            logger.warning(f"agent worker: assignment for an unknown job {assignment.job.id}")
            return
        future.set_result(assignment)

    def _start_call(self, assignment: agent.JobAssignment) -> None:
        job = assignment.job
        served = CallAssignment(
            job_id=job.id,
            room=job.room.name,
            url=assignment.url if assignment.HasField("url") and assignment.url else self._url,
            token=assignment.token,
            identity=job.state.participant_identity or self.options.identity,
            dispatch_id=job.dispatch_id,
            metadata=job.metadata,
        )
        try:
            call = self._make_call(served)
        except Exception as e:
            logger.error(f"call {job.id} in {job.room.name}: cannot start: {type(e).__name__}: {e}")
            self._spawn(self._job_status(job.id, agent.JobStatus.JS_FAILED, type(e).__name__))
            return
        task = asyncio.create_task(self._run_call(served, call), name=f"call-{job.room.name}")
        self._calls[job.id] = (call, task)
        self.calls_served += 1

    async def _run_call(self, served: CallAssignment, call: ServedCall) -> None:
        with logger.contextualize(room=served.room, call_id=served.job_id):
            logger.info(f"call {served.job_id}: taking the call in {served.room}")
            await self._job_status(served.job_id, agent.JobStatus.JS_RUNNING)
            status, error = agent.JobStatus.JS_SUCCESS, ""
            try:
                await call.run()
            except asyncio.CancelledError:
                status, error = agent.JobStatus.JS_FAILED, "cancelled"
                raise
            except Exception as e:
                status, error = agent.JobStatus.JS_FAILED, type(e).__name__
                logger.error(f"call {served.job_id}: failed: {type(e).__name__}: {e}")
            finally:
                self._calls.pop(served.job_id, None)
                await asyncio.shield(self._job_status(served.job_id, status, error))
                await self._send_status()

    def _terminate(self, job_id: str) -> None:
        entry = self._calls.get(job_id)
        if entry is None:
            return
        call, _task = entry
        logger.info(f"call {job_id}: LiveKit ended the job")
        self._spawn(call.stop("job terminated by LiveKit"))

    async def _job_status(self, job_id: str, status: int, error: str = "") -> None:
        update = agent.UpdateJobStatus(job_id=job_id, status=status, error=error)
        await self._send(agent.WorkerMessage(update_job=update))

    async def _end_calls(self, reason: str) -> None:
        entries = list(self._calls.values())
        for call, _task in entries:
            try:
                await call.stop(reason)
            except Exception as e:
                logger.warning(f"agent worker: ending a call: {type(e).__name__}: {e}")
        tasks = [task for _call, task in entries]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=15.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)

    # Helpers

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep_unless_closed(self, secs: float) -> None:
        try:
            await asyncio.wait_for(self._closed.wait(), secs)
        except TimeoutError:
            pass


class RegisterError(Exception):
    """LiveKit did not accept the worker's registration."""


def websocket_url(url: str) -> str:
    """A LiveKit server URL as a WebSocket wants it (`http(s)://` → `ws(s)://`)."""
    if url.lower().startswith("https://"):
        return "wss://" + url[len("https://") :]
    if url.lower().startswith("http://"):
        return "ws://" + url[len("http://") :]
    return url


def agent_url(url: str) -> str:
    """The `/agent` WebSocket URL of a LiveKit server URL (`http(s)`/`ws(s)`)."""
    return websocket_url(url.rstrip("/")) + "/agent"
