"""The `refer` demo scenario end to end: Sam accepts, is hung up, and Dana's call is referred.

It runs once, as users run it (`pipecat-warm-transfer demo --scenario refer`), in a
process of its own; the tests read the files it left. The REFER's times are LiveKit's
(the emulator's record of the call), on the recordings' clock.
"""

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("matplotlib")

from demo_runs import Run, shared_runs  # noqa: E402
from test_demo import check_command_run, first  # noqa: E402
from test_demo_groups import assert_in_voice, png_size  # noqa: E402

from pipecat_warm_transfer.audio.metrics import dominant_frequency, rms_dbfs, windowed_rms_dbfs  # noqa: E402
from pipecat_warm_transfer.demo import scenarios as story  # noqa: E402
from pipecat_warm_transfer.demo.espeak_tts import synthesize  # noqa: E402
from pipecat_warm_transfer.demo.runner import BOT_VOICE, RATE, REFER_CARRIER  # noqa: E402
from pipecat_warm_transfer.demo.timeline import event_labels, human_lanes  # noqa: E402
from pipecat_warm_transfer.params import REFER_CONNECTING_MESSAGE  # noqa: E402

#: The demo runs a module shares are made in its first test's set-up: several at once
#: (`shared_runs`), or waited for while another worker makes them.
pytestmark = pytest.mark.timeout(400)

NAME = "refer"
#: Bound on the run (it takes about 35 s).
RUN_TIMEOUT_SECS = 100
#: Normalised cross-correlation above which a sentence is in a recording. The REFER
#: sentence scores about 0.55 in Sam's recording; other sentences, or the same one in
#: another voice, under 0.25.
HEARD = 0.4


@pytest.fixture(scope="session")
def run(tmp_path_factory) -> Run:
    return shared_runs(tmp_path_factory, "refer", [NAME], RUN_TIMEOUT_SECS)[NAME]


def carrier(report: dict, message: str) -> float:
    """When the caller's carrier sent `message` (e.g. "REFER 202"), seconds from sample 0."""
    return next(a["t"] for a in report["refer"]["carrier"] if a["message"] == message)


def find(audio: np.ndarray, text: str, voice: str) -> tuple[float, float]:
    """Where `text` said in `voice` is in `audio`: (seconds, normalised correlation)."""
    x = audio.astype(np.float64)
    y = np.frombuffer(synthesize(text, voice=voice, sample_rate=RATE), np.int16)
    y = y.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    corr = np.fft.irfft(np.fft.rfft(x, n) * np.conj(np.fft.rfft(y, n)), n)[: len(x) - len(y)]
    energy = np.concatenate([[0.0], np.cumsum(x**2)])
    window = energy[len(y) : len(x)] - energy[: len(x) - len(y)]
    score = corr / np.sqrt(np.maximum(window, 1.0) * np.sum(y**2))
    best = int(np.argmax(score))
    return best / RATE, float(score[best])


def test_refer_runs_as_scripted(run):
    check_command_run(run)
    assert "connected, refer" in run.stdout
    assert "leaks: rooms 0, participants 0, connections 0, tasks 0" in run.stdout


def test_sam_is_hung_up_then_danas_call_is_referred_to_his_number(run):
    report, events = run.report, run.events
    assert (report["outcome"], report["connect_mode"]) == ("connected", "refer")
    assert report["leaks"] == {"rooms": 0, "participants": 0, "connections": 0, "tasks": 0}
    assert report["leak_findings"] == []
    refer = report["refer"]
    # To Sam's number, with a ring tone for Dana meanwhile; the carrier transferred it.
    assert refer["transfer_to"] == f"tel:{story.CALLER_NUMBER_OF_HUMAN}"
    assert refer["play_dialtone"] is True and refer["outcome"] == "transferred"
    # No move, no bridge: Sam's leg hung up, then the REFER, and nothing else.
    assert refer["api_calls"] == ["RemoveParticipant", "TransferSIPParticipant"]
    assert refer["human_end_reason"] == "removed"
    # On the call's clock: Sam's line was gone before the carrier took the REFER (it
    # answers `refer_after` after the request) and the REFER followed at once; Sam's
    # phone picked up Dana's call as scripted; then her carrier's BYE took her call out.
    referred, notified, bye = (carrier(report, m) for m in ("REFER 202", "NOTIFY 200", "BYE"))
    assert refer["human_left_t"] < referred, refer
    assert referred - refer["human_left_t"] < REFER_CARRIER.refer_after + 0.5
    assert abs(notified - referred - REFER_CARRIER.notify_after) < 0.1
    assert abs(bye - notified - REFER_CARRIER.bye_after) < 0.1
    assert abs(refer["caller_left_t"] - bye) < 0.05 and refer["caller_left_t"] > referred
    # The transfer reports the connect when LiveKit answers (the NOTIFY), before she left.
    connected = first(events, "connected")
    assert notified <= connected["t"] < refer["caller_left_t"]
    # The accept (settled once Sam was told, just before the hang-up) was followed by the
    # REFER within 2 s (`ended_t` is the transfer's clock mapped to the events': ±0.05 s).
    (sam,) = report["tried"]
    assert sam["outcome"] == "accepted" and sam["answered"]
    assert -0.05 < referred - sam["ended_t"] < 2.0
    assert report["timings"]["accept_to_connected"] < 2.5


