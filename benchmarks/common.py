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
