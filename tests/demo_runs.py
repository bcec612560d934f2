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


def shared_runs(tmp_path_factory, key: str, names: list[str], timeout: float) -> dict[str, Run]:
    """`run_demos` once per session, whichever xdist workers ask (the others wait).

    Under xdist the workers' temporary roots share a parent that is this session's own;
    a lock there lets one worker run the demos while the others wait for its files.
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
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
