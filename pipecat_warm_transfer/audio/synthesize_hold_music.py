#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Synthesise the bundled hold-music loop (`audio/assets/hold_music.ogg`).

Why a synthesiser rather than a recording: the package must ship music that anyone may
redistribute, and a file we render ourselves from a fixed seed with numpy alone has no
licence question, can be rebuilt from this file, and can be made to suit a phone line.

What it renders: eight bars at 84 bpm of Cmaj7 - Am9 - Fmaj9 - G6 (twice), with a soft
pad, an FM electric piano comping the chords, a vibraphone-like melody and a round bass,
in mono, band-shaped to 110-3200 Hz and peaking well below full scale.

Why it loops by itself: the length is a whole number of bars, and every note is rendered
into a circular buffer, so a note still ringing at the end wraps round onto the start.
The reverb and the band shaping are circular (FFT) operations on that buffer, so they
wrap too. The last sample therefore flows into the first exactly as any sample flows into
the next.

Run `python -m pipecat_warm_transfer.audio.synthesize_hold_music [--out PATH]`. The decoded
audio is the same on every run; the file's bytes are not quite, because libsndfile gives
each Ogg stream a random serial number.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22050
BPM = 84
BEATS_PER_BAR = 4
SEED = 20260184

#: Samples per beat: 60 / 84 * 22050 = 15750 exactly, so bars fall on whole samples.
BEAT = SAMPLE_RATE * 60 // BPM
BAR = BEAT * BEATS_PER_BAR

#: Peak level of the rendered loop (the decoded OGG must stay at or below -3 dBFS).
PEAK_DBFS = -4.5
#: Band kept by the final shaping. A phone carries about 300-3400 Hz; the bass's
#: fundamental stays in for wideband calls, its harmonics carry it on narrowband ones.
HIGHPASS_HZ = 110.0
LOWPASS_HZ = 3200.0

DEFAULT_OUT = Path(__file__).resolve().parent / "assets" / "hold_music.ogg"

# Chords as (bass root, pad/piano voicing), MIDI numbers. Rootless mid-register voicings
# (the bass has the root) move by step and keep the keys above 200 Hz, out of the band a
# phone line cuts.
_CMAJ7 = (48, (59, 64, 67, 72))  # C  | B3 E4 G4 C5
_AM9 = (45, (60, 64, 67, 71))  # A  | C4 E4 G4 B4
_FMAJ9 = (41, (60, 64, 67, 69))  # F  | C4 E4 G4 A4
_G6 = (43, (59, 62, 64, 67))  # G  | B3 D4 E4 G4
PROGRESSION = (_CMAJ7, _AM9, _FMAJ9, _G6) * 2

#: Melody as (bar, beat, MIDI note, length in beats): a phrase and its answer.
MELODY = (
    (0, 0.0, 76, 1.5), (0, 1.5, 79, 0.5), (0, 2.0, 83, 1.0), (0, 3.0, 79, 1.0),
    (1, 0.0, 81, 1.5), (1, 1.5, 79, 0.5), (1, 2.0, 76, 2.0),
    (2, 0.0, 81, 1.0), (2, 1.0, 84, 1.0), (2, 2.0, 79, 1.0), (2, 3.0, 76, 1.0),
    (3, 0.0, 74, 1.5), (3, 1.5, 76, 0.5), (3, 2.0, 79, 2.0),
    (4, 0.0, 76, 1.0), (4, 1.0, 79, 0.5), (4, 1.5, 83, 0.5), (4, 2.0, 84, 1.5), (4, 3.5, 83, 0.5),
    (5, 0.0, 81, 1.0), (5, 1.0, 76, 1.0), (5, 2.0, 72, 2.0),
    (6, 0.0, 77, 1.0), (6, 1.0, 81, 1.0), (6, 2.0, 84, 1.0), (6, 3.0, 81, 1.0),
    (7, 0.0, 79, 1.5), (7, 1.5, 74, 0.5), (7, 2.0, 71, 1.0), (7, 3.0, 74, 1.0),
)  # fmt: skip

