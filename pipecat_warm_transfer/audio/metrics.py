#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Audio measurements in numbers: level, pitch and smoothness of int16 PCM.

The tests, the demo report and the benchmarks judge audio with these, never by ear.
"""

from __future__ import annotations

import numpy as np

#: The level reported for digital silence.
SILENCE_DBFS = -120.0


def as_samples(audio: bytes | np.ndarray) -> np.ndarray:
    """View 16-bit PCM bytes (or an array) as an int16 array."""
    if isinstance(audio, np.ndarray):
        return audio
    return np.frombuffer(audio, dtype=np.int16)


def rms_dbfs(audio: bytes | np.ndarray) -> float:
    """RMS level in dBFS, full scale 32768 (silence gives `SILENCE_DBFS`)."""
    x = as_samples(audio).astype(np.float64)
    if x.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(x * x)))
    return max(SILENCE_DBFS, 20.0 * np.log10(rms / 32768.0)) if rms > 0 else SILENCE_DBFS


def dominant_frequency(audio: bytes | np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the strongest spectral peak, refined by parabolic interpolation."""
    x = as_samples(audio).astype(np.float64)
    if x.size < 4:
        return 0.0
    window = np.hanning(x.size)
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * window))
    k = int(np.argmax(spectrum[1:])) + 1
    if 1 <= k < spectrum.size - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        k = k + (0.5 * (a - c) / denom if denom != 0 else 0.0)
    return float(k * sample_rate / x.size)


def voice_pitch_hz(audio: bytes | np.ndarray, sample_rate: int) -> float:
    """Median pitch (Hz) of the voiced 40 ms frames: autocorrelation over 60-400 Hz.

    A frame is voiced when its RMS is over 1 % of full scale and its autocorrelation
    peak is over 30 % of its energy; 0.0 when no frame is.
    """
    x = as_samples(audio).astype(np.float64) / 32768
    n = int(0.04 * sample_rate)
    lo, hi = sample_rate // 400, sample_rate // 60
    pitches = []
    for i in range(0, len(x) - n, n // 2):
        frame = x[i : i + n] - x[i : i + n].mean()
        if np.sqrt(np.mean(frame**2)) < 0.01:
            continue
        ac = np.correlate(frame, frame, "full")[n - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            pitches.append(sample_rate / lag)
    return float(np.median(pitches)) if pitches else 0.0


def max_step(audio: bytes | np.ndarray) -> int:
    """Largest absolute difference between consecutive samples (a click shows as a jump)."""
    x = as_samples(audio).astype(np.int32)
    if x.size < 2:
        return 0
    return int(np.max(np.abs(np.diff(x))))


def windowed_rms_dbfs(
    audio: bytes | np.ndarray, sample_rate: int, window_ms: float = 20.0
) -> np.ndarray:
    """RMS level in dBFS for each consecutive window (the last partial window dropped)."""
    x = as_samples(audio).astype(np.float64)
    n = max(1, int(sample_rate * window_ms / 1000))
    count = x.size // n
    if count == 0:
        return np.zeros(0)
    frames = x[: count * n].reshape(count, n)
    rms = np.sqrt(np.mean(frames * frames, axis=1))
    with np.errstate(divide="ignore"):
        levels = 20.0 * np.log10(rms / 32768.0)
    return np.maximum(levels, SILENCE_DBFS)
