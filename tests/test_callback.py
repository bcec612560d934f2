"""The callback request: the caller's LLM collects a number and a time, reads them back and
gets a confirmation; the confirmed request reaches `on_callback_requested` as CRM data."""

import asyncio
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from loguru import logger
from pipecat.frames.frames import LLMMessagesAppendFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.services.llm_service import FunctionCallParams
from pipecat.tests.utils import SleepFrame, run_test

from pipecat_warm_transfer.callback import (
    CallbackCollector,
    CallbackRequest,
    CallbackState,
    caller_number_from_attributes,
    mask_number,
    parse_preferred_time,
    spoken_number,
)
from pipecat_warm_transfer.testing.scripted_services import ScriptedLLMService, ScriptedReply
from pipecat_warm_transfer.types import FailureReason, TransferConfigError

PARIS = ZoneInfo("Europe/Paris")
#: Friday 13 March 2026, 10:15 in Paris.
NOW = datetime(2026, 3, 13, 10, 15, tzinfo=PARIS)
CALLER = "+15550101234"
OTHER = "+442079460958"


def paris(day, hour, minute=0):
    return datetime(2026, 3, day, hour, minute, tzinfo=PARIS)


class Tool:
    """Calls a handler with real `FunctionCallParams`, keeping what it answered."""

    def __init__(self, handler):
        self.handler = handler
        self.results = []

    async def __call__(self, **arguments):
        async def result_callback(result, *, properties=None):
            self.results.append(result)

        params = FunctionCallParams(
            function_name=self.handler.__name__.removeprefix("handle_"),
            tool_call_id=f"call_{len(self.results)}",
            arguments=arguments,
            llm=None,
            pipeline_worker=None,
            context=LLMContext(),
            result_callback=result_callback,
        )
        before = len(self.results)
        await self.handler(params)
        assert len(self.results) == before + 1, "exactly one result a call"
        return self.results[-1]


class Collected:
    """A collector with its two tools and the requests its event delivered."""

    def __init__(self, **kwargs):
        kwargs.setdefault("time_zone", "Europe/Paris")
        kwargs.setdefault("now", lambda: NOW)
        self.collector = CallbackCollector(**kwargs)
        self.request_callback = Tool(self.collector.handle_request_callback)
        self.confirm_callback = Tool(self.collector.handle_confirm_callback)
        self.events: list[CallbackRequest] = []
        self.fired = asyncio.Event()

        @self.collector.event_handler("on_callback_requested")
        async def on_callback_requested(collector, request):
            assert collector is self.collector
            self.events.append(request)
            self.fired.set()

    async def settled(self):
        """Let the event handlers' tasks run; the event is delivered in a task."""
        await asyncio.sleep(0.05)


@pytest.fixture
def logs():
    lines = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    yield lines
    logger.remove(sink)


async def test_a_valid_request_is_read_back_then_confirmed_with_structured_data():
    c = Collected(caller_number=CALLER, reason=FailureReason.NO_ANSWER)
    result = await c.request_callback(number="+44 20 7946 0958", preferred_time="tomorrow morning")
    assert result["status"] == "pending_confirmation"
    assert result["read_back"] == (
        "Let me confirm: we will call you back on +4 4 2 0 7 9 4 6 0 9 5 8, "
        "tomorrow, Saturday, between 8 am and noon. Is that right?"
    )
    assert c.collector.state == CallbackState.PENDING
    assert c.collector.request.number == OTHER
    await c.settled()
    assert c.events == []  # nothing is announced before the caller confirms

    result = await c.confirm_callback(confirmed=True)
    assert result["status"] == "confirmed"
    assert "tomorrow, Saturday, between 8 am and noon" in result["closing"]
    await asyncio.wait_for(c.fired.wait(), 1.0)
    [request] = c.events
    assert request is c.collector.request
    assert c.collector.state == CallbackState.CONFIRMED
    assert request.as_dict() == {
        "number": OTHER,
        "preferred_time": "tomorrow morning",
        "not_before": "2026-03-14T08:00:00+01:00",
        "not_after": "2026-03-14T12:00:00+01:00",
        "confirmed": True,
        "reason": "no_answer",
        "time_zone": "Europe/Paris",
        "number_is_caller_id": False,
        "requested_at": "2026-03-13T10:15:00+01:00",
    }