#: Electric-piano comping hits in a bar as (beat, length in beats, velocity).
COMP = ((0.0, 1.4, 0.85), (1.5, 0.9, 0.55), (2.5, 1.4, 0.7))

#: Bass notes in a bar as (beat, length in beats, interval above the root in semitones).
BASS = ((0.0, 2.4, 0), (2.5, 0.4, 0), (3.0, 0.9, 7))


def midi_to_hz(note: float) -> float:
    """Return the frequency of a MIDI note number (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def _envelope(
    length_s: float, attack_s: float, release_s: float, decay_s: float | None = None
) -> np.ndarray:
    """Amplitude envelope: raised-cosine attack, exponential decay, raised-cosine release.

    Args:
        length_s: Time from note-on to note-off; the release follows it.
        attack_s: Attack time.
        release_s: Release time after note-off.
        decay_s: Time constant of the exponential decay, or None to sustain.

    Returns:
        The envelope, `length_s + release_s` long.
    """
    n = int(round((length_s + release_s) * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    env = np.ones(n)
    attack = t < attack_s
    env[attack] = 0.5 - 0.5 * np.cos(np.pi * t[attack] / attack_s)
    if decay_s is not None:
        env *= np.exp(-t / decay_s)
    release = t >= length_s
    phase = np.clip((t[release] - length_s) / release_s, 0.0, 1.0)
    env[release] *= 0.5 + 0.5 * np.cos(np.pi * phase)
    return env


def _time(n: int) -> np.ndarray:
    return np.arange(n) / SAMPLE_RATE


def electric_piano(note: int, length_s: float, velocity: float) -> np.ndarray:
    """A soft FM electric piano: a 1:1 FM pair whose brightness decays after the strike."""
    freq = midi_to_hz(note)
    env = _envelope(length_s, attack_s=0.008, release_s=0.35, decay_s=1.6)
    t = _time(len(env))
    index = 0.5 + 1.3 * velocity * np.exp(-t / 0.25)
    tone = np.sin(2 * np.pi * freq * t + index * np.sin(2 * np.pi * freq * t))
    # A faint octave "tine" that dies out quickly, for the bell-like edge of a Rhodes.
    tine = 0.12 * velocity * np.sin(2 * np.pi * 2.0 * freq * t) * np.exp(-t / 0.09)
    return velocity * env * (tone + tine)


def pad(note: int, length_s: float, rng: np.random.Generator) -> np.ndarray:
    """A warm pad: two slightly detuned voices of a few soft harmonics, slow in and out."""
    freq = midi_to_hz(note)
    env = _envelope(length_s, attack_s=0.6, release_s=1.0)
    t = _time(len(env))
    out = np.zeros(len(env))
    for detune_cents in (-6.0, 6.0):
        f = freq * 2.0 ** (detune_cents / 1200.0)
        for harmonic in range(1, 6):
            phase = rng.uniform(0.0, 2 * np.pi)
            out += harmonic**-1.6 * np.sin(2 * np.pi * f * harmonic * t + phase)
    return 0.5 * env * out


def vibraphone(note: int, length_s: float, velocity: float) -> np.ndarray:
    """A mellow vibraphone-like bell: few partials, gentle tremolo, long decay."""
    freq = midi_to_hz(note)
    env = _envelope(length_s, attack_s=0.006, release_s=0.5, decay_s=1.1)
    t = _time(len(env))
    tone = (
        np.sin(2 * np.pi * freq * t)
        + 0.18 * np.sin(2 * np.pi * 2.0 * freq * t) * np.exp(-t / 0.3)
        + 0.05 * np.sin(2 * np.pi * 3.0 * freq * t) * np.exp(-t / 0.12)
    )
    tremolo = 1.0 - 0.18 * (0.5 - 0.5 * np.cos(2 * np.pi * 5.2 * t))
    return velocity * env * tremolo * tone


def bass(note: int, length_s: float, velocity: float) -> np.ndarray:
    """A round bass with enough 2nd and 3rd harmonic to be heard through a phone."""
    freq = midi_to_hz(note)
    env = _envelope(length_s, attack_s=0.012, release_s=0.15, decay_s=1.2)
    t = _time(len(env))
    tone = (
        np.sin(2 * np.pi * freq * t)
        + 0.55 * np.sin(2 * np.pi * 2.0 * freq * t)
        + 0.25 * np.sin(2 * np.pi * 3.0 * freq * t) * np.exp(-t / 0.4)
    )
    return velocity * env * tone


def add_circular(buffer: np.ndarray, start: int, signal: np.ndarray) -> None:
    """Add `signal` into `buffer` from `start`, wrapping whatever runs past the end.

    Args:
        buffer: The loop, modified in place.
        start: Start sample (any integer; taken modulo the loop length).
        signal: Samples to add; may be longer than the buffer.
    """
    n = len(buffer)
    pos = start % n
    done = 0
    while done < len(signal):
        take = min(n - pos, len(signal) - done)
        buffer[pos : pos + take] += signal[done : done + take]
        done += take
        pos = 0


def circular_reverb(x: np.ndarray, rng: np.random.Generator, wet: float = 0.18) -> np.ndarray:
    """A small, dark room: circular convolution with a decaying, smoothed noise tail."""
    n_ir = int(1.4 * SAMPLE_RATE)
    t = _time(n_ir)
    ir = rng.standard_normal(n_ir) * np.exp(-t / 0.32)
    ir = np.convolve(ir, np.hanning(9) / np.hanning(9).sum(), mode="same")  # darken
    ir[: int(0.012 * SAMPLE_RATE)] = 0.0  # pre-delay
    ir /= np.sqrt(np.sum(ir**2))
    kernel = np.zeros(len(x))
    kernel[:n_ir] = ir
    tail = np.fft.irfft(np.fft.rfft(x) * np.fft.rfft(kernel), len(x))
    dry_rms = np.sqrt(np.mean(x**2))
    tail *= dry_rms / max(np.sqrt(np.mean(tail**2)), 1e-12)
    return (1.0 - wet) * x + wet * tail


def band_shape(
    x: np.ndarray, low_hz: float = HIGHPASS_HZ, high_hz: float = LOWPASS_HZ
) -> np.ndarray:
    """Zero-phase, circular band shaping: 2nd-order high-pass and 4th-order low-pass slopes.

    Being a multiplication of the loop's own spectrum, it adds no transient at the seam.
    """
    freqs = np.fft.rfftfreq(len(x), 1.0 / SAMPLE_RATE)
    with np.errstate(divide="ignore"):
        highpass = 1.0 / np.sqrt(1.0 + (low_hz / np.maximum(freqs, 1e-9)) ** 4)
    lowpass = 1.0 / np.sqrt(1.0 + (freqs / high_hz) ** 8)
    return np.fft.irfft(np.fft.rfft(x) * highpass * lowpass, len(x))


def render(seed: int = SEED) -> np.ndarray:
    """Render the loop.

    Args:
        seed: Seed for the small timing/velocity humanisation, pad phases and reverb.

    Returns:
        float32 mono samples at `SAMPLE_RATE`, a whole number of bars, peak `PEAK_DBFS`,
        rotated to start at `quiet_start`.
    """
    rng = np.random.default_rng(seed)
    length = BAR * len(PROGRESSION)
    beat_s = BEAT / SAMPLE_RATE

    def at(bar: int, beat: float) -> int:
        jitter = int(rng.normal(0.0, 0.003) * SAMPLE_RATE)  # a few ms, like a player
        return bar * BAR + int(round(beat * BEAT)) + jitter

    def humanize(velocity: float) -> float:
        return float(velocity * rng.uniform(0.92, 1.04))

    pads = np.zeros(length)
    keys = np.zeros(length)
    melody = np.zeros(length)
    low = np.zeros(length)
    for bar, (root, voicing) in enumerate(PROGRESSION):
        for note in voicing:
            # Each pad chord lasts a bar; its release rings into the next (bar 8 into bar 1).
            add_circular(pads, bar * BAR, pad(note, BAR / SAMPLE_RATE, rng))
        for beat, beats, velocity in COMP:
            start = at(bar, beat)
            for i, note in enumerate(voicing):
                # Roll the chord slightly, low to high, as a pianist would.
                strum = int(0.006 * i * SAMPLE_RATE)
                add_circular(
                    keys, start + strum, electric_piano(note, beats * beat_s, humanize(velocity))
                )
        for beat, beats, interval in BASS:
            add_circular(low, at(bar, beat), bass(root + interval, beats * beat_s, humanize(0.9)))
    for bar, beat, note, beats in MELODY:
        add_circular(melody, at(bar, beat), vibraphone(note, beats * beat_s, humanize(0.8)))

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x**2))

    mix = 0.55 * unit(pads) + 0.75 * unit(keys) + 0.6 * unit(melody) + 0.5 * unit(low)
    mix = circular_reverb(mix, rng)
    mix = band_shape(mix)
    mix *= 10.0 ** (PEAK_DBFS / 20.0) / np.max(np.abs(mix))
    return np.roll(mix, -quiet_start(mix)).astype(np.float32)


def quiet_start(x: np.ndarray, search_s: float = 0.03) -> int:
    """Pick where the file should start: the gentlest zero crossing just before the top.

    An encoder sees the file's two edges as cuts from and to silence and spreads a little
    noise around them; starting where the waveform crosses zero slowly leaves it almost
    nothing to cut. Rotating a circular loop changes nothing else (the loop then starts
    a few milliseconds before the first downbeat).

    Args:
        x: The loop.
        search_s: How far before the end (the first downbeat) to look.

    Returns:
        The index to rotate to the front, or 0 if there is no crossing.
    """
    n = len(x)
    idx = np.arange(n - int(search_s * SAMPLE_RATE), n)
    prev, cur = x[idx - 1], x[idx % n]
    crossing = np.signbit(prev) != np.signbit(cur)
    if not crossing.any():
        return 0
    slope = np.where(crossing, np.abs(cur - prev), np.inf)
    return int(idx[np.argmin(slope)] % n)


def _dbfs(value: float) -> float:
    return 20.0 * np.log10(max(value, 1e-12))


def describe(path: Path) -> dict[str, float]:
    """Decode a written loop and measure what matters for hold music.

    Args:
        path: The audio file.

    Returns:
        Duration, RMS and peak (dBFS), the step across the loop seam and the largest step
        inside the file, the share of energy below 3.5 kHz and within 200-3500 Hz, and
        the file size in kB.
    """
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    x = data.mean(axis=1)
    steps = np.abs(np.diff(x))
    spectrum = np.abs(np.fft.rfft(x[: 3 * rate] * np.hanning(3 * rate))) ** 2
    freqs = np.fft.rfftfreq(3 * rate, 1.0 / rate)
    total = spectrum.sum()
    return {
        "duration_s": len(x) / rate,
        "sample_rate": float(rate),
        "rms_dbfs": _dbfs(float(np.sqrt(np.mean(x**2)))),
        "peak_dbfs": _dbfs(float(np.max(np.abs(x)))),
        "seam_step": float(abs(x[0] - x[-1])),
        "max_inner_step": float(steps.max()),
        "p99_inner_step": float(np.percentile(steps, 99)),
        "energy_below_3500hz": float(spectrum[freqs < 3500].sum() / total),
        "energy_200_3500hz": float(spectrum[(freqs >= 200) & (freqs < 3500)].sum() / total),
        "size_kb": path.stat().st_size / 1024.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Render the loop, write it as OGG Vorbis and print its measurements.

    Args:
        argv: Command-line arguments (default: `sys.argv[1:]`).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .ogg path")
    args = parser.parse_args(argv)

    loop = render()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # compression_level 0.0 is Vorbis' best quality: about 80 kB for the loop.
    sf.write(
        str(args.out), loop, SAMPLE_RATE, format="OGG", subtype="VORBIS", compression_level=0.0
    )
    stats = describe(args.out)
    print(f"wrote {args.out}")
    for key, value in stats.items():
        print(f"  {key:20s} {value:.6g}")
    ok = stats["peak_dbfs"] <= -3.0 and stats["seam_step"] <= stats["max_inner_step"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
