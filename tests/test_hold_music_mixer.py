"""HoldMusicMixer: level, pitch, seams, fades, ducking, saturation, caching, settings."""

import math

import numpy as np
import pytest
import soundfile as sf
from pipecat.frames.frames import MixerEnableFrame, MixerUpdateSettingsFrame

from pipecat_warm_transfer import HoldMusicError, HoldMusicMixer
from pipecat_warm_transfer.audio import load_music_loop
from pipecat_warm_transfer.audio.metrics import (
    dominant_frequency,
    max_step,
    rms_dbfs,
    windowed_rms_dbfs,
)


def write_tone(path, freq=440.0, seconds=1.013, rate=44100, channels=2, amp=0.3, fmt=None):
    t = np.arange(int(seconds * rate)) / rate
    tone = amp * np.sin(2 * np.pi * freq * t)
    data = np.stack([tone] * channels, axis=1) if channels > 1 else tone
    sf.write(str(path), data, rate, format=fmt)
    return path


@pytest.fixture
def tone_file(tmp_path):
    # 1.013 s is not a whole number of 440 Hz periods: the loop seam is not free.
    return write_tone(tmp_path / "tone.wav")


def frame_bytes(rate, ms=20):
    return bytes(2 * int(rate * ms / 1000))


async def started(source, rate, **kwargs):
    mixer = HoldMusicMixer(source, **kwargs)
    await mixer.start(rate)
    return mixer


async def run_frames(mixer, count, frame):
    if not hasattr(mixer, "mix_now"):  # Pipecat's own mixers
        return b"".join([await mixer.mix(frame) for _ in range(count)])
    return b"".join([mixer.mix_now(frame) for _ in range(count)])


async def enabled_steady(source, rate, **kwargs):
    """A mixer enabled and past its fade-in."""
    kwargs.setdefault("fade_ms", 0)
    mixer = await started(source, rate, **kwargs)
    await mixer.process_frame(MixerEnableFrame(True))
    await run_frames(mixer, 2, frame_bytes(rate))
    return mixer


def tone_step_bound(level_dbfs, freq, rate):
    """Largest sample step of a sine at this RMS level: A * 2 sin(pi f / fs)."""
    amplitude = 32768 * 10 ** (level_dbfs / 20) * math.sqrt(2)
    return amplitude * 2 * math.sin(math.pi * freq / rate)


@pytest.mark.parametrize("level", [-30.0, -24.0, -18.0])
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_level_on_silent_input_is_within_1db(tone_file, level, rate):
    mixer = await enabled_steady(tone_file, rate, level_dbfs=level)
    out = await run_frames(mixer, 100, frame_bytes(rate))
    assert abs(rms_dbfs(out) - level) <= 1.0


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
async def test_440hz_stereo_44k1_comes_out_at_440hz(tone_file, rate):
    mixer = await enabled_steady(tone_file, rate)
    out = await run_frames(mixer, 50, frame_bytes(rate))
    assert abs(dominant_frequency(out, rate) - 440.0) < 2.0


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_no_click_at_frame_boundaries_or_loop_seam(tone_file, rate):
    mixer = await enabled_steady(tone_file, rate, level_dbfs=-24.0)
    # 3.5 s crosses the ~1 s loop seam three times, over 175 frame boundaries.
    out = await run_frames(mixer, 175, frame_bytes(rate))
    assert max_step(out) <= 1.1 * tone_step_bound(-24.0, 440.0, rate)


async def test_pipecat_soundfile_mixer_clicks_where_ours_does_not(tmp_path):
    """The baseline jumps at its loop point; this documents what we fix."""
    from pipecat.audio.mixers.soundfile_mixer import SoundfileMixer

    rate = 16000
    # 16330 samples: it jumps back to 0 after 16320, 0.8 of a period into the tone.
    path = write_tone(tmp_path / "mono16k.wav", 440.0, 16330 / rate, rate, channels=1, amp=0.0892)
    baseline = SoundfileMixer(sound_files={"m": str(path)}, default_sound="m", volume=1.0)
    await baseline.start(rate)
    out = await run_frames(baseline, 175, frame_bytes(rate))
    assert max_step(out) > 2 * tone_step_bound(-24.0, 440.0, rate)


