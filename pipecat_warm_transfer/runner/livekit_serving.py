#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Serves calls on a LiveKit deployment: the `run` command.

`run_livekit(loaded)` registers the process with LiveKit's agent dispatch, which hands it
inbound calls (`dispatch_serving`); `run_livekit(loaded, room=...)` joins one room. Each
call is its own pipeline, built by `pipecat_warm_transfer.runner.builder` on
`LiveKitTransport` and `LiveKitSipBackend` (`livekit_call`). SIGINT/SIGTERM ends calls
cleanly (each transfer torn down). `livekit_room_call` builds a call that joins
with a token minted elsewhere (a dispatched job, Pipecat's runner); `serve_call` runs one
call to its end.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger
from pipecat.transports.base_transport import BaseTransport

from pipecat_warm_transfer.config.loader import ConfigError
from pipecat_warm_transfer.config.validate import LoadedConfig
from pipecat_warm_transfer.runner.agent_worker import CallAssignment, ServedCall, websocket_url
from pipecat_warm_transfer.runner.builder import (
    BotCall,
    build_bot,
    hold_mixer,
    run_call,
    transport_params,
)

#: Bound on a call's shutdown after SIGINT.
SHUTDOWN_SECS = 15.0

#: Builds the caller's transport: `factory(url, token, room_name, params=...)`, as
#: `LiveKitTransport` is called (the default).
CallerTransportFactory = Callable[..., BaseTransport]


@dataclass
class LiveKitAccess:
    """The LiveKit deployment, from the YAML or the `LIVEKIT_*` environment.

    Parameters:
        url: Server URL.
        api_key: API key.
        api_secret: API secret.
    """

    url: str
    api_key: str
    api_secret: str = field(repr=False)

    @property
    def rtc_url(self) -> str:
        """The media URL (`ws(s)://`)."""
        return media_url(self.url)

    @classmethod
    def from_config(cls, loaded: LoadedConfig, *, url: str | None = None) -> LiveKitAccess:
        """Read the access, refusing a missing field with the field's line.

        Args:
            loaded: The bot declaration.
            url: The server the caller's room is on, when known (a runner's): it wins
                over the YAML's, since the transfer must reach that same server.
        """
        section = loaded.config.livekit
        values = {
            "url": url or section.url or os.getenv("LIVEKIT_URL"),
            "api_key": (section.api_key.get_secret_value() if section.api_key else None)
            or os.getenv("LIVEKIT_API_KEY"),
            "api_secret": (section.api_secret.get_secret_value() if section.api_secret else None)
            or os.getenv("LIVEKIT_API_SECRET"),
        }
        missing = [
            loaded.problem(("livekit", name), f"not set here nor in LIVEKIT_{name.upper()}")
            for name, value in values.items()
            if not value
        ]
        if missing:
            raise ConfigError(missing)
        return cls(**values)

    def join_token(self, room: str, identity: str, name: str | None = None) -> str:
        """A token that lets `identity` join `room` (that room only)."""
        from livekit import api

        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_name(name or identity)
            .with_grants(api.VideoGrants(room_join=True, room=room))
            .to_jwt()
        )


def livekit_call(loaded: LoadedConfig, access: LiveKitAccess, room: str) -> BotCall:
    """Build the bot of one LiveKit room: `LiveKitTransport` and `LiveKitSipBackend`."""
    config = loaded.config
    token = access.join_token(room, config.livekit.bot_identity, config.bot.name)
    return livekit_room_call(loaded, access, room, url=access.rtc_url, token=token)


