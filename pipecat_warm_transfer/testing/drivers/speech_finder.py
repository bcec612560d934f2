#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Find a sentence of a scripted voice in what a party heard, sample for sample.

`ScriptedToneTTSService` renders a sentence to the same samples every time (a scripted
party's clip is fixed too), and the memory rooms and LiveKit's source pass them through
unchanged at the same rate. So the 10 ms blocks of that rendering, found at one
consistent offset in a recording, say that this very sentence was heard there, and how
much of it. Pitch alone cannot tell the
caller-left sentence from the briefing before it; this can.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipecat_warm_transfer.testing.scripted_tts import synthesize_tone_speech

#: Samples per compared block (10 ms at 16 kHz).
BLOCK = 160
#: Heard whole: this share of blocks unmixed (the music's 250 ms fade-out may overlap
#: the first words of a return), or this correlation under quieter sound.
WHOLE_FRACTION = 0.8
WHOLE_SIMILARITY = 0.9
#: Below this correlation, and with no block heard exactly, the clip was not heard.
MIN_SIMILARITY = 0.5


@dataclass(frozen=True)
class Heard:
    """Where a sentence was heard, and how much of it.

    `start` in s; `fraction`: the share of its blocks heard unmixed; `similarity`: how
    alike the heard audio at that start is to it (normalized correlation: near 1 when all
    of it was heard, even under music; about 0.7 when half of it was cut off).
    """

    start: float
    fraction: float
    similarity: float = 1.0

    def whole(self) -> bool:
        """Heard (nearly) whole: unmixed, or under quieter audio such as ducked music."""
        return self.fraction >= WHOLE_FRACTION or self.similarity >= WHOLE_SIMILARITY


def sentence_heard(
    audio: np.ndarray | None,
    text: str,
    sample_rate: int,
    pitch_hz: float,
    within: tuple[float, float] | None = None,
) -> Heard | None:
    """Say where `text`, in the scripted voice at `pitch_hz`, was heard in `audio`.

    Returns:
        None when no block of the sentence was heard at all (see `clip_heard`).
    """
    speech = np.frombuffer(synthesize_tone_speech(text, sample_rate, pitch_hz), dtype=np.int16)
    return clip_heard(audio, speech, sample_rate, within)


def sentence_secs(text: str, sample_rate: int, pitch_hz: float) -> float:
    """How long the scripted voice takes to say `text`."""
    return len(synthesize_tone_speech(text, sample_rate, pitch_hz)) / 2 / sample_rate


def clip_heard(
    audio: np.ndarray | None,
    clip: np.ndarray,
    sample_rate: int,
    within: tuple[float, float] | None = None,
) -> Heard | None:
    """Say where `clip` was heard in `audio` (only starts within `within`, in s).

    Every block of the clip is looked up; the offset most blocks agree on is its start.
    Blocks mixed with something else (music fading out, the other party) do not match,
    so `fraction` is the share heard clean.

    Returns:
        None when no block of the clip was heard at all.
    """
    if audio is None or len(audio) < BLOCK:
        return None
    offset = 0
    if within is not None:
        first = max(0, int(within[0] * sample_rate))
        last = max(first, int(within[1] * sample_rate) + len(clip))
        audio, offset = audio[first:last], first
    speech = np.asarray(clip, dtype=np.int16)
    blocks = len(speech) // BLOCK
    votes: dict[int, int] = {}
    for k in range(blocks):
        block = speech[k * BLOCK : (k + 1) * BLOCK]
        if not block.any():
            continue
        for at in _occurrences(audio, block):
            start = at - k * BLOCK
            votes[start] = votes.get(start, 0) + 1
    if votes:
        start, count = max(votes.items(), key=lambda item: item[1])
    else:
        start, count = _best_lag(audio, speech), 0
        if start is None:
            return None
    heard = audio[max(0, start) : start + len(speech)].astype(np.float64)
    reference = speech[max(0, -start) : max(0, -start) + len(heard)].astype(np.float64)
    norm = float(np.linalg.norm(heard) * np.linalg.norm(speech))
    similarity = float(np.dot(heard, reference)) / norm if norm else 0.0
    if not count and similarity < MIN_SIMILARITY:
        return None  # the best lag of something else
    return Heard((start + offset) / sample_rate, count / max(1, blocks), similarity)


def _best_lag(audio: np.ndarray, clip: np.ndarray) -> int | None:
    """The start where `clip` correlates best with `audio` (speech under other sound)."""
    if len(audio) < len(clip) or not clip.any():
        return None
    n = 1 << int(np.ceil(np.log2(len(audio) + len(clip))))
    spectrum = np.fft.rfft(audio.astype(np.float64), n) * np.conj(
        np.fft.rfft(clip.astype(np.float64), n)
    )
    correlation = np.fft.irfft(spectrum, n)[: len(audio) - len(clip) + 1]
    energy = np.convolve(audio.astype(np.float64) ** 2, np.ones(len(clip)), "valid")
    score = correlation / np.sqrt(np.maximum(energy, 1e-9))
    return int(np.argmax(score))


def _occurrences(audio: np.ndarray, block: np.ndarray) -> list[int]:
    """Where `block` occurs in `audio`, exactly."""
    candidates = np.flatnonzero(audio[: len(audio) - len(block) + 1] == block[0])
    for i in (1, 2, 3):
        if len(candidates) == 0:
            break
        candidates = candidates[audio[candidates + i] == block[i]]
    return [int(c) for c in candidates if np.array_equal(audio[c : c + len(block)], block)]
