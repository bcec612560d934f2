"""Five named defects, each planted by exact text in a scratch copy: `python -m mutation.named`.

Random mutants measure how much of the code the tests watch; these five are defects a
user would hit, and each must be caught by a test. Every one is an exact replacement
of an anchor that must occur exactly once, so a mutation cannot silently become a no-op
when the code moves: then the tool stops and says which anchor to update.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as `python mutation/named.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mutation.common import (
    FAST_TESTS,
    TOOL_BROKE,
    ToolError,
    baseline,
    make_scratch,
    minutes,
    pytest_args,
    run_tests,
)


@dataclass(frozen=True)
class NamedMutation:
    """A defect planted by replacing `anchor` (exactly once in `path`) with `replacement`."""

    key: str
    title: str
    path: str
    anchor: str
    replacement: str

    def apply(self, source: str) -> str:
        """The mutated source; ToolError unless the anchor occurs exactly once."""
        count = source.count(self.anchor)
        if count != 1:
            raise ToolError(
                f"mutation {self.key} ({self.title}): its anchor occurs {count} times in "
                f"{self.path}, not once; update it in mutation/named.py:\n{self.anchor}"
            )
        mutated = source.replace(self.anchor, self.replacement)
        compile(mutated, self.path, "exec")
        return mutated


WARM_TRANSFER = "pipecat_warm_transfer/warm_transfer.py"

NAMED = (
    NamedMutation(
        "a",
        "never stop the hold music on return",
        "pipecat_warm_transfer/processors.py",
        "elif frame.state in (TransferState.CONNECTED, TransferState.RETURNING):",
        "elif frame.state == TransferState.CONNECTED:",
    ),
    NamedMutation(
        "b",
        "drop the caller-left sentence",
        WARM_TRANSFER,
        "await briefing.say(self._params.caller_left_message, timeout=CALLER_LEFT_SPEECH_SECS)",
        "pass",
    ),
    NamedMutation(
        "c",
        "core teardown never closes the consult leg",
        WARM_TRANSFER,
        'await _quietly(attempt.leg.close(), "close the consult leg")',
        "pass",
    ),
    NamedMutation(
        "d",
        "remove token scrubbing",
        "pipecat_warm_transfer/backends/livekit.py",
        'return _JWT.sub("[redacted]", line)[:160]',
        "return line[:160]",
    ),
    NamedMutation(
        "e",
        "drop the note to the LLM after a failure",
        WARM_TRANSFER,
        # The note's text is still built, as an expression statement, and never sent.
        "await self._gate.note_to_context(",
        "str(",
    ),
)


def run(keys: list[str], tests: list[str] | None, timeout: float | None) -> list[str]:
    """Plant each mutation in turn and run the tests; one result line per mutation."""
    chosen = [m for m in NAMED if m.key in keys]
    scratch = make_scratch("wt-named-")
    try:
        # Check every anchor before spending minutes on the baseline.
        originals = {m.path: (scratch / m.path).read_text() for m in chosen}
        for mutation in chosen:
            mutation.apply(originals[mutation.path])
        args = pytest_args(tests, ()) if tests else pytest_args()
        if timeout is None:
            print("named mutations: baseline run of the tests ...", flush=True)
            base = baseline(scratch, args)
            timeout = max(60.0, 3.0 * base.secs)
            print(f"  passed in {base.secs:.0f} s; timeout per mutation {timeout:.0f} s")
        lines = []
        for mutation in chosen:
            target = scratch / mutation.path
            target.write_text(mutation.apply(originals[mutation.path]))
            try:
                result = run_tests(scratch, args, timeout)
            finally:
                target.write_text(originals[mutation.path])
            if result.passed:
                verdict = "SURVIVED"
            elif result.returncode is None:
                verdict = f"caught by the timeout ({timeout:.0f} s): the tests hung"
            else:
                verdict = f"caught by {result.first_failure()}"
            line = f"{mutation.key}. {mutation.title}: {verdict} ({result.secs:.0f} s)"
            print(line, flush=True)
            lines.append(line)
        return lines
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Run the named mutations; 0 unless the tool broke (or a survivor with --strict)."""
    parser = argparse.ArgumentParser(prog="python -m mutation.named", description=__doc__)
    parser.add_argument(
        "--only", nargs="+", choices=[m.key for m in NAMED], help="run only these mutations"
    )
    parser.add_argument(
        "--tests",
        nargs="+",
        metavar="PYTEST_ARG",
        help=f"tests to run instead of mutation.common.FAST_TESTS ({len(FAST_TESTS)} entries),"
        " e.g. `tests/` for the whole suite",
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds per mutation (default: 3x a baseline run)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any mutation survives")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        lines = run(args.only or [m.key for m in NAMED], args.tests, args.timeout)
    except ToolError as e:
        print(f"named mutations: {e}", file=sys.stderr)
        return TOOL_BROKE
    survived = sum("SURVIVED" in line for line in lines)
    print(
        f"named mutations: {len(lines) - survived} of {len(lines)} caught, "
        f"{survived} survived ({minutes(time.monotonic() - started)})"
    )
    return 1 if args.strict and survived else 0


if __name__ == "__main__":
    sys.exit(main())
