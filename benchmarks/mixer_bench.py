"""Mixer micro-benchmark: `HoldMusicMixer` against Pipecat's `SoundfileMixer`.

Measures the CPU time to mix one 20 ms frame of 16-bit mono PCM, at 8, 16, 24 and
48 kHz, for three kinds of transport input:

* ``silent``: all-zero frames, what a held call's output transport sends while the bot
  is quiet. This is the frame a held call pays for all the time.
* ``speech``: a voice-like signal (200 Hz harmonic-rich tone with 4 Hz amplitude
  modulation, about -20 dBFS RMS), steady, so ours sits in its ducked state.
* ``transition``: speech and silence alternating every 5 frames (100 ms), which keeps
  ours on its general path (duck ramps and hold), to be honest about the slow path.

Ours is `HoldMusicMixer(source=<test file>, level_dbfs=-24)` with default fade and
ducking, enabled with `MixerEnableFrame(True)` and warmed up past the fade-in. The
baseline is `SoundfileMixer(volume=0.4, mixing=True, loop=True)` playing a mono int16
WAV of the same music already at the transport rate (it cannot resample), scaled so
that its output level matches ours (-24 dBFS RMS).

The headline uses the synchronous call for both mixers (`mix_now` for ours,
`_mix_with_sound` for the baseline: both are exactly what their `async mix()` runs);
`await mix()` in an asyncio loop is timed too and reported alongside. Each number is the
median over several batches of the mean time per frame; ours and baseline batches are
interleaved so both see the same machine conditions.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer
from pipecat.frames.frames import MixerEnableFrame

from benchmarks.common import (
    RESULTS_DIR,
    batch_stats_us,
    check_profile,
    machine_info,
    progress,
    time_batch_async_ns,
    time_batch_ns,
    write_json,
)
from pipecat_warm_transfer import HoldMusicMixer

RATES = (8000, 16000, 24000, 48000)
INPUTS = ("silent", "speech", "transition")
STYLES = ("sync", "async")
FRAME_MS = 20
FRAMES_PER_SEC = 1000 // FRAME_MS

LEVEL_DBFS = -24.0
BASELINE_VOLUME = 0.4
SPEECH_DBFS = -20.0
MUSIC_FILE_RATE = 44100
MUSIC_SECONDS = 10.0
#: Distinct frames per input kind, cycled through (2 s of audio; a multiple of 10 so the
#: transition pattern is whole).
POOL_FRAMES = 100
WARMUP_FRAMES = 2 * FRAMES_PER_SEC
#: Allowed distance of a measured music level from its target.
LEVEL_TOLERANCE_DB = 2.0

PROFILE_SETTINGS = {
    # batches per series, target wall time per batch
    "quick": {"batches": 9, "batch_ms": 25.0},
    "full": {"batches": 25, "batch_ms": 60.0},
}
MAX_BATCH_FRAMES = 200_000

JSON_PATH = RESULTS_DIR / "mixer.json"
PNG_PATH = RESULTS_DIR / "mixer.png"


class BenchmarkSanityError(RuntimeError):
    """A mixer did not do the work the benchmark means to measure."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchmarkSanityError(message)


# --------------------------------------------------------------------------- signals


def _music_stereo(rate: int = MUSIC_FILE_RATE, seconds: float = MUSIC_SECONDS) -> np.ndarray:
    """A stationary A-major chord with a bass note, slightly different per channel."""
    t = np.arange(int(rate * seconds)) / rate
    tones = [(110.0, 0.5), (220.0, 0.35), (277.18, 0.3), (329.63, 0.3), (440.0, 0.15)]
    left = sum(a * np.sin(2 * np.pi * f * t) for f, a in tones)
    right = sum(a * np.sin(2 * np.pi * f * t + 0.7 * i) for i, (f, a) in enumerate(tones))
    stereo = np.stack([left, right], axis=1)
    return (0.5 * stereo / np.max(np.abs(stereo))).astype(np.float32)


