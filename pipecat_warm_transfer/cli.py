#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The `pipecat-warm-transfer` command (also `python -m pipecat_warm_transfer`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from pipecat_warm_transfer import __version__


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="pipecat-warm-transfer",
        description="Warm transfer from a Pipecat voice bot to a human over LiveKit SIP.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="run the offline demo (no accounts, keys or servers needed)"
    )
    demo.add_argument("--scenario", default="success", help="scenario to run (see --list)")
    demo.add_argument("--out", default=None, help="output folder (default ./demo-out/SCENARIO)")
    demo.add_argument("--list", action="store_true", help="list the scenarios and exit")
    demo.add_argument(
        "--config", default=None, help="use this bot YAML's transfer settings (see validate)"
    )
    demo.add_argument(
        "--caller-output",
        choices=("livekit", "memory"),
        default="livekit",
        help="what the caller hears the bot through: Pipecat's real LiveKit output and a "
        "livekit-rtc AudioSource (default), or the in-memory room",
    )

    emulator = commands.add_parser(
        "emulator", help="serve the offline LiveKit API emulator on loopback (for your tests)"
    )
    emulator.add_argument("--port", type=int, default=7880, help="port on 127.0.0.1")
    emulator.add_argument("--api-key", default="devkey", help="API key tokens must carry")
    emulator.add_argument(
        "--api-secret", default=None, help="API secret (default: the emulator's own)"
    )
    emulator.add_argument("--oss", action="store_true", help="no MoveParticipant (open source)")

    schema = commands.add_parser("schema", help="print the JSON Schema of the bot YAML")
    schema.add_argument("--out", default=None, help="write it to this file instead")

    validate = commands.add_parser(
        "validate", help="check bot YAML files (exit 2 with one line per problem)"
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="bot YAML file(s)")

    run = commands.add_parser(
        "run",
        help="serve the declared bot on LiveKit: register with its agent dispatch, which "
        "sends this process inbound calls (SIGTERM drains)",
    )
    run.add_argument("file", metavar="FILE", help="bot YAML file")
    run.add_argument(
        "--room", default=None, help="join this one room instead (for trying a bot out)"
    )
    run.add_argument(
        "--health-port",
        type=int,
        default=8081,
        help="port of /healthz, /readyz and /status (0: any free port, -1: none)",
    )
    run.add_argument("--health-host", default="0.0.0.0", help="address of the health endpoints")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    rule = commands.add_parser(
        "dispatch-rule",
        help="print the LiveKit SIP dispatch rule that sends inbound calls to this bot",
    )
    rule.add_argument("file", metavar="FILE", help="bot YAML file")
    rule.add_argument(
        "--trunk", action="append", default=[], help="inbound trunk id(s) (default: any)"
    )
    return parser


def _demo(args) -> int:
    from pipecat_warm_transfer.demo.scenarios import SCENARIOS

    if args.list:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:<14} {scenario.description}")
        return 0
    if args.scenario not in SCENARIOS:
        names = ", ".join(SCENARIOS)
        print(f"demo: --scenario: unknown scenario {args.scenario!r} (one of {names})")
        return 2
    from pipecat_warm_transfer.demo.runner import run_demo

    if args.config:
        from pipecat_warm_transfer.config import ConfigError, load_config

        try:
            load_config(args.config)
        except ConfigError as e:
            for problem in e.problems:
                print(problem)
            return 2
    out = args.out or f"demo-out/{args.scenario}"
    return run_demo(args.scenario, out, config=args.config, caller_output=args.caller_output)


def _emulator(args) -> int:
    import asyncio

    from pipecat_warm_transfer.testing.livekit_emulator import DEFAULT_API_SECRET, serve_forever

    secret = args.api_secret or DEFAULT_API_SECRET

    def ready(emulator):
        print(f"LiveKit API emulator on {emulator.url} (api key {args.api_key!r}); Ctrl-C stops it")

    try:
        asyncio.run(
            serve_forever(
                port=args.port,
                api_key=args.api_key,
                api_secret=secret,
                oss=args.oss,
                on_ready=ready,
            )
        )
    except KeyboardInterrupt:
        pass
    return 0


