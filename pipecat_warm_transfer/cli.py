#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The `pipecat-warm-transfer` command."""

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
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return 0
