"""Control-plane overhead: accept → connected, and request → hold music, per mode.

Whole transfers run through `CallHarness` with the in-memory backend, which has no
server time (MoveParticipant, RemoveParticipant, room creation all return at once), in
`move` mode (server with MoveParticipant) and `bridge` mode (`supports_move=False`, so
`auto` falls back to pass-through). The human answers after 0.3 s, says "Hello?" and
accepts with DTMF `1`. A move-mode and a bridge-mode call run side by side, offset by
1 s so their measured steps never overlap; a call is cancelled (the pipeline-cancel
teardown path) once connected, instead of waiting for the 2 s end silence of an
`EndFrame`.

Numbers, from each call's `TransferResult.timings` (what the plugin itself measures):

* **connect overhead** = `accept_to_connected`: from the moment `_connect` starts after
  the accept (the human's "connecting you" line has been said: scripted speech, not
  overhead) to the caller being connected (move done / bridge on, state `connected`).
  Summary `connect_overhead_ms` = the larger of the two modes' p50; `_p99_ms` likewise.
* **hold overhead** = `request_to_hold` - the hold line's audio duration: from the
  transfer request to the music starting, minus the time the (scripted) hold line takes
  to play. What remains is TTS + transport queueing + the music switch. The plugin
  stamps it when the transport confirms the hold line has ended
  (`BotStoppedSpeakingFrame`), which Pipecat sends after the last 40 ms chunk has
  *played*; the mixer itself starts the music at the first sample after the speech, so
  the **audible** overhead (request → first frame with music written by the caller's
  transport, minus the hold line) is measured too, by wrapping this call's mixer. Both
  include waiting for the caller transport's next 40 ms write slot (0-40 ms: it writes
  a frame, music or silence, every 40 ms), so each request is issued at a random point
  of that cycle. **Hold-line dispatch** (request → the hold line's first audio handed to
  the caller's output transport: the plugin + the scripted TTS) is the part before that
  wait.

Measured independently by timestamping frames (event-loop clock, hooks on this call's
objects only):

* **DTMF → decision**: the accept digit entering the consult transport to the briefing's
  decision (Pipecat input transport hop + the plugin's DTMF handling);
* **decision → connected**: includes the scripted "connecting" line (reported, not
  overhead);
* **teardown** (move): connected → `teardown_done` (consult room closed).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from pipecat.frames.frames import TTSAudioRawFrame

from benchmarks.common import (
    RESULTS_DIR,
    check_profile,
    distribution_ms,
    load_average,
    machine_info,
    percentile,
    progress,
    pyplot,
    save_figure,
    write_json,
)
from pipecat_warm_transfer.params import BriefingParams
from pipecat_warm_transfer.testing import HumanScript, tone
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BRIEFING_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.scripted_tts import (
    ScriptedToneTTSService,
    synthesize_tone_speech,
)
from pipecat_warm_transfer.types import ConnectMode

RATE = 16000
NUMBER = "+15550100"
MODES = ("move", "bridge")
HOLD_MESSAGE = "Please hold."
TARGET_MS = 20.0
#: Offset between the side-by-side move and bridge calls.
PAIR_OFFSET_SECS = 1.0

PROFILE_SETTINGS = {"quick": {"runs": 5}, "full": {"runs": 25}}

JSON_PATH = RESULTS_DIR / "control.json"
PNG_PATH = RESULTS_DIR / "control.png"


class BenchmarkSanityError(RuntimeError):
    """A transfer did not go as scripted."""


def hold_line_secs() -> float:
    """Duration of the scripted hold line (what the caller hears before the music)."""
    return len(synthesize_tone_speech(HOLD_MESSAGE, RATE, 220.0)) / (2 * RATE)


#: Decision times by briefing session (id): stamped by the class-level hook below, which
#: is in place before any transfer starts, so a fast accept cannot slip past it.
_DECISIONS: dict[int, dict[str, float]] = {}


def _stamp_decisions() -> None:
    from pipecat_warm_transfer.briefing import BriefingSession

    if getattr(BriefingSession.decide, "_stamped", False):
        return
    decide = BriefingSession.decide

    def stamped_decide(self, decision):
        _DECISIONS.setdefault(id(self), {}).setdefault(decision.kind, time.perf_counter())
        decide(self, decision)

    stamped_decide._stamped = True
    BriefingSession.decide = stamped_decide


async def _one_transfer(mode: str, delay: float, phase: float) -> dict[str, Any]:
    await asyncio.sleep(delay)
    script = HumanScript(answer_after=0.3, greeting=tone(500, 0.3, RATE)).dtmf(0.9, "1")
    briefing = BriefingParams(
        tts=lambda: ScriptedToneTTSService(pitch_hz=BRIEFING_PITCH_HZ, sample_rate=RATE),
        connecting_message="OK.",
    )
    marks: dict[str, float] = {}
    async with CallHarness(
        humans={NUMBER: script},
        supports_move=mode == "move",
        briefing=briefing,
        params=fast_params(hold_message=HOLD_MESSAGE),
        sample_rate=RATE,
    ) as call:

        @call.transfer.event_handler("on_transfer_event")
        async def _stamp(_transfer, event: dict):
            marks.setdefault(event["event"], time.perf_counter())

        mixer = call.transfer.hold_mixer
        mix = mixer.mix

        async def stamped_mix(audio: bytes) -> bytes:
            out = await mix(audio)
            if out is not audio and "music_written" not in marks:
                marks["music_written"] = time.perf_counter()  # mixed, then written at once
            return out

        mixer.mix = stamped_mix  # this call's mixer only
        output = call.caller_transport.output()
        queue_frame = output.queue_frame

        async def stamped_queue_frame(frame, *args, **kwargs):
            if isinstance(frame, TTSAudioRawFrame) and "requested" in marks:
                marks.setdefault("hold_line_at_transport", time.perf_counter())
            return await queue_frame(frame, *args, **kwargs)

        output.queue_frame = stamped_queue_frame  # this call's output transport only
        # The caller's transport writes a 40 ms frame (music or silence) every 40 ms; where
        # in that cycle the request lands decides how long the hold line waits for its
        # first slot. Real requests land anywhere: so do these.
        await asyncio.sleep(phase)
        marks["requested"] = time.perf_counter()
        if not await call.transfer.start_transfer("control-plane benchmark"):
            raise BenchmarkSanityError("the transfer did not start")
        await call.wait_for("human_answered", timeout=15.0)
        attempt = call.transfer._attempt
        transport = attempt.leg.transport
        on_dtmf = transport._on_dtmf_event

        async def stamped_dtmf(data: dict):
            marks.setdefault("dtmf_in", time.perf_counter())
            await on_dtmf(data)

        transport._on_dtmf_event = stamped_dtmf  # this consult transport only
        # The intro starts ~0.7 s after the answer, the accept comes at 0.9 s.
        await call.wait_for("briefing_started", timeout=15.0)
        session = attempt.briefing
        await call.wait_for("connected", timeout=15.0)
        for kind, stamp in _DECISIONS.pop(id(session), {}).items():
            marks.setdefault(f"decision_{kind}", stamp)
        if mode == "move":
            await call.wait_for("teardown_done", timeout=10.0)
        await call.worker.cancel(reason="benchmark done")
    report = call.report
    result = report.results[-1]
    expected = ConnectMode.MOVE if mode == "move" else ConnectMode.BRIDGE
    if result.connect_mode != expected:
        raise BenchmarkSanityError(f"{mode}: connected by {result.connect_mode}")
    # Rooms, participants and connections are per call (its own server); the task count
    # is process-wide and sees the other call of the pair, so it is not checked here
    # (the test suite checks it call by call).
    leaks = {k: v for k, v in report.leaks.items() if k != "tasks"}
    if any(leaks.values()):
        raise BenchmarkSanityError(f"{mode}: leaks after the call: {leaks}")
    if "dtmf_in" not in marks or "decision_accept" not in marks:
        raise BenchmarkSanityError(f"{mode}: accept not seen ({sorted(marks)})")
    t = result.timings
    out = {
        "mode": mode,
        "accept_to_connected_s": t.accept_to_connected,
        "request_to_hold_s": t.request_to_hold,
        "hold_overhead_s": t.request_to_hold - hold_line_secs(),
        "hold_audible_overhead_s": marks["music_written"] - marks["requested"] - hold_line_secs(),
        "hold_line_dispatch_s": marks["hold_line_at_transport"] - marks["requested"],
        "dtmf_to_decision_s": marks["decision_accept"] - marks["dtmf_in"],
        "decision_to_connected_s": marks["connected"] - marks["decision_accept"],
        "timings": t.as_dict(),
    }
    if mode == "move":
        out["connected_to_teardown_s"] = marks["teardown_done"] - marks["connected"]
    return out


async def _run(runs: int) -> list[dict[str, Any]]:
    _stamp_decisions()
    samples: list[dict[str, Any]] = []
    rng = random.Random(8)
    for i in range(runs):
        t0 = time.perf_counter()
        pair = await asyncio.gather(
            _one_transfer("move", 0.0 if i % 2 == 0 else PAIR_OFFSET_SECS, rng.uniform(0, 0.04)),
            _one_transfer("bridge", PAIR_OFFSET_SECS if i % 2 == 0 else 0.0, rng.uniform(0, 0.04)),
            return_exceptions=True,
        )
        for outcome in pair:
            if isinstance(outcome, BaseException):
                raise outcome
        samples.extend(pair)
        progress(
            f"  control run {i + 1}/{runs}: "
            + ", ".join(
                f"{s['mode']} accept→connected {1000 * s['accept_to_connected_s']:.2f} ms, "
                f"hold overhead {1000 * s['hold_overhead_s']:.1f} ms"
                for s in pair
            )
            + f"  [{time.perf_counter() - t0:.1f} s]"
        )
    return samples


def _plot(samples: list[dict[str, Any]], profile: str, path: Path) -> None:
    plt = pyplot()
    metrics = [
        ("accept_to_connected_s", "accept → connected\n(connect overhead)"),
        ("dtmf_to_decision_s", "DTMF in → decision"),
        ("hold_overhead_s", "request → music (timings)\nminus hold line"),
        ("hold_audible_overhead_s", "request → music written\nminus hold line"),
        ("hold_line_dispatch_s", "request → hold line at\ncaller output transport"),
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(15, 5))
    colors = {"move": "#2a9d8f", "bridge": "#e76f51"}
    for ax, (key, title) in zip(axes, metrics, strict=True):
        for j, mode in enumerate(MODES):
            values = [1000 * s[key] for s in samples if s["mode"] == mode]
            x = np.full(len(values), j) + np.linspace(-0.12, 0.12, len(values))
            ax.scatter(x, values, color=colors[mode], alpha=0.8, label=mode)
            p50 = percentile(values, 50)
            ax.hlines(p50, j - 0.25, j + 0.25, color="black", linewidth=2)
            ax.annotate(f"p50 {p50:.2f}", (j + 0.27, p50), fontsize=8, va="center")
        ax.set_xticks(range(len(MODES)), MODES)
        ax.set_xlim(-0.6, len(MODES) - 0.1)
        ax.set_ylabel("ms")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.25)
        if key == "accept_to_connected_s":
            ax.axhline(TARGET_MS, color="#c1121f", linestyle="--", linewidth=1)
            ax.set_yscale("log")
            ax.text(-0.55, TARGET_MS * 1.1, "20 ms target", color="#c1121f", fontsize=8)
    fig.suptitle(
        f"Control-plane overhead per transfer, in-memory backend (no server time), "
        f"profile {profile}",
        fontsize=12,
    )
    fig.tight_layout()
    save_figure(fig, path)


def run(profile: str) -> dict[str, Any]:
    """Run the control-plane benchmark; write control.json and control.png; return keys."""
    check_profile(profile)
    runs = PROFILE_SETTINGS[profile]["runs"]
    t0 = time.perf_counter()
    progress(f"control: {runs} move + {runs} bridge transfers (pairs side by side)")
    samples = asyncio.run(_run(runs))
    per_mode: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        rows = [s for s in samples if s["mode"] == mode]
        keys = [k for k in rows[0] if k.endswith("_s")]
        per_mode[mode] = {k: distribution_ms([r[k] for r in rows]) for k in keys}
    acc = {m: per_mode[m]["accept_to_connected_s"] for m in MODES}
    hold = distribution_ms([s["hold_overhead_s"] for s in samples])
    audible = distribution_ms([s["hold_audible_overhead_s"] for s in samples])
    dispatch = distribution_ms([s["hold_line_dispatch_s"] for s in samples])
    summary = {
        "connect_overhead_ms": max(acc[m]["p50_ms"] for m in MODES),
        "connect_overhead_p99_ms": max(acc[m]["p99_ms"] for m in MODES),
        "connect_overhead_move_p50_ms": acc["move"]["p50_ms"],
        "connect_overhead_bridge_p50_ms": acc["bridge"]["p50_ms"],
        "dtmf_to_decision_p50_ms": max(per_mode[m]["dtmf_to_decision_s"]["p50_ms"] for m in MODES),
        "hold_overhead_p50_ms": hold["p50_ms"],
        "hold_overhead_p99_ms": hold["p99_ms"],
        "hold_audible_overhead_p50_ms": audible["p50_ms"],
        "hold_line_dispatch_p50_ms": dispatch["p50_ms"],
        "hold_line_dispatch_p99_ms": dispatch["p99_ms"],
        "connect_target_met": max(acc[m]["p99_ms"] for m in MODES) <= TARGET_MS,
    }
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "control",
        "profile": profile,
        "runs_per_mode": runs,
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "load_average": load_average(),
        "setup": {
            "backend": "InMemoryBackend: zero server time",
            "human": "answers after 0.3 s, 'Hello?' 0.3 s, DTMF 1 at 0.9 s after answer",
            "hold_line": f"{HOLD_MESSAGE!r}: {hold_line_secs():.3f} s of scripted tone speech",
            "connecting_message": "'OK.' (0.3 s of scripted speech, not counted)",
            "pairs": f"a move and a bridge call side by side, offset {PAIR_OFFSET_SECS:g} s",
        },
        "summary": summary,
        "per_mode": per_mode,
        "hold_overhead": hold,
        "hold_audible_overhead": audible,
        "hold_line_dispatch": dispatch,
        "samples": samples,
    }
    write_json(JSON_PATH, document)
    _plot(samples, profile, PNG_PATH)
    progress(
        f"control: connect overhead p50 {summary['connect_overhead_ms']:.3f} ms, p99 "
        f"{summary['connect_overhead_p99_ms']:.3f} ms (target ≤ {TARGET_MS:g}); DTMF → "
        f"decision p50 {summary['dtmf_to_decision_p50_ms']:.2f} ms; hold overhead p50 "
        f"{summary['hold_overhead_p50_ms']:.1f} ms (hold line dispatch p50 "
        f"{summary['hold_line_dispatch_p50_ms']:.2f} ms + transport write-slot wait)"
    )
    progress(f"control: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