def _dbfs_rms(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20.0 * np.log10(max(rms, 1e-12) / 32768.0)


def _write_music_files(tmp: Path) -> tuple[Path, dict[int, Path]]:
    """Write ours' 44.1 kHz stereo WAV and the baseline's per-rate mono int16 WAVs.

    The baseline files are the same music (mono downmix, soxr-resampled), scaled so that
    `SoundfileMixer` at volume 0.4 outputs it at the same -24 dBFS RMS as ours.
    """
    stereo = _music_stereo()
    ours_path = tmp / "music_44k1_stereo.wav"
    sf.write(ours_path, stereo, MUSIC_FILE_RATE, subtype="PCM_16")

    mono = stereo.mean(axis=1, dtype=np.float32)
    baseline_paths: dict[int, Path] = {}
    for rate in RATES:
        resampled = soxr.resample(mono, MUSIC_FILE_RATE, rate, quality="HQ").astype(np.float64)
        rms = np.sqrt(np.mean(np.square(resampled)))
        target = 32768.0 * 10.0 ** (LEVEL_DBFS / 20.0) / BASELINE_VOLUME
        pcm = np.clip(np.rint(resampled * (target / rms)), -32768, 32767).astype(np.int16)
        path = tmp / f"music_{rate}_mono.wav"
        sf.write(path, pcm, rate, subtype="PCM_16")
        baseline_paths[rate] = path
    return ours_path, baseline_paths


def _speech(rate: int, frames: int) -> np.ndarray:
    """A voice-like int16 signal: 200 Hz with harmonics (1/k), 4 Hz AM, -20 dBFS RMS."""
    n = frames * rate // FRAMES_PER_SEC
    t = np.arange(n) / rate
    harmonics = [k for k in range(1, 40) if 200.0 * k < 0.45 * rate]
    voice = sum(np.sin(2 * np.pi * 200.0 * k * t + 0.3 * k) / k for k in harmonics)
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4.0 * t)
    x = voice * envelope
    x *= 32768.0 * 10.0 ** (SPEECH_DBFS / 20.0) / np.sqrt(np.mean(np.square(x)))
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _frame_pools(rate: int) -> dict[str, list[bytes]]:
    """`POOL_FRAMES` distinct bytes objects per input kind, as a transport would send."""
    samples = rate // FRAMES_PER_SEC
    speech = _speech(rate, POOL_FRAMES)
    speech_frames = [speech[i * samples : (i + 1) * samples].tobytes() for i in range(POOL_FRAMES)]
    # Distinct objects (not one shared bytes), so nothing can short-cut on identity.
    silent_frames = [bytes(2 * samples) for _ in range(POOL_FRAMES)]
    transition = [
        speech_frames[i] if (i // 5) % 2 == 0 else silent_frames[i] for i in range(POOL_FRAMES)
    ]
    return {"silent": silent_frames, "speech": speech_frames, "transition": transition}


def _pcm(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype=np.int16)


# --------------------------------------------------------------------------- mixers


async def _make_ours(source: Path, rate: int) -> HoldMusicMixer:
    mixer = HoldMusicMixer(source=source, level_dbfs=LEVEL_DBFS)
    await mixer.start(rate)
    await mixer.process_frame(MixerEnableFrame(True))
    return mixer


async def _make_baseline(path: Path, rate: int) -> SoundfileMixer:
    mixer = SoundfileMixer(
        sound_files={"music": str(path)},
        default_sound="music",
        volume=BASELINE_VOLUME,
        mixing=True,
        loop=True,
    )
    await mixer.start(rate)
    await mixer.process_frame(MixerEnableFrame(True))
    return mixer


def _default_duck_db() -> float:
    return float(inspect.signature(HoldMusicMixer).parameters["duck_db"].default)


def _sanity(
    name: str, kind: str, rate: int, inputs: list[bytes], outputs: list[bytes], duck_db: float
) -> dict[str, float]:
    """Check a mixer really mixed: lengths kept, music present at the expected level."""
    where = f"{name} {kind} @ {rate} Hz"
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        _check(len(y) == len(x), f"{where}: frame {i} is {len(y)} bytes, input {len(x)}")
    # Last second of the window: past the fade-in and the duck attack.
    tail_in = _pcm(inputs[-FRAMES_PER_SEC:])
    tail_out = _pcm(outputs[-FRAMES_PER_SEC:])
    music = tail_out.astype(np.int32) - tail_in.astype(np.int32)
    music_dbfs = _dbfs_rms(music)
    checks = {"music_dbfs": round(music_dbfs, 2)}
    if kind == "silent":
        expected = LEVEL_DBFS
    elif kind == "speech" and name == "ours":
        expected = LEVEL_DBFS - duck_db  # steadily ducked under the voice
    elif kind == "speech":
        expected = LEVEL_DBFS  # the baseline does not duck
    else:
        _check(music_dbfs > LEVEL_DBFS - duck_db - 10.0, f"{where}: no music ({music_dbfs:.1f})")
        return checks
    _check(
        abs(music_dbfs - expected) <= LEVEL_TOLERANCE_DB,
        f"{where}: music at {music_dbfs:.1f} dBFS RMS, expected {expected:.1f} "
        f"± {LEVEL_TOLERANCE_DB:g} dB (is the mixer doing the work?)",
    )
    return checks


def _warm(call, frames: list[bytes]) -> list[bytes]:
    return [call(f) for f in frames]


# --------------------------------------------------------------------------- timing


async def _calibrate(call, pool: list[bytes], is_async: bool, batch_ms: float) -> int:
    """Frames per batch (a whole number of pool cycles) for about `batch_ms` of work."""
    if is_async:
        ns = await time_batch_async_ns(call, pool)
    else:
        ns = time_batch_ns(call, pool)
    per_frame = max(ns / len(pool), 1.0)
    frames = int(batch_ms * 1e6 / per_frame)
    cycles = max(1, -(-min(frames, MAX_BATCH_FRAMES) // len(pool)))
    return cycles * len(pool)


async def _time_pair(
    calls: dict[str, Any], pool: list[bytes], is_async: bool, batches: int, batch_ms: float
) -> dict[str, dict[str, Any]]:
    """Time ours and the baseline on the same frames, interleaving their batches."""
    sizes = {name: await _calibrate(call, pool, is_async, batch_ms) for name, call in calls.items()}
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(batches):
        for name, call in calls.items():
            items = pool * (sizes[name] // len(pool))
            if is_async:
                ns = await time_batch_async_ns(call, items)
            else:
                ns = time_batch_ns(call, items)
            samples[name].append(ns / len(items))
    return {
        name: {**batch_stats_us(samples[name]), "batches": batches, "frames_per_batch": sizes[name]}
        for name in calls
    }


# --------------------------------------------------------------------------- output


def _format_table(results: dict[str, Any]) -> str:
    header = (
        f"{'rate':>6} {'input':<10} | {'ours µs':>8} {'base µs':>8} {'speedup':>8} | "
        f"{'ours async':>10} {'base async':>10} {'speedup':>8}"
    )
    lines = [header, "-" * len(header)]
    for rate in RATES:
        for kind in INPUTS:
            case = results[str(rate)][kind]
            s, a = case["sync"], case["async"]
            lines.append(
                f"{rate:>6} {kind:<10} | {s['ours']['median_us']:>8.2f} "
                f"{s['baseline']['median_us']:>8.2f} {s['speedup']:>7.1f}x | "
                f"{a['ours']['median_us']:>10.2f} {a['baseline']['median_us']:>10.2f} "
                f"{a['speedup']:>7.1f}x"
            )
    return "\n".join(lines)


def _plot(results: dict[str, Any], profile: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "silent": "Silent input (held call)",
        "speech": "Speech input (steady, ours ducked)",
        "transition": "Speech/silence every 100 ms",
    }
    fig, axes = plt.subplots(1, len(INPUTS), figsize=(15, 5), sharey=True)
    x = np.arange(len(RATES))
    width = 0.38
    top = 0.0
    for ax, kind in zip(axes, INPUTS, strict=True):
        ours = [results[str(r)][kind]["sync"]["ours"]["median_us"] for r in RATES]
        base = [results[str(r)][kind]["sync"]["baseline"]["median_us"] for r in RATES]
        speedups = [results[str(r)][kind]["sync"]["speedup"] for r in RATES]
        top = max(top, *ours, *base)
        b1 = ax.bar(x - width / 2, ours, width, label="HoldMusicMixer (ours)", color="#2a9d8f")
        b2 = ax.bar(x + width / 2, base, width, label="SoundfileMixer (baseline)", color="#9a9a9a")
        ax.bar_label(b1, fmt="%.2f", fontsize=7, padding=1)
        ax.bar_label(b2, fmt="%.2f", fontsize=7, padding=1)
        for i, speedup in enumerate(speedups):
            ax.annotate(
                f"{speedup:.1f}×",
                (x[i], max(ours[i], base[i]) * 1.9),
                ha="center",
                fontsize=10,
                fontweight="bold",
                color="#1d3557" if speedup >= 1.0 else "#c1121f",
            )
        ax.set_xticks(x, [f"{r // 1000} kHz" for r in RATES])
        ax.set_xlabel("transport sample rate")
        ax.set_title(titles[kind], fontsize=11)
        ax.set_yscale("log")
        ax.grid(axis="y", which="both", alpha=0.25)
    axes[0].set_ylabel("µs per 20 ms frame (median, lower is better)")
    axes[0].set_ylim(top=top * 6)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.suptitle(
        f"Hold-music mixing cost per frame: ours vs Pipecat SoundfileMixer "
        f"(speedup = baseline / ours, sync call, profile {profile})",
        fontsize=12,
    )
    fig.text(
        0.5,
        0.01,
        "bold = speedup (baseline µs / ours µs); red = ours slower. Same frames, same call "
        "style (mix_now vs _mix_with_sound), median of interleaved batches.",
        ha="center",
        fontsize=8,
        color="#444444",
    )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    tmp.replace(path)


# --------------------------------------------------------------------------- entry


async def _run(profile: str) -> dict[str, Any]:
    settings = PROFILE_SETTINGS[profile]
    batches, batch_ms = settings["batches"], settings["batch_ms"]
    duck_db = _default_duck_db()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mixer-bench-") as tmp_dir:
        ours_file, baseline_files = _write_music_files(Path(tmp_dir))
        for rate in RATES:
            t_rate = time.perf_counter()
            pools = _frame_pools(rate)
            results[str(rate)] = {}
            for kind in INPUTS:
                pool = pools[kind]
                warm_frames = pool * (WARMUP_FRAMES // len(pool)) or pool
                case: dict[str, Any] = {"sanity": {}}
                for style in STYLES:
                    # Fresh mixers per series: each starts from the same warmed-up state.
                    ours = await _make_ours(ours_file, rate)
                    base = await _make_baseline(baseline_files[rate], rate)
                    sync_calls = {"ours": ours.mix_now, "baseline": base._mix_with_sound}
                    for name, call in sync_calls.items():
                        outputs = _warm(call, warm_frames)
                        before = _sanity(name, kind, rate, warm_frames, outputs, duck_db)
                        case["sanity"].setdefault(name, {})[f"{style}_before"] = before
                    calls = (
                        sync_calls if style == "sync" else {"ours": ours.mix, "baseline": base.mix}
                    )
                    timed = await _time_pair(calls, pool, style == "async", batches, batch_ms)
                    for name, call in sync_calls.items():
                        # Still mixing after the timed run (the state did not decay).
                        outputs = _warm(call, warm_frames)
                        after = _sanity(name, kind, rate, warm_frames, outputs, duck_db)
                        case["sanity"][name][f"{style}_after"] = after
                    timed["speedup"] = timed["baseline"]["median_us"] / timed["ours"]["median_us"]
                    case[style] = timed
                    await ours.stop()
                    await base.stop()
                results[str(rate)][kind] = case
            progress(
                f"  mixer {rate:>5} Hz: "
                + ", ".join(
                    f"{kind} {results[str(rate)][kind]['sync']['ours']['median_us']:.2f} vs "
                    f"{results[str(rate)][kind]['sync']['baseline']['median_us']:.2f} µs "
                    f"({results[str(rate)][kind]['sync']['speedup']:.1f}x)"
                    for kind in INPUTS
                )
                + f"  [{time.perf_counter() - t_rate:.1f} s]"
            )
    return results


def run(profile: str) -> dict[str, Any]:
    """Run the mixer benchmark; write mixer.json and mixer.png; return summary keys."""
    check_profile(profile)
    t0 = time.perf_counter()
    progress(
        f"mixer: {len(RATES)} rates x {len(INPUTS)} inputs x {len(STYLES)} call styles, "
        f"profile {profile} {PROFILE_SETTINGS[profile]}"
    )
    duck_db = _default_duck_db()
    results = asyncio.run(_run(profile))

    def by_rate(kind: str, style: str = "sync") -> dict[str, float]:
        return {str(r): round(results[str(r)][kind][style]["speedup"], 2) for r in RATES}

    summary = {
        "mixer_silence_speedup": round(min(by_rate("silent").values()), 2),
        "mixer_speech_speedup": round(min(by_rate("speech").values()), 2),
        "mixer_speech_transition_speedup": round(min(by_rate("transition").values()), 2),
        "mixer_silence_speedup_by_rate": by_rate("silent"),
        "mixer_speech_speedup_by_rate": by_rate("speech"),
        "mixer_speech_transition_speedup_by_rate": by_rate("transition"),
        "mixer_silence_speedup_async": round(min(by_rate("silent", "async").values()), 2),
        "mixer_speech_speedup_async": round(min(by_rate("speech", "async").values()), 2),
        "mixer_ours_silent_us_per_frame_48k": round(
            results["48000"]["silent"]["sync"]["ours"]["median_us"], 3
        ),
        "mixer_profile": profile,
    }
    table = _format_table(results)
    elapsed = time.perf_counter() - t0
    document = {
        "benchmark": "mixer",
        "profile": profile,
        "profile_settings": PROFILE_SETTINGS[profile],
        "elapsed_s": round(elapsed, 2),
        "machine": machine_info(),
        "setup": {
            "frame_ms": FRAME_MS,
            "rates_hz": list(RATES),
            "ours": (
                f"HoldMusicMixer(source=<10 s 44.1 kHz stereo WAV>, level_dbfs={LEVEL_DBFS}), "
                f"default fade/duck (duck_db={duck_db}), enabled, warmed up "
                f"{WARMUP_FRAMES} frames; sync = mix_now(), async = await mix()"
            ),
            "baseline": (
                f"SoundfileMixer(volume={BASELINE_VOLUME}, mixing=True, loop=True) with a "
                "mono int16 WAV at the transport rate (same music, soxr HQ, scaled to output "
                f"{LEVEL_DBFS} dBFS RMS); sync = _mix_with_sound(), async = await mix()"
            ),
            "inputs": {
                "silent": "all-zero int16 frames",
                "speech": (
                    f"200 Hz harmonic-rich tone, 4 Hz AM, {SPEECH_DBFS} dBFS RMS; ours steady ducked"
                ),
                "transition": "speech and silence alternating every 5 frames",
            },
            "statistic": (
                "median over batches of the mean µs per frame; ours and baseline batches "
                "interleaved; GC paused during batches; loop and call overhead included"
            ),
            "speedup": "baseline µs / ours µs (>1 means ours is faster)",
        },
        "summary": summary,
        "results": results,
        "table": table.splitlines(),
    }
    write_json(JSON_PATH, document)
    _plot(results, profile, PNG_PATH)
    print(table, flush=True)
    progress(f"mixer: wrote {JSON_PATH} and {PNG_PATH} in {elapsed:.1f} s")
    return summary
