"""Demo scenarios run as users run them, several at once, and the files they left.

Each `pipecat-warm-transfer demo --scenario S` is a process of its own. The runs are real
time (each mostly waits on its clock), so a few at once take about as long as the
longest. `shared_runs` makes each set of runs once per test session: under
pytest-xdist the first worker to need them runs them and the others read its files.
"""

import fcntl
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

import pipecat_warm_transfer
from pipecat_warm_transfer.demo.runner import RATE

#: The code under test, for the demo processes (a checkout or the installed package).
ROOT = Path(pipecat_warm_transfer.__file__).resolve().parents[1]


@dataclass
class Run:
    """One `demo` command's run and the files it left."""

    name: str
    out: Path
    returncode: int
    stdout: str

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())

    @property
    def events(self) -> list[dict]:
        return [json.loads(line) for line in (self.out / "events.jsonl").read_text().splitlines()]

    def audio(self, which: str) -> np.ndarray:
        samples, rate = sf.read(self.out / f"{which}.wav", dtype="int16")
        assert rate == RATE
        return samples

    def at(self, event: str) -> float:
        found = next((e for e in self.events if e["event"] == event), None)
        assert found is not None, f"no {event} in {self.name}"
        return found["t"]


#: Demo processes at once: more, on two cores beside the other workers, starve the
#: audio clocks (eight at once: dead air of 160 ms, music 3 dB off).
AT_ONCE = 3


def run_demos(root: Path, names: list[str], timeout: float) -> dict[str, Run]:
    """Run the scenarios `names`, `AT_ONCE` at a time, each into `root / name`.

    Args:
        root: Where each run writes its files (`root / name`).
        names: The scenarios.
        timeout: Bound on each run, from its start.
    """
    path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    done: dict[str, Run] = {}
    for first in range(0, len(names), AT_ONCE):
        done |= _run_together(root, names[first : first + AT_ONCE], env, timeout)
    return done


def _run_together(root: Path, names: list[str], env: dict, timeout: float) -> dict[str, Run]:
    started = {}
    for name in names:
        command = [sys.executable, "-m", "pipecat_warm_transfer", "demo"]
        command += ["--scenario", name, "--out", str(root / name)]
        with open(root / f"{name}.stderr", "w") as stderr:
            started[name] = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
            )
    done = {}
    try:
        for name, process in started.items():
            stdout, _ = process.communicate(timeout=timeout)
            errors = (root / f"{name}.stderr").read_text()[-3000:]
            done[name] = Run(name, root / name, process.returncode, stdout + errors)
    finally:
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return done


#: The sets of demo runs and the test module that reads each (its fixture: `runs`/`run`).
MODULE_SETS = {
    "test_demo.py": "single",
    "test_demo_groups.py": "groups",
    "test_demo_refer.py": "refer",
}
#: Bound on each batch of runs (the longest scenario takes about 45 s alone).
BATCH_TIMEOUT_SECS = 120


def demo_sets() -> dict[str, list[str]]:
    """The scenarios of each set, the longest first: Sam's alone, the team's, the REFER."""
    from pipecat_warm_transfer.demo.scenarios import SCENARIOS

    return {
        "single": [n for n, s in SCENARIOS.items() if not s.team and not s.refers],
        "groups": [n for n, s in SCENARIOS.items() if s.team],
        "refer": [n for n, s in SCENARIOS.items() if s.refers],
    }


def shared_base(tmp_path_factory) -> Path:
    """This session's temporary root, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_runs(tmp_path_factory, key: str, names: list[str], timeout: float) -> dict[str, Run]:
    """The set `key` of demo runs, made once per session whoever asks first."""
    return made_once(shared_base(tmp_path_factory), key, names, timeout)


def made_once(base: Path, key: str, names: list[str], timeout: float) -> dict[str, Run]:
    """`run_demos` once per session, whichever xdist workers (or threads) ask.

    Under xdist the workers' temporary roots share a parent that is this session's own;
    a lock there lets one run the demos while the others wait for its files.
    """
    root = base / f"demo-{key}"
    with open(base / f"demo-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = root / "runs.json"
        if done.exists():
            saved = json.loads(done.read_text())
            return {
                name: Run(name, root / name, run["returncode"], run["stdout"])
                for name, run in saved.items()
            }
        root.mkdir(exist_ok=True)
        runs = run_demos(root, names, timeout)
        saved = {n: {"returncode": r.returncode, "stdout": r.stdout} for n, r in runs.items()}
        done.write_text(json.dumps(saved))
        return runs


def start_in_background(base: Path, keys: set[str]) -> threading.Thread | None:
    """Make the sets `keys` in a thread, if no other worker of the session does already.

    Called as the session starts, so the runs (real time, mostly waiting) are made while
    the other tests run, and no worker sits waiting for them when their tests come.

    Returns:
        The thread (to join before the session ends), or None (another worker has it).
    """
    starter = open(base / "demo-starter.lock", "a")  # noqa: SIM115 (held for the session)
    try:
        fcntl.flock(starter, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        starter.close()
        return None
    sets = {key: names for key, names in demo_sets().items() if key in keys}

    def make_all():  # in `demo_sets` order: the longest set first
        for key, names in sets.items():
            made_once(base, key, names, BATCH_TIMEOUT_SECS)

    thread = threading.Thread(target=make_all, name="demo-runs", daemon=True)
    thread.starter = starter  # the lock is held as long as the thread is kept
    thread.start()
    return thread