async def test_fade_in_starts_near_zero_and_reaches_level(tone_file):
    rate = 16000
    mixer = await started(tone_file, rate, fade_ms=250)
    await mixer.process_frame(MixerEnableFrame(True))
    out = await run_frames(mixer, 50, frame_bytes(rate))
    levels = windowed_rms_dbfs(out, rate, 10)
    assert levels[0] < -24.0 - 25.0  # the first 10 ms are near silence
    assert np.all(np.diff(levels[:25]) > -0.5)  # rising through the fade
    assert abs(levels[-1] - (-24.0)) < 1.0  # at level after 250 ms
    assert abs(rms_dbfs(out[2 * rate // 2 :]) - (-24.0)) < 1.0


async def test_fade_out_then_output_is_input_byte_for_byte(tone_file):
    rate = 16000
    mixer = await enabled_steady(tone_file, rate, fade_ms=250)
    await run_frames(mixer, 15, frame_bytes(rate))  # past the 250 ms fade-in
    await mixer.process_frame(MixerEnableFrame(False))
    faded = await run_frames(mixer, 13, frame_bytes(rate))  # 260 ms
    levels = windowed_rms_dbfs(faded, rate, 20)
    assert levels[0] > -27.0 and levels[-1] < -50.0
    assert np.all(np.diff(levels) < 0.5)  # falling through the fade
    rng = np.random.default_rng(1)
    speech = rng.integers(-3000, 3000, 320, dtype=np.int16).tobytes()
    assert mixer.mix_now(speech) == speech
    assert not mixer.playing


async def test_disabled_output_is_the_input_object(tone_file):
    mixer = await started(tone_file, 16000)
    rng = np.random.default_rng(2)
    for size in (1, 320, 777):
        audio = rng.integers(-32768, 32767, size, dtype=np.int16).tobytes()
        assert mixer.mix_now(audio) is audio


async def ducking_depth(mixer, rate=16000, attack=None):
    """How many dB the music drops under 1 s of steady speech (past the attack).

    `attack`, a list, receives the music's level (dB below its level before the speech)
    in each 20 ms of the first 200 ms of speech, then the music itself from 20 ms before
    the speech to the end of those 200 ms (an array).
    """
    t = np.arange(320) / rate
    speech = (3000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    silent = await run_frames(mixer, 25, frame_bytes(rate))
    outs = [np.frombuffer(mixer.mix_now(speech.tobytes()), np.int16) for _ in range(50)]
    under = [out.astype(np.int32) - speech for out in outs]
    if attack is not None:
        attack += [rms_dbfs(silent) - rms_dbfs(u) for u in under[:10]]
        lead_in = np.frombuffer(silent, np.int16)[-320:].astype(np.int32)
        attack.append(np.concatenate([lead_in, *under[:10]]))
    return rms_dbfs(silent) - rms_dbfs(np.concatenate(under[10:]))


@pytest.mark.parametrize("duck_db", [6.0, 12.0, 20.0])
async def test_ducking_depth_under_speech(tone_file, duck_db):
    rate = 16000
    mixer = await enabled_steady(tone_file, rate, duck_db=duck_db)
    depth = await ducking_depth(mixer, rate)
    assert abs(depth - duck_db) <= 1.5
    # The music comes back after the speech stops.
    back = await run_frames(mixer, 40, frame_bytes(rate))
    assert abs(rms_dbfs(back[-2 * 3200 :]) - (-24.0)) < 1.0
    assert max_step(back) <= 1.1 * tone_step_bound(-24.0, 440.0, rate)


async def test_saturates_instead_of_wrapping(tone_file):
    mixer = await enabled_steady(tone_file, 16000, level_dbfs=-6.0)
    loud = np.full(320, 32000, dtype=np.int16).tobytes()
    quiet = np.full(320, -32000, dtype=np.int16).tobytes()
    for frame, sign in ((loud, 1), (quiet, -1)):
        out = np.frombuffer(mixer.mix_now(frame), np.int16).astype(np.int32)
        assert np.all(out * sign > 0)  # wrap-around would flip the sign
        assert out.max() == 32767 if sign > 0 else out.min() == -32768


async def test_any_frame_length_keeps_position_continuous(tone_file):
    rate = 16000
    sizes = [1, 7, 160, 333, 1600, 4800, 2, 319]
    total = sum(sizes)
    a = await enabled_steady(tone_file, rate)
    b = await enabled_steady(tone_file, rate)
    chunked = b"".join([a.mix_now(bytes(2 * n)) for n in sizes])
    whole = b.mix_now(bytes(2 * total))
    assert len(chunked) == 2 * total
    assert chunked == whole
    assert max_step(chunked) <= 1.1 * tone_step_bound(-24.0, 440.0, rate)


async def test_frame_longer_than_the_loop(tmp_path):
    path = write_tone(tmp_path / "short.wav", seconds=0.05, rate=16000, channels=1)
    mixer = await enabled_steady(path, 16000)
    out = mixer.mix_now(bytes(2 * 48000))
    assert len(out) == 2 * 48000
    assert abs(rms_dbfs(out) - (-24.0)) < 1.0


async def test_music_is_shared_between_mixers(tone_file):
    a = await started(tone_file, 16000)
    b = await started(tone_file, 16000)
    c = await started(tone_file, 8000)
    assert a._loop is b._loop
    assert np.shares_memory(a._loop.samples, b._loop.samples)
    assert c._loop is not a._loop
    assert load_music_loop(tone_file, 16000, -24.0) is a._loop
    assert not a._loop.samples.flags.writeable


@pytest.mark.parametrize("fmt,ext", [("FLAC", "flac"), ("OGG", "ogg"), ("MP3", "mp3")])
async def test_decodes_flac_ogg_mp3(tmp_path, fmt, ext):
    path = write_tone(tmp_path / f"tone.{ext}", rate=22050, fmt=fmt, seconds=2.0)
    mixer = await enabled_steady(path, 16000)
    out = await run_frames(mixer, 50, frame_bytes(16000))
    assert abs(rms_dbfs(out) - (-24.0)) <= 1.0
    assert abs(dominant_frequency(out, 16000) - 440.0) < 3.0


async def test_bundled_music_plays_at_level():
    mixer = await enabled_steady(None, 16000)
    out = await run_frames(mixer, 250, frame_bytes(16000))
    assert abs(rms_dbfs(out) - (-24.0)) <= 1.0
    assert windowed_rms_dbfs(out, 16000, 100).min() > -60.0  # no dead air in the loop


async def test_telephone_band_limit(tmp_path):
    rate = 16000
    t = np.arange(rate * 2) / rate
    mix = 0.2 * np.sin(2 * np.pi * 1000 * t) + 0.2 * np.sin(2 * np.pi * 6000 * t)
    path = tmp_path / "wide.wav"
    sf.write(str(path), mix, rate)
    mixer = await enabled_steady(path, rate, telephone_band=True)
    out = np.frombuffer(await run_frames(mixer, 50, frame_bytes(rate)), np.int16)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(out.size)))
    freqs = np.fft.rfftfreq(out.size, 1 / rate)
    in_band = spectrum[np.abs(freqs - 1000) < 20].max()
    out_band = spectrum[np.abs(freqs - 6000) < 20].max()
    assert 20 * np.log10(in_band / out_band) > 40.0


def test_missing_file_is_refused_at_construction(tmp_path):
    with pytest.raises(HoldMusicError, match="hold music source: file not found"):
        HoldMusicMixer(tmp_path / "nope.wav")


def test_undecodable_file_is_refused_at_construction(tmp_path):
    path = tmp_path / "bad.wav"
    path.write_bytes(b"this is not audio" * 10)
    with pytest.raises(HoldMusicError, match="cannot decode"):
        HoldMusicMixer(path)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"level_dbfs": 3.0}, "level_dbfs"),
        ({"level_dbfs": float("nan")}, "level_dbfs"),
        ({"duck_db": -1}, "duck_db"),
        ({"fade_ms": -5}, "fade_ms"),
        ({"fade_ms": "slow"}, "fade_ms"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(tone_file, kwargs, field):
    with pytest.raises(HoldMusicError, match=f"^{field}: "):
        HoldMusicMixer(tone_file, **kwargs)


async def test_level_change_ramps_to_the_new_level(tone_file):
    rate = 16000
    mixer = await enabled_steady(tone_file, rate)
    before = await run_frames(mixer, 5, frame_bytes(rate))
    await mixer.process_frame(MixerUpdateSettingsFrame(settings={"level_dbfs": -30.0}))
    after = await run_frames(mixer, 50, frame_bytes(rate))
    assert abs(rms_dbfs(after[-2 * 8000 :]) - (-30.0)) < 1.0
    assert max_step(before + after) <= 1.1 * tone_step_bound(-24.0, 440.0, rate)


@pytest.mark.parametrize("before,after", [(12.0, 6.0), (6.0, 20.0)])
async def test_a_duck_depth_changed_mid_call_ducks_by_the_new_depth(tmp_path, before, after):
    """A settings update must still duck (attenuate) the music, by exactly the new depth."""
    rate = 16000
    # 440 whole periods: a loop with an even level across its seam, so each 20 ms of the
    # attack can be compared with the level before the speech.
    seamless = write_tone(tmp_path / "seamless.wav", seconds=1.0)
    mixer = await enabled_steady(seamless, rate, duck_db=before)
    assert abs(await ducking_depth(mixer, rate) - before) <= 1.5
    await run_frames(mixer, 40, frame_bytes(rate))  # the music is back at level
    await mixer.process_frame(MixerUpdateSettingsFrame(settings={"duck_db": after}))
    attack = []
    assert abs(await ducking_depth(mixer, rate, attack) - after) <= 1.5
    *levels, music = attack
    # On the way down the music only gets quieter, never louder than it was, and it
    # ramps (20 ms) rather than jumps: no step larger than the tone's own.
    assert all(-0.5 <= depth <= after + 1.5 for depth in levels), np.round(levels, 1)
    assert np.all(np.diff(levels) > -0.5), np.round(levels, 1)
    assert max_step(music) <= 1.1 * tone_step_bound(-24.0, 440.0, rate)


async def test_an_odd_byte_count_mixes_the_samples_and_passes_the_last_byte(tone_file):
    """A frame with half a sample at its end: the whole samples are mixed as usual."""
    rate = 16000
    a = await enabled_steady(tone_file, rate)
    b = await enabled_steady(tone_file, rate)
    rng = np.random.default_rng(3)
    for _ in range(5):
        body = rng.integers(-3000, 3000, 320, dtype=np.int16).tobytes()
        out = b.mix_now(body + b"\x7f")
        assert len(out) == len(body) + 1 and out[-1:] == b"\x7f"
        assert out[:-1] == a.mix_now(body)
        assert out[:-1] != body  # music is in it


async def test_source_change_crossfades(tone_file, tmp_path):
    rate = 16000
    other = write_tone(tmp_path / "other.wav", freq=660.0, rate=32000, channels=1)
    mixer = await enabled_steady(tone_file, rate)
    await run_frames(mixer, 5, frame_bytes(rate))
    await mixer.process_frame(MixerUpdateSettingsFrame(settings={"source": str(other)}))
    out = await run_frames(mixer, 50, frame_bytes(rate))
    assert abs(dominant_frequency(out[-2 * 8000 :], rate) - 660.0) < 2.0
    assert max_step(out) <= 1.1 * tone_step_bound(-24.0, 660.0, rate)


async def test_unknown_keys_and_bad_values_are_logged_once_and_ignored(tone_file, tmp_path):
    from loguru import logger

    messages = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        mixer = await enabled_steady(tone_file, 16000)
        for _ in range(3):
            settings = {"volume": 0.5, "level_dbfs": 12.0, "source": str(tmp_path / "x.wav")}
            await mixer.process_frame(MixerUpdateSettingsFrame(settings=settings))
        out = await run_frames(mixer, 50, frame_bytes(16000))
    finally:
        logger.remove(sink)
    assert abs(rms_dbfs(out) - (-24.0)) <= 1.0  # still playing, unchanged
    assert len(messages) == 3
    assert any("'volume'" in m for m in messages)
    assert any("level_dbfs" in m for m in messages)
    assert any("file not found" in m for m in messages)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 48000])
