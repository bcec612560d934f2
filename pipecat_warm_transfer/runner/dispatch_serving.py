#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""`run` without `--room`: serve the calls LiveKit's agent dispatch sends this process.

The process registers as an agent worker under `livekit.agent_name` (default: the bot's
name). A SIP dispatch rule naming that agent (`pipecat-warm-transfer dispatch-rule`
prints one) makes LiveKit hand each inbound call to exactly one registered process,
weighted by the load each reports. Run more processes for more capacity.

SIGTERM or SIGINT drains: the process reports full, takes no new call, and waits up to
`livekit.drain_timeout` for its calls to end before ending the rest cleanly (each transfer
torn down). A second signal ends every call at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from loguru import logger

from pipecat_warm_transfer.config.validate import LoadedConfig
from pipecat_warm_transfer.runner.agent_worker import (
    AgentWorker,
    CallAssignment,
    CpuShare,
    ServedCall,
    WorkerOptions,
)
from pipecat_warm_transfer.runner.builder import BotCall
from pipecat_warm_transfer.runner.health import HealthServer


def worker_options(loaded: LoadedConfig) -> WorkerOptions:
    """The agent worker's registration and capacity, as the YAML declares them."""
    config = loaded.config
    section = config.livekit
    return WorkerOptions(
        agent_name=section.agent_name or config.bot.name,
        identity=section.bot_identity,
        participant_name=config.bot.name,
        max_calls=section.max_calls,
        load_threshold=section.load_threshold,
        drain_timeout=section.drain_timeout,
    )


class BotServedCall:
    """A YAML bot's call as a worker runs it: until the caller leaves, or stopped early."""

    def __init__(self, call: BotCall):
        self.call = call

    async def run(self) -> None:
        """Run the call's pipeline to its end, then release its backend."""
        from pipecat_warm_transfer.runner.livekit_serving import serve_call

        await serve_call(self.call)

    async def stop(self, reason: str) -> None:
        """End the call cleanly: any transfer torn down, the pipeline cancelled."""
        await self.call.cancel(reason)


async def serve_dispatch(
    loaded: LoadedConfig,
    *,
    url: str,
    api_key: str,
    api_secret: str,
    make_call: Callable[[CallAssignment], ServedCall],
    health_host: str = "0.0.0.0",
    health_port: int | None = 8081,
    max_retries: int = 16,
) -> int:
    """Register with LiveKit's agent dispatch and serve calls until a signal drains us.

    Args:
        loaded: The validated bot declaration.
        url: LiveKit server URL.
        api_key: API key.
        api_secret: API secret.
        make_call: Builds the call of one assignment.
        health_host: Address of the health endpoints.
        health_port: Port of the health endpoints (None: none).
        max_retries: Failed connection attempts in a row before giving up.

    Returns:
        The process exit code: 0 after a drain, 1 when LiveKit could not be reached.
    """
    options = worker_options(loaded)
    worker = AgentWorker(url, api_key, api_secret, options, make_call, cpu_load=CpuShare())
    health = None
    if health_port is not None:
        health = await HealthServer(worker, health_host, health_port).start()
    signals = asyncio.Queue()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, signals.put_nowait, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    running = asyncio.create_task(worker.run(max_retries=max_retries), name="agent-worker")
    first_signal = asyncio.create_task(signals.get())
    try:
        await asyncio.wait({running, first_signal}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            first_signal.cancel()
            error = running.exception()
            if error is not None:
                logger.error(f"{type(error).__name__}: {error}")
                return 1
            return 0
        sig = first_signal.result()
        logger.info(f"{signal.Signals(sig).name}: draining (a second signal ends every call)")
        drain = asyncio.create_task(worker.drain())
        second_signal = asyncio.create_task(signals.get())
        await asyncio.wait({drain, second_signal}, return_when=asyncio.FIRST_COMPLETED)
        second_signal.cancel()
        if not drain.done():
            logger.info("second signal: ending every call now")
            drain.cancel()
        await worker.close()
        await running
        logger.info(f"drained after {worker.calls_served} call(s)")
        return 0
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if not running.done():
            await worker.close()
            await asyncio.gather(running, return_exceptions=True)
        if health is not None:
            health.stopped = True
            await health.stop()
