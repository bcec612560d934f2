#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pytest fixtures: the offline world, to test your own bot through a whole warm transfer.

Installed with the package as a pytest plugin (entry point `pytest11`); without the
installed entry point, load it with `-p pipecat_warm_transfer.testing.pytest_plugin` or
`pytest_plugins = ["pipecat_warm_transfer.testing.pytest_plugin"]` in a `conftest.py`.

- `scripted_humans`: the phones behind each number (`dict[str, HumanScript]`), read when
  the bot dials; `default_humans()` unless you override the fixture.
- `livekit_emulator`: a running `LiveKitEmulator` on loopback whose phones are
  `scripted_humans` (LiveKit Cloud's behaviour; set `oss = True` for self-hosted LiveKit,
  which has no MoveParticipant).
- `offline_call`: an `OfflineCall` on that emulator: a scripted caller in the caller's
  room, a `LiveKitSipBackend` and a transport for your bot, the transfer's events,
  results and leak counts. It is finished after the test if the test did not.

The async fixtures need pytest-asyncio (in its default strict mode, mark the tests
`@pytest.mark.asyncio`); they run on your default fixture loop scope. Without
pytest-asyncio they fail with a message saying so, and the plugin still loads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from pipecat_warm_transfer.testing.livekit_emulator import LiveKitEmulator, default_humans
from pipecat_warm_transfer.testing.offline_call import OfflineCall
from pipecat_warm_transfer.testing.scripted_party import HumanScript

try:
    import pytest_asyncio
except ImportError:  # the async fixtures say so when used
    pytest_asyncio = None


def _async_fixture(func: Callable) -> Callable:
    """An async fixture through pytest-asyncio, or one that says pytest-asyncio is needed."""
    if pytest_asyncio is not None:
        return pytest_asyncio.fixture(func)  # on your default fixture loop scope

    @pytest.fixture(name=func.__name__)
    def _needs_pytest_asyncio():
        pytest.fail(
            f"the {func.__name__!r} fixture of pipecat-warm-transfer is async: "
            "install pytest-asyncio (pip install 'pytest-asyncio>=0.24')",
            pytrace=False,
        )

    _needs_pytest_asyncio.__doc__ = func.__doc__
    return _needs_pytest_asyncio


@pytest.fixture
def scripted_humans() -> dict[str, HumanScript]:
    """The phones a transfer can dial, by number: put a `HumanScript` there.

    By default `default_humans()`: `+15550100` answers after 1 s, greets, presses 1 (accept)
    3 s later; `+15550101` is busy, `+15550102` never answered, `+15550103` declines,
    `+15550104` fails. Changes made during a test apply to the dials that follow.
    """
    return default_humans()


@_async_fixture
async def livekit_emulator(
    scripted_humans: dict[str, HumanScript],
) -> AsyncIterator[LiveKitEmulator]:
    """A running `LiveKitEmulator` on 127.0.0.1 whose phones are `scripted_humans`."""
    async with LiveKitEmulator() as emulator:
        emulator.humans = scripted_humans  # the same dict: later changes apply
        yield emulator


@_async_fixture
async def offline_call(livekit_emulator: LiveKitEmulator) -> AsyncIterator[OfflineCall]:
    """An `OfflineCall` on `livekit_emulator`, finished after the test."""
    call = OfflineCall(livekit_emulator)
    try:
        yield call
    finally:
        await call.finish()
