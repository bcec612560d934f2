#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The two frame processors a `WarmTransfer` puts into the caller pipeline.

`CallerGate` sits right after `transport.input()`: while the caller is held it drops their
audio, VAD and transcripts before STT (so nothing the caller says reaches the LLM), still
watching DTMF and the pipeline's end; in bridge mode it hands the caller's audio to the
human. It is also where the transfer's announcements enter the pipeline, upstream of TTS.

`CallerOutput` sits right before `transport.output()`: it starts the hold music once the
hold line has been spoken (`BotStoppedSpeakingFrame`), fades it out on the way back or
to the human, plays the human's audio to the caller in bridge mode and silences the bot
after the caller is connected. It is also the hold mixer's link to the shared hold
engine (`HoldMusicLink`): it binds the mixer to the transport and wakes a parked call for
every frame it passes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterimTranscriptionFrame,
    LLMMessagesAppendFrame,
    MixerEnableFrame,
    OutputAudioRawFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
    TTSTextFrame,
    UserSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipecat_warm_transfer.audio import HoldMusicMixer, MixerStartAfterSpeechFrame
from pipecat_warm_transfer.audio.hold_music_link import bind_next_output, wake_for
from pipecat_warm_transfer.frames import TransferRequestFrame, TransferStateFrame
from pipecat_warm_transfer.spoken_words import contains_words, words
from pipecat_warm_transfer.types import TransferState

#: Audio still queued in the transport below which the caller has heard a sentence.
PLAYED_OUT_SECS = 0.05
#: Bound on the wait for the queued hold line to play out before the music is reported.
MUSIC_HEARD_TIMEOUT_SECS = 2.0

#: Caller input that must not reach STT/LLM while the caller is held or connected.
HELD_INPUT_FRAMES = (
    InputAudioRawFrame,
    TranscriptionFrame,
    InterimTranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserSpeakingFrame,
)

#: Metadata key marking audio relayed from the human (so `CallerOutput` lets it through).
RELAY_METADATA_KEY = "warm_transfer_relay"


class CallerGate(FrameProcessor):
    """Drops the caller's input while held; the entry point of transfer announcements.

    It knows nothing of its owner: what it sees is handed to the callbacks it was given,
    as Pipecat's `VoicemailDetector` hands its gate two notifiers.
    """

    def __init__(
        self,
        *,
        on_start: Callable[[], None],
        on_end: Callable[[bool], Awaitable[None]],
        on_request: Callable[[str], Awaitable[Any]],
        on_dtmf: Callable[[str], Awaitable[None]],
        on_caller_audio: Callable[[InputAudioRawFrame], Awaitable[None]],
        on_cleanup: Callable[[], Awaitable[None]] | None = None,
        **kwargs,
    ):
        """Initialize the gate.

        Args:
            on_start: The pipeline started (the gate can push frames from now on).
            on_end: The pipeline is ending; True when cancelled. Awaited before the
                `EndFrame`/`CancelFrame` goes on, so teardown happens first.
            on_request: A `TransferRequestFrame` came down the pipeline (its reason).
            on_dtmf: The caller pressed a key.
            on_caller_audio: The caller's audio while held (for the bridge to the human).
            on_cleanup: The gate is being cleaned up (release what is left).
            **kwargs: Passed to `FrameProcessor`.
        """
        super().__init__(**kwargs)
        self._on_start = on_start
        self._on_end = on_end
        self._on_request = on_request
        self._on_dtmf = on_dtmf
        self._on_caller_audio = on_caller_audio
        self._on_cleanup = on_cleanup
        self._holding = False

    async def cleanup(self):
        """Release what the owner still holds for this pipeline."""
        await super().cleanup()
        if self._on_cleanup is not None:
            await self._on_cleanup()

    @property
    def holding(self) -> bool:
        """Whether caller input is currently being dropped."""
        return self._holding

    def set_state(self, state: TransferState):
        """Gate by the controller's state (set before the state frame leaves the gate)."""
        self._holding = state not in (TransferState.IDLE, TransferState.RETURNING)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Gate caller input by transfer state; watch DTMF, requests and the pipeline's end."""
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._on_start()
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            try:
                await self._on_end(isinstance(frame, CancelFrame))
            finally:
                # Whatever the teardown met, the pipeline must still end.
                await self.push_frame(frame, direction)
            return
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, TransferRequestFrame):
            await self._on_request(frame.reason)
            return
        if isinstance(frame, InputDTMFFrame):
            await self._on_dtmf(frame.button.value)
            if not self._holding:
                await self.push_frame(frame, direction)
            return
        if self._holding and isinstance(frame, HELD_INPUT_FRAMES):
            if isinstance(frame, InputAudioRawFrame):
                await self._on_caller_audio(frame)  # the bridge relays it once open
            return
        await self.push_frame(frame, direction)

    async def announce(self, text: str, *, append_to_context: bool = True):
        """Have the bot say `text` to the caller (uninterruptible, via the pipeline's TTS)."""
        frame = TTSSpeakFrame(text, append_to_context=append_to_context)
        frame.interruptible = False
        await self.push_frame(frame)

    async def note_to_context(self, text: str):
        """Append a note to the caller LLM's context without running the LLM."""
        await self.push_frame(
            LLMMessagesAppendFrame(messages=[{"role": "system", "content": text}], run_llm=False)
        )