def livekit_room_call(
    loaded: LoadedConfig,
    access: LiveKitAccess,
    room: str,
    *,
    url: str,
    token: str,
    transport_factory: CallerTransportFactory | None = None,
) -> BotCall:
    """Build the bot of one LiveKit room, joining it with a token minted elsewhere.

    Args:
        loaded: The validated bot declaration.
        access: The API key and secret the transfer uses (a join token is not enough to
            dial or move anyone).
        room: The caller's room.
        url: The media URL to join it at.
        token: A join token for that room.
        transport_factory: Builds the caller's transport (default `LiveKitTransport`).

    Returns:
        The call, ready for `serve_call`.
    """
    from pipecat.transports.livekit.transport import LiveKitParams, LiveKitTransport

    from pipecat_warm_transfer.backends.livekit import LiveKitSipBackend

    config = loaded.config
    mixer = hold_mixer(loaded)
    factory = transport_factory or LiveKitTransport
    transport = factory(url, token, room, params=transport_params(loaded, mixer, LiveKitParams))
    backend = LiveKitSipBackend(
        url=access.url,
        api_key=access.api_key,
        api_secret=access.api_secret,
        trunk_id=config.transfer.humans[0].trunk_id,
    )
    return build_bot(
        loaded,
        transport=transport,
        backend=backend,
        hold_mixer=mixer,
        caller_room=room,
        bot_identity=config.livekit.bot_identity,
    )


async def serve_call(call: BotCall, *, handle_sigint: bool = False) -> BotCall:
    """Run a call until it ends, then close its transfer backend.

    Returns:
        The ended call (its `results`).
    """
    try:
        await run_call(call, handle_sigint=handle_sigint)
    finally:
        await call.backend.close()
    return call


async def run_livekit(
    loaded: LoadedConfig,
    *,
    room: str | None = None,
    health_host: str = "0.0.0.0",
    health_port: int | None = 8081,
    make_call: Callable[[CallAssignment], ServedCall] | None = None,
) -> int:
    """The `run` command: serve the calls LiveKit dispatches to us, or join one room.

    Args:
        loaded: The validated bot declaration.
        room: Join this room and serve it until the caller leaves (for trying a bot out);
            None registers with LiveKit's agent dispatch (see `dispatch_serving`).
        health_host: Address of the health endpoints (dispatch only).
        health_port: Port of the health endpoints (None: none; dispatch only).
        make_call: Builds the call of one dispatched job (default: the YAML bot on
            Pipecat's `LiveKitTransport`, joining with the job's token).

    Returns:
        The process exit code.
    """
    access = LiveKitAccess.from_config(loaded)
    if room is None:
        from pipecat_warm_transfer.runner.dispatch_serving import serve_dispatch

        return await serve_dispatch(
            loaded,
            url=access.url,
            api_key=access.api_key,
            api_secret=access.api_secret,
            make_call=make_call or dispatched_call_maker(loaded, access),
            health_host=health_host,
            health_port=health_port,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    logger.info(f"{loaded.config.bot.name}: joining room {room}")
    call = livekit_call(loaded, access, room)
    task = asyncio.create_task(serve_call(call), name=f"call-{room}")
    calls = {room: (call, task)}
    try:
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            logger.error(f"call {room}: {type(error).__name__}: {error}")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _stop_calls(loaded, calls)
    return 0


def dispatched_call_maker(
    loaded: LoadedConfig,
    access: LiveKitAccess,
    *,
    transport_factory: CallerTransportFactory | None = None,
) -> Callable[[CallAssignment], ServedCall]:
    """How a dispatched job becomes a call: the YAML bot joins with the job's token.

    Args:
        loaded: The validated bot declaration.
        access: The API key and secret the transfer uses.
        transport_factory: Builds the caller's transport (default `LiveKitTransport`).
    """
    from pipecat_warm_transfer.runner.dispatch_serving import BotServedCall

    def make_call(served: CallAssignment) -> ServedCall:
        call = livekit_room_call(
            loaded,
            access,
            served.room,
            url=media_url(served.url),
            token=served.token,
            transport_factory=transport_factory,
        )
        return BotServedCall(call)

    return make_call


#: A server URL as the media connection wants it (`http(s)://` → `ws(s)://`).
media_url = websocket_url


async def _stop_calls(loaded: LoadedConfig, calls: dict[str, tuple[BotCall, asyncio.Task]]):
    """End every call cleanly (its transfer torn down), then make sure its task is gone."""
    running = [(call, task) for call, task in calls.values() if not task.done()]
    if not running:
        return
    logger.info(f"{loaded.config.bot.name}: stopping {len(running)} call(s)")
    for call, _task in running:
        try:
            await call.cancel()
        except Exception as e:
            logger.warning(f"call {call.name}: cancel: {type(e).__name__}: {e}")
    tasks = [task for _call, task in running]
    _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_SECS)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=SHUTDOWN_SECS)
