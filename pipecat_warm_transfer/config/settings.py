#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""A validated bot declaration turned into the library's own settings objects.

`transfer_settings(config)` gives the `TransferTarget`, the `WarmTransferParams`, the
`BriefingParams` options (everything but the service factories) and the hold-music
settings, so any runner (the `run` command, the demo, an application) builds its
`WarmTransfer` from a YAML file the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipecat_warm_transfer.audio import HoldMusicMixer
from pipecat_warm_transfer.availability import WEEKDAYS, BusinessHours, Holiday
from pipecat_warm_transfer.config.schema import BUILTIN_MUSIC, AvailabilitySection, BotConfig
from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.params import (
    REFER_CONNECTING_MESSAGE,
    BriefingParams,
    WarmTransferParams,
)
from pipecat_warm_transfer.ring_group import RingGroup
from pipecat_warm_transfer.types import ConnectMode, FailureReason


@dataclass(frozen=True)
class HoldMusicSettings:
    """The hold mixer's settings.

    Parameters:
        source: The music file, or None for the bundled music.
        level_dbfs: Music level.
        fade_ms: Fade in/out duration.
        duck_db: Ducking under the bot's voice.
        telephone_band: Band-limit to 300-3400 Hz.
        shared_engine: Whether the shared hold engine plays steady held music.
    """

    source: Path | None
    level_dbfs: float
    fade_ms: float
    duck_db: float
    telephone_band: bool
    shared_engine: bool = True

    def mixer(self) -> HoldMusicMixer:
        """A new mixer for one call (install it as the caller transport's `audio_out_mixer`)."""
        return HoldMusicMixer(
            self.source,
            level_dbfs=self.level_dbfs,
            fade_ms=self.fade_ms,
            duck_db=self.duck_db,
            telephone_band=self.telephone_band,
            shared_engine=self.shared_engine,
        )


@dataclass(frozen=True)
class TransferSettings:
    """Everything a `WarmTransfer` needs from the YAML, except the services.

    Parameters:
        target: Who to dial: one human, or a `RingGroup`.
        params: The caller-side settings.
        hold_music: The hold mixer's settings.
        briefing_options: `BriefingParams` keyword arguments other than the services.
        briefing_mode: `voice` (the human talks with the briefing LLM) or `dtmf`.
    """

    target: TransferTarget | RingGroup
    params: WarmTransferParams
    hold_music: HoldMusicSettings
    briefing_options: dict[str, Any] = field(default_factory=dict)
    briefing_mode: str = "voice"

    def briefing(
        self,
        *,
        tts: Callable[[], Any],
        stt: Callable[[], Any] | None = None,
        llm: Callable[[], Any] | None = None,
        voicemail_llm: Callable[[], Any] | None = None,
    ) -> BriefingParams:
        """The `BriefingParams`, given service factories (one fresh service per transfer).

        In `dtmf` mode only the TTS is used: the human hears the summary and presses keys.
        """
        if self.briefing_mode == "dtmf":
            stt = llm = voicemail_llm = None
        return BriefingParams(
            tts=tts, stt=stt, llm=llm, voicemail_llm=voicemail_llm, **self.briefing_options
        )


def business_hours(section: AvailabilitySection | None) -> BusinessHours | None:
    """The `BusinessHours` of a validated `transfer.availability` section (None: always open)."""
    if section is None:
        return None
    return BusinessHours(
        section.time_zone,
        {day: list(getattr(section.hours, day)) for day in WEEKDAYS},
        [Holiday(h.date, h.name) for h in section.holidays],
    )


def transfer_settings(config: BotConfig, *, base_dir: Path | None = None) -> TransferSettings:
    """Map a validated bot declaration onto the library's settings objects.

    Args:
        config: The validated declaration.
        base_dir: The YAML file's folder (relative hold-music paths resolve against it).

    Returns:
        The target, params, briefing options and hold-music settings.
    """
    t = config.transfer
    caller = t.messages.caller
    human = t.messages.human
    music = t.hold_music
    humans = [
        TransferTarget(
            number=h.number,
            route=h.trunk_id,
            caller_id=h.caller_id,
            headers=dict(h.headers),
            dtmf=h.dtmf,
            display_name=h.display_name,
            ring_timeout=h.ring_timeout,
        )
        for h in t.humans
    ]
    target = (
        humans[0]
        if t.target is not None
        else RingGroup(humans, strategy=t.strategy, on_decline=t.on_decline, first_to=t.first_to)
    )
    params = WarmTransferParams(
        connect_mode=t.connect_mode,
        ring_timeout=t.ring_timeout,
        briefing_timeout=t.briefing_timeout,
        summary_timeout=t.summary_timeout,
        hold_message=caller.hold,
        hold_reminder=music.reminder,
        hold_reminder_every=music.reminder_every if music.reminder else None,
        failure_messages={FailureReason(k): v for k, v in caller.failure.model_dump().items()},
        connected_message=caller.connected,
        human_left_message=caller.human_left,
        caller_left_message=human.caller_left,
        hold_music_level_dbfs=music.level_dbfs,
        shared_hold_engine=music.shared_engine,
        max_transfers=t.max_transfers,
        availability=business_hours(t.availability),
        max_total_hold=t.max_hold,
        nobody_free=t.nobody_free,
        nobody_free_by_reason={FailureReason(k): v for k, v in t.nobody_free_by_reason.items()},
        callback_offer_message=caller.callback_offer,
        goodbye_message=caller.goodbye,
    )
    briefing = t.briefing
    options = {
        "detect_voicemail": briefing.detect_voicemail and briefing.mode == "voice",
        "instructions": briefing.instructions,
        "intro": human.intro,
        "start": briefing.start,
        "greeting_timeout": briefing.greeting_timeout,
        "accept_digit": briefing.accept_digit,
        "decline_digit": briefing.decline_digit,
        "summary_max_words": briefing.summary_max_words,
        "connecting_message": human.connecting,
    }
    if t.connect_mode == ConnectMode.REFER and "connecting" not in human.model_fields_set:
        # The bot hangs up and the human's phone rings with the caller: say so.
        options["connecting_message"] = REFER_CONNECTING_MESSAGE
    source = None if music.source in BUILTIN_MUSIC else config.resolve_path(music.source, base_dir)
    hold = HoldMusicSettings(
        source=source,
        level_dbfs=music.level_dbfs,
        fade_ms=music.fade * 1000.0,
        duck_db=music.duck_db,
        telephone_band=music.telephone_band,
        shared_engine=music.shared_engine,
    )
    return TransferSettings(target, params, hold, options, briefing.mode)
