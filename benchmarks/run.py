"""Benchmark runner: `python -m benchmarks.run --profile quick|full [--only NAME ...]`.

Runs each benchmark module's `run(profile) -> dict` in turn and merges the returned
summary keys into `benchmarks/results/summary.json` (existing keys from other
benchmarks are kept, so benchmarks can be run one at a time). To add a benchmark, add
its module to `BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

from benchmarks.common import (
    PROFILES,
    SUMMARY_PATH,
    machine_info,
    progress,
    read_json,
    write_json,
)

#: name -> module with a `run(profile: str) -> dict` function.
BENCHMARKS: dict[str, str] = {
    "mixer": "benchmarks.mixer_bench",
    "density": "benchmarks.density_bench",
    "bridge_latency": "benchmarks.bridge_latency_bench",
    "control": "benchmarks.control_bench",
    "memory": "benchmarks.memory_bench",
    "livekit_path": "benchmarks.livekit_path_bench",
    "briefing_latency": "benchmarks.briefing_latency_bench",
    "dispatch": "benchmarks.dispatch_bench",
}


def _quiet_logs() -> None:
    """Keep Pipecat's and our debug logging out of the benchmark output."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks"
    )
    args = parser.parse_args(argv)
    _quiet_logs()

    names = args.only or list(BENCHMARKS)
    t_all = time.perf_counter()
    progress(f"benchmarks: profile {args.profile}, running {', '.join(names)}")
    merged: dict[str, object] = {}
    for i, name in enumerate(names, start=1):
        progress(f"[{i}/{len(names)}] {name} ...")
        t0 = time.perf_counter()
        module = importlib.import_module(BENCHMARKS[name])
        summary = module.run(args.profile)
        if not isinstance(summary, dict):
            raise TypeError(f"{BENCHMARKS[name]}.run() returned {type(summary).__name__}")
        merged.update(summary)
        progress(f"[{i}/{len(names)}] {name} done in {time.perf_counter() - t0:.1f} s")

    summary_doc = read_json(SUMMARY_PATH)
    summary_doc.update(merged)
    summary_doc["machine"] = machine_info()
    write_json(SUMMARY_PATH, summary_doc)
    for key, value in merged.items():
        progress(f"  {key} = {value}")
    progress(f"benchmarks: wrote {SUMMARY_PATH} ({time.perf_counter() - t_all:.1f} s total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