@pytest.mark.parametrize(
    "number",
    ["12345", "555 0101", "0612345678", "call me at home", "+0 555 0101", "sip:agent@example.com"],
)
async def test_an_invalid_number_is_asked_again_without_an_event(number):
    c = Collected(caller_number=CALLER)
    result = await c.request_callback(number=number, preferred_time="tomorrow morning")
    assert result["status"] == "invalid_number"
    assert "again" in result["instruction"] and "country code" in result["instruction"]
    assert c.collector.state == CallbackState.IDLE
    assert c.collector.request is None
    # The caller's own number is not silently used instead of the one they gave.
    result = await c.confirm_callback(confirmed=True)
    assert result["status"] == "no_request"
    await c.settled()
    assert c.events == []
    # Asked again, the caller gives a good one.
    result = await c.request_callback(number="0044 20 7946 0958", preferred_time="tomorrow")
    assert result["status"] == "pending_confirmation"
    assert c.collector.request.number == OTHER


async def test_a_declined_read_back_goes_back_to_idle_and_a_new_request_is_collected():
    c = Collected(caller_number=CALLER)
    await c.request_callback(preferred_time="tomorrow morning")
    result = await c.confirm_callback(confirmed=False)
    assert result["status"] == "not_confirmed"
    assert "request_callback" in result["instruction"]
    assert c.collector.state == CallbackState.IDLE
    assert c.collector.request is None
    await c.settled()
    assert c.events == []

    await c.request_callback(number=OTHER, preferred_time="Monday at 3 pm")
    await c.confirm_callback(confirmed="yes")  # some LLMs send booleans as strings
    await asyncio.wait_for(c.fired.wait(), 1.0)
    [request] = c.events
    assert (request.number, request.preferred_time) == (OTHER, "Monday at 3 pm")
    assert (request.not_before, request.not_after) == (paris(16, 15), paris(16, 16))


async def test_confirm_before_any_request_is_refused_politely():
    c = Collected(caller_number=CALLER)
    result = await c.confirm_callback(confirmed=True)
    assert result["status"] == "no_request"
    assert "request_callback" in result["instruction"]
    assert c.collector.state == CallbackState.IDLE
    await c.settled()
    assert c.events == []


async def test_an_unclear_confirmation_keeps_the_request_pending():
    c = Collected(caller_number=CALLER)
    await c.request_callback(preferred_time="tomorrow")
    for answer in (None, "maybe"):
        kwargs = {} if answer is None else {"confirmed": answer}
        result = await c.confirm_callback(**kwargs)
        assert result["status"] == "need_answer"
        assert c.collector.state == CallbackState.PENDING
    await c.settled()
    assert c.events == []


async def test_a_confirmed_callback_is_announced_once():
    c = Collected(caller_number=CALLER)
    await c.request_callback(preferred_time="tomorrow")
    await c.confirm_callback(confirmed=True)
    assert (await c.confirm_callback(confirmed=True))["status"] == "already_confirmed"
    result = await c.request_callback(number=OTHER, preferred_time="Monday")
    assert result["status"] == "already_confirmed"
    await c.settled()
    assert len(c.events) == 1 and c.events[0].number == CALLER
    c.collector.reset()
    assert c.collector.state == CallbackState.IDLE and c.collector.request is None


async def test_the_default_number_is_the_callers_sip_phone_number():
    attributes = {"sip.phoneNumber": CALLER, "sip.callID": "SCL_x", "sip.trunkID": "ST_x"}
    assert caller_number_from_attributes(attributes) == CALLER
    c = Collected()
    c.collector.set_caller_attributes(attributes)
    assert c.collector.caller_number == CALLER
    assert "number they are calling from" in c.collector.instructions

    result = await c.request_callback(preferred_time="this afternoon")
    assert result["read_back"] == (
        "Let me confirm: we will call you back on the number you are calling from, "
        "+1 5 5 5 0 1 0 1 2 3 4, today, between noon and 5 pm. Is that right?"
    )
    await c.confirm_callback(confirmed=True)
    await asyncio.wait_for(c.fired.wait(), 1.0)
    assert c.events[0].number == CALLER
    assert c.events[0].number_is_caller_id is True


@pytest.mark.parametrize(
    "attributes", [None, {}, {"sip.callID": "SCL_x"}, {"sip.phoneNumber": "5550101234"}]
)
async def test_without_a_usable_caller_number_the_llm_asks_for_one(attributes):
    assert caller_number_from_attributes(attributes) is None
    c = Collected()
    c.collector.set_caller_attributes(attributes)
    assert "which number" in c.collector.instructions
    result = await c.request_callback(preferred_time="tomorrow")
    assert result["status"] == "need_number"
    assert c.collector.state == CallbackState.IDLE


async def test_a_request_without_a_time_asks_when():
    c = Collected(caller_number=CALLER)
    result = await c.request_callback(preferred_time="  ")
    assert result["status"] == "need_time"
    assert c.collector.state == CallbackState.IDLE


