"""When nobody can take the call: business hours, the hold limit, and what follows
(back to the bot, a callback request, or a polite end of the call)."""

import asyncio
from datetime import UTC, datetime

from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.services.llm_service import FunctionCallParams

from pipecat_warm_transfer.availability import BusinessHours
from pipecat_warm_transfer.consult_leg import TransferTarget
from pipecat_warm_transfer.ring_group import RingGroup
from pipecat_warm_transfer.testing import HumanScript
from pipecat_warm_transfer.testing.drivers.call_harness import (
    BOT_PITCH_HZ,
    CallHarness,
    fast_params,
)
from pipecat_warm_transfer.testing.drivers.speech_finder import sentence_secs
from pipecat_warm_transfer.testing.leak_check import NO_LEAKS
from pipecat_warm_transfer.types import FailureReason

ALICE, BOB, CAROL = "+15550101", "+15550102", "+15550103"
ALL_DAY = {day: "00:00-24:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def closed_today() -> BusinessHours:
    today = datetime.now(UTC).date()
    return BusinessHours("UTC", ALL_DAY, holidays=[today])


def group(*numbers, **kwargs):
    names = {ALICE: "Alice", BOB: "Bob", CAROL: "Carol"}
    return RingGroup([TransferTarget(n, display_name=names[n]) for n in numbers], **kwargs)


def no_answer(after=1.2):
    return HumanScript(outcome="no_answer", answer_after=after)


class ToolLLM:
    """The caller's LLM as the transfer sees it: functions registered by name."""

    def __init__(self):
        self.functions = {}

    def register_function(self, name, handler, *args, **kwargs):
        self.functions[name] = handler

    async def call(self, name, **arguments):
        results = []

        async def result_callback(result, *, properties=None):
            results.append(result)

        await self.functions[name](
            FunctionCallParams(
                function_name=name,
                tool_call_id=f"call_{name}",
                arguments=arguments,
                llm=self,
                pipeline_worker=None,
                context=LLMContext(),
                result_callback=result_callback,
            )
        )
        return results[-1]


async def start_by_tool(transfer, llm):
    """Start the transfer as the caller's LLM does (so the transfer knows that LLM)."""
    llm.register_function("transfer_to_human", transfer.handle_function_call)
    await llm.call("transfer_to_human", reason="billing dispute")


async def test_after_hours_nobody_is_dialed_and_the_caller_hears_when_we_open():
    params = fast_params(availability=closed_today())
    async with CallHarness(humans={ALICE: HumanScript()}, number=ALICE, params=params) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.AFTER_HOURS and result.next_step == "return"
    assert result.tried == []
    names = call.report.event_names()
    assert "dialing" not in names and "hold_started" not in names
    said = [s for s in call.report.spoken_to_caller if "the team is back" in s]
    assert said and "tomorrow at 0:00" in said[0], call.report.spoken_to_caller
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_the_hold_limit_stops_the_group():
    params = fast_params(max_total_hold=1.0, ring_timeout=10.0)
    humans = {ALICE: no_answer(after=5.0), BOB: HumanScript(), CAROL: HumanScript()}
    async with CallHarness(humans=humans, target=group(ALICE, BOB, CAROL), params=params) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.HOLD_TIMEOUT
    # Alice's ring was cut to the hold left; nobody else was dialed.
    assert [t.outcome for t in result.tried] == ["no_answer"]
    assert result.tried[0].ring < 1.6
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_reminders_say_how_many_colleagues_are_left():
    params = fast_params(hold_reminder="Still trying — {remaining}.", hold_reminder_every=0.6)
    humans = {ALICE: no_answer(after=1.5), BOB: no_answer(after=1.5), CAROL: no_answer(0.3)}
    async with CallHarness(humans=humans, target=group(ALICE, BOB, CAROL), params=params) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    spoken = call.report.spoken_to_caller
    assert "Still trying — two colleagues left to try." in spoken, spoken
    assert "Still trying — one colleague left to try." in spoken, spoken
    # A reminder waits until the bot is silent: they never pile up behind each other
    # (asked for every 0.6 s, each takes over 2 s to say), so the caller hears why
    # they are back right after the return, not after a queue of stale reminders.
    returned = call.report.first("returned_to_caller")["t"]
    say = sentence_secs("Still trying — one colleague left to try.", 16000, BOT_PITCH_HZ)
    reminders = [text for text in spoken if text.startswith("Still trying")]
    assert say > 2.0 and len(reminders) <= returned / say + 1, (returned, say, reminders)


async def test_callback_when_nobody_answers():
    params = fast_params(nobody_free_by_reason={FailureReason.NO_ANSWER: "callback"})
    requests = []
    llm = ToolLLM()
    async with CallHarness(humans={ALICE: no_answer(0.3)}, number=ALICE, params=params) as call:

        @call.transfer.event_handler("on_callback_requested")
        async def _on_callback(_transfer, request):
            requests.append(request)

        await start_by_tool(call.transfer, llm)
        await call.wait_for("returned_to_caller")
        assert {"request_callback", "confirm_callback"} <= set(llm.functions)
        read_back = await llm.call(
            "request_callback", number="+15557654321", preferred_time="tomorrow at 3 pm"
        )
        assert "Is that right?" in str(read_back)
        await llm.call("confirm_callback", confirmed=True)
        await call.wait_for("callback_requested")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.NO_ANSWER and result.next_step == "callback"
    assert result.callback is requests[0] and result.callback.confirmed
    data = result.as_dict()["callback"]
    assert data["number"] == "+15557654321" and data["preferred_time"] == "tomorrow at 3 pm"
    assert data["not_before"] is not None  # "tomorrow at 3 pm" is a window
    event = call.report.first("callback_requested")
    assert "7654321" not in str(event) and event["number"].endswith("4321")  # masked
    offer = call.transfer._params.callback_offer_message
    assert offer in call.report.spoken_to_caller
    assert call.report.leaks == NO_LEAKS, call.report.leak_findings


async def test_a_polite_end_when_nobody_is_free():
    params = fast_params(nobody_free="end_call")
    async with CallHarness(
        humans={ALICE: HumanScript(outcome="busy", answer_after=0.3)}, number=ALICE, params=params
    ) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("ending_call")
        await asyncio.wait_for(call._run_task, 10)  # the pipeline ended by itself
    (result,) = call.report.results
    assert result.reason == FailureReason.BUSY and result.next_step == "end_call"
    goodbye = [s for s in call.report.spoken_to_caller if "goodbye" in s]
    assert goodbye and "later" in goodbye[0]  # no business hours: "back later"


async def test_faults_are_not_nobody_free():
    params = fast_params(nobody_free="end_call")
    humans = {ALICE: HumanScript(outcome="fail", answer_after=0.3)}
    async with CallHarness(humans=humans, number=ALICE, params=params) as call:
        assert await call.transfer.start_transfer("x")
        await call.wait_for("returned_to_caller")
        await call.wait_idle()
    (result,) = call.report.results
    assert result.reason == FailureReason.DIAL_FAILED and result.next_step == "return"
