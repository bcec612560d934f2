#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Hold-music source: decode, resample, normalise, loop and cache.

A held call must not pay for decoding or arithmetic on every frame, and a thousand
held calls must not hold a thousand copies of the same song. This module turns a file
into a ready-to-slice, read-only int16 loop once per (file, rate, level, gain, band) and
shares it through a process-wide cache.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

#: Loop seam crossfade, so a file whose length is not a whole number of periods loops
#: without a click.
DEFAULT_CROSSFADE_MS = 50

#: Extra samples appended after the loop end so that a frame slice never has to wrap.
_WRAP_PAD_SECS = 1.0

#: Telephone band edges (Hz) for the optional band-limit.
TELEPHONE_BAND_HZ = (300.0, 3400.0)

MIN_LEVEL_DBFS = -90.0


class HoldMusicError(ValueError):
    """A hold-music file or setting that cannot be used."""


def bundled_music_path() -> Path:
    """Return the path of the bundled, royalty-free hold-music loop."""
    return Path(str(resources.files("pipecat_warm_transfer.audio") / "assets" / "hold_music.ogg"))


def dbfs_to_amplitude(level_dbfs: float) -> float:
    """Convert an RMS level in dBFS (full scale = 32768) to an int16-domain amplitude."""
    return 32768.0 * 10.0 ** (level_dbfs / 20.0)


def resolve_source(source: str | os.PathLike | None) -> Path:
    """Resolve and check a hold-music source, raising `HoldMusicError` with the reason.

    Args:
        source: A path to a wav/flac/ogg/mp3 file, or None for the bundled music.

    Returns:
        The absolute path of a file that libsndfile can decode.
    """
    path = bundled_music_path() if source is None else Path(source).expanduser()
    if not path.is_file():
        raise HoldMusicError(f"hold music source: file not found: {path}")
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises several types for undecodable data
        raise HoldMusicError(f"hold music source: cannot decode {path}: {e}") from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise HoldMusicError(f"hold music source: {path} holds no audio")
    return path.resolve()


def validate_level(level_dbfs: float, field: str = "level_dbfs") -> float:
    """Check a music level: a finite number of dBFS, above silence and not above 0."""
    try:
        level = float(level_dbfs)
    except (TypeError, ValueError):
        raise HoldMusicError(f"{field}: expected a number of dBFS, got {level_dbfs!r}") from None
    if not np.isfinite(level) or level > 0.0 or level < MIN_LEVEL_DBFS:
        raise HoldMusicError(
            f"{field}: {level_dbfs!r} is out of range ({MIN_LEVEL_DBFS:g} to 0 dBFS)"
        )
    return level


@dataclass(frozen=True)
class MusicLoop:
    """A prepared hold-music loop at one sample rate and level, shared read-only.

    Parameters:
        samples: int16 loop, `length` samples followed by a wrap pad (a copy of the
            start) so that any slice of up to `pad` samples from any position is
            contiguous.
        length: Number of samples in one loop period.
        sample_rate: Sample rate of the loop.
        level_dbfs: RMS level of the loop.
        gain: Extra gain (e.g. a ducked copy) applied on top of the level.
        peak: Largest absolute sample value, so a mix that cannot overflow skips clipping.
    """

    samples: np.ndarray
    length: int
    sample_rate: int
    level_dbfs: float
    gain: float
    peak: int

    @property
    def pad(self) -> int:
        """Number of samples after the loop end that repeat its start."""
        return len(self.samples) - self.length

    def take(self, pos: int, count: int) -> np.ndarray:
        """Return `count` samples starting at loop position `pos` (a view when possible)."""
        if count <= self.pad:
            return self.samples[pos : pos + count]
        idx = (pos + np.arange(count)) % self.length
        return self.samples[idx]


def _band_limit(x: np.ndarray, sample_rate: int, band: tuple[float, float]) -> np.ndarray:
    """Band-limit a loop in the frequency domain with cosine-tapered band edges.

    The FFT treats the signal as periodic, which is exactly what a loop is, so the
    filter adds no transient at the loop seam.
    """
    n = len(x)
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    low, high = band
    taper = 0.2  # fraction of an octave over which each edge rolls off
    gain = np.ones_like(freqs)
    lo0, hi1 = low * 2 ** (-taper), high * 2**taper
    gain[freqs <= lo0] = 0.0
    gain[freqs >= hi1] = 0.0
    lo_mask = (freqs > lo0) & (freqs < low)
    gain[lo_mask] = 0.5 - 0.5 * np.cos(np.pi * np.log2(freqs[lo_mask] / lo0) / taper)
    hi_mask = (freqs > high) & (freqs < hi1)
    gain[hi_mask] = 0.5 + 0.5 * np.cos(np.pi * np.log2(freqs[hi_mask] / high) / taper)
    return np.fft.irfft(spectrum * gain, n).astype(np.float32)


