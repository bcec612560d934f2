#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Find the hold music in what a party heard, sample for sample.

Steady hold music (faded in, not ducked under speech) reaches a listener as exact
slices of the prepared loop: `HoldMusicMixer` hands out `loop.take(pos, n)` over silent
input, and both the memory room and LiveKit's source pass samples through unchanged at
the same rate. So a block of a recording that equals a slice of the loop *is* the hold
music, and the loop positions of consecutive blocks tell whether it played on without a
jump. No threshold or spectral guess is involved: a block matches or it does not.
"""

from __future__ import annotations

import functools

import numpy as np

from pipecat_warm_transfer.audio.music_source import MusicLoop, load_music_loop

#: Samples of a block compared against the loop (10 ms at 16 kHz).
BLOCK = 160
_KEY = 4


_INDEXES: dict[int, tuple[MusicLoop, dict[bytes, list[int]]]] = {}


def _index(loop: MusicLoop) -> dict[bytes, list[int]]:
    """Loop positions by their first samples (built once per shared loop)."""
    cached = _INDEXES.get(id(loop))
    if cached is not None and cached[0] is loop:
        return cached[1]
    keys = np.lib.stride_tricks.sliding_window_view(loop.samples, _KEY)
    index: dict[bytes, list[int]] = {}
    for position in range(loop.length):
        index.setdefault(keys[position].tobytes(), []).append(position)
    _INDEXES[id(loop)] = (loop, index)
    return index


@functools.lru_cache(maxsize=8)
def hold_loops(
    sample_rate: int, level_dbfs: float = -24.0, duck_db: float = 12.0
) -> tuple[MusicLoop, MusicLoop]:
    """The bundled music as the default mixer plays it: at level, and ducked.

    The same loops for the same arguments, so their index (1.5 s to build) is built once
    per process rather than once per call checked.
    """
    loop = load_music_loop(None, sample_rate, level_dbfs)
    ducked = load_music_loop(None, sample_rate, level_dbfs, gain=10.0 ** (-duck_db / 20.0))
    return loop, ducked


def music_positions(audio: np.ndarray, loops, block: int = BLOCK) -> list[int | None | str]:
    """Say, for each `block` samples of `audio`, where in the loop it is.

    A loop position when the block equals a slice of one of `loops`, None for digital
    silence, "-" for anything else (speech, a fade, ducking, the human).
    """
    indexes = [(loop, _index(loop)) for loop in loops]
    out: list[int | None | str] = []
    for start in range(0, len(audio) - block + 1, block):
        samples = audio[start : start + block]
        if not samples.any():
            out.append(None)
            continue
        key = samples[:_KEY].tobytes()
        found = None
        for loop, index in indexes:
            for position in index.get(key, ()):
                if np.array_equal(loop.take(position, block), samples):
                    found = position
                    break
            if found is not None:
                break
        out.append("-" if found is None else found)
    return out


def music_times(audio: np.ndarray, loops, sample_rate: int) -> list[float]:
    """Start times (s) of the blocks of `audio` that are steady hold music."""
    positions = music_positions(audio, loops)
    return [k * BLOCK / sample_rate for k, p in enumerate(positions) if isinstance(p, int)]
