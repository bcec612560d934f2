#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The processor that connects a `HoldMusicMixer` to the shared hold engine.

Put it right before `transport.output()` (`WarmTransfer.caller_output()` does the same
job, so a transfer pipeline needs nothing more). On `StartFrame` it binds the mixer to
the output transport that follows it; every other frame on its way down wakes the
mixer, so a parked call is taken back from the engine before the transport has to play
or pass on anything.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame, StartFrame, SystemFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_output import BaseOutputTransport

from pipecat_warm_transfer.audio.hold_music_mixer import HoldMusicMixer


def bind_next_output(processor: FrameProcessor, mixer: HoldMusicMixer) -> bool:
    """Bind `mixer` to the output transport right after `processor`, if there is one."""
    output = processor.next
    return isinstance(output, BaseOutputTransport) and mixer.bind_output(output)


def wake_for(mixer: HoldMusicMixer, frame: Frame, direction: FrameDirection):
    """Wake `mixer` for a frame about to reach its transport (system frames do not queue)."""
    if direction == FrameDirection.DOWNSTREAM and not isinstance(frame, SystemFrame):
        mixer.wake()


class HoldMusicLink(FrameProcessor):
    """Binds a `HoldMusicMixer` to the next output transport and wakes it for each frame."""

    def __init__(self, mixer: HoldMusicMixer, **kwargs):
        """Initialize the link.

        Args:
            mixer: The mixer installed as the next transport's `audio_out_mixer`.
            **kwargs: Passed to `FrameProcessor`.
        """
        super().__init__(**kwargs)
        self._mixer = mixer

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Bind on start, wake the mixer for every frame going down, pass everything on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            bind_next_output(self, self._mixer)
        wake_for(self._mixer, frame, direction)
        await self.push_frame(frame, direction)