def test_sam_hears_the_refer_sentence_in_the_bots_voice_then_is_hung_up(run):
    human = run.audio("human")
    left = run.report["refer"]["human_left_t"]
    at, score = find(human, REFER_CONNECTING_MESSAGE, BOT_VOICE)
    assert score > HEARD, (at, score)
    # The test tells sentences and voices apart.
    assert find(human, "Thank you, connecting you now.", BOT_VOICE)[1] < HEARD
    assert find(human, REFER_CONNECTING_MESSAGE, story.SAM.voice)[1] < HEARD
    # He heard it after his accept, whole, and was hung up soon after its last word.
    speech = windowed_rms_dbfs(human[int(at * RATE) : int(left * RATE)], RATE, 20)
    last_word = at + ((speech > -45).nonzero()[0][-1] + 1) * 0.02
    said = len(synthesize(REFER_CONNECTING_MESSAGE, voice=BOT_VOICE, sample_rate=RATE)) / 2
    assert last_word - at > 0.8 * said / RATE  # not cut short
    assert at > run.report["tried"][0]["answered_t"] + 5.0  # after his briefing
    assert 0 < left - last_word < 1.0, (last_word, left)
    sentence = human[int(at * RATE) : int(last_word * RATE)]
    assert_in_voice(sentence, REFER_CONNECTING_MESSAGE, BOT_VOICE, louder_than=-35)


def test_dana_hears_the_music_then_livekits_ringing_tone_until_her_call_leaves(run):
    caller = run.audio("caller")
    refer = run.report["refer"]
    referred = carrier(run.report, "REFER 202")
    taken = referred - REFER_CARRIER.refer_after  # LiveKit took the transfer
    # Held with the music until then; from then LiveKit's ringing tone, not the room:
    # 425 Hz at half scale for 1 s, then the cadence's silence while Sam's phone rings.
    assert abs(rms_dbfs(span_of(caller, taken - 1.2, taken - 0.2)) + 24) < 3
    ringing = span_of(caller, taken + 0.05, taken + 0.95)
    assert abs(dominant_frequency(ringing, RATE) - 425) < 5
    assert abs(rms_dbfs(ringing) + 9) < 1
    assert rms_dbfs(span_of(caller, taken + 1.05, run.at("connected"))) < -60
    # Her recording is LiveKit's: it ends where the tone stopped, at the NOTIFY (the
    # room's audio stays off), before her call left the room at the carrier's BYE.
    notified = carrier(run.report, "NOTIFY 200")
    assert notified - 0.1 < len(caller) / RATE < refer["caller_left_t"] + 0.05
    assert refer["caller_end_reason"] in ("closed", "disconnected")


def span_of(audio, t0, t1):
    return audio[int(t0 * RATE) : int(t1 * RATE)]


def test_the_timeline_marks_the_refer_and_danas_call_leaving(run):
    events = run.events
    names = [e["event"] for e in events]
    order = ["briefing_started", "refer", "refer_notify", "connected", "caller_referred"]
    assert [n for n in names if n in order] == order
    refer, notify = first(events, "refer"), first(events, "refer_notify")
    assert refer["source"] == notify["source"] == "livekit"
    assert (refer["sip_status"], notify["sip_status"]) == (202, 200)
    assert refer["to"] == notify["to"] == "…" + story.CALLER_NUMBER_OF_HUMAN[-4:]
    assert story.CALLER_NUMBER_OF_HUMAN not in (run.out / "events.jsonl").read_text()
    assert refer["t"] == carrier(run.report, "REFER 202")
    # The markers as drawn: the REFER, Sam's phone answering, and Dana's call leaving
    # LiveKit where the transfer saw her leave (not a hang-up: it went on elsewhere).
    assert "caller_hung_up" not in names
    left = first(events, "caller_referred")
    assert abs(left["t"] - run.report["refer"]["caller_left_t"]) < 0.1
    labels = {text: t for t, text, _ in event_labels(events)}
    assert labels["REFER to …0100 (202)"] == refer["t"]
    assert labels["…0100 answered (NOTIFY 200)"] == notify["t"]
    assert labels["caller's call left LiveKit"] == left["t"]
    assert "caller hung up" not in labels
    # Sam alone (no named lane); the picture has the standard size.
    assert human_lanes(events, len(run.audio("caller")) / RATE) == []
    assert png_size(run.out / "timeline.png") == (1680, 720)
