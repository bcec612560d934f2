"""The demo's parts: offline eSpeak NG speech and the timeline picture (its human lanes too)."""

import asyncio
import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("espeakng_loader")
pytest.importorskip("matplotlib")

from pipecat.frames.frames import TTSAudioRawFrame, TTSSpeakFrame  # noqa: E402
from pipecat.tests.utils import run_test  # noqa: E402

from pipecat_warm_transfer.audio.metrics import voice_pitch_hz  # noqa: E402
from pipecat_warm_transfer.demo.espeak_tts import (  # noqa: E402
    EspeakTTSService,
    available_variants,
    native_sample_rate,
    synthesize,
)
from pipecat_warm_transfer.demo.timeline import (  # noqa: E402
    draw_timeline,
    event_labels,
    human_lanes,
)

RATE = 16000
TEXT = "Hello, this is a test."


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float64) / 32768


def _rms_dbfs(x: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(x * x)) + 1e-12)


def _spectrum(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    power = np.abs(np.fft.rfft(x)) ** 2
    return np.fft.rfftfreq(len(x), 1 / rate), power


def _f0(x: np.ndarray, rate: int) -> float:
    """`voice_pitch_hz` of samples scaled to ±1 (as `_samples` gives them)."""
    return voice_pitch_hz(x * 32768, rate)


def test_espeak_speaks_plausible_speech():
    assert native_sample_rate() == 22050
    x = _samples(synthesize(TEXT, voice="en-us", sample_rate=RATE))
    duration = len(x) / RATE
    assert 0.8 <= duration <= 4.0
    assert _rms_dbfs(x) > -35
    freqs, power = _spectrum(x, RATE)
    speech_band = power[(freqs >= 100) & (freqs <= 4000)].sum() / power.sum()
    assert speech_band > 0.8
    assert 70 <= _f0(x, RATE) <= 160  # a male voice


def test_espeak_voices_differ():
    assert {"f3", "m3"} <= set(available_variants())
    male = _samples(synthesize(TEXT, voice="en-us", sample_rate=RATE))
    female = _samples(synthesize(TEXT, voice="en-us+f3", sample_rate=RATE))
    british = _samples(synthesize(TEXT, voice="en-gb+m3", pitch=30, sample_rate=RATE))
    f0_male, f0_female, f0_british = (_f0(x, RATE) for x in (male, female, british))
    assert f0_female > 1.5 * f0_male
    assert abs(f0_british - f0_male) > 8
    n = min(len(male), len(british))
    assert not np.allclose(male[:n], british[:n], atol=0.05)


def test_espeak_rate_pitch_and_sample_rate():
    slow = synthesize(TEXT, rate=120, sample_rate=RATE)
    fast = synthesize(TEXT, rate=260, sample_rate=RATE)
    assert len(slow) > 1.5 * len(fast)
    low = _f0(_samples(synthesize(TEXT, pitch=20, sample_rate=RATE)), RATE)
    high = _f0(_samples(synthesize(TEXT, pitch=80, sample_rate=RATE)), RATE)
    assert high > low * 1.15
    at_8k = synthesize(TEXT, sample_rate=8000)
    at_16k = synthesize(TEXT, sample_rate=RATE)
    assert abs(len(at_16k) - 2 * len(at_8k)) < 64


def test_espeak_rejects_bad_settings():
    with pytest.raises(ValueError, match="no voice"):
        synthesize(TEXT, voice="xx-nowhere")
    with pytest.raises(ValueError, match="variant"):
        synthesize(TEXT, voice="en-us+nobody")
    with pytest.raises(ValueError, match="rate"):
        EspeakTTSService(rate=5)
    assert len(synthesize("", sample_rate=RATE)) < RATE * 2 // 10  # under 0.1 s


def test_espeak_load_failure_is_one_clear_line(monkeypatch):
    import espeakng_loader

    from pipecat_warm_transfer.demo import espeak_tts

    monkeypatch.setattr(espeakng_loader, "get_library_path", lambda: "/nowhere/libespeak-ng.so")
    with pytest.raises(RuntimeError, match="eSpeak NG unavailable: cannot load") as info:
        espeak_tts._Engine()
    assert "\n" not in str(info.value)


async def test_espeak_is_safe_from_many_threads():
    voices = ["en-us", "en-us+f3", "en-gb+m3"] * 6
    expected = {v: len(synthesize(TEXT, voice=v)) for v in set(voices)}
    results = await asyncio.gather(*(asyncio.to_thread(synthesize, TEXT, voice=v) for v in voices))
    for voice, pcm in zip(voices, results, strict=True):
        # eSpeak NG's pitch flutter makes lengths vary by a few samples from call to call.
        assert abs(len(pcm) - expected[voice]) < 0.02 * expected[voice]
        assert _rms_dbfs(_samples(pcm)) > -35


async def test_espeak_service_in_pipeline():
    tts = EspeakTTSService(voice="en-us+f3", sample_rate=RATE)
    down, _ = await run_test(tts, frames_to_send=[TTSSpeakFrame(text=TEXT)])
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert audio
    assert all(f.sample_rate == RATE and f.num_channels == 1 for f in audio)
    x = _samples(b"".join(f.audio for f in audio))
    assert 0.8 <= len(x) / RATE <= 4.0
    assert _rms_dbfs(x) > -35
    assert _f0(x, RATE) > 150  # the female variant


def _write_call(tmp_path, *, human_seconds: float | None, connected: bool = True):
    rng = np.random.default_rng(1)
    caller = np.zeros(RATE * 10, dtype=np.float32)
    caller[RATE // 2 : RATE * 2] = 0.3 * rng.standard_normal(RATE * 3 // 2)
    t = np.arange(RATE * 4) / RATE
    caller[RATE * 3 : RATE * 7] = 0.05 * np.sin(2 * np.pi * 330 * t)  # hold music
    sf.write(tmp_path / "caller.wav", caller, RATE, subtype="PCM_16")
    human = np.zeros(int(RATE * (human_seconds or 0)), dtype=np.float32)
    if connected and len(human):
        human[RATE * 4 : RATE * 6] = 0.2 * rng.standard_normal(RATE * 2)
    sf.write(tmp_path / "human.wav", human, RATE, subtype="PCM_16")
    events = [
        {"t": 2.5, "event": "transfer_requested", "reason": "billing", "transfer": 1},
        {"t": 3.0, "event": "hold_started", "transfer": 1},
        {"t": 3.05, "event": "dialing", "transfer": 1},
    ]
    if connected:
        events += [
            {"t": 4.0, "event": "human_answered", "transfer": 1},
            {"t": 4.1, "event": "briefing_started", "transfer": 1},
            {"t": 7.0, "event": "connected", "mode": "move", "transfer": 1},
            {"t": 7.1, "event": "teardown_done", "transfer": 1},
            {"t": 9.5, "event": "caller_hung_up", "transfer": 1},
        ]
    else:
        events += [
            {"t": 7.0, "event": "transfer_failed", "reason": "no_answer", "transfer": 1},
            {"t": 7.05, "event": "teardown_done", "transfer": 1},
            {"t": 8.5, "event": "returned_to_caller", "reason": "no_answer", "transfer": 1},
        ]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")


def _png_size(path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    image = mpimg.imread(str(path))
    return image.shape[1], image.shape[0]


@pytest.mark.parametrize(
    ("human_seconds", "connected"),
    [(10.0, True), (10.0, False), (None, False)],
    ids=["connected", "silent-human", "empty-human"],
)
def test_draw_timeline_writes_png(tmp_path, human_seconds, connected):
    _write_call(tmp_path, human_seconds=human_seconds, connected=connected)
    out = draw_timeline(
        tmp_path / "caller.wav",
        tmp_path / "human.wav",
        tmp_path / "events.jsonl",
        tmp_path / "out" / "timeline.png",
        title="test",
    )
    assert out.exists()
    assert _png_size(out) == (1680, 720)


def test_draw_timeline_few_events_and_missing_files(tmp_path):
    (tmp_path / "events.jsonl").write_text(json.dumps({"t": 1.0, "event": "transfer_requested"}))
    out = draw_timeline(
        tmp_path / "missing.wav", None, tmp_path / "events.jsonl", tmp_path / "few.png"
    )
    assert _png_size(out) == (1680, 720)


def _group_events(strategy: str) -> list[dict]:
    """A ring group's events: Alice busy, Bob declines, Carol accepts (or all at once)."""

    def e(t, event, **data):
        return {"t": t, "event": event, "transfer": 1, **data}

    if strategy == "simultaneous":
        return [
            e(1.0, "transfer_requested"),
            e(1.1, "dialing", target=0, name="Alice"),
            e(1.1, "dialing", target=1, name="Bob"),
            e(1.1, "dialing", target=2, name="Carol"),
            e(1.4, "target_failed", target=2, reason="busy", sip_status=486, remaining=0),
            e(2.0, "human_answered", target=1),
            e(2.1, "others_stopped", count=1, secs=0.1),
            e(6.0, "connected", mode="move"),
            e(9.0, "human_hung_up"),
        ]
    return [
        e(1.0, "transfer_requested"),
        e(1.1, "dialing", target=0, name="Alice"),
        e(1.5, "ringing"),
        e(2.0, "target_failed", target=0, reason="busy", sip_status=486, remaining=2),
        e(2.1, "dialing", target=1, name="Bob"),
        e(3.0, "human_answered", target=1),
        e(5.0, "target_failed", target=1, reason="declined", remaining=1),
        e(5.1, "dialing", target=2, name="Carol"),
        e(6.0, "human_answered", target=2),
        e(8.0, "connected", mode="move"),
        e(11.0, "caller_hung_up"),
    ]


def test_human_lanes_follow_a_sequential_group():
    lanes = human_lanes(_group_events("sequential"), end=12.0)
    assert [(x.name, x.dialed, x.answered, x.ended, x.outcome) for x in lanes] == [
        ("Alice", 1.1, None, 2.0, "busy"),
        ("Bob", 2.1, 3.0, 5.0, "declined"),
        ("Carol", 5.1, 6.0, 8.0, "accepted"),
    ]
    assert [x.ring_end for x in lanes] == [2.0, 3.0, 6.0]
    assert lanes[0].describe() == "busy · SIP 486" and lanes[1].describe() == "declined"
    assert [x.joined for x in lanes] == [None, None, (8.0, 11.0)]  # until the caller hung up


def test_human_lanes_follow_a_simultaneous_group_and_a_group_nobody_took():
    lanes = human_lanes(_group_events("simultaneous"), end=12.0)
    assert [(x.name, x.outcome, x.ended) for x in lanes] == [
        ("Alice", "stopped", 2.1),  # her phone stopped when Bob answered
        ("Bob", "accepted", 6.0),
        ("Carol", "busy", 1.4),
    ]
    assert lanes[1].joined == (6.0, 9.0)  # until the human hung up
    # The last one tried fails with the whole transfer (no target_failed of its own);
    # a dial still ringing when the log ends runs to the end; unnamed dials get no lane.
    events = [
        {"t": 1.0, "event": "dialing", "transfer": 1, "target": 0, "name": "Sam"},
        {"t": 7.0, "event": "transfer_failed", "transfer": 1, "reason": "no_answer"},
        {"t": 8.0, "event": "dialing", "transfer": 2, "target": 0, "name": "Sam"},
        {"t": 8.5, "event": "dialing", "transfer": 3, "target": 0},
    ]
    first, second = human_lanes(events, end=10.0)
    assert (first.outcome, first.ended, first.sip_status) == ("no_answer", 7.0, None)
    assert (second.outcome, second.ended) == (None, 10.0)


def test_draw_timeline_adds_a_lane_per_named_human(tmp_path):
    _write_call(tmp_path, human_seconds=12.0)
    events = _group_events("sequential")
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n")
    out = draw_timeline(
        tmp_path / "caller.wav", tmp_path / "human.wav", tmp_path / "events.jsonl",
        tmp_path / "group.png",
    )  # fmt: skip
    assert _png_size(out) == (1680, 720 + 3 * 60)  # 0.5 inch a human at 120 dpi


def test_event_labels_name_the_refer_and_the_callers_call_leaving_livekit():
    def e(t, event, **data):
        return {"t": t, "event": event, **data}

    refer = [
        e(1.0, "transfer_requested"),
        e(2.0, "dialing", target=0),
        e(9.0, "refer", to="…0100", sip_status=202, source="livekit"),
        e(10.5, "refer_notify", to="…0100", sip_status=200, source="livekit"),
        e(10.5, "connected", mode="refer"),
        e(10.7, "caller_referred"),
    ]
    labels = [(t, text) for t, text, _ in event_labels(refer)]
    assert labels[2:] == [
        (9.0, "REFER to …0100 (202)"),
        (10.5, "…0100 answered (NOTIFY 200)"),
        (10.5, "connected (refer)"),
        (10.7, "caller's call left LiveKit"),
    ]
    # A hang-up (after a move, or before any connect) is in red; a referred call is not.
    moved = [e(1.0, "caller_hung_up"), e(2.0, "connected", mode="move"), e(3.0, "caller_hung_up")]
    marks = event_labels(moved)
    assert [text for _, text, _ in marks] == [
        "caller hung up",
        "connected (move)",
        "caller hung up",
    ]
    assert marks[0][2] == marks[2][2] != event_labels(refer)[-1][2]
