#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Hold-music audio: the shared music source, the `HoldMusicMixer` and the shared engine."""

from pipecat_warm_transfer.audio.hold_engine import HoldEngineStats, SharedHoldEngine
from pipecat_warm_transfer.audio.hold_music_link import HoldMusicLink
from pipecat_warm_transfer.audio.hold_music_mixer import HoldMusicMixer, MixerStartAfterSpeechFrame
from pipecat_warm_transfer.audio.music_source import (
    HoldMusicError,
    MusicLoop,
    bundled_music_path,
    clear_music_cache,
    load_music_loop,
)

__all__ = [
    "HoldEngineStats",
    "HoldMusicError",
    "HoldMusicLink",
    "HoldMusicMixer",
    "MixerStartAfterSpeechFrame",
    "MusicLoop",
    "SharedHoldEngine",
    "bundled_music_path",
    "clear_music_cache",
    "load_music_loop",
]