def _log_level(level: str) -> None:
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=level, format=_log_format)


def _log_format(record) -> str:
    """Loguru's default line, plus the call's room and id when the line is a call's."""
    extra = record["extra"]
    context = ""
    if "room" in extra or "call_id" in extra:
        context = f" [room={extra.get('room', '-')} call={extra.get('call_id', '-')}]"
    return (
        "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> | <level>{level: <8}</level> | "
        "<cyan>{name}</cyan>:<cyan>{function}</cyan>:<cyan>{line}</cyan>"
        + context.replace("{", "{{").replace("}", "}}").replace("<", "\\<")
        + " - <level>{message}</level>\n{exception}"
    )


def _schema(args) -> int:
    from pipecat_warm_transfer.config import bot_config_schema

    text = json.dumps(bot_config_schema(), indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _summary(loaded) -> str:
    config = loaded.config
    services = config.services
    transfer = config.transfer
    if transfer.target is not None:
        shown = _masked_destination(transfer.target.number)
    else:
        shown = f"a {transfer.strategy} group of {len(transfer.targets)}"
    parts = [
        f"bot {config.bot.name!r}",
        f"stt {services.stt.provider}, llm {services.llm.provider}, tts {services.tts.provider}",
        f"transfer to {shown} ({config.transfer.connect_mode})",
    ]
    if config.flow is not None:
        parts.append(f"flow with {len(config.flow.nodes)} nodes")
    return "; ".join(parts)


def _masked_destination(number: str) -> str:
    """A number or URI as `validate` shows it: its last digits, or a URI's host."""
    if number.lower().startswith(("sip:", "sips:", "tel:")):
        scheme, _, rest = number.partition(":")
        return f"{scheme}:…@{rest.rpartition('@')[2]}" if "@" in rest else f"{scheme}:…"
    return number if len(number) <= 4 else "…" + number[-4:]


def _validate(args) -> int:
    # Before the config import, which imports Pipecat: its INFO banner is not a finding,
    # and the findings are the command's only output. Errors still show.
    _log_level("ERROR")
    from pipecat_warm_transfer.config import ConfigError, load_config

    status = 0
    for file in args.files:
        try:
            loaded = load_config(file)
        except ConfigError as e:
            for problem in e.problems:
                print(problem)
            status = 2
        except Exception as e:  # a bug, not a problem of the file: still one line
            print(f"{file}:1: (document): cannot validate: {type(e).__name__}: {e}")
            status = 2
        else:
            print(f"{file}: OK ({_summary(loaded)})")
    return status


def _run(args) -> int:
    from pipecat_warm_transfer.config import ConfigError, load_config
    from pipecat_warm_transfer.runner.livekit_serving import run_livekit

    _log_level("DEBUG" if args.verbose else "INFO")
    try:
        loaded = load_config(args.file)
        health_port = None if args.health_port < 0 else args.health_port
        return asyncio.run(
            run_livekit(
                loaded, room=args.room, health_host=args.health_host, health_port=health_port
            )
        )
    except ConfigError as e:
        for problem in e.problems:
            print(problem)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch_rule(args) -> int:
    from pipecat_warm_transfer.config import ConfigError, load_config
    from pipecat_warm_transfer.runner.dispatch_rule import dispatch_rule_request

    _log_level("ERROR")
    try:
        loaded = load_config(args.file)
    except ConfigError as e:
        for problem in e.problems:
            print(problem)
        return 2
    print(dispatch_rule_request(loaded, trunk_ids=args.trunk))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {
        "demo": _demo,
        "emulator": _emulator,
        "schema": _schema,
        "validate": _validate,
        "run": _run,
        "dispatch-rule": _dispatch_rule,
    }
    if args.command in handlers:
        return handlers[args.command](args)
    parser.print_help(sys.stderr)
    return 2
