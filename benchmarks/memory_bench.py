"""Memory per held call and per concurrent transfer; the music cache is O(1) in calls.

Held calls (N = 1, 10, 50): the same held call as the density benchmark (a Pipecat
`MemoryTransport` output in its own `PipelineWorker` + `WorkerRunner`, hold music
playing over silent input), with ours (`HoldMusicMixer`) and, for comparison, Pipecat's
`SoundfileMixer` (which loads its file into every mixer). The music cache is emptied
first and `tracemalloc` runs throughout, so the decoded music is traced when the first
call loads it. For each N: traced bytes (and RSS) before the calls start, with the N
calls playing (after a garbage collection), and after they stopped. *Per held call* is
the slope of traced memory over N (least squares through the three points). The bytes
allocated by `music_source.py` (the decode/resample/loop cache) are reported per N: the
same at N = 1 and N = 50, and every mixer refers to the same loop arrays.

Concurrent transfers (quick N = 1, 4; full N = 1, 4, 8): whole calls (`CallHarness`,
each its own in-memory server) are started, then a transfer on each, and measured while
every human is being briefed (consult room, SIP leg, briefing pipeline with its queued
intro speech). *Per transfer* = (traced bytes while briefing - traced bytes of the same
calls before the transfer) / N. The emulated phones and server (`ScriptedParty`
recordings, `MemoryRoom` inboxes) are test fixtures, not part of a bot, so their
allocations are excluded (and reported separately).

RSS deltas (from /proc/self/statm) are reported alongside; they include allocator
slack and are noisier than tracemalloc, which counts Python-visible allocations
(numpy buffers included) but not interpreter/C-library internals.
"""

from __future__ import annotations

import asyncio
import gc
import os
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    check_profile,
    load_average,
    machine_info,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from benchmarks.density_bench import RATE, _HeldCall, _mixer_factory
from benchmarks.mixer_bench import _write_music_files
from pipecat_warm_transfer.audio.music_source import clear_music_cache
from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing import HumanScript, MemoryRoomServer, tone
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService

NUMBER = "+15550100"
HELD_NS = (1, 10, 50)
PROFILE_SETTINGS = {
    "quick": {"held_ns": HELD_NS, "transfer_ns": (1, 4), "settle_s": 1.0},
    "full": {"held_ns": HELD_NS, "transfer_ns": (1, 4, 8), "settle_s": 2.0},
}
#: Test fixtures (emulated phones and server), excluded from the per-transfer figure.
FIXTURE_FILES = ("scripted_party.py", "memory_room.py")
MUSIC_FILE = "music_source.py"

JSON_PATH = RESULTS_DIR / "memory.json"
PNG_PATH = RESULTS_DIR / "memory.png"


class BenchmarkSanityError(RuntimeError):
    """The memory picture is not what the benchmark checks for."""


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _by_file(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for stat in snapshot.statistics("filename"):
        name = os.path.basename(stat.traceback[0].filename)
        sizes[name] = sizes.get(name, 0) + stat.size
    return sizes


def _measure() -> dict[str, Any]:
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    files = _by_file(tracemalloc.take_snapshot())
    return {
        "traced": traced,
        "rss": rss_bytes(),
        "music_cache": files.get(MUSIC_FILE, 0),
        "fixtures": sum(files.get(name, 0) for name in FIXTURE_FILES),
        "files": files,
    }


def _top_files(before: dict[str, Any], after: dict[str, Any], count: int = 10) -> dict[str, int]:
    """The files whose allocations grew most between two measurements (bytes)."""
    names = set(before["files"]) | set(after["files"])
    growth = {name: after["files"].get(name, 0) - before["files"].get(name, 0) for name in names}
    top = sorted(growth.items(), key=lambda kv: kv[1], reverse=True)[:count]
    return {name: size for name, size in top if size > 0}


def _strip(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != "files"}


def _slope(ns: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.asarray(ns, float), np.asarray(values, float), 1)[0])


# --------------------------------------------------------------------------- held calls


async def _held(kind: str, n: int, files: dict[str, Path], settle_s: float) -> dict[str, Any]:
    make_mixer = _mixer_factory(kind, files)
    before = _measure()
    server = MemoryRoomServer()
    calls = [_HeldCall(server, i, make_mixer(), keep_audio=False, stamp=False) for i in range(n)]
    for call in calls:
        await call.start()
    try:
        await asyncio.sleep(settle_s)
        playing = _measure()
        if kind == "ours":
            loops = {id(c.mixer._loop) for c in calls} | {id(c.mixer._ducked) for c in calls}
            if len(loops) != 2 or any(c.mixer._loop is None for c in calls):
                raise BenchmarkSanityError(f"ours: {len(loops)} distinct loops for {n} calls")
            distinct = len(loops)
            shared_bytes = calls[0].mixer._loop.samples.nbytes * 2
        else:
            arrays = {id(c.mixer._sounds.get("music")) for c in calls}
            distinct = len(arrays)
            shared_bytes = sum(c.mixer._sounds["music"].nbytes for c in calls)
    finally:
        for call in calls:
            await call.stop()
        await asyncio.gather(*(c.task for c in calls if c.task), return_exceptions=True)
    del calls, server
    after = _measure()
    cache_loaded = playing["music_cache"] - before["music_cache"]
    return {
        "n": n,
        "before": _strip(before),
        "playing": _strip(playing),
        "after": _strip(after),
        "delta_traced_total": playing["traced"] - before["traced"],
        "music_cache_loaded": cache_loaded,
        # Per-call memory: the shared cache loaded by the first call is not the calls'.
        "delta_traced": playing["traced"] - before["traced"] - cache_loaded,
        "top_files": _top_files(before, playing),
        "delta_rss": playing["rss"] - before["rss"],
        "released_traced": playing["traced"] - after["traced"],
        "music_arrays_distinct": distinct,
        "music_array_bytes": shared_bytes,
    }