def _seamless_loop(x: np.ndarray, crossfade: int) -> np.ndarray:
    """Crossfade the end of `x` into its start so that the loop has no seam.

    The returned loop is `x[crossfade:]` with its last `crossfade` samples replaced by a
    blend of the original tail (fading out) and the original head (fading in). Playing
    the loop end then flows into `x[crossfade]`, which followed `x[crossfade - 1]` in the
    original: the seam is as smooth as the music itself.
    """
    if crossfade <= 0 or len(x) < 4 * crossfade:
        return x.copy()
    head = x[:crossfade]
    tail = x[-crossfade:]
    t = (np.arange(crossfade, dtype=np.float32) + 0.5) / crossfade
    fade_in = np.sin(0.5 * np.pi * t).astype(np.float32) ** 2
    blended = tail * (1.0 - fade_in) + head * fade_in
    body = x[crossfade:-crossfade]
    return np.concatenate([body, blended]).astype(np.float32)


def _resample_loop(x: np.ndarray, file_rate: int, sample_rate: int) -> np.ndarray:
    """Resample a loop as a circular signal, so its seam gets no filter edge."""
    pad = min(len(x), max(64, file_rate // 20))
    wrapped = np.concatenate([x[-pad:], x, x[:pad]])
    out = soxr.resample(wrapped, file_rate, sample_rate, quality="HQ").astype(np.float32)
    start = int(round(pad * sample_rate / file_rate))
    length = int(round(len(x) * sample_rate / file_rate))
    return out[start : start + length]


@functools.lru_cache(maxsize=16)
def _decoded(
    path: str, mtime_ns: int, size: int, sample_rate: int, band: bool, crossfade_ms: float
) -> np.ndarray:
    """Decode, downmix, resample and loop a file as float32 at unit RMS (cached)."""
    data, file_rate = sf.read(path, dtype="float32", always_2d=True)
    mono = data.mean(axis=1, dtype=np.float32)
    if crossfade_ms > 0:
        # An arbitrary file: its end does not flow into its start, so crossfade the seam.
        if file_rate != sample_rate:
            mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ")
        loop = _seamless_loop(mono.astype(np.float32), int(sample_rate * crossfade_ms / 1000))
    else:
        # A file made to loop (the bundled music): keep every sample, resample circularly.
        loop = mono if file_rate == sample_rate else _resample_loop(mono, file_rate, sample_rate)
    if band:
        loop = _band_limit(loop, sample_rate, TELEPHONE_BAND_HZ)
    rms = float(np.sqrt(np.mean(np.square(loop, dtype=np.float64))))
    if rms <= 1e-9:
        raise HoldMusicError(f"hold music source: {path} is silent")
    loop = (loop / rms).astype(np.float32)
    loop.flags.writeable = False
    return loop


@functools.lru_cache(maxsize=64)
def _prepared(
    path: str, mtime_ns: int, size: int, rate: int, level_dbfs: float, gain: float, band: bool
) -> MusicLoop:
    crossfade_ms = 0.0 if Path(path) == bundled_music_path().resolve() else DEFAULT_CROSSFADE_MS
    unit = _decoded(path, mtime_ns, size, rate, band, crossfade_ms)
    scaled = unit * np.float32(dbfs_to_amplitude(level_dbfs) * gain)
    loop = np.clip(np.rint(scaled), -32768, 32767).astype(np.int16)
    pad = min(int(rate * _WRAP_PAD_SECS), 10 * len(loop))
    reps = -(-pad // len(loop))
    padded = np.concatenate([loop, np.tile(loop, reps)[:pad]])
    padded.flags.writeable = False
    peak = int(np.max(np.abs(loop.astype(np.int32)))) if len(loop) else 0
    return MusicLoop(padded, len(loop), rate, level_dbfs, gain, peak)


def load_music_loop(
    source: str | os.PathLike | None,
    sample_rate: int,
    level_dbfs: float,
    *,
    gain: float = 1.0,
    telephone_band: bool = False,
) -> MusicLoop:
    """Return the shared, prepared loop for (file, rate, level, gain, band).

    Every caller asking for the same file (unchanged on disk), rate, level, gain and band
    gets the same read-only object, so N held calls cost one copy of the music.

    Args:
        source: Path of the music file, or None for the bundled music.
        sample_rate: Output sample rate (the transport's).
        level_dbfs: Target RMS level of the music in dBFS.
        gain: Additional linear gain (used for the ducked copy).
        telephone_band: Band-limit to 300-3400 Hz.
    """
    if sample_rate <= 0:
        raise HoldMusicError(f"sample_rate: expected a positive rate, got {sample_rate!r}")
    path = resolve_source(source)
    st = path.stat()
    try:
        return _prepared(
            str(path),
            st.st_mtime_ns,
            st.st_size,
            int(sample_rate),
            validate_level(level_dbfs),
            float(gain),
            bool(telephone_band),
        )
    except HoldMusicError:
        raise
    except Exception as e:
        raise HoldMusicError(f"hold music source: cannot decode {path}: {e}") from None


def clear_music_cache() -> None:
    """Drop every cached loop (for tests and for long-running processes changing files)."""
    _prepared.cache_clear()
    _decoded.cache_clear()
