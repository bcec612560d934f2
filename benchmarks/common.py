"""Helpers shared by the benchmark modules: profiles, timing, machine info, result files."""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SUMMARY_PATH = RESULTS_DIR / "summary.json"

PROFILES = ("quick", "full")


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile


def progress(message: str) -> None:
    """Print one progress line immediately (the runner's output is read live)."""
    print(message, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Where the numbers came from: interpreter, library versions, CPU."""
    try:
        usable_cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cpus = os.cpu_count()
    return {
        "timestamp_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": _version("numpy"),
        "soxr": _version("soxr"),
        "soundfile": _version("soundfile"),
        "pipecat_ai": _version("pipecat-ai"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cpus,
    }


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, or an empty dict if the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def time_batch_ns(call: Callable[[Any], Any], items: Sequence[Any]) -> int:
    """Wall time of `call(item)` for every item, with the garbage collector paused."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for item in items:
            call(item)
        return time.perf_counter_ns() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


async def time_batch_async_ns(call: Callable[[Any], Any], items: Sequence[Any]) -> int:
    """Wall time of `await call(item)` for every item, with the garbage collector paused."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter_ns()
        for item in items:
            await call(item)
        return time.perf_counter_ns() - t0
    finally:
        if gc_was_enabled:
            gc.enable()


def batch_stats_us(per_item_ns: Sequence[float]) -> dict[str, float]:
    """Median (the headline), min, max and quartiles of per-item batch means, in µs."""
    values = sorted(v / 1000.0 for v in per_item_ns)
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) >= 2 else (values[0],) * 3
    return {
        "median_us": statistics.median(values),
        "min_us": values[0],
        "max_us": values[-1],
        "q1_us": q1,
        "q3_us": q3,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    data = sorted(values)
    if not data:
        return float("nan")
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(data) - 1)
    return float(data[low] + (data[high] - data[low]) * (rank - low))


def distribution_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/min/max/mean of durations given in seconds, in milliseconds."""
    ms = [v * 1000.0 for v in values_s]
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "min_ms": round(min(ms), 3),
        "max_ms": round(max(ms), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def _thread_ids() -> list[int]:
    try:
        return [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        return [0]


class PinnedToOneCore:
    """Pin every thread of the process to one CPU (Linux), and restore on exit.

    `os.sched_setaffinity(0, ...)` only pins the calling thread; threads that already
    exist (executor workers) keep their mask, so every task of the process is pinned.
    Threads started inside the block inherit the pinned mask of their creator. Off Linux
    this does nothing (`cpu` is None).
    """

    def __init__(self) -> None:
        self.cpu: int | None = None
        self._saved: dict[int, set[int]] = {}

    def __enter__(self) -> PinnedToOneCore:
        if not hasattr(os, "sched_setaffinity"):
            return self
        allowed = os.sched_getaffinity(0)
        self.cpu = max(allowed)
        for tid in _thread_ids():
            try:
                self._saved[tid] = os.sched_getaffinity(tid)
                os.sched_setaffinity(tid, {self.cpu})
            except OSError:
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cpu is None:
            return
        main_mask = self._saved.get(threading_native_id(), None)
        for tid in _thread_ids():
            mask = self._saved.get(tid, main_mask)
            if mask is None:
                continue
            try:
                os.sched_setaffinity(tid, mask)
            except OSError:
                pass


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def save_figure(fig: Any, path: Path) -> None:
    """Save a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(path)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
