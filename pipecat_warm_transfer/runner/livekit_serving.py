#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Serves calls on a LiveKit deployment: the `run` command.

`run_livekit(loaded, room=...)` joins one room, or waits for inbound SIP calls (rooms with
a SIP participant and no bot) and serves each in its own pipeline, built by
`pipecat_warm_transfer.runner.builder` on `LiveKitTransport` and `LiveKitSipBackend`
(`livekit_call`), until SIGINT/SIGTERM, which ends every call cleanly (each transfer torn
down). `livekit_room_call` builds a call that joins with a token minted elsewhere (Pipecat's
runner, a dispatcher); `serve_call` runs one call to its end.
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
from pipecat_warm_transfer.runner.builder import (
    BotCall,
    build_bot,
    hold_mixer,
    run_call,
    transport_params,
)

#: Bound on a call's shutdown after SIGINT.
SHUTDOWN_SECS = 15.0
#: Rooms the transfer creates for the human; never served as inbound calls.
CONSULT_ROOM_PREFIX = "consult-"

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
        if self.url.lower().startswith("https://"):
            return "wss://" + self.url[len("https://") :]
        if self.url.lower().startswith("http://"):
            return "ws://" + self.url[len("http://") :]
        return self.url

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
        trunk_id=config.transfer.target.trunk_id,
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


async def waiting_sip_rooms(
    access: LiveKitAccess, *, bot_identity: str, prefix: str | None = None, lkapi=None
) -> list[str]:
    """Rooms with a SIP participant and no bot yet (inbound calls to serve).

    The transfer's own consult rooms (`consult-…`) are skipped.
    """
    from livekit import api
    from livekit.protocol.models import ParticipantInfo

    own = lkapi is None
    lkapi = lkapi or api.LiveKitAPI(access.url, access.api_key, access.api_secret)
    try:
        rooms = (await lkapi.room.list_rooms(api.ListRoomsRequest())).rooms
        waiting = []
        for room in rooms:
            if room.name.startswith(CONSULT_ROOM_PREFIX):
                continue
            if prefix and not room.name.startswith(prefix):
                continue
            people = (
                await lkapi.room.list_participants(api.ListParticipantsRequest(room=room.name))
            ).participants
            has_bot = any(p.identity == bot_identity for p in people)
            has_sip = any(p.kind == ParticipantInfo.Kind.SIP for p in people)
            if has_sip and not has_bot:
                waiting.append(room.name)
        return waiting
    finally:
        if own:
            await lkapi.aclose()


async def run_livekit(
    loaded: LoadedConfig,
    *,
    room: str | None = None,
    poll_secs: float = 1.0,
    max_calls: int | None = None,
) -> int:
    """The `run` command: serve one room, or every inbound SIP call, until SIGINT.

    Args:
        loaded: The validated bot declaration.
        room: Join this room (dispatch by room name); None waits for SIP calls.
        poll_secs: How often to look for new inbound SIP calls.
        max_calls: Stop after serving this many calls (None: run until SIGINT).

    Returns:
        The process exit code.
    """
    access = LiveKitAccess.from_config(loaded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            pass
    calls: dict[str, tuple[BotCall, asyncio.Task]] = {}
    served = 0

    def serve(name: str) -> None:
        nonlocal served
        call = livekit_call(loaded, access, name)
        calls[name] = (call, asyncio.create_task(serve_call(call), name=f"call-{name}"))
        served += 1

    try:
        if room is not None:
            logger.info(f"{loaded.config.bot.name}: joining room {room}")
            serve(room)
        else:
            logger.info(f"{loaded.config.bot.name}: waiting for inbound SIP calls")
        while not stop.is_set():
            for name, (_call, task) in list(calls.items()):
                if task.done():
                    calls.pop(name)
                    if not task.cancelled() and task.exception() is not None:
                        error = task.exception()
                        logger.error(f"call {name}: {type(error).__name__}: {error}")
            finished = room is not None or (max_calls is not None and served >= max_calls)
            if finished and not calls:
                break
            if not finished:
                for name in await _poll(access, loaded, calls):
                    serve(name)
            try:
                await asyncio.wait_for(stop.wait(), poll_secs)
            except TimeoutError:
                pass
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await _stop_calls(loaded, calls)
    return 0


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


async def _poll(access: LiveKitAccess, loaded: LoadedConfig, calls: dict) -> list[str]:
    try:
        rooms = await waiting_sip_rooms(
            access,
            bot_identity=loaded.config.livekit.bot_identity,
            prefix=loaded.config.livekit.room_prefix,
        )
    except Exception as e:
        logger.warning(f"looking for inbound calls failed: {type(e).__name__}")
        return []
    return [name for name in rooms if name not in calls]
