#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Health and readiness over HTTP, for an orchestrator (Kubernetes probes, a load balancer).

- `GET /healthz`: 200 while the process serves; 503 once its worker has stopped for good.
  A liveness probe restarts the process on 503.
- `GET /readyz`: 200 while LiveKit may send this process calls (registered, not draining);
  503 with the reason otherwise. A rollout waits for it; a drain turns it off at once.
- `GET /status`: the worker's figures as JSON (calls in progress, load, draining...).
"""

from __future__ import annotations

import json

from aiohttp import web
from loguru import logger

from pipecat_warm_transfer.runner.agent_worker import AgentWorker


class HealthServer:
    """Serves `/healthz`, `/readyz` and `/status` for one agent worker.

    Parameters:
        worker: The worker whose state is reported.
        host: Address to listen on (all interfaces by default, as probes come from outside).
        port: Port to listen on (0: any free port; see `port` once started).
    """

    def __init__(self, worker: AgentWorker, host: str = "0.0.0.0", port: int = 8081):
        self._worker = worker
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        #: Set when the worker has stopped for good: liveness fails from then on.
        self.stopped = False

    @property
    def port(self) -> int:
        """The port listened on (only once started)."""
        if self._runner is None or not self._runner.addresses:
            raise RuntimeError("the health server is not running")
        return self._runner.addresses[0][1]

    async def start(self) -> HealthServer:
        """Listen."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info(f"health checks on http://{self._host}:{self.port} (/healthz, /readyz)")
        return self

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, _request: web.Request) -> web.Response:
        if self.stopped:
            return web.Response(status=503, text="stopped\n")
        return web.Response(text="ok\n")

    async def _readyz(self, _request: web.Request) -> web.Response:
        worker = self._worker
        if worker.draining:
            return web.Response(status=503, text="draining\n")
        if not worker.registered:
            return web.Response(status=503, text="not registered with LiveKit\n")
        if not worker.available:
            return web.Response(status=503, text="full\n")
        return web.Response(text="ready\n")

    async def _status(self, _request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps(self._worker.status(), indent=2) + "\n",
            content_type="application/json",
        )
