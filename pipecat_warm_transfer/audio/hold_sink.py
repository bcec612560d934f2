#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Sinks through which the shared hold engine writes a parked call's transport.

The engine writes a frame per call per tick without waiting, so it needs a write that
does not pace itself (the engine is the clock). Transports that offer one:

- a `write_audio_nowait(audio: bytes) -> bool` method (the offline `MemoryTransport`,
  or any transport of your own), optionally with `write_audio_lag() -> float`, how far
  its playout clock is behind (the audio the engine writes at once on taking over);
- Pipecat's `LiveKitOutputTransport`: its `write_audio_frame` queues into LiveKit's
  `AudioSource`, which returns at once until its buffer is full (the engine then holds
  that call's next frame back, so its music stays continuous). The sink also tells the
  mixer how much the source still has to play (`queued`), so the mixer never lets the
  transport run ahead of real time.

Any other transport keeps the per-frame mixer path (`hold_sink_for` returns None).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipecat.frames.frames import OutputAudioRawFrame


class NowaitSink:
    """Writes through a transport's non-blocking `write_audio_nowait(audio)`."""

    #: The transport's own writes wait until the audio has played: nothing queues.
    paced = True

    def __init__(self, write: Callable[[bytes], bool], lag: Callable[[], float] | None = None):
        """Initialize the sink.

        Args:
            write: The transport's non-blocking write of mono 16-bit PCM.
            lag: How many seconds the transport's playout is behind real time.
        """
        self.write = write
        self._lag = lag

    def lag(self) -> float:
        """Seconds of audio the transport is short of (written at once on taking over)."""
        return self._lag() if self._lag is not None else 0.0


class OutputFrameSink:
    """Writes `OutputAudioRawFrame`s through an output transport's `write_audio_frame`."""

    def __init__(self, output):
        """Initialize the sink.

        Args:
            output: A started Pipecat output transport whose write does not pace itself.
        """
        self._output = output

    def write(self, audio: bytes) -> Awaitable[bool]:
        """Queue one frame on the transport (the engine does not wait for it)."""
        frame = OutputAudioRawFrame(
            audio=audio, sample_rate=self._output.sample_rate, num_channels=1
        )
        return self._output.write_audio_frame(frame)


class LiveKitSink(OutputFrameSink):
    """Writes into a `LiveKitOutputTransport`'s `AudioSource`, and reads its queue."""

    def _source(self):
        client = getattr(self._output, "_client", None)
        return getattr(client, "_audio_source", None)

    def queued(self) -> float:
        """Seconds the source still has to play (livekit-rtc's own estimate)."""
        source = self._source()
        return source.queued_duration if source is not None else 0.0


def _is_livekit_output(output) -> bool:
    try:
        from pipecat.transports.livekit.transport import LiveKitOutputTransport
    except Exception:  # the livekit extra is missing: nothing can be a LiveKit output
        return False
    return isinstance(output, LiveKitOutputTransport)


def hold_sink_for(output) -> NowaitSink | LiveKitSink | None:
    """The engine's sink for a Pipecat output transport, or None if it has none.

    Args:
        output: The caller's output transport (`transport.output()`).
    """
    params = getattr(output, "_params", None)
    if params is not None and getattr(params, "audio_out_channels", 1) != 1:
        return None  # the music is mono; a stereo transport keeps the per-frame path
    nowait = getattr(output, "write_audio_nowait", None)
    if callable(nowait):
        lag = getattr(output, "write_audio_lag", None)
        return NowaitSink(nowait, lag if callable(lag) else None)
    if _is_livekit_output(output):
        return LiveKitSink(output)
    return None
