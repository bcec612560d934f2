"""Where a held call's CPU goes: cProfile of the per-frame path (not part of `run.py`).

`python -m benchmarks.profile_hot_paths [--calls 100] [--seconds 4]`

Runs N held calls (the density benchmark's: a Pipecat `MemoryTransport` output in its own
worker, mixer-only frames) for each mixer, first without the profiler (CPU µs per 40 ms
frame, the true cost), then under `cProfile` to split that cost between the mixer, the
transport write (publish + clock pacing), pushing the written frame on downstream
(Pipeline → sink → worker), the worker's observer proxy task and the event loop. cProfile
inflates call-heavy code, so the split is given as shares of the profiled total; the
absolute figure is the unprofiled one. Three kinds: `ours` (parked in the package's
`SharedHoldEngine`, WarmTransfer's default: the "after"), `ours_per_frame` (the same mixer
in Pipecat's per-call loop: the "before") and `baseline` (`SoundfileMixer`). Writes
`results/profile.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS_DIR, PinnedToOneCore, machine_info, progress, write_json
from benchmarks.density_bench import (
    FRAME_SECS,
    LEVEL_DBFS,
    RATE,
    _HeldCall,
    _mixer_factory,
)
from benchmarks.mixer_bench import _write_music_files
from pipecat_warm_transfer.audio.music_source import load_music_loop
from pipecat_warm_transfer.testing import MemoryRoomServer

JSON_PATH = RESULTS_DIR / "profile.json"

#: (label, file suffix, function name): cumulative time of these, per frame.
PARTS = [
    ("shared engine: tick (gather + every call's write)", "hold_engine.py", "_tick"),
    ("  engine: one call's write", "hold_engine.py", "_write"),
    ("  MemoryOutputTransport.write_audio_nowait", "memory_transport.py", "write_audio_nowait"),
    ("parked transports' periodic look (mix → park)", "hold_music_mixer.py", "_park"),
    ("mixer: HoldMusicMixer.mix", "hold_music_mixer.py", "mix"),
    ("mixer: SoundfileMixer.mix", "soundfile_mixer.py", "mix"),
    ("with_mixer generator (incl. mixer, frame object)", "base_output.py", "with_mixer"),
    (
        "transport write (wait_for + publish + pace)",
        "base_output.py",
        "_internal_write_audio_frame",
    ),
    ("  MemoryOutputTransport.write_audio_frame", "memory_transport.py", "write_audio_frame"),
    ("  room publish (MemoryConnection.publish_audio)", "memory_room.py", "publish_audio"),
    ("bot-speech bookkeeping (_handle_frame)", "base_output.py", "_handle_frame"),
    ("push written frame downstream (Pipeline → sink)", "frame_processor.py", "push_frame"),
    ("worker observer proxy task", "worker_observer.py", "_proxy_task_handler"),
    ("event loop: epoll wait (idle)", "~", "<method 'poll' of 'select.epoll' objects>"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    total = 0.0
    for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():
        if func == name and filename.endswith(suffix):
            total = max(total, ct)  # the outermost entry (recursion counted once)
    return total


async def _held(kind: str, files: dict[str, Path], calls_n: int, seconds: float, profile: bool):
    server = MemoryRoomServer()
    make = _mixer_factory(kind, files)
    calls = [_HeldCall(server, i, make(), keep_audio=False, stamp=False) for i in range(calls_n)]
    for call in calls:
        await call.start()
        await asyncio.sleep(0.2 / calls_n)
    await asyncio.sleep(1.0)
    if kind == "ours":  # wait (bounded) until every call is parked in the engine
        for _ in range(100):
            if all(call.mixer.parked for call in calls):
                break
            await asyncio.sleep(0.1)
        if not all(call.mixer.parked for call in calls):
            raise RuntimeError("ours: the calls did not park in the shared hold engine")
    gc.collect()
    gc.freeze()
    profiler = cProfile.Profile() if profile else None
    c0 = time.process_time()
    if profiler:
        profiler.enable()
    await asyncio.sleep(seconds)
    if profiler:
        profiler.disable()
    cpu = time.process_time() - c0
    gc.unfreeze()
    for call in calls:
        await call.stop()
    await asyncio.gather(*(c.task for c in calls if c.task), return_exceptions=True)
    frames = calls_n * seconds / FRAME_SECS
    return cpu, frames, profiler


async def _main(calls_n: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="profile-") as tmp_dir:
        ours_file, baseline_files = _write_music_files(Path(tmp_dir))
        files = {"ours": ours_file, "baseline": baseline_files[RATE]}
        load_music_loop(ours_file, RATE, LEVEL_DBFS)
        with PinnedToOneCore():
            for kind in ("ours", "ours_per_frame", "baseline"):
                cpu, frames, _ = await _held(kind, files, calls_n, seconds, profile=False)
                cpu_p, frames_p, profiler = await _held(kind, files, calls_n, seconds, True)
                stats = pstats.Stats(profiler)
                poll = _cumulative(stats, "~", "<method 'poll' of 'select.epoll' objects>")
                busy = stats.total_tt - poll
                parts = {}
                for label, suffix, name in PARTS:
                    value = _cumulative(stats, suffix, name)
                    if value > 0 and not label.startswith("event loop"):
                        parts[label] = {
                            "profiled_us_per_frame": round(value / frames_p * 1e6, 2),
                            "share_of_busy_percent": round(100 * value / busy, 1),
                        }
                out[kind] = {
                    "calls": calls_n,
                    "seconds": seconds,
                    "unprofiled_cpu_us_per_frame": round(cpu / frames * 1e6, 2),
                    "unprofiled_cpu_us_per_call_second": round(cpu / (calls_n * seconds) * 1e6, 1),
                    "profiled_busy_us_per_frame": round(busy / frames_p * 1e6, 2),
                    "parts": parts,
                }
                progress(
                    f"{kind}: {out[kind]['unprofiled_cpu_us_per_frame']} µs CPU per frame "
                    f"unprofiled ({out[kind]['unprofiled_cpu_us_per_call_second']} µs/call-s)"
                )
                for label, part in parts.items():
                    progress(
                        f"    {label:<52} {part['share_of_busy_percent']:5.1f} % "
                        f"({part['profiled_us_per_frame']} µs profiled)"
                    )
            before = out["ours_per_frame"]["unprofiled_cpu_us_per_call_second"]
            after = out["ours"]["unprofiled_cpu_us_per_call_second"]
            out["before_after"] = {
                "before_per_frame_us_per_call_second": before,
                "after_shared_engine_us_per_call_second": after,
                "saving": round(before / after, 1) if after else None,
            }
            progress(f"before/after: {out['before_after']}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_hot_paths")
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    from benchmarks.run import _quiet_logs

    _quiet_logs()
    result = asyncio.run(_main(args.calls, args.seconds))
    write_json(JSON_PATH, {"benchmark": "profile", "machine": machine_info(), **result})
    progress(f"wrote {JSON_PATH}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
