"""SIP REFER in the fault suite: drawn calls, scripted races, and the checks themselves.

A share of the seeds connect by REFER (`refer_checks.REFER_SHARE`, a draw of its own).
The scripted runs here pin what the random ones only sometimes reach: a whole REFER
through the emulator and in memory, a refused REFER, a failing target, a failed REFER
request, and a ring group whose winner is referred.
"""

import dataclasses
import os

import pytest

from pipecat_warm_transfer.testing.drivers.call_harness import CallReport
from pipecat_warm_transfer.testing.drivers.fault_injection import (
    HUMAN_CLIP,
    HUMAN_SAYS_EVERY,
    FaultPlan,
    GroupPlan,
    _draw_one_human,
    draw_group_plan,
    draw_plan,
    fuzz_settings,
    run_plan,
)
from pipecat_warm_transfer.testing.drivers.refer_checks import (
    REFER_SHARE,
    draw_refer,
    refer_problems,
)
from pipecat_warm_transfer.testing.livekit_sip_transfer import ReferScript
from pipecat_warm_transfer.testing.scripted_party import HumanScript, tone
from pipecat_warm_transfer.types import (
    ConnectMode,
    FailureReason,
    TransferOutcome,
    TransferResult,
)

SEED, _RUNS = fuzz_settings()
#: The suite's own REFER calls: the first `WT_REFER_RUNS` seeds from `WT_FUZZ_SEED` that
#: draw a REFER (about one seed in seven does).
REFER_RUNS = int(os.environ.get("WT_REFER_RUNS", 4))
REFER_SEEDS = [seed for seed in range(SEED, SEED + 20 * REFER_RUNS + 100) if draw_plan(seed).refer][
    :REFER_RUNS
]
NUMBER = "+15550100"


def accepting(answer_after: float = 0.3, accept_at: float = 1.3) -> HumanScript:
    human = HumanScript(answer_after=answer_after, greeting=tone(500, 0.3))
    for k in range(1, 7):
        human.say(k * HUMAN_SAYS_EVERY, HUMAN_CLIP)
    return human.dtmf(accept_at, "1")


def refer_plan(
    script: ReferScript, *, livekit=True, humans=None, faults=(), call_secs=4.0
) -> FaultPlan:
    """A call in `refer` mode as the suite draws one, but scripted.

    The run waits for the transfer to settle after `call_secs`; a call that connects
    (about 7.5 s in: the human hears a long sentence first) needs `call_secs` past
    its connect, for its caller's call to be seen leaving LiveKit.
    """
    group = None
    if humans is not None:
        group = GroupPlan(strategy="simultaneous", humans=humans, interleaving="scripted")
    return FaultPlan(
        seed=0,
        human=humans[0] if humans else accepting(),
        supports_move=True,
        connect_mode=ConnectMode.REFER,
        caller_hangs_up_at=None,
        pipeline_end_at=None,
        pipeline_cancel=False,
        second_request_at=None,
        briefing_fails=False,
        call_secs=call_secs,
        livekit=livekit,
        faults=list(faults),
        group=group,
        refer=script,
    )


def clean(run) -> TransferResult:
    assert not run.violations, f"{run.violations}\n{run.trace()}"
    (result,) = run.results
    return result


# Drawn calls


@pytest.mark.parametrize("seed", REFER_SEEDS)
async def test_random_refer_call_keeps_every_invariant(seed, record_property):
    run = await run_plan(draw_plan(seed))
    record_property("fault_run", run.summary())
    assert run.plan.connect_mode == ConnectMode.REFER
    assert not run.violations, (
        f"{run.violations}\nreproduce with WT_FUZZ_SEED={seed} WT_FUZZ_RUNS=1\n{run.trace()}"
    )


