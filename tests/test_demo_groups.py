"""The demo's team scenarios end to end: ring groups (in turn, all at once), after hours,
and a callback.

Each runs once, as users run it (`pipecat-warm-transfer demo --scenario S`), all at
once in processes of their own (they are real time: together they take as long as the
longest). The tests read the files the runs left: report, events, audio and timeline.
"""

from datetime import datetime, timedelta

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("matplotlib")

from demo_runs import Run, shared_runs  # noqa: E402
from test_demo import check_command_run, first, span  # noqa: E402

from pipecat_warm_transfer.audio.metrics import rms_dbfs, voice_pitch_hz  # noqa: E402
from pipecat_warm_transfer.callback import spoken_number  # noqa: E402
from pipecat_warm_transfer.demo import scenarios as story  # noqa: E402
from pipecat_warm_transfer.demo.espeak_tts import synthesize  # noqa: E402
from pipecat_warm_transfer.demo.runner import BOT_VOICE, RATE  # noqa: E402
from pipecat_warm_transfer.demo.scenarios import SCENARIOS  # noqa: E402
from pipecat_warm_transfer.demo.timeline import human_lanes  # noqa: E402
from pipecat_warm_transfer.params import WarmTransferParams  # noqa: E402
from pipecat_warm_transfer.types import FailureReason  # noqa: E402

#: The demo runs a module shares are made in its first test's set-up: several at once
#: (`shared_runs`), or waited for while another worker makes them.
pytestmark = pytest.mark.timeout(400)

TEAM = [name for name, scenario in SCENARIOS.items() if scenario.team]
#: Bound on the runs together (the longest takes about 45 s).
RUNS_TIMEOUT_SECS = 100


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Run]:
    return shared_runs(tmp_path_factory, "groups", TEAM, RUNS_TIMEOUT_SECS)


def pitch_hz(x: np.ndarray) -> float:
    """Median pitch of the voiced frames of int16 audio at the demo's rate."""
    return voice_pitch_hz(x, RATE)


def voice_pitch(text: str, voice: str) -> float:
    return pitch_hz(np.frombuffer(synthesize(text, voice=voice, sample_rate=RATE), np.int16))


def assert_in_voice(audio: np.ndarray, text: str, voice: str, *, louder_than: float) -> float:
    """`audio` is louder than `louder_than` dBFS and at the pitch `voice` says `text` at
    (within 15 %); returns that pitch."""
    assert rms_dbfs(audio) > louder_than
    expected = voice_pitch(text, voice)
    assert abs(pitch_hz(audio) - expected) < 0.15 * expected, (pitch_hz(audio), expected)
    return expected