# --------------------------------------------------------------------------- transfers


async def _transfers(n: int, settle_s: float) -> dict[str, Any]:
    def human() -> HumanScript:
        return HumanScript(answer_after=0.3, greeting=tone(500, 0.3, 16000))

    briefing = BriefingParams(
        tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ, sample_rate=16000)
    )
    calls: list[CallHarness] = []
    try:
        for _ in range(n):
            call = CallHarness(
                humans={NUMBER: human()},
                briefing=briefing,
                params=fast_params(briefing_timeout=60.0, ring_timeout=10.0),
            )
            await call.__aenter__()
            calls.append(call)
        await asyncio.sleep(settle_s)
        idle = _measure()
        for call in calls:
            if not await call.transfer.start_transfer("memory benchmark"):
                raise BenchmarkSanityError("a transfer did not start")
        for call in calls:
            await call.wait_for("briefing_started", timeout=20.0)
        await asyncio.sleep(0.5)
        briefing_now = _measure()
    finally:
        for call in calls:
            await call.worker.cancel(reason="memory benchmark done")
        await asyncio.gather(*(call.finish() for call in calls), return_exceptions=True)
    rooms = sum(call.report.leaks["rooms"] for call in calls if call.report)
    connections = sum(call.report.leaks["connections"] for call in calls if call.report)
    if rooms or connections:
        raise BenchmarkSanityError(f"leftovers after the transfers: {rooms} rooms, {connections}")
    del calls
    after = _measure()

    def without_fixtures(m: dict[str, Any]) -> int:
        return m["traced"] - m["fixtures"]

    return {
        "n": n,
        "idle": _strip(idle),
        "briefing": _strip(briefing_now),
        "after": _strip(after),
        "top_files": _top_files(idle, briefing_now),
        "delta_traced": briefing_now["traced"] - idle["traced"],
        "delta_traced_without_fixtures": without_fixtures(briefing_now) - without_fixtures(idle),
        "delta_fixtures": briefing_now["fixtures"] - idle["fixtures"],
        "delta_rss": briefing_now["rss"] - idle["rss"],
    }


# --------------------------------------------------------------------------- output