def test_refer_is_a_draw_of_its_own_over_both_backends_groups_and_carriers():
    plans = [draw_plan(seed) for seed in range(1500)]
    referring = [p for p in plans if p.refer is not None]
    assert abs(len(referring) / len(plans) - REFER_SHARE) < 0.04
    assert all(p.connect_mode == ConnectMode.REFER for p in referring)
    assert all(p.connect_mode != ConnectMode.REFER for p in plans if p.refer is None)
    for livekit in (False, True):
        for group in (False, True):
            assert sum(p.livekit == livekit and (p.group is not None) == group for p in referring)
    scripts = [p.refer for p in referring]
    assert sum(s.accepted and s.notify_status == 200 for s in scripts) / len(scripts) > 0.6
    assert any(not s.accepted for s in scripts)
    assert any(s.accepted and s.notify_status not in (None, 200) for s in scripts)
    refer_faults = [f for p in referring for f in p.faults if f[1] == "TransferSIPParticipant"]
    assert refer_faults and all(
        p.livekit for p in referring if any(f[1] == "TransferSIPParticipant" for f in p.faults)
    )
    # Every other draw of a referring seed is what it was without REFER.
    for plan in referring[:40]:
        script, faults = draw_refer(plan.seed, livekit=plan.livekit)
        assert script == plan.refer
        base = draw_group_plan(plan.seed) if plan.group else _draw_one_human(plan.seed)
        assert plan.faults == base.faults + faults
        unreferred = dataclasses.replace(
            plan, connect_mode=base.connect_mode, refer=None, faults=base.faults
        )
        assert unreferred.describe() == base.describe()


# Scripted REFER calls, through the emulator and in memory


@pytest.mark.parametrize("livekit", [False, True], ids=["memory", "emulator"])
async def test_a_referred_call_leaves_livekit_and_keeps_every_invariant(livekit):
    script = ReferScript(notify_after=0.4, bye_after=0.2)
    run = await run_plan(refer_plan(script, livekit=livekit, call_secs=9.5))
    result = clean(run)
    assert result.connect_mode == ConnectMode.REFER
    assert [e["event"] for e in run.events].count("caller_referred") == 1
    assert run.listening.measured.get("connected sentence") == 1, run.listening
    assert any(s.startswith("human heard: referred") for s in run.listening.skipped)


async def test_without_the_carriers_bye_livekit_hangs_the_referred_call_up():
    run = await run_plan(refer_plan(ReferScript(bye_after=None), call_secs=9.5))
    result = clean(run)
    assert result.connect_mode == ConnectMode.REFER
    # Without a BYE, LiveKit itself hangs the referred call up a second after the NOTIFY.
    referred = next(e for e in run.events if e["event"] == "caller_referred")
    connected = next(e for e in run.events if e["event"] == "connected")
    assert 0.9 < referred["t"] - connected["t"] < 1.5, (connected, referred)


@pytest.mark.parametrize(
    "script, status, livekit",
    [(ReferScript.refused(603), 603, True), (ReferScript.target_fails(486, after=0.3), 486, False)],
    ids=["refused-emulator", "target-busy-memory"],
)
async def test_a_refer_that_fails_takes_the_caller_back(livekit, script, status):
    run = await run_plan(refer_plan(script, livekit=livekit))
    result = clean(run)
    assert result.reason == FailureReason.CONNECT_FAILED and result.sip_status == status
    # Sam did accept: a failed result keeps him `accepted`; its reason says what failed
    # after (here the REFER), and nobody is `answered_by` (nobody took the call).
    assert [a.outcome for a in result.tried] == ["accepted"] and result.answered_by is None
    assert run.listening.measured.get("return sentence") == 1, run.listening


async def test_a_refer_request_livekit_fails_takes_the_caller_back():
    faults = [("fail", "TransferSIPParticipant", "unavailable")]
    run = await run_plan(refer_plan(ReferScript(), faults=faults))
    result = clean(run)
    assert result.reason == FailureReason.CONNECT_FAILED
    assert "TransferSIPParticipant failed: unavailable" in result.detail
    assert run.faults_fired == [("fail", "TransferSIPParticipant")]