def png_size(path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    image = mpimg.imread(str(path))
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize("name", TEAM)
def test_team_scenario_runs_as_scripted(runs, name):
    check_command_run(runs[name])


def test_ring_group_tries_each_colleague_in_turn(runs):
    run = runs["ring-group"]
    report, events = run.report, run.events
    assert report["outcome"] == "connected" and report["connect_mode"] == "move"
    assert report["answered_by"] == "Maria"
    tried = report["tried"]
    assert [(t["name"], t["outcome"], t["sip_status"], t["answered"]) for t in tried] == [
        ("Priya", "busy", 486, False),
        ("Sam", "declined", None, True),
        ("Maria", "accepted", None, True),
    ]
    assert all(t["number"].startswith("…") for t in tried)  # masked
    # One after another, each ringing about as scripted (busy or answered after 1 s).
    for before, after in zip(tried, tried[1:], strict=False):
        assert before["ended_t"] <= after["dialed_t"] + 0.01
    assert all(0.8 < t["ring_s"] < 2.0 for t in tried), tried
    # The report's times are on the events' clock.
    dialing = [e for e in events if e["event"] == "dialing"]
    assert [(e["target"], e["name"]) for e in dialing] == [(0, "Priya"), (1, "Sam"), (2, "Maria")]
    for event, person in zip(dialing, tried, strict=True):
        assert abs(event["t"] - person["dialed_t"]) < 0.05
    answered = [e for e in events if e["event"] == "human_answered"]
    assert [e["target"] for e in answered] == [1, 2]
    for event, person in zip(answered, tried[1:], strict=True):
        assert abs(event["t"] - person["answered_t"]) < 0.05
    failed = [
        (e["target"], e["reason"], e["remaining"]) for e in events if e["event"] == "target_failed"
    ]
    assert failed == [(0, "busy", 2), (1, "declined", 1)]
    assert "transfer_failed" not in [e["event"] for e in events]

    # Each consult room's record: what that colleague said to the bot.
    def said(person):
        return [turn["text"] for turn in person["transcript"] if turn["role"] == "human"]

    assert tried[0]["transcript"] == []
    assert said(tried[1]) == [story.SAM.greeting, story.SAM.reply]
    assert said(tried[2]) == [story.MARIA.greeting, story.MARIA.reply]
    # Over the music, Dana is told how many colleagues are left to try.
    reminders = [s for s in report["said_to_caller"] if s.startswith("Thanks for holding")]
    assert reminders, report["said_to_caller"]
    assert set(reminders) <= {
        "Thanks for holding. I'm still trying, one colleague left to try.",
        "Thanks for holding. I'm still trying, this is the last colleague to try.",
    }


def test_ring_group_audio_maria_reaches_dana_and_the_humans_come_in_turn(runs):
    run = runs["ring-group"]
    caller, human = run.audio("caller"), run.audio("human")
    connected, hung_up = run.at("connected"), run.at("caller_hung_up")
    sam, maria = run.report["tried"][1:]

    # After the connect Dana hears Maria: loud, at Maria's pitch, not the bot's.
    heard = span(caller, RATE, connected + 0.7, connected + 4.0)
    maria_hz = assert_in_voice(heard, story.MARIA.to_caller, story.MARIA.voice, louder_than=-35)
    assert maria_hz > 1.5 * voice_pitch(story.HOLD_LINE, BOT_VOICE)  # told apart

    # human.wav: Sam hears his briefing; nobody is on the line from his decline until the
    # bot speaks to Maria; Maria hears her briefing, then Dana's thanks.
    assert rms_dbfs(span(human, RATE, sam["answered_t"], sam["ended_t"])) > -35
    assert rms_dbfs(span(human, RATE, sam["ended_t"] + 0.3, maria["answered_t"] + 1.0)) < -60
    assert rms_dbfs(span(human, RATE, maria["answered_t"], maria["ended_t"])) > -35
    thanks = span(human, RATE, connected + 1.5, hung_up)
    assert_in_voice(thanks, story.CALLER_THANKS, "en-us+f3", louder_than=-40)


def test_ring_group_timeline_has_a_lane_per_colleague(runs):
    run = runs["ring-group"]
    assert png_size(run.out / "timeline.png") == (1680, 720 + 3 * 60)
    duration = len(run.audio("caller")) / RATE
    lanes = human_lanes(run.events, duration)
    assert [(lane.name, lane.outcome, lane.answered is not None) for lane in lanes] == [
        ("Priya", "busy", False),
        ("Sam", "declined", True),
        ("Maria", "accepted", True),
    ]
    assert lanes[0].sip_status == 486 and lanes[0].describe() == "busy · SIP 486"
    for lane, person in zip(lanes, run.report["tried"], strict=True):
        assert abs(lane.dialed - person["dialed_t"]) < 0.05
        assert abs(lane.ended - person["ended_t"]) < 0.1
    assert lanes[2].joined == (run.at("connected"), run.at("caller_hung_up"))
    assert lanes[0].joined is None and lanes[1].joined is None


def test_ring_all_rings_everyone_at_once_and_stops_the_others_when_maria_answers(runs):
    run = runs["ring-all"]
    report, events = run.report, run.events
    assert report["outcome"] == "connected" and report["connect_mode"] == "move"
    assert report["answered_by"] == "Maria"
    tried = report["tried"]
    assert [(t["name"], t["outcome"], t["answered"]) for t in tried] == [
        ("Priya", "stopped", False),
        ("Sam", "stopped", False),
        ("Maria", "accepted", True),
    ]
    priya, sam, maria = tried
    # Every phone rang at once (the three dials within 0.1 s), ringing as the carrier said.
    assert max(t["dialed_t"] for t in tried) - min(t["dialed_t"] for t in tried) < 0.1
    dialing = [e for e in events if e["event"] == "dialing"]
    assert [(e["target"], e["name"]) for e in dialing] == [(0, "Priya"), (1, "Sam"), (2, "Maria")]
    # Maria picked up 2 s in, the only one to answer; the others' phones stopped within a
    # second of her answer, on LiveKit's own record (the dials' end), long before they
    # would have picked up (5 s and 6 s in).
    answered = maria["ring_ended_t"]
    assert 1.8 < answered - maria["dialed_t"] < 2.8, maria
    assert abs(maria["answered_t"] - answered) < 0.3
    for loser in (priya, sam):
        assert loser["answered_t"] is None and loser["transcript"] == []
        assert 0 <= loser["ring_ended_t"] - answered < 1.0, (loser, maria)
        assert loser["ring_ended_t"] - loser["dialed_t"] < 4.0
    assert [e["target"] for e in events if e["event"] == "human_answered"] == [2]
    stopped = first(events, "others_stopped")
    assert stopped["count"] == 2 and 0 <= stopped["t"] - run.at("human_answered") < 1.0
    assert stopped["secs"] < 1.0
    # One briefing (Maria's), then the move.
    assert [e["event"] for e in events].count("briefing_started") == 1
    said = [turn["text"] for turn in maria["transcript"] if turn["role"] == "human"]
    assert said == [story.MARIA.greeting, story.MARIA.reply]
    assert "transfer_failed" not in [e["event"] for e in events]
    assert "target_failed" not in [e["event"] for e in events]


def test_ring_all_timeline_lanes_end_the_others_ringing_at_marias_answer(runs):
    run = runs["ring-all"]
    assert png_size(run.out / "timeline.png") == (1680, 720 + 3 * 60)
    lanes = human_lanes(run.events, len(run.audio("caller")) / RATE)
    assert [(lane.name, lane.outcome, lane.answered is not None) for lane in lanes] == [
        ("Priya", "stopped", False),
        ("Sam", "stopped", False),
        ("Maria", "accepted", True),
    ]
    *others, maria = lanes
    for lane in others:
        assert abs(lane.dialed - maria.dialed) < 0.1  # rang together
        assert 0 <= lane.ring_end - maria.answered < 1.0, (lane, maria)
        assert lane.describe() == "stopped" and lane.joined is None
    assert maria.ring_end == maria.answered
    assert maria.joined == (run.at("connected"), run.at("caller_hung_up"))


def test_ring_all_audio_dana_hears_maria_and_only_maria_answered(runs):
    run = runs["ring-all"]
    caller, human = run.audio("caller"), run.audio("human")
    connected, hung_up = run.at("connected"), run.at("caller_hung_up")
    maria = run.report["tried"][2]

    # After the connect Dana hears Maria: loud, at Maria's pitch, not the bot's.
    heard = span(caller, RATE, connected + 0.7, connected + 4.0)
    maria_hz = assert_in_voice(heard, story.MARIA.to_caller, story.MARIA.voice, louder_than=-35)
    assert maria_hz > 1.5 * voice_pitch(story.HOLD_LINE, BOT_VOICE)  # told apart

    # human.wav: nobody was on a phone until Maria answered (the others never picked
    # up); then Maria's briefing, then Dana's thanks.
    assert not np.any(human[: int(maria["answered_t"] * RATE) - RATE // 10])
    assert rms_dbfs(span(human, RATE, maria["answered_t"], connected)) > -35
    thanks = span(human, RATE, connected + 1.5, hung_up)
    assert_in_voice(thanks, story.CALLER_THANKS, "en-us+f3", louder_than=-40)


def test_after_hours_nobody_is_dialed_and_dana_hears_when_the_team_is_back(runs):
    run = runs["after-hours"]
    report, events = run.report, run.events
    assert (report["outcome"], report["reason"], report["next_step"]) == (
        "failed",
        "after_hours",
        "return",
    )
    assert report["tried"] == [] and report["answered_by"] is None
    hours = report["availability"]
    assert hours["time_zone"] == story.TEAM_TIME_ZONE
    assert hours["open"] is False and hours["holiday"] == "Acme team day"
    assert hours["opens"] and hours["opens"] not in ("now",) and "9:00" in hours["opens"]
    names = [e["event"] for e in events]
    assert not {"hold_started", "dialing", "ringing", "human_answered"} & set(names), names
    requested, failed = run.at("transfer_requested"), run.at("transfer_failed")
    assert failed - requested < 0.1  # no hold, no ringing: told at once

    # The one sentence Dana hears says when the team is back.
    told = WarmTransferParams().failure_message(FailureReason.AFTER_HOURS, opens=hours["opens"])
    assert report["said_to_caller"][0] == told
    assert f"the team is back {hours['opens']}." in told
    told_secs = len(synthesize(told, voice=BOT_VOICE, sample_rate=RATE)) / 2 / RATE
    caller = run.audio("caller")
    assert rms_dbfs(caller[: int(failed * RATE)]) < -60  # nothing before it: no hold line, no music
    assert rms_dbfs(span(caller, RATE, failed + 0.3, failed + told_secs - 0.5)) > -35
    assert not np.any(run.audio("human"))  # nobody was dialed: nobody heard anything
    assert png_size(run.out / "timeline.png") == (1680, 720)  # no colleague's lane


def test_callback_is_offered_read_back_confirmed_and_reported(runs):
    run = runs["callback"]
    report, events = run.report, run.events
    assert (report["outcome"], report["reason"], report["next_step"]) == (
        "failed",
        "no_answer",
        "callback",
    )
    (sam,) = report["tried"]
    assert (sam["name"], sam["outcome"], sam["answered"]) == ("Sam", "no_answer", False)
    assert 5.8 < sam["ring_s"] < 7.0  # his own 6 s ring timeout (LiveKit's ring-out)

    callback = report["callback"]
    assert callback["number"] == story.CALLER_NUMBER and callback["number_is_caller_id"]
    assert callback["confirmed"] is True and callback["reason"] == "no_answer"
    assert callback["preferred_time"] == story.CALLBACK_PREFERRED_TIME
    assert callback["time_zone"] == story.TEAM_TIME_ZONE
    start, end = (datetime.fromisoformat(callback[k]) for k in ("not_before", "not_after"))
    requested = datetime.fromisoformat(callback["requested_at"])
    assert start.date() == requested.date() + timedelta(days=1)  # tomorrow, in the team's zone
    assert (start.hour, start.minute, end - start) == (15, 0, timedelta(hours=1))

    # The event says when; the number is masked in it and everywhere in the log.
    back, booked = first(events, "returned_to_caller"), first(events, "callback_requested")
    assert back["next_step"] == "callback" and booked["t"] > back["t"]
    assert booked["number"].endswith("0142") and booked["number"].startswith("+*")
    assert booked["preferred_time"] == story.CALLBACK_PREFERRED_TIME
    assert story.CALLER_NUMBER not in (run.out / "events.jsonl").read_text()

    # What the bot said, in order: the offer, the read-back, the closing.
    said = report["said_to_caller"]
    offer = said.index(WarmTransferParams().callback_offer_message)
    read_back = next(i for i, s in enumerate(said) if s.startswith("Let me confirm"))
    closing = next(i for i, s in enumerate(said) if s.startswith("Someone will call you back"))
    assert offer < read_back < closing
    assert spoken_number(story.CALLER_NUMBER) in said[read_back]
    assert "tomorrow" in said[read_back] and "at 3 pm" in said[read_back]
    assert "tomorrow" in said[closing] and "at 3 pm" in said[closing]

    # Dana hears the read-back before she confirms, and the closing after.
    caller = run.audio("caller")
    assert rms_dbfs(span(caller, RATE, booked["t"] - 8.0, booked["t"] - 4.0)) > -35
    assert rms_dbfs(span(caller, RATE, booked["t"] + 0.3, booked["t"] + 2.5)) > -35
    assert not np.any(run.audio("human"))  # Sam never answered

    lanes = human_lanes(events, len(caller) / RATE)
    assert [(lane.name, lane.outcome, lane.answered) for lane in lanes] == [
        ("Sam", "no_answer", None)
    ]
    assert png_size(run.out / "timeline.png") == (1680, 720 + 60)
