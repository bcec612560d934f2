"""Pass-through latency in bridge mode, both ways, with marked audio.

One whole call runs through `CallHarness` on a server without MoveParticipant
(`supports_move=False`), so the transfer connects by `bridge`: the bot relays the human's
audio to the caller and the caller's to the human. The human answers, accepts by DTMF
(`1`), and once connected both parties speak *marked* audio at the same time: seeded
Gaussian noise (-20 dBFS RMS) whose every 4-sample window is unique, so any piece of it
can be found again, sample-exactly, wherever it shows up (the bridge relays bytes
unchanged: same rate everywhere, the hold music faded out, volume 1).

Each marked sample is timed at four points on its way (event-loop clock):

1. **enter**: the room delivers the frame to the receiving transport
   (`MemoryTransport._on_audio`, the consult transport for human → caller);
2. **plugin in**: the plugin's first processor receives it as an `InputAudioRawFrame`
   (`HumanInput` in the briefing pipeline, `CallerGate` in the caller pipeline) — the
   step in between is Pipecat's input transport (its audio queue and task);
3. **hand-off**: the plugin hands it, as an `OutputAudioRawFrame`, to the other leg's
   output transport (`queue_frame` of that transport);
4. **exit**: the output transport writes it (`write_audio_frame`, i.e. it leaves).

The pass-through latency (`bridge_p50_ms`, `bridge_p99_ms`) is *enter → hand-off*: what
the bridge adds on top of a plain output transport (Pipecat's input hop + the plugin's
relay + the hop into the other pipeline). *hand-off → exit* is the output transport's own
buffering (it re-cuts audio into 40 ms chunks, `audio_out_10ms_chunks=4`, and writes in
real time behind whatever chunk is playing), which any Pipecat bot's speech goes
through too; it is reported separately, as is *enter → exit* end to end. Every
measured value is per 20 ms source frame (its first sample).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import InputAudioRawFrame, OutputAudioRawFrame

from benchmarks.common import (
    RESULTS_DIR,
    check_profile,
    distribution_ms,
    load_average,
    machine_info,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import BRIEFING_PITCH_HZ, CallHarness
from pipecat_warm_transfer.testing.scripted_tts import ScriptedToneTTSService
from pipecat_warm_transfer.types import ConnectMode

RATE = 16000
NUMBER = "+15550100"
FRAME = RATE // 50  # 20 ms: the parties' frame, the unit of a measurement
KEY = 4  # samples per lookup key
MARK_DBFS = -20.0
#: Connected → marks start (the music's 250 ms fade-out is over by then).
MARK_DELAY_SECS = 0.6
TARGET_P99_MS = 20.0

PROFILE_SETTINGS = {"quick": {"mark_secs": 4.0}, "full": {"mark_secs": 20.0}}
STAGES = ("enter", "plugin_in", "handoff", "exit")

JSON_PATH = RESULTS_DIR / "bridge_latency.json"
PNG_PATH = RESULTS_DIR / "bridge_latency.png"


class BenchmarkSanityError(RuntimeError):
    """The marked audio did not come through as the benchmark expects."""


def marked_noise(seconds: float, seed: int) -> np.ndarray:
    """Seeded Gaussian noise at MARK_DBFS RMS, int16: every KEY-sample window unique."""
    rng = np.random.default_rng(seed)
    sigma = 32768.0 * 10.0 ** (MARK_DBFS / 20.0)
    x = rng.normal(0.0, sigma, int(seconds * RATE))
    return np.clip(np.rint(x), -32767, 32767).astype(np.int16)


class MarkIndex:
    """Finds where a piece of audio sits in the marked source, sample-exactly."""

    def __init__(self, source: np.ndarray):
        self.source = source
        raw = source.tobytes()
        keys: dict[bytes, int] = {}
        for p in range(len(source) - KEY + 1):
            key = raw[2 * p : 2 * (p + KEY)]
            keys[key] = -1 if key in keys else p  # ambiguous keys are never used
        self._keys = keys

    def locate(self, audio: bytes) -> tuple[int, int, int] | None:
        """(offset in `audio`, source position, run length) of the first marked run."""
        n = len(audio) // 2
        if n < KEY or audio.count(0) == len(audio):
            return None
        samples = np.frombuffer(audio[: 2 * n], dtype=np.int16)
        for o in range(n - KEY + 1):
            p = self._keys.get(audio[2 * o : 2 * (o + KEY)])
            if p is None or p < 0:
                continue
            run = min(n - o, len(self.source) - p)
            equal = samples[o : o + run] == self.source[p : p + run]
            if not equal.all():
                run = int(np.argmin(equal))
            return o, p, run
        return None

    def first_seen(self, records: list[tuple[float, bytes]]) -> np.ndarray:
        """For each source sample, the first time it appeared in `records` (NaN: never)."""
        times = np.full(len(self.source), np.nan)
        for t, audio in records:
            found = self.locate(audio)
            if found is None:
                continue
            _, p, run = found
            segment = times[p : p + run]
            np.fmin(segment, t, out=segment)
        return times


class _Probe:
    """Timestamped audio seen at one point of the path."""

    def __init__(self) -> None:
        self.records: list[tuple[float, bytes]] = []

    def add(self, audio: bytes) -> None:
        self.records.append((time.perf_counter(), audio))


def _hook_on_audio(transport, probe: _Probe) -> None:
    original = transport._on_audio

    async def on_audio(event):
        probe.add(event.audio)
        await original(event)

    transport._on_audio = on_audio


def _hook_process_frame(processor, probe: _Probe) -> None:
    original = processor.process_frame

    async def process_frame(frame, direction):
        if isinstance(frame, InputAudioRawFrame):
            probe.add(frame.audio)
        await original(frame, direction)

    processor.process_frame = process_frame


def _hook_queue_frame(processor, probe: _Probe) -> None:
    original = processor.queue_frame

    async def queue_frame(frame, *args, **kwargs):
        if isinstance(frame, OutputAudioRawFrame):
            probe.add(frame.audio)
        return await original(frame, *args, **kwargs)

    processor.queue_frame = queue_frame


def _hook_write(output, probe: _Probe) -> None:
    original = output.write_audio_frame

    async def write_audio_frame(frame):
        probe.add(frame.audio)
        return await original(frame)

    output.write_audio_frame = write_audio_frame


def _latencies(index: MarkIndex, probes: dict[str, _Probe]) -> dict[str, Any]:
    seen = {stage: index.first_seen(probes[stage].records) for stage in STAGES}
    starts = np.arange(0, len(index.source), FRAME)
    valid = np.ones(len(starts), dtype=bool)
    for stage in STAGES:
        valid &= ~np.isnan(seen[stage][starts])
    at = {stage: seen[stage][starts[valid]] for stage in STAGES}
    spans = {
        "pass_through": at["handoff"] - at["enter"],
        "input_transport": at["plugin_in"] - at["enter"],
        "plugin_relay": at["handoff"] - at["plugin_in"],
        "output_transport": at["exit"] - at["handoff"],
        "end_to_end": at["exit"] - at["enter"],
    }
    return {
        "frames_marked": int(len(starts)),
        "frames_measured": int(valid.sum()),
        "spans_s": {name: values.tolist() for name, values in spans.items()},
    }


async def _run_call(mark_secs: float) -> dict[str, Any]:
    script = HumanScript(answer_after=0.3, greeting=tone(500, 0.3, RATE)).dtmf(0.9, "1")
    briefing = BriefingParams(
        tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ, sample_rate=RATE),
        connecting_message="OK.",
    )
    to_caller = marked_noise(mark_secs, seed=1)
    to_human = marked_noise(mark_secs, seed=2)
    probes = {d: {s: _Probe() for s in STAGES} for d in ("human_to_caller", "caller_to_human")}
    async with CallHarness(
        humans={NUMBER: script}, supports_move=False, briefing=briefing, sample_rate=RATE
    ) as call:
        if not await call.transfer.start_transfer("bridge latency benchmark"):
            raise BenchmarkSanityError("the transfer did not start")
        await call.wait_for("connected", timeout=15.0)
        attempt = call.transfer._attempt
        leg, session = attempt.leg, attempt.briefing
        if attempt.mode != ConnectMode.BRIDGE:
            raise BenchmarkSanityError(f"connected by {attempt.mode}, expected bridge")
        h2c, c2h = probes["human_to_caller"], probes["caller_to_human"]
        # Human → caller: consult transport in, HumanInput, caller output transport.
        _hook_on_audio(leg.transport, h2c["enter"])
        _hook_process_frame(session._input, h2c["plugin_in"])
        _hook_queue_frame(call.caller_transport.output(), h2c["handoff"])
        _hook_write(call.caller_transport.output(), h2c["exit"])
        # Caller → human: caller transport in, CallerGate, consult output transport.
        _hook_on_audio(call.caller_transport, c2h["enter"])
        _hook_process_frame(call.transfer.caller_gate(), c2h["plugin_in"])
        _hook_queue_frame(leg.transport.output(), c2h["handoff"])
        _hook_write(leg.transport.output(), c2h["exit"])
        human_party = leg.party
        at = call.caller.now() + MARK_DELAY_SECS
        human_party.say(at, to_caller.tobytes())
        call.caller.say(at, to_human.tobytes())
        await asyncio.sleep(MARK_DELAY_SECS + mark_secs + 0.4)
    report = call.report
    return {
        "to_caller": to_caller,
        "to_human": to_human,
        "probes": probes,
        "leaks": report.leaks,
        "mode": str(attempt.mode),
        "timings": report.results[-1].timings.as_dict() if report.results else None,
    }


def _plot(results: dict[str, Any], profile: str, path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.2), sharey=True)
    titles = {"human_to_caller": "human → caller", "caller_to_human": "caller → human"}
    colors = {
        "pass_through": "#2a9d8f",
        "output_transport": "#8d99ae",
        "end_to_end": "#264653",
    }
    labels = {
        "pass_through": "pass-through added (enter → hand-off)",
        "output_transport": "output transport buffering (hand-off → exit)",
        "end_to_end": "end to end (enter → exit)",
    }
    for ax, direction in zip(axes, titles, strict=True):
        spans = results[direction]["spans_s"]
        for name, color in colors.items():
            values = np.sort(np.maximum(np.asarray(spans[name]) * 1000.0, 0.01))
            if not values.size:
                continue
            y = np.arange(1, values.size + 1) / values.size
            p99 = np.percentile(values, 99)
            ax.step(values, y, where="post", color=color, label=f"{labels[name]}; p99 {p99:.2f}")
        ax.axvline(TARGET_P99_MS, color="#c1121f", linestyle="--", linewidth=1)
        ax.text(TARGET_P99_MS * 0.95, 1.02, "20 ms", color="#c1121f", fontsize=8, ha="right")
        ax.set_xscale("log")
        ax.set_xlim(0.01, 200.0)
        ax.set_ylim(0.0, 1.08)
        ax.set_xlabel("latency per 20 ms frame, ms (log; values below 0.01 shown at 0.01)")
        ax.set_title(f"{titles[direction]} ({results[direction]['frames_measured']} frames)")
        ax.grid(which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="center left")
    axes[0].set_ylabel("cumulative fraction of frames")
    fig.suptitle(f"Bridge-mode pass-through latency, CDF (profile {profile})", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path)


def run(profile: str) -> dict[str, Any]:
    """Run the bridge latency benchmark; write its JSON and PNG; return summary keys."""
    check_profile(profile)
    settings = PROFILE_SETTINGS[profile]
    t0 = time.perf_counter()
    progress(f"bridge_latency: one bridged call, {settings['mark_secs']:g} s of marks each way")
    raw = asyncio.run(_run_call(settings["mark_secs"]))
    if any(raw["leaks"].values()):
        raise BenchmarkSanityError(f"leaks after the call: {raw['leaks']}")
    results: dict[str, Any] = {}
    for direction, source in (
        ("human_to_caller", raw["to_caller"]),
        ("caller_to_human", raw["to_human"]),
    ):
        measured = _latencies(MarkIndex(source), raw["probes"][direction])
        if measured["frames_measured"] < 0.8 * measured["frames_marked"]:
            raise BenchmarkSanityError(
                f"{direction}: only {measured['frames_measured']} of "
                f"{measured['frames_marked']} marked frames came through unchanged"
            )
        measured["distributions"] = {
            name: distribution_ms(values) for name, values in measured["spans_s"].items()
        }
        results[direction] = measured
        d = measured["distributions"]
        progress(
            f"  bridge {direction}: {measured['frames_measured']}/{measured['frames_marked']} "
            f"frames; pass-through p50 {d['pass_through']['p50_ms']:.3f} / p99 "
            f"{d['pass_through']['p99_ms']:.3f} ms; output transport p50 "
            f"{d['output_transport']['p50_ms']:.1f} / p99 {d['output_transport']['p99_ms']:.1f}"
            f" ms; end to end p99 {d['end_to_end']['p99_ms']:.1f} ms"
        )

    both = {
        name: results["human_to_caller"]["spans_s"][name]
        + results["caller_to_human"]["spans_s"][name]
        for name in results["human_to_caller"]["spans_s"]
    }
    overall = {name: distribution_ms(values) for name, values in both.items()}
    summary = {
        "bridge_p50_ms": overall["pass_through"]["p50_ms"],
        "bridge_p99_ms": overall["pass_through"]["p99_ms"],
        "bridge_plugin_relay_p99_ms": overall["plugin_relay"]["p99_ms"],
        "bridge_output_transport_p50_ms": overall["output_transport"]["p50_ms"],
        "bridge_output_transport_p99_ms": overall["output_transport"]["p99_ms"],
        "bridge_end_to_end_p50_ms": overall["end_to_end"]["p50_ms"],
        "bridge_end_to_end_p99_ms": overall["end_to_end"]["p99_ms"],
        "bridge_target_met": overall["pass_through"]["p99_ms"] <= TARGET_P99_MS,
    }
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "bridge_latency",
        "profile": profile,
        "profile_settings": settings,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average": load_average(),
        "setup": {
            "call": (
                "CallHarness(supports_move=False): auto → bridge; human answers after 0.3 s, "
                "accepts with DTMF 1; connecting_message 'OK.'"
            ),
            "marks": (
                f"{settings['mark_secs']:g} s of seeded Gaussian noise at {MARK_DBFS} dBFS "
                "each way, simultaneously, starting 0.6 s after connected"
            ),
            "stages": {
                "enter": "MemoryTransport._on_audio of the receiving transport",
                "plugin_in": "HumanInput / CallerGate process_frame (InputAudioRawFrame)",
                "handoff": "queue_frame of the other leg's output transport",
                "exit": "write_audio_frame of that output transport",
            },
            "spans": {
                "pass_through": "enter → hand-off (the bridge's added latency; the headline)",
                "input_transport": "enter → plugin in (Pipecat's input transport hop)",
                "plugin_relay": "plugin in → hand-off (the plugin's own code and hop)",
                "output_transport": "hand-off → exit (chunking to 40 ms + real-time pacing)",
                "end_to_end": "enter → exit",
            },
            "clock": "time.perf_counter, per 20 ms source frame (its first sample)",
        },
        "summary": summary,
        "overall": overall,
        "directions": {
            direction: {k: v for k, v in r.items() if k != "spans_s"}
            for direction, r in results.items()
        },
        "transfer_timings": raw["timings"],
        "leaks": raw["leaks"],
    }
    write_json(JSON_PATH, document)
    _plot(results, profile, PNG_PATH)
    progress(
        f"bridge_latency: pass-through p50 {summary['bridge_p50_ms']:.3f} ms, p99 "
        f"{summary['bridge_p99_ms']:.3f} ms (target ≤ {TARGET_P99_MS:g}); output transport "
        f"p99 {summary['bridge_output_transport_p99_ms']:.1f} ms; end to end p99 "
        f"{summary['bridge_end_to_end_p99_ms']:.1f} ms"
    )
    progress(f"bridge_latency: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
