#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""`AudioBridge`: pass-through between the caller and the human, both directions.

In `bridge` mode the bot stays between the two rooms and carries their audio. One object
owns both directions and the one fact that matters for them, whether the bridge is open,
so no processor on either side checks transfer states of its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipecat.frames.frames import InputAudioRawFrame

#: Plays a frame of one side's audio to the other side.
PlayAudio = Callable[[InputAudioRawFrame], Awaitable[None]]


class AudioBridge:
    """Relays the caller's audio to the human and the human's to the caller while open.

    The caller side hands its audio to `from_caller()`, the human side to `from_human()`;
    the bridge plays each to the other side through the callbacks it was given. Closed,
    it drops everything: audio that arrives after the human left or the call was torn
    down reaches nobody.
    """

    def __init__(self, *, play_to_caller: PlayAudio, play_to_human: PlayAudio):
        """Initialize a closed bridge.

        Args:
            play_to_caller: Plays the human's audio into the caller pipeline.
            play_to_human: Plays the caller's audio into the briefing pipeline.
        """
        self._play_to_caller = play_to_caller
        self._play_to_human = play_to_human
        self._open = False

    @property
    def open(self) -> bool:
        """Whether audio is being relayed."""
        return self._open

    def start(self):
        """Start relaying both ways."""
        self._open = True

    def stop(self):
        """Stop relaying (idempotent)."""
        self._open = False

    async def from_caller(self, frame: InputAudioRawFrame):
        """A frame of the caller's audio: play it to the human while open."""
        if self._open:
            await self._play_to_human(frame)

    async def from_human(self, frame: InputAudioRawFrame):
        """A frame of the human's audio: play it to the caller while open."""
        if self._open:
            await self._play_to_caller(frame)