def _plot(held: dict[str, list[dict]], transfers: list[dict], profile: str, path: Path) -> None:
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 5))
    colors = {"ours": "#2a9d8f", "baseline": "#7a7a7a"}
    labels = {"ours": "HoldMusicMixer (ours)", "baseline": "SoundfileMixer (baseline)"}
    for kind, rows in held.items():
        ns = [r["n"] for r in rows]
        ax1.plot(
            ns,
            [r["delta_traced"] / 1e6 for r in rows],
            marker="o",
            color=colors[kind],
            label=f"{labels[kind]}: {_slope(ns, [r['delta_traced'] for r in rows]) / 1024:.0f}"
            " KiB/call",
        )
        ax1.plot(
            ns, [r["delta_rss"] / 1e6 for r in rows], linestyle=":", color=colors[kind], alpha=0.7
        )
        ax2.plot(
            ns,
            [r["music_array_bytes"] / 1e6 for r in rows],
            marker="s",
            color=colors[kind],
            label=labels[kind],
        )
    ax1.set_title("Held calls: memory vs N (solid tracemalloc, dotted RSS)", fontsize=10)
    ax1.set_xlabel("concurrent held calls N")
    ax1.set_ylabel("MB added by the N calls")
    ax1.legend(fontsize=8)
    ax2.set_title("Decoded music held by the N mixers", fontsize=10)
    ax2.set_xlabel("concurrent held calls N")
    ax2.set_ylabel("MB of music sample arrays (shared counted once)")
    ax2.legend(fontsize=8)
    ns = [r["n"] for r in transfers]
    ax3.plot(
        ns,
        [r["delta_traced_without_fixtures"] / 1e6 for r in transfers],
        marker="o",
        color="#e76f51",
        label="transfers (plugin + Pipecat; fixtures excluded)",
    )
    ax3.plot(
        ns,
        [r["delta_fixtures"] / 1e6 for r in transfers],
        marker="x",
        color="#bbbbbb",
        label="emulated phones/server (excluded)",
    )
    ax3.set_title("Concurrent transfers (briefing): memory vs N", fontsize=10)
    ax3.set_xlabel("concurrent transfers N")
    ax3.set_ylabel("MB added by the transfers (tracemalloc)")
    ax3.legend(fontsize=8)
    for ax in (ax1, ax2, ax3):
        ax.grid(alpha=0.25)
        ax.set_ylim(bottom=0)
    fig.suptitle(f"Memory per held call and per transfer (profile {profile})", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- entry


async def _run(settings: dict[str, Any]) -> dict[str, Any]:
    held: dict[str, list[dict]] = {"ours": [], "baseline": []}
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp_dir:
        ours_file, baseline_files = _write_music_files(Path(tmp_dir))
        files = {"ours": ours_file, "baseline": baseline_files[RATE]}
        clear_music_cache()
        gc.collect()
        tracemalloc.start(1)
        try:
            for kind in ("ours", "baseline"):
                for n in settings["held_ns"]:
                    t0 = time.perf_counter()
                    row = await _held(kind, n, files, settings["settle_s"])
                    held[kind].append(row)
                    progress(
                        f"  memory held {kind:>8} N={n:>3}: +{row['delta_traced'] / 1024:8.0f} KiB"
                        f" traced (+{row['delta_rss'] / 1024:7.0f} KiB RSS), music cache "
                        f"{row['playing']['music_cache'] / 1024:5.0f} KiB, "
                        f"{row['music_arrays_distinct']} music array(s) "
                        f"[{time.perf_counter() - t0:.1f} s]"
                    )
            transfers = []
            for n in settings["transfer_ns"]:
                t0 = time.perf_counter()
                row = await _transfers(n, settings["settle_s"])
                transfers.append(row)
                progress(
                    f"  memory transfers N={n}: +{row['delta_traced_without_fixtures'] / 1024:7.0f}"
                    f" KiB traced without fixtures (+{row['delta_fixtures'] / 1024:.0f} KiB "
                    f"fixtures, +{row['delta_rss'] / 1024:.0f} KiB RSS) "
                    f"[{time.perf_counter() - t0:.1f} s]"
                )
        finally:
            tracemalloc.stop()
    return {"held": held, "transfers": transfers}


def run(profile: str) -> dict[str, Any]:
    """Run the memory benchmark; write memory.json and memory.png; return summary keys."""
    check_profile(profile)
    settings = PROFILE_SETTINGS[profile]
    t0 = time.perf_counter()
    progress(
        f"memory: held calls N={settings['held_ns']} (ours, baseline), concurrent transfers "
        f"N={settings['transfer_ns']}"
    )
    out = asyncio.run(_run(settings))
    held, transfers = out["held"], out["transfers"]

    def per_call(kind: str, key: str = "delta_traced") -> float:
        rows = held[kind]
        return _slope([r["n"] for r in rows], [r[key] for r in rows]) / 1024

    cache = [r["playing"]["music_cache"] for r in held["ours"]]
    ns_t = [r["n"] for r in transfers]
    per_transfer = [r["delta_traced_without_fixtures"] / r["n"] for r in transfers]
    summary = {
        "memory_per_held_call_kb": round(per_call("ours"), 1),
        "memory_per_held_call_baseline_kb": round(per_call("baseline"), 1),
        "memory_per_held_call_rss_kb": round(per_call("ours", "delta_rss"), 1),
        "memory_per_transfer_kb": round(
            _slope(ns_t, [r["delta_traced_without_fixtures"] for r in transfers]) / 1024
            if len(ns_t) > 1
            else per_transfer[0] / 1024,
            1,
        ),
        "memory_music_cache_kb_by_n": {
            str(r["n"]): round(r["playing"]["music_cache"] / 1024, 1) for r in held["ours"]
        },
        "memory_music_cache_o1": max(cache) - min(cache) <= 0.01 * max(max(cache), 1),
    }
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "memory",
        "profile": profile,
        "profile_settings": settings,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average": load_average(),
        "setup": {
            "held_call": (
                "MemoryTransport.output() alone in a Pipeline, own PipelineWorker and "
                "WorkerRunner, mixer playing over silent input (as in density_bench)"
            ),
            "transfer": (
                "CallHarness call; human answered and being briefed (intro queued); "
                "excluding allocations in " + ", ".join(FIXTURE_FILES)
            ),
            "per_held_call": "least-squares slope of traced bytes over N",
            "per_transfer": "least-squares slope over N of (briefing - idle) traced bytes",
            "tracemalloc": "started after clearing the music cache; 1 frame per trace",
        },
        "summary": summary,
        "held": held,
        "transfers": transfers,
    }
    write_json(JSON_PATH, document)
    _plot(held, transfers, profile, PNG_PATH)
    progress(
        f"memory: {summary['memory_per_held_call_kb']:.0f} KiB per held call "
        f"(baseline {summary['memory_per_held_call_baseline_kb']:.0f}), "
        f"{summary['memory_per_transfer_kb']:.0f} KiB per transfer; music cache by N "
        f"{summary['memory_music_cache_kb_by_n']} KiB"
    )
    progress(f"memory: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