@pytest.mark.parametrize(
    "words,not_before,not_after",
    [
        ("tomorrow morning", paris(14, 8), paris(14, 12)),  # Friday → Saturday 08–12
        ("Tomorrow morning would be great", paris(14, 8), paris(14, 12)),
        ("this afternoon", paris(13, 12), paris(13, 17)),
        ("tonight", paris(13, 17), paris(13, 20)),
        ("this morning", paris(13, 10, 15), paris(13, 12)),  # never before now
        ("at 3 pm", paris(13, 15), paris(13, 16)),
        ("3 p.m.", paris(13, 15), paris(13, 16)),
        ("at 3", paris(13, 15), paris(13, 16)),  # a bare 1–7 is the afternoon
        ("15:30", paris(13, 15, 30), paris(13, 16, 30)),
        ("at 10 am", paris(14, 10), paris(14, 11)),  # already past today: tomorrow
        ("tomorrow evening at 7", paris(14, 19), paris(14, 20)),
        ("Monday", paris(16, 8), paris(16, 20)),
        ("Friday at 9 am", paris(20, 9), paris(20, 10)),  # today's 9 am is over
        ("next Friday", paris(20, 8), paris(20, 20)),
        ("after 2 pm", paris(13, 14), paris(13, 20)),
        ("before 5 pm tomorrow", paris(14, 8), paris(14, 17)),
        ("between 2 and 4 pm on Tuesday", paris(17, 14), paris(17, 16)),
        ("day after tomorrow in the evening", paris(15, 17), paris(15, 20)),
        ("at noon", paris(13, 12), paris(13, 13)),
        ("2026-03-20", paris(20, 8), paris(20, 20)),
        ("2026-03-20T09:30", paris(20, 9, 30), paris(20, 10, 30)),
        ("2026-03-20T08:30Z", paris(20, 9, 30), paris(20, 10, 30)),
    ],
)
def test_words_for_a_time_are_read_with_a_fixed_reference(words, not_before, not_after):
    assert parse_preferred_time(words, now=NOW, time_zone="Europe/Paris") == (
        not_before,
        not_after,
    )


@pytest.mark.parametrize(
    "words",
    [
        "whenever",
        "next week",
        "not tomorrow morning",  # a negation is not ignored
        "early afternoon",
        "Monday or Tuesday",
        "tomorrow, Monday",  # tomorrow is a Saturday
        "at 3 pm or 5 pm",
        "this morning at 9",  # over, and "this morning" cannot roll
        "at 13 pm",
        "2026-03-12",  # yesterday
        "demain matin",
        "",
    ],
)
def test_words_not_understood_give_no_bounds(words):
    assert parse_preferred_time(words, now=NOW, time_zone="Europe/Paris") == (None, None)


def test_the_reference_time_is_read_in_the_callers_zone():
    # 23:30 UTC on Friday is already Saturday 00:30 in Paris: "tomorrow" is Sunday.
    late = datetime(2026, 3, 13, 23, 30, tzinfo=UTC)
    assert parse_preferred_time("tomorrow morning", now=late, time_zone=PARIS) == (
        paris(15, 8),
        paris(15, 12),
    )
    with pytest.raises(ValueError):
        parse_preferred_time("tomorrow", now=datetime(2026, 3, 13, 10), time_zone=PARIS)
    with pytest.raises(TransferConfigError, match="time_zone"):
        CallbackCollector(time_zone="Mars/Olympus_Mons")


async def test_unparseable_words_are_kept_as_words_with_no_bounds():
    c = Collected(caller_number=CALLER)
    result = await c.request_callback(preferred_time="whenever suits, maybe next week")
    assert result["status"] == "pending_confirmation"
    assert result["read_back"].endswith(
        "as you asked: whenever suits, maybe next week. Is that right?"
    )
    await c.confirm_callback(confirmed=True)
    await asyncio.wait_for(c.fired.wait(), 1.0)
    request = c.events[0]
    assert request.preferred_time == "whenever suits, maybe next week"
    assert (request.not_before, request.not_after) == (None, None)
    assert request.as_dict()["not_before"] is None


def test_as_dict_survives_a_json_round_trip():
    request = CallbackRequest(
        number=CALLER,
        preferred_time="tomorrow morning",
        not_before=paris(14, 8),
        not_after=paris(14, 12),
        confirmed=True,
        reason=FailureReason.BUSY,
        time_zone="Europe/Paris",
        number_is_caller_id=True,
        requested_at=NOW,
    )
    data = json.loads(json.dumps(request.as_dict()))
    assert data == request.as_dict()
    assert data["reason"] == "busy"
    again = CallbackRequest.from_dict(data)
    assert again == request
    assert again.not_before.utcoffset() == request.not_before.utcoffset()


