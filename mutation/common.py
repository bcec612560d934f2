"""What both mutation tools share: the scratch copy, the per-mutant tests, pytest runs.

cosmic-ray rewrites the module under test in place, so every run works on a copy of the
working tree in /tmp, and the tests import the package from that copy (`PYTHONPATH`
first), never from the editable install of the working tree.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: The modules mutated (paths relative to the repository).
CORE_MODULES = (
    "pipecat_warm_transfer/warm_transfer.py",
    "pipecat_warm_transfer/processors.py",
    "pipecat_warm_transfer/briefing.py",
    "pipecat_warm_transfer/backends/livekit.py",
    "pipecat_warm_transfer/audio/hold_music_link.py",
    "pipecat_warm_transfer/audio/hold_music_mixer.py",
)

#: The tests run against every mutant: about 75 s on 2 cores with `-n 2` (whole calls run
#: in real time, so this is wall time, not CPU). Whole files where they are fast; of the
#: whole-call tests, one per path through the core (memory caller output: the LiveKit one
#: doubles the time and mostly repeats it). Edit here to trade time for kills.
FAST_TESTS = (
    # Unit level, a few seconds in all.
    "tests/test_caller_processors.py",
    "tests/test_hold_music_mixer.py",
    # The LiveKit backend against the emulator (less DESELECTED), one whole call on it.
    "tests/test_livekit_backend.py",
    # Whole calls: success by move, bridge, a failure before the music, both hang-ups
    # during the briefing, the consult room's teardown.
    "tests/test_transfer_core.py::test_success_by_move_with_music_and_no_dead_air[memory]",
    "tests/test_transfer_core.py::test_bridge_relays_both_ways_when_move_is_unsupported[memory]",
    "tests/test_transfer_core.py::test_no_hold_music_after_a_failure_that_beats_the_hold_line"
    "[memory]",
    "tests/test_transfer_core.py::test_caller_hangs_up_during_briefing_the_human_is_told",
    "tests/test_transfer_core.py::test_human_hangs_up_during_briefing",
    "tests/test_transfer_core.py::test_consult_room_is_closed_after_a_completed_transfer",
    # Keys that are neither accept nor decline; `connect_mode="move"`; a dial the core
    # gives up on; a teardown step that raises.
    "tests/test_transfer_core.py::test_keys_other_than_accept_and_decline_are_ignored",
    "tests/test_transfer_core.py::test_move_mode_moves_the_human_on_a_server_with_move",
    "tests/test_transfer_core.py::test_a_dial_that_outlives_its_own_bound_is_given_up_as_no_answer",
    "tests/test_transfer_core.py::test_a_teardown_step_that_raises_does_not_stop_the_rest",
    # A briefing by LLM, with and without Pipecat's voicemail detector.
    "tests/test_transfer_voice.py::test_human_accepts_by_voice",
    "tests/test_transfer_voice.py::test_voicemail_detected_by_pipecats_detector",
    # The shared engine: a sink that breaks; a parked call on LiveKit keeps no run-ahead.
    "tests/test_hold_engine.py::test_a_parked_call_whose_sink_breaks_plays_on_through_its_transport",
    "tests/test_livekit_media.py::test_speech_plays_at_most_40ms_later_than_without_a_mixer"
    "[music on, parked in the shared engine]",
    # The caller's LLM: its tool starts a transfer that fails (busy), and it is told.
    "tests/test_transfer_voice.py::test_after_a_failure_the_callers_llm_is_told_what_happened",
    # Randomized whole calls with faults (FUZZ_RUNS seeds).
    "tests/test_fault_injection.py::test_random_call_keeps_every_invariant",
)
#: Tests of FAST_TESTS' files left out: whole calls over the emulator that the
#: in-memory whole calls above mostly repeat, at 5 to 9 s each.
DESELECTED = (
    "tests/test_livekit_backend.py::test_the_core_returns_the_caller_on_busy",
    "tests/test_livekit_backend.py::test_the_core_reports_ringing_then_a_livekit_ring_out_as_no_answer",
    "tests/test_livekit_backend.py::test_the_core_bridges_on_an_open_source_server",
)
#: Fault-suite seeds per mutant (each a whole randomized call of 5 to 14 s).
FUZZ_RUNS = 2

#: Stop at the first failure (a killed mutant costs only that far); two workers.
PYTEST_FLAGS = ("-x", "-q", "-p", "no:cacheprovider", "-n", "2")

#: Exit status when the tool itself broke (as opposed to a score or a survivor).
TOOL_BROKE = 2


class ToolError(Exception):
    """The mutation tool could not do its job (not a test result)."""


@dataclass
class PytestRun:
    """One pytest run: exit status (None: stopped at the timeout), output, wall time."""

    returncode: int | None
    output: str
    secs: float

    @property
    def passed(self) -> bool:
        """Whether every selected test passed."""
        return self.returncode == 0

    def first_failure(self) -> str:
        """The first failing test's node id, or what pytest said when it names none."""
        found = re.search(r"^(?:FAILED|ERROR) (\S+)", self.output, re.MULTILINE)
        if found:
            return found.group(1)
        if self.returncode is None:
            return f"timeout after {self.secs:.0f} s"
        lines = [line for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else f"pytest exit status {self.returncode}"


def make_scratch(prefix: str) -> Path:
    """Copy the working tree's files (tracked, or untracked and not ignored) to /tmp.

    The working tree, not HEAD: uncommitted tests count.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    for name in sorted(set(listed.split("\0")) - {""}):
        source = REPO / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    for module in CORE_MODULES:
        if not (scratch / module).is_file():
            raise ToolError(f"{module}: not in the working tree (edit CORE_MODULES)")
    return scratch


def scratch_env(scratch: Path) -> dict[str, str]:
    """The tests' environment: the scratch package first, no bytecode, few fuzz seeds.

    No bytecode: a mutant the same size as the original, written in the same second,
    would otherwise be run from the original's cached bytecode.
    """
    paths = [str(scratch), os.environ.get("PYTHONPATH", "")]
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in paths if p),
        PYTHONDONTWRITEBYTECODE="1",
        WT_FUZZ_RUNS=str(FUZZ_RUNS),
    )


def pytest_args(tests=FAST_TESTS, deselected=DESELECTED) -> list[str]:
    """The pytest command line for a test selection."""
    args = [sys.executable, "-m", "pytest", *PYTEST_FLAGS, *tests]
    for test in deselected:
        args += ["--deselect", test]
    return args


def command_line(args: list[str]) -> str:
    """`args` as one shell-quoted string (cosmic-ray's `test-command`)."""
    return shlex.join(args)


def run_tests(scratch: Path, args: list[str], timeout: float) -> PytestRun:
    """Run `args` in the scratch copy; the whole process group is killed at `timeout`."""
    started = time.monotonic()
    proc = subprocess.Popen(
        args,
        cwd=scratch,
        env=scratch_env(scratch),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, _ = proc.communicate()
        returncode = None
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    return PytestRun(returncode, out.decode(errors="replace"), time.monotonic() - started)


def kill_group(proc: subprocess.Popen):
    """Kill a process started with `start_new_session` and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def baseline(scratch: Path, args: list[str], limit: float = 900.0) -> PytestRun:
    """Run the selection once unmutated; it must pass, or no mutant result means anything."""
    run = run_tests(scratch, args, limit)
    if not run.passed:
        tail = "\n".join(run.output.splitlines()[-30:])
        raise ToolError(
            f"the unmutated tests do not pass ({run.first_failure()}):\n{tail}\n"
            "fix them (or the selection in mutation/common.py) first"
        )
    return run


def tool_path(name: str) -> str:
    """A console script of the venv this runs in (cosmic-ray and its filters)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise ToolError(f"{name} not found: `make mutate` installs it (pip install -e '.[mutate]')")
    return found


def git_describe() -> str:
    """The commit the working tree is on, and whether it has changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return f"{head or 'unknown'}{' + uncommitted changes' if dirty else ''}"


def minutes(secs: float) -> str:
    """`secs` as m:ss (or h:mm:ss)."""
    secs = int(round(secs))
    hours, rest = divmod(secs, 3600)
    text = f"{rest // 60:d}:{rest % 60:02d}"
    return f"{hours}:{text.zfill(5)}" if hours else text