def test_bundled_loop_keeps_every_bar(rate):
    """The bundled music is made to loop: no crossfade may cut its last bar short."""
    from pipecat_warm_transfer.audio import bundled_music_path

    info = sf.info(str(bundled_music_path()))
    loop = load_music_loop(None, rate, -24.0)
    assert loop.length == round(info.frames * rate / info.samplerate)
    seam = np.concatenate([loop.samples[loop.length - 200 : loop.length], loop.samples[:200]])
    inner = loop.samples[: loop.length]
    assert max_step(seam) <= max_step(inner)


async def test_loud_input_plus_music_is_exactly_the_saturated_sum():
    """Whichever path mixes (int16 fast add, int32, float), the result is clip(in + music)."""
    a = await enabled_steady(None, 16000, level_dbfs=-3.0, duck_db=0.0)
    b = await enabled_steady(None, 16000, level_dbfs=-3.0, duck_db=0.0)
    for level in (30000, -30000, 1000, 0):
        frame = np.full(320, level, dtype=np.int16)
        for _ in range(20):
            music = np.frombuffer(a.mix_now(bytes(640)), np.int16).astype(np.int32)
            out = np.frombuffer(b.mix_now(frame.tobytes()), np.int16)
            expected = np.clip(music + level, -32768, 32767)
            assert np.array_equal(out, expected)
