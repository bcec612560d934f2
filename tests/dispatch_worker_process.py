"""A worker process for `test_dispatch_processes.py` (a script: pytest does not collect it).

It runs the production `serve_dispatch` (registration, load reports, health endpoints,
SIGTERM drain) from a bot YAML, with each dispatched call a `SignalRoomCall`: a presence
in the caller's room over the server's `/rtc` signal. One JSON line per call event goes
to stdout (`joined`, `left`, with room and job id) for the test to count; logs go to
stderr, among them serve_dispatch's `health checks on http://HOST:PORT`.

    python tests/dispatch_worker_process.py BOT.yaml [--health-port 0]
"""

import argparse
import asyncio
import json
import os
import sys

from pipecat_warm_transfer.config import load_config
from pipecat_warm_transfer.runner.dispatch_serving import serve_dispatch
from pipecat_warm_transfer.runner.livekit_serving import LiveKitAccess
from pipecat_warm_transfer.testing.signal_call import SignalRoomCall


def print_event(name: str, fields: dict) -> None:
    """One JSON line per event, flushed at once (the test reads as it goes)."""
    sys.stdout.write(json.dumps({"event": name, "pid": os.getpid(), **fields}) + "\n")
    sys.stdout.flush()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--health-port", type=int, default=0)
    args = parser.parse_args()
    loaded = load_config(args.config)
    access = LiveKitAccess.from_config(loaded)
    return await serve_dispatch(
        loaded,
        url=access.url,
        api_key=access.api_key,
        api_secret=access.api_secret,
        make_call=lambda served: SignalRoomCall(served, on_event=print_event),
        health_host="127.0.0.1",
        health_port=args.health_port,
        max_retries=2,
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
