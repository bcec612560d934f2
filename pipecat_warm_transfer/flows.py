#
# Copyright (c) 2026, pipecat-warm-transfer contributors
#
# SPDX-License-Identifier: BSD 2-Clause License
#

"""Pipecat Flows integration: a `transfer_to_human` tool and a `warm_transfer` action.

One call links a `FlowManager` to the call's `WarmTransfer`::

    flow = Flow(FlowConfig.from_file("flow.yaml"), handlers=[WARM_TRANSFER_HANDLERS, my_tools])
    flow_manager = FlowManager(worker=worker, llm=llm, context_aggregator=aggregators,
                               global_functions=flow.global_functions)
    register_warm_transfer(flow_manager, transfer, flow=flow)
    await flow_manager.initialize(flow.initial_node)

A flow YAML can then name the tool, and branch on how the transfer ended::

    transfer:
      task_messages: [{role: developer, content: Offer to transfer the caller.}]
      functions:
        - name: transfer_to_human
          transition_to:
            field: status              # connected, or the failure reason
            cases: {connected: goodbye, busy: callback, no_answer: callback}
            default: back_to_caller

or start a transfer on entering a node, with the same branching::

    transferring:
      task_messages: [...]
      respond_immediately: false
      pre_actions:
        - type: warm_transfer
          reason: The caller asked for billing.
          transition_to: {field: outcome, cases: {connected: goodbye, failed: back_to_caller}}

Either way the outcome is a plain dict (`transfer_outcome`): `outcome` (`connected` or
`failed`, or `refused` when no transfer could start), `reason` (a `FailureReason` value,
None when connected), `status` (`connected` or the reason: `after_hours` and
`hold_timeout` too), `connect_mode`, `sip_status`, `detail`, `next_step` after a failure
(`return`, `callback` or `end_call`: branch on it to a node that collects the callback),
`answered_by` and `tried` (each human of a ring group: `name`, `outcome`). It is also kept in `flow_manager.state["warm_transfer"]`, so a later prompt can
say `{{ warm_transfer.reason }}`. The outcome is delivered once the caller is connected,
or after a failure once the caller has been told and is back with the bot; nodes entered
after a failure usually set `respond_immediately: false`, since the caller was just told
what happened.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger
from pipecat.flows import (
    TRANSITION_IN_YAML,
    Flow,
    FlowConfig,
    FlowError,
    FlowManager,
    flows_tool_options,
)
from pipecat.flows.config import case_key
from pydantic import ValidationError

from pipecat_warm_transfer.transfer_handle import TransferHandle
from pipecat_warm_transfer.types import TransferResult
from pipecat_warm_transfer.warm_transfer import WarmTransfer

#: The Flows tool name (the same name as the caller LLM's tool without Flows).
TRANSFER_TOOL = "transfer_to_human"
#: The custom action type.
WARM_TRANSFER_ACTION = "warm_transfer"
#: The keys a `warm_transfer` action takes besides `type`.
ACTION_KEYS = ("reason", "transition_to")
#: Where the last outcome is kept in `flow_manager.state`.
STATE_KEY = "warm_transfer"
#: Bound on the tool call: the transfer bounds itself (ring + briefing timeouts, each at
#: most an hour); this only overrides a short global `function_call_timeout_secs`.
TRANSFER_TOOL_TIMEOUT_SECS = 2 * 3600 + 300
DEFAULT_REASON = "The caller asked to speak with a person."

_ATTRIBUTE = "_pipecat_warm_transfer"


def transfer_outcome(result: TransferResult) -> dict[str, Any]:
    """The plain-data outcome of a transfer, as the Flows tool and action report it."""
    reason = None if result.reason is None else str(result.reason)
    return {
        "outcome": str(result.outcome),
        "reason": reason,
        "status": "connected" if result.connected else reason,
        "connect_mode": None if result.connect_mode is None else str(result.connect_mode),
        "sip_status": result.sip_status,
        "detail": result.detail,
        "next_step": result.next_step,
        "answered_by": result.answered_by,
        "tried": [{"name": t.display_name, "outcome": t.outcome} for t in result.tried],
    }


def refused_outcome(why: str) -> dict[str, Any]:
    """The outcome when no transfer could start (one is running, or the limit is reached)."""
    return {
        "outcome": "refused",
        "reason": why,
        "status": "refused",
        "connect_mode": None,
        "sip_status": None,
        "detail": why,
        "next_step": None,
        "answered_by": None,
        "tried": [],
    }


class WarmTransferFlow:
    """Links one `FlowManager` to one call's `WarmTransfer` (see `register_warm_transfer`).

    It starts transfers for the `transfer_to_human` tool and the `warm_transfer` action,
    waits until each has settled (the caller connected, or told of the failure and back
    with the bot), and reports the outcome.
    """

    def __init__(self, flow_manager: FlowManager, transfer: WarmTransfer, flow: Flow | None):
        """Link the manager and the transfer (use `register_warm_transfer`).

        Args:
            flow_manager: The call's flow manager.
            transfer: The call's transfer controller.
            flow: The flow the manager runs, for the `warm_transfer` action's
                `transition_to` (node names are resolved in it).
        """
        self._flow_manager = flow_manager
        self._transfer = transfer
        self._flow = flow
        self._followers: set[asyncio.Task] = set()
        self.outcomes: list[dict[str, Any]] = []
        flow_manager.register_action(WARM_TRANSFER_ACTION, self._run_action)

    @property
    def transfer(self) -> WarmTransfer:
        """The call's transfer controller."""
        return self._transfer

    async def transfer_and_wait(self, reason: str) -> dict[str, Any]:
        """Start a transfer and return its outcome once it has settled."""
        handle = await self._transfer.start_transfer(reason or DEFAULT_REASON)
        if not handle:
            return self._record(refused_outcome(handle.refusal))
        return self._settled(await handle)

    async def _run_action(self, action: dict, flow_manager: FlowManager) -> None:
        """The `warm_transfer` action: start a transfer; follow `transition_to` when settled."""
        handle = await self._transfer.start_transfer(str(action.get("reason") or DEFAULT_REASON))
        if not handle:
            outcome = self._record(refused_outcome(handle.refusal))
            logger.warning(f"{self}: warm_transfer action refused: {outcome['reason']}")
            return
        # The action returns at once (the flow goes on while the caller holds); the
        # transition follows the settled result.
        task = asyncio.create_task(self._follow_when_settled(handle, action), name=f"{self}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _follow_when_settled(self, handle: TransferHandle, action: dict) -> None:
        result = await handle
        if result is not None:
            await self._follow(action, self._settled(result))

    def _settled(self, result: TransferResult | None) -> dict[str, Any]:
        if result is None:
            return self._record(refused_outcome("the call ended before the transfer settled"))
        return self._record(transfer_outcome(result))

    def _record(self, outcome: dict[str, Any]) -> dict[str, Any]:
        self.outcomes.append(outcome)
        self._flow_manager.state[STATE_KEY] = dict(outcome)
        return outcome

    async def _follow(self, action: dict, outcome: dict[str, Any]) -> None:
        node_name = next_node_name(action.get("transition_to"), outcome)
        if node_name is None:
            return
        if self._flow is None:
            logger.error(
                f"{self}: warm_transfer action names node '{node_name}', but no flow was given "
                "to register_warm_transfer(..., flow=flow) to resolve it"
            )
            return
        try:
            await self._flow_manager.set_node_from_config(self._flow.node(node_name))
        except FlowError as e:
            logger.error(f"{self}: warm_transfer transition to '{node_name}' failed: {e}")

    def __repr__(self) -> str:
        return f"WarmTransferFlow({self._transfer})"


def next_node_name(transition_to: Any, outcome: dict[str, Any]) -> str | None:
    """The node a `transition_to` (a node name or a Flows branch) picks for an outcome."""
    if transition_to is None:
        return None
    if isinstance(transition_to, str):
        return transition_to
    branch = FlowConfig.Branch.model_validate(transition_to)
    return branch.cases.get(case_key(outcome.get(branch.field)), branch.default)


def register_warm_transfer(
    flow_manager: FlowManager, transfer: WarmTransfer, *, flow: Flow | None = None
) -> WarmTransferFlow:
    """Give a flow the `transfer_to_human` tool and the `warm_transfer` action.

    Args:
        flow_manager: The call's flow manager.
        transfer: The call's `WarmTransfer` (its processors are in the same pipeline).
        flow: The `Flow` the manager runs; needed when a `warm_transfer` action names
            the node to go to next.

    Returns:
        The link, whose `outcomes` lists every transfer outcome of the call.
    """
    existing = getattr(flow_manager, _ATTRIBUTE, None)
    if existing is not None:
        raise FlowError("register_warm_transfer: this flow manager already has a transfer")
    binding = WarmTransferFlow(flow_manager, transfer, flow)
    setattr(flow_manager, _ATTRIBUTE, binding)
    return binding


def warm_transfer_of(flow_manager: FlowManager) -> WarmTransferFlow:
    """The link `register_warm_transfer` made for this flow manager.

    Raises:
        FlowError: `register_warm_transfer` was not called for it.
    """
    binding = getattr(flow_manager, _ATTRIBUTE, None)
    if binding is None:
        raise FlowError(
            f"{TRANSFER_TOOL}: call register_warm_transfer(flow_manager, transfer) first"
        )
    return binding


@flows_tool_options(cancel_on_interruption=True, timeout_secs=TRANSFER_TOOL_TIMEOUT_SECS)
async def transfer_to_human(flow_manager: FlowManager, reason: str) -> tuple[dict[str, Any], Any]:
    """Transfer the caller to a human colleague.

    Call this when the caller asks for a person or you cannot help them. The caller is
    put on hold while the colleague is called and briefed; the result says whether they
    were connected and, if not, why.

    Args:
        flow_manager: The flow manager (given by Pipecat Flows).
        reason: Why the caller needs a human, in one sentence.

    Returns:
        The transfer's outcome, and `TRANSITION_IN_YAML`: the flow config's
        `transition_to` picks the next node.
    """
    outcome = await warm_transfer_of(flow_manager).transfer_and_wait(reason)
    return outcome, TRANSITION_IN_YAML


#: The handlers for `Flow(config, handlers=[WARM_TRANSFER_HANDLERS, ...])`.
WARM_TRANSFER_HANDLERS = {TRANSFER_TOOL: transfer_to_human}


def check_warm_transfer_actions(config: FlowConfig) -> list[tuple[tuple, str]]:
    """Problems of the `warm_transfer` actions in a flow config.

    Returns:
        `(path, message)` pairs, paths relative to the flow config
        (`("nodes", "transfer", "pre_actions", 0, "transition_to")`).
    """
    problems: list[tuple[tuple, str]] = []
    for node_name, node in config.nodes.items():
        for where in ("pre_actions", "post_actions"):
            for index, action in enumerate(getattr(node, where)):
                if action.type != WARM_TRANSFER_ACTION:
                    continue
                path = ("nodes", node_name, where, index)
                problems.extend(_check_action(config, action, path))
    return problems


def _check_action(config: FlowConfig, action: FlowConfig.Action, path: tuple):
    if action.handler is not None:
        yield (*path, "handler"), "the warm_transfer action takes no handler"
    extras = action.extras()
    for key in extras:
        if key not in ACTION_KEYS:
            yield (
                (*path, key),
                f"unknown field (the warm_transfer action takes {', '.join(ACTION_KEYS)})",
            )
    reason = extras.get("reason")
    if reason is not None and not isinstance(reason, str):
        yield (*path, "reason"), "expected a string"
    target = extras.get("transition_to")
    if target is None:
        return
    if isinstance(target, str):
        targets = [(("transition_to",), target)]
    else:
        try:
            branch = FlowConfig.Branch.model_validate(target)
        except ValidationError as e:
            first = e.errors()[0]
            loc = tuple(p for p in first.get("loc", ()) if p != "[key]")
            yield (*path, "transition_to", *loc), str(first.get("msg", "invalid branch"))
            return
        targets = [(("transition_to", "cases", key), node) for key, node in branch.cases.items()]
        if branch.default is not None:
            targets.append((("transition_to", "default"), branch.default))
    for where, node in targets:
        if node not in config.nodes:
            yield (*path, *where), f"warm_transfer action transitions to unknown node '{node}'"
