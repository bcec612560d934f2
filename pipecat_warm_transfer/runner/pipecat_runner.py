#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The YAML-declared bot as a Pipecat runner entry: `async def bot(runner_args)`.

Pipecat's development runner and Pipecat Cloud-style hosts call a module's
`bot(runner_args)` once per session. This one reads the bot's YAML from the
`WARM_TRANSFER_CONFIG` environment variable, builds the call with
`pipecat_warm_transfer.runner.builder` on Pipecat's `LiveKitTransport` (joining the
runner's room with the runner's URL and token) and `LiveKitSipBackend`, and runs it until
the caller leaves. The runner's token only joins the room, so the transfer's API key and
secret come from the YAML's `livekit` section or `LIVEKIT_API_KEY`/`LIVEKIT_API_SECRET`.
Only LiveKit sessions (`LiveKitRunnerArguments`) are served.

Run it with Pipecat's development runner::

    export WARM_TRANSFER_CONFIG=examples/bot.yaml
    export LIVEKIT_URL=wss://... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=...
    python -m pipecat_warm_transfer.runner.pipecat_runner -t livekit

or from your own bot file, which the runner (or a host) then finds as usual::

    from pipecat_warm_transfer.runner.pipecat_runner import bot  # noqa: F401

    if __name__ == "__main__":
        from pipecat.runner.run import main

        main()

Pipecat's idle timeout is off (`runner_args.pipeline_idle_timeout_secs` is not used): a
caller on hold or joined to a human makes none of the frames it watches, and the call ends
when the caller leaves instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from loguru import logger
from pipecat.runner.types import LiveKitRunnerArguments, RunnerArguments

from pipecat_warm_transfer.config.loader import ConfigError
from pipecat_warm_transfer.config.validate import LoadedConfig, load_config
from pipecat_warm_transfer.runner.builder import BotCall
from pipecat_warm_transfer.runner.livekit_serving import (
    CallerTransportFactory,
    LiveKitAccess,
    livekit_room_call,
    serve_call,
)
from pipecat_warm_transfer.types import TransferConfigError

#: The environment variable naming the bot's YAML file.
CONFIG_ENV = "WARM_TRANSFER_CONFIG"


class RunnerEntryError(RuntimeError):
    """The runner entry cannot serve the session; the message is one line saying why."""


def load_entry_config(environ: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load the bot declaration named by `WARM_TRANSFER_CONFIG`.

    Args:
        environ: The environment (default: `os.environ`).

    Raises:
        RunnerEntryError: The variable is unset, or the file has problems (one line).
    """
    environ = os.environ if environ is None else environ
    path = environ.get(CONFIG_ENV, "").strip()
    if not path:
        raise RunnerEntryError(f"{CONFIG_ENV} is not set: set it to the bot's YAML file")
    try:
        return load_config(path, environ=environ)
    except ConfigError as e:
        raise RunnerEntryError(_one_line(e)) from None


def _one_line(error: ConfigError) -> str:
    problems = "; ".join(str(problem) for problem in error.problems)
    return f"{CONFIG_ENV}: {problems}"


def livekit_session(runner_args: RunnerArguments) -> LiveKitRunnerArguments:
    """The session, when it is a LiveKit one (the only kind served).

    Raises:
        RunnerEntryError: Any other transport's session.
    """
    if not isinstance(runner_args, LiveKitRunnerArguments):
        raise RunnerEntryError(
            f"pipecat-warm-transfer serves LiveKit sessions only (run with -t livekit); "
            f"got {type(runner_args).__name__}"
        )
    return runner_args


def runner_call(
    runner_args: RunnerArguments,
    loaded: LoadedConfig,
    *,
    transport_factory: CallerTransportFactory | None = None,
) -> BotCall:
    """Build the session's call: the runner's room, URL and token, the YAML's bot.

    Args:
        runner_args: The session, from Pipecat's runner or a host.
        loaded: The bot declaration.
        transport_factory: Builds the caller's transport (default `LiveKitTransport`).

    Raises:
        RunnerEntryError: Not a LiveKit session, or a problem in the declaration or the
            transfer's settings.
    """
    session = livekit_session(runner_args)
    try:
        access = LiveKitAccess.from_config(loaded, url=session.url)
        return livekit_room_call(
            loaded,
            access,
            session.room_name,
            url=session.url,
            token=session.token,
            transport_factory=transport_factory,
        )
    except ConfigError as e:
        raise RunnerEntryError(_one_line(e)) from None
    except TransferConfigError as e:  # already one line naming the setting
        raise RunnerEntryError(str(e)) from None


async def run_bot(
    runner_args: RunnerArguments,
    loaded: LoadedConfig,
    *,
    transport_factory: CallerTransportFactory | None = None,
) -> BotCall:
    """Serve one session until the caller leaves (or SIGINT, with `handle_sigint`).

    Returns:
        The ended call (its transfer `results`).
    """
    call = runner_call(runner_args, loaded, transport_factory=transport_factory)
    return await serve_call(call, handle_sigint=runner_args.handle_sigint)


async def bot(runner_args: RunnerArguments) -> None:
    """Pipecat's runner entry: serve one LiveKit session with the declared bot."""
    try:
        livekit_session(runner_args)  # first: the config does not matter for another transport
        await run_bot(runner_args, load_entry_config())
    except RunnerEntryError as e:  # raised before the call starts
        logger.error(f"pipecat-warm-transfer: {e}")  # the runner may not show the task's error
        raise


if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
