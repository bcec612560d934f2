#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Hold music on a Pipecat output transport, offline: the result goes to a WAV file.

`HoldMusicMixer` is an ordinary `audio_out_mixer`, so any Pipecat output transport can
play hold music. With no sound card or phone line here, a tiny output transport writes
what it would have played into a WAV file, in real time. The script then holds a call:

    0.0 s  MixerEnableFrame(True)   music fades in and plays alone
    2.5 s  ~1.8 s of bot "speech"   music ducks under it and comes back
    5.3 s  MixerEnableFrame(False)  music fades out
    6.0 s  EndFrame

Run: python examples/hold_music_bot.py [--out hold_music_demo.wav] [--music FILE]
"""

import argparse
import asyncio
import sys
import wave
from collections.abc import AsyncIterator

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    MixerEnableFrame,
    OutputAudioRawFrame,
    StartFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams
from pipecat.workers.runner import WorkerRunner

from pipecat_warm_transfer import HoldMusicMixer

SAMPLE_RATE = 16000


class WavFileOutputTransport(BaseOutputTransport):
    """An output transport whose "speaker" is a WAV file, played out in real time."""

    def __init__(self, path: str, params: TransportParams):
        super().__init__(params)
        self._path = path
        self._wav: wave.Wave_write | None = None
        self._samples_written = 0
        self._start_ns = 0

    async def start(self, frame: StartFrame):
        await super().start(frame)
        self._wav = wave.open(self._path, "wb")
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(self.sample_rate)
        await self.set_transport_ready(frame)  # starts the media sender (and the mixer)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._wav is None:
            return False
        clock = self.get_clock()
        if self._samples_written == 0:
            self._start_ns = clock.get_time()
        self._wav.writeframes(frame.audio)
        self._samples_written += len(frame.audio) // 2
        # Take audio no faster than a sound card would. With a mixer, the transport
        # asks it for a music-only frame whenever nothing else is queued, so this wait
        # is also what paces the hold music.
        due_ns = self._start_ns + self._samples_written * 1_000_000_000 // self.sample_rate
        await asyncio.sleep(max(0, due_ns - clock.get_time()) / 1e9)
        return True

    async def stop(self, frame: EndFrame):
        await super().stop(frame)  # returns once the queued audio has been written
        self._close()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        self._close()

    def _close(self):
        if self._wav is not None:
            self._wav.close()
            self._wav = None


def speech_like(seconds: float, rate: int = SAMPLE_RATE) -> bytes:
    """A voiced buzz through vowel formants, four syllables a second, at -20 dBFS RMS."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 135.0 + 20.0 * np.sin(2 * np.pi * 0.8 * t)  # a little intonation
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = np.zeros_like(t)
    for k in range(1, 25):  # harmonics up to ~3.5 kHz, loudest near "ah" formants
        weight = sum(np.exp(-(((k * 135.0 - f) / 160.0) ** 2)) for f in (730, 1090, 2440))
        voice += (weight + 0.3 / k) * np.sin(k * phase)
    syllable = (t * 4.0) % 1.0  # 180 ms of sound, 70 ms of true silence
    voice *= np.where(syllable < 0.72, np.sin(np.pi * syllable / 0.72) ** 2, 0.0)
    voice *= 32768 * 10 ** (-20 / 20) / np.sqrt(np.mean(voice[voice != 0] ** 2))
    return np.clip(voice, -32768, 32767).astype(np.int16).tobytes()


async def hold_call() -> AsyncIterator[Frame]:
    # A MixerEnableFrame acts as soon as it reaches the transport, not in turn with
    # the audio queued before it, so each step waits for the audio before it to play.
    yield MixerEnableFrame(True)
    await asyncio.sleep(2.5)  # music alone
    yield OutputAudioRawFrame(speech_like(1.8), sample_rate=SAMPLE_RATE, num_channels=1)
    await asyncio.sleep(1.8 + 1.0)  # the speech plays, then the music comes back up
    yield MixerEnableFrame(False)
    await asyncio.sleep(0.7)  # fade-out (250 ms) and a little silence
    yield EndFrame()


async def main(out: str, music: str | None):
    transport = WavFileOutputTransport(
        out,
        TransportParams(
            audio_out_enabled=True,
            audio_out_mixer=HoldMusicMixer(music, level_dbfs=-24.0, fade_ms=250, duck_db=12.0),
            audio_out_end_silence_secs=0,
        ),
    )
    worker = PipelineWorker(
        Pipeline([transport]), params=PipelineParams(audio_out_sample_rate=SAMPLE_RATE)
    )
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def on_pipeline_started(worker, frame):
        started.set()

    async def drive():
        await started.wait()  # frames queued before StartFrame would be dropped
        await worker.queue_frames(hold_call())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    logger.info(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="hold_music_demo.wav", help="WAV file to write")
    parser.add_argument("--music", default=None, help="music file (default: the bundled loop)")
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")
    asyncio.run(main(args.out, args.music))