class CallerOutput(FrameProcessor):
    """Drives the hold mixer and plays the human to the caller; silences the bot once joined."""

    def __init__(
        self,
        *,
        mixer: HoldMusicMixer,
        hold_message: str,
        on_music_heard: Callable[[], Awaitable[None]],
        **kwargs,
    ):
        """Initialize the caller output.

        Args:
            mixer: The hold mixer installed as the transport's `audio_out_mixer`.
            hold_message: The hold line, after which the music starts.
            on_music_heard: The caller hears the hold music (the hold has started).
            **kwargs: Passed to `FrameProcessor`.
        """
        super().__init__(**kwargs)
        self._mixer = mixer
        self._hold_message = hold_message
        self._on_music_heard = on_music_heard
        self._state = TransferState.IDLE
        self._music_armed = False  # start the music when the bot stops speaking
        self._spoken_since_armed = ""  # what the bot said since (to find the hold line)
        self._heard_text = False
        self._music_on = False
        self._start_sent = False  # the mixer was told to start the music after the speech
        self._bot_speaking = False
        self._speaking_event = asyncio.Event()  # set while the bot speaks
        self._awaited: tuple[str, asyncio.Event] | None = None  # a sentence to be heard
        self._awaited_spoken = ""
        self._music_task: asyncio.Task | None = None

    @property
    def music_on(self) -> bool:
        """Whether the hold music is (being) enabled."""
        return self._music_on

    @property
    def bot_speaking(self) -> bool:
        """Whether the caller's output transport reports the bot speaking."""
        return self._bot_speaking

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM):
        """Pass a frame on, first taking a parked call back from the shared hold engine."""
        wake_for(self._mixer, frame, direction)
        await super().push_frame(frame, direction)

    async def cleanup(self):
        """Stop a pending `hold_started` report with the pipeline."""
        await super().cleanup()
        task, self._music_task = self._music_task, None
        if task is not None and not task.done():
            await self.cancel_task(task)

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        """Switch routing on transfer states; start music after the hold line."""
        await super().process_frame(frame, direction)

        if isinstance(frame, StartFrame):
            bind_next_output(self, self._mixer)
        elif isinstance(frame, TransferStateFrame):
            await self._on_state(frame)
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._speaking_event.set()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._speaking_event.clear()
            self._check_awaited()
            if (
                direction == FrameDirection.UPSTREAM
                and self._music_armed
                and self._hold_line_done()
            ):
                await self.start_music()
        elif (
            isinstance(frame, TTSTextFrame)
            and direction == FrameDirection.DOWNSTREAM
            and (self._music_armed or self._awaited is not None)
        ):
            if self._awaited is not None:
                self._awaited_spoken = f"{self._awaited_spoken} {frame.text}"[-2000:]
            if not self._music_armed:
                await self.push_frame(frame, direction)
                return
            self._heard_text = True
            self._spoken_since_armed = f"{self._spoken_since_armed} {frame.text}"[-2000:]
        elif (
            isinstance(frame, TTSStoppedFrame)
            and direction == FrameDirection.DOWNSTREAM
            and self._music_armed
            and self._hold_line_done()
        ):
            # The hold line is all queued in the transport: the mixer starts the music
            # at its last sample (BotStoppedSpeakingFrame then confirms it).
            await self.push_frame(frame, direction)
            self._start_sent = True
            await self.push_frame(MixerStartAfterSpeechFrame())
            return
        elif (
            self._state == TransferState.CONNECTED
            and isinstance(frame, (TTSAudioRawFrame, TTSSpeakFrame))
            and direction == FrameDirection.DOWNSTREAM
        ):
            return  # the caller is with the human now: the bot stays silent
        await self.push_frame(frame, direction)

    async def _on_state(self, frame: TransferStateFrame):
        self._state = frame.state
        if frame.state == TransferState.HOLDING and frame.previous == TransferState.IDLE:
            self._music_armed = True
            self._spoken_since_armed = ""
            self._heard_text = False
        elif frame.state in (TransferState.CONNECTED, TransferState.RETURNING):
            await self.stop_music()

    def _hold_line_done(self) -> bool:
        """Whether the hold line (not a sentence the bot was already saying) was spoken.

        A bot often says "Sure, let me get someone" and calls the tool in the same turn: the
        music must wait for the hold line after it. TTS services that report no text fall
        back to the first stop.
        """
        if not self._heard_text:
            return True
        spoken = self._spoken_since_armed
        ends_alike = words(self._hold_message)[-3:] == words(spoken)[-3:]
        return ends_alike or contains_words(spoken, self._hold_message)

    async def hold_line_started(self, timeout: float) -> bool:
        """Whether the bot started speaking within `timeout` s of the hold being armed.

        The hold line counts, or a sentence the bot was saying before it.
        """
        try:
            await asyncio.wait_for(self._speaking_event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def expect_speech(self, text: str):
        """Start listening for `text` (before it is said): see `wait_heard`."""
        self._awaited = (text, asyncio.Event())
        self._awaited_spoken = ""

    async def wait_heard(self, timeout: float):
        """Wait until the caller has heard the sentence given to `expect_speech` (bounded).

        Its words passed to the transport and the bot stopped speaking; then what the
        transport still queues (LiveKit's source) plays out too. A join that does not wait
        cuts the sentence off: the bot is silenced once the caller is with the human.
        """
        awaited = self._awaited
        if awaited is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(awaited[1].wait(), timeout)
        except TimeoutError:
            logger.warning(f"{self}: `{awaited[0]}` was not heard in {timeout:.1f} s")
        finally:
            self._awaited = None
        await self._played_out(deadline)

    async def _played_out(self, deadline: float):
        """Wait until what the transport still queues has been heard (bounded)."""
        loop = asyncio.get_running_loop()
        mixer = self._mixer
        # LiveKit's source plays out on its own thread and signals nothing: poll it.
        while mixer.unplayed_secs() > PLAYED_OUT_SECS and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def _check_awaited(self):
        awaited = self._awaited
        if awaited is None:
            return
        text, event = awaited
        if not self._awaited_spoken or contains_words(self._awaited_spoken, text):
            event.set()  # a TTS without text frames: its first stop

    async def start_music(self):
        """Fade the hold music in (idempotent)."""
        self._music_armed = False
        if self._music_on or self._state not in (TransferState.HOLDING, TransferState.BRIEFING):
            return
        self._music_on = True
        self._start_sent = False
        await self.push_frame(MixerEnableFrame(True))
        # The music starts at the hold line's last sample; on LiveKit that is still queued
        # in the source when the bot is reported stopped. `hold_started` is when it is heard.
        self._music_task = self.create_task(self._report_music_heard(), "music-heard")

    async def _report_music_heard(self):
        loop = asyncio.get_running_loop()
        await self._played_out(loop.time() + MUSIC_HEARD_TIMEOUT_SECS)
        if self._music_on:
            await self._on_music_heard()

    async def stop_music(self):
        """Fade the hold music out, or disarm a start the mixer was told of (idempotent).

        A failure can come while the hold line still plays: the mixer was already told to
        start the music after it, and would, with the caller back with the bot.
        """
        self._music_armed = False
        if not self._music_on and not self._start_sent:
            return
        self._music_on = False
        self._start_sent = False
        await self.push_frame(MixerEnableFrame(False))

    async def relay_from_human(self, frame: InputAudioRawFrame):
        """Play a frame of the human's audio to the caller (bridge mode)."""
        out = OutputAudioRawFrame(
            audio=frame.audio, sample_rate=frame.sample_rate, num_channels=frame.num_channels
        )
        out.interruptible = False
        out.metadata[RELAY_METADATA_KEY] = True
        await self.push_frame(out)
