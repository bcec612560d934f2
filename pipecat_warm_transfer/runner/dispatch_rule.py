#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""The SIP dispatch rule that sends a YAML bot its inbound calls.

An individual rule gives each caller a room of their own; its room config names the agent,
so LiveKit dispatches one registered bot process to each new room. The JSON is LiveKit's
`CreateSIPDispatchRuleRequest`, ready for `lk sip dispatch create rule.json` (or the
`CreateSIPDispatchRule` API).
"""

from __future__ import annotations

from google.protobuf import json_format
from livekit.protocol import agent_dispatch, room, sip

from pipecat_warm_transfer.config.validate import LoadedConfig

#: Room name prefix when the YAML names none: rooms are `call_<number>_<random>`.
DEFAULT_ROOM_PREFIX = "call"


def dispatch_rule_info(
    loaded: LoadedConfig, trunk_ids: list[str] | tuple[str, ...] = ()
) -> sip.SIPDispatchRuleInfo:
    """The dispatch rule: a room per caller, the bot's agent dispatched to it."""
    config = loaded.config
    agent_name = config.livekit.agent_name or config.bot.name
    return sip.SIPDispatchRuleInfo(
        name=f"{config.bot.name}: inbound calls",
        trunk_ids=list(trunk_ids),
        rule=sip.SIPDispatchRule(
            dispatch_rule_individual=sip.SIPDispatchRuleIndividual(
                room_prefix=config.livekit.room_prefix or DEFAULT_ROOM_PREFIX
            )
        ),
        room_config=room.RoomConfiguration(
            agents=[agent_dispatch.RoomAgentDispatch(agent_name=agent_name)]
        ),
    )


def dispatch_rule_request(loaded: LoadedConfig, trunk_ids: list[str] | tuple[str, ...] = ()) -> str:
    """The rule as `CreateSIPDispatchRuleRequest` JSON (for `lk sip dispatch create`)."""
    request = sip.CreateSIPDispatchRuleRequest(dispatch_rule=dispatch_rule_info(loaded, trunk_ids))
    return json_format.MessageToJson(request, indent=2)