def test_a_request_refuses_bad_data():
    with pytest.raises(TransferConfigError, match="number"):
        CallbackRequest(number="12345", preferred_time="tomorrow")
    with pytest.raises(TransferConfigError, match="not_before"):
        CallbackRequest(number=CALLER, preferred_time="x", not_before=paris(14, 8))
    with pytest.raises(TransferConfigError, match="aware"):
        CallbackRequest(
            number=CALLER,
            preferred_time="x",
            not_before=datetime(2026, 3, 14, 8),
            not_after=datetime(2026, 3, 14, 12),
        )
    with pytest.raises(TransferConfigError, match="later"):
        CallbackRequest(
            number=CALLER, preferred_time="x", not_before=paris(14, 12), not_after=paris(14, 8)
        )


async def test_logs_show_only_the_last_four_digits(logs):
    c = Collected()
    c.collector.set_caller_attributes({"sip.phoneNumber": "15550109999"})  # refused, logged
    c.collector.set_caller_number(CALLER)
    await c.request_callback(number="+0 20 7946 0958", preferred_time="tomorrow")  # invalid
    await c.request_callback(preferred_time="tomorrow")
    await c.confirm_callback(confirmed=True)
    await asyncio.wait_for(c.fired.wait(), 1.0)
    text = "\n".join(logs)
    assert "+*******1234" in text  # the caller's number, as logged
    assert "+* ** **** 0958" in text  # the refused one, masked too
    assert "*******9999" in text  # the caller id that was not E.164
    for digits in ("5550101234", "55501012", "7946", "555010999"):
        assert digits not in text.replace(" ", ""), digits
    assert CALLER not in repr(c.events[0])
    assert mask_number(OTHER) == "+********0958"
    assert mask_number("123") == "123"
    assert spoken_number(CALLER) == "+1 5 5 5 0 1 0 1 2 3 4"


def test_the_tool_schemas_and_registration():
    collector = CallbackCollector(caller_number=CALLER)
    request, confirm = collector.tool_schemas
    assert request.name == "request_callback"
    assert set(request.properties) == {"number", "preferred_time"}
    assert request.required == ["preferred_time"]
    assert confirm.name == "confirm_callback"
    assert confirm.properties["confirmed"]["type"] == "boolean"
    assert confirm.required == ["confirmed"]
    llm = ScriptedLLMService([])
    collector.register(llm)
    assert llm.has_function("request_callback") and llm.has_function("confirm_callback")


async def test_the_scripted_llm_collects_a_callback_through_a_pipeline():
    """Pipecat calls the handlers from the LLM's tool calls; the results land in the context."""
    collector = CallbackCollector(
        caller_number=CALLER, time_zone=PARIS, now=lambda: NOW, reason="no_answer"
    )
    llm = ScriptedLLMService(
        [
            ScriptedReply(
                when="tomorrow", call=("request_callback", {"preferred_time": "tomorrow morning"})
            ),
            ScriptedReply(when="yes", call=("confirm_callback", {"confirmed": True})),
        ]
    )
    collector.register(llm)
    requested = []

    @collector.event_handler("on_callback_requested")
    async def on_callback_requested(_collector, request):
        requested.append(request.as_dict())

    context = LLMContext(
        messages=[{"role": "system", "content": collector.instructions}],
        tools=collector.tool_schemas,
    )
    aggregators = LLMContextAggregatorPair(context)
    pipeline = Pipeline([aggregators.user(), llm, aggregators.assistant()])

    def caller_says(text):
        return LLMMessagesAppendFrame([{"role": "user", "content": text}], run_llm=True)

    await run_test(
        pipeline,
        frames_to_send=[
            caller_says("Call me back tomorrow morning."),
            SleepFrame(0.3),
            caller_says("Yes, that's right."),
            SleepFrame(0.3),
        ],
    )
    assert llm.calls == ["request_callback", "confirm_callback"]
    tool_results = [
        json.loads(m["content"]) for m in context.get_messages() if m.get("role") == "tool"
    ]
    assert [r["status"] for r in tool_results] == ["pending_confirmation", "confirmed"]
    assert "+1 5 5 5 0 1 0 1 2 3 4" in tool_results[0]["read_back"]
    assert requested == [
        {
            "number": CALLER,
            "preferred_time": "tomorrow morning",
            "not_before": "2026-03-14T08:00:00+01:00",
            "not_after": "2026-03-14T12:00:00+01:00",
            "confirmed": True,
            "reason": "no_answer",
            "time_zone": "Europe/Paris",
            "number_is_caller_id": True,
            "requested_at": "2026-03-13T10:15:00+01:00",
        }
    ]
