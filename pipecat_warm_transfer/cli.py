#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The `pipecat-warm-transfer` command (also `python -m pipecat_warm_transfer`)."""

from __future__ import annotations

import argparse
import sys

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

    return run_demo(args.scenario, args.out or f"demo-out/{args.scenario}")


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    parser.print_help(sys.stderr)
    return 2