async def test_the_first_of_a_group_to_answer_is_the_one_referred():
    # Ben answers first and accepts; Ann's phone stops; Ben's number gets the caller.
    humans = [accepting(answer_after=1.2), accepting(answer_after=0.3)]
    script = ReferScript(refer_after=0.3, notify_after=1.2)  # the join 1.5 s after the REFER
    run = await run_plan(refer_plan(script, humans=humans, call_secs=11.0))
    result = clean(run)
    assert result.connect_mode == ConnectMode.REFER
    assert [a.outcome for a in result.tried] == ["stopped", "accepted"]
    # Said on Ben's accept, some 6 s before the join (Ben first hears that his phone
    # will ring): judged all the same (group seed 30000075 found the window too short).
    assert run.listening.measured.get("connected sentence") == 1, run.listening


# The checks themselves: each names what it finds


def _events(*after: str) -> list[dict]:
    """Ann answers and is referred; then `after` (the caller's call leaving)."""
    return [
        {"t": 1.0, "event": "human_answered", "transfer": 1, "identity": "h-1", "target": 0},
        {"t": 3.0, "event": "connected", "transfer": 1, "mode": "refer"},
        *({"t": 3.2, "event": name, "transfer": 1} for name in after),
    ]


def _report(**changes) -> CallReport:
    """A clean REFER call as `refer_problems` sees it: Ann answered and was referred."""
    report = CallReport(
        events=_events("caller_referred"),
        results=[
            TransferResult(
                TransferOutcome.CONNECTED, human_identity="h-1", connect_mode=ConnectMode.REFER
            )
        ],
        caller_audio=None,
        human_audio=None,
        leaks={},
        sample_rate=16000,
        referrals=[{"to": f"tel:{NUMBER}", "outcome": "transferred"}],
        caller_left_reason="removed",
    )
    return dataclasses.replace(report, **changes)


def test_a_clean_refer_has_no_problem():
    assert refer_problems(ReferScript(), _report(), [NUMBER], None) == []
    assert refer_problems(None, _report(referrals=[]), [NUMBER], None) == []


@pytest.mark.parametrize(
    "script, changes, named",
    [
        (None, {}, "a REFER outside refer mode"),
        (ReferScript(), {"referrals": [{"to": "tel:+1999", "outcome": "transferred"}]}, "not to"),
        (ReferScript(), {"referrals": []}, "was never referred"),
        (
            ReferScript(),
            {"referrals": [{"to": f"tel:{NUMBER}", "outcome": "failed"}]},
            "LiveKit reports failed",
        ),
        (ReferScript(), {"caller_left_reason": None}, "never left LiveKit"),
        (ReferScript(), {"events": _events("caller_hung_up")}, "called a hang-up"),
        (ReferScript(), {"events": _events()}, "no caller_referred"),
        (ReferScript.refused(603), {}, "did not carry out"),
        (
            ReferScript.refused(603),
            {
                "results": [TransferResult(TransferOutcome.FAILED, FailureReason.DIAL_FAILED)],
                "referrals": [{"to": f"tel:{NUMBER}", "outcome": "refused"}],
            },
            "the REFER failed but the result is dial_failed",
        ),
    ],
    ids=[
        "outside",
        "wrong-number",
        "never",
        "failed",
        "stayed",
        "hang-up",
        "unsaid",
        "not-carried",
        "bad-reason",
    ],
)
def test_each_broken_refer_invariant_is_named(script, changes, named):
    problems = refer_problems(script, _report(**changes), [NUMBER], None)
    assert any(named in p for p in problems), problems


def test_a_referred_call_still_up_when_the_run_ended_right_after_is_not_judged():
    report = _report(caller_left_reason=None)
    assert refer_problems(ReferScript(), report, [NUMBER], end_at=3.5) == []
