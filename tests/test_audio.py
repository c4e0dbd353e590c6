"""Tests for birdcore.io.audio: formats, channel mixing, resampling and every error path."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import (
    AUDIO_EXTENSIONS,
    AudioError,
    decode_audio,
    decode_bytes,
    is_audio_path,
)

FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"),
           ".ogg": ("OGG", "VORBIS"), ".mp3": ("MP3", "MPEG_LAYER_III")}


def tone(freq: float, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """Sine tone (plus a little seeded noise), shape (frames,) or (frames, channels)."""
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    x += 0.01 * np.random.default_rng(0).standard_normal(x.size)
    x = x.astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def write(path, data, rate, ext=None):
    fmt, subtype = FORMATS[ext or path.suffix]
    sf.write(path, data, rate, format=fmt, subtype=subtype)
    return path


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("ext", list(FORMATS))
def test_formats_decode_mono_at_rate(tmp_path, ext):
    path = write(tmp_path / f"tone{ext}", tone(1000, 2.0, 44100), 44100)
    y = decode_audio(path, sample_rate=22050)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size - 2.0 * 22050) <= 0.01 * 2.0 * 22050 + 1200  # mp3 padding
    assert abs(peak_hz(y, 22050) - 1000) < 15
    assert np.abs(y).max() < 1.0


def test_stereo_mixed_to_mono(tmp_path):
    left = tone(500, 1.0, 16000)
    right = tone(3000, 1.0, 16000)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000)
    y = decode_audio(path, sample_rate=16000)
    assert y.shape == (16000,)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-3)


@pytest.mark.parametrize("src_rate", [8000, 96000])
def test_resampling(tmp_path, src_rate):
    path = write(tmp_path / "t.flac", tone(1500, 1.0, src_rate, channels=2), src_rate)
    y = decode_audio(path, sample_rate=32000)
    assert abs(y.size - 32000) <= 320
    assert abs(peak_hz(y, 32000) - 1500) < 10


def test_max_seconds_truncates(tmp_path):
    path = write(tmp_path / "t.wav", tone(440, 3.0, 22050), 22050)
    assert decode_audio(path, sample_rate=16000, max_seconds=1.25).shape == (20000,)
    assert decode_audio(path, sample_rate=16000, max_seconds=10).size == 48000


def test_options_are_validated(tmp_path):
    path = write(tmp_path / "t.wav", tone(440, 0.1, 8000), 8000)
    with pytest.raises(ValueError):
        decode_audio(path, sample_rate=0)
    with pytest.raises(ValueError):
        decode_audio(path, sample_rate=8000, max_seconds=-1)


def expect_error(path, fragment: str) -> AudioError:
    with pytest.raises(AudioError) as info:
        decode_audio(path, sample_rate=16000)
    err = info.value
    assert err.path == str(path)
    assert fragment in err.reason
    assert str(err) == f"{path}: {err.reason}" and "\n" not in str(err)
    return err


def test_missing_and_empty(tmp_path):
    expect_error(tmp_path / "nope.wav", "file not found")
    (tmp_path / "empty.mp3").write_bytes(b"")
    expect_error(tmp_path / "empty.mp3", "empty file")


def test_garbage_files(tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(1).bytes(4096))
    expect_error(junk, "not a readable audio file")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    expect_error(text, "not a readable audio file")


def test_nan_samples(tmp_path):
    x = tone(440, 0.5, 16000)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    expect_error(path, "NaN or infinite")


def test_zero_frames(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    expect_error(path, "no audio samples")


@pytest.mark.parametrize("ext", [".mp3", ".ogg", ".flac", ".wav"])
@pytest.mark.parametrize("fraction", [0.5, 0.02])
def test_truncated_files_never_raise_foreign_errors(tmp_path, ext, fraction):
    full = write(tmp_path / f"full{ext}", tone(1000, 2.0, 22050), 22050)
    data = full.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(data[: max(1, int(len(data) * fraction))])
    try:
        y = decode_audio(cut, sample_rate=22050)
    except AudioError as err:
        assert err.path == str(cut)
    else:
        assert y.ndim == 1 and 0 < y.size <= 2.0 * 22050 + 2000
        assert np.isfinite(y).all()


def test_decode_bytes(tmp_path):
    path = write(tmp_path / "t.ogg", tone(2000, 1.0, 48000), 48000)
    y = decode_bytes(path.read_bytes(), sample_rate=22050, name="my song.ogg")
    assert abs(y.size - 22050) <= 300
    assert abs(peak_hz(y, 22050) - 2000) < 15
    assert decode_bytes(path.read_bytes(), sample_rate=22050, max_seconds=0.5).size == 11025


def test_decode_bytes_errors_name_the_upload():
    with pytest.raises(AudioError) as info:
        decode_bytes(b"", sample_rate=16000, name="clip.mp3")
    assert str(info.value) == "clip.mp3: empty file"
    with pytest.raises(AudioError) as info:
        decode_bytes(b"\x00garbage" * 300, sample_rate=16000, name="../../etc/x.m4a")
    assert info.value.path == "../../etc/x.m4a"
    assert "not a readable audio file" in info.value.reason


def test_audio_paths():
    assert set(AUDIO_EXTENSIONS) == {".mp3", ".ogg", ".flac", ".wav"}
    assert is_audio_path("a/B.MP3") and is_audio_path("x.flac")
    assert not is_audio_path("x.m4a") and not is_audio_path("wav")


def test_a_truncated_mp3_decodes_what_is_there_with_one_warning_naming_it(tmp_path, caplog):
    """libsndfile decodes an mp3 cut short (a broken download) without a word; both decoders (whole
    and streamed) then warn once, naming the file and both lengths.  A whole file gives no warning."""
    import logging

    from birdcore.io.stream import stream_audio

    whole = write(tmp_path / "whole.mp3", tone(800, 20.0, 22050), 22050)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with caplog.at_level(logging.WARNING, logger="birdcore"):
        assert decode_audio(whole, sample_rate=22050).size == pytest.approx(20 * 22050, abs=2000)
        assert sum(len(c) for c in stream_audio(whole, sample_rate=22050)) == pytest.approx(20 * 22050, abs=2000)
        assert not caplog.records
        y = decode_audio(cut, sample_rate=22050)
        streamed = sum(len(c) for c in stream_audio(cut, sample_rate=22050, chunk_seconds=2.0))
    assert 4 * 22050 < y.size < 9 * 22050 and streamed == pytest.approx(y.size, abs=2000)
    messages = [r.getMessage() for r in caplog.records if "its header gives" in r.getMessage()]
    assert len(messages) == 2 and all(m.startswith(f"{cut}: decoded ") for m in messages)  # one per decode
    assert all("of the 20.0 s its header gives" in m for m in messages)


def test_a_whole_vbr_mp3_without_a_length_tag_is_not_called_truncated(tmp_path, caplog):
    """Without a Xing/Info or VBRI tag libsndfile estimates an mp3's length from its first frame's
    bitrate: 3 s of silence then noise, variable bitrate, "lasts" about 100 s.  Decoding it whole is
    not a truncation, so no warning."""
    import io
    import logging

    from birdcore.io.stream import stream_audio

    rng = np.random.default_rng(0)
    wave = np.concatenate([np.zeros(3 * 22050), 0.3 * rng.standard_normal(20 * 22050)]).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, wave, 22050, format="MP3", subtype="MPEG_LAYER_III", bitrate_mode="VARIABLE")
    data = buf.getvalue()
    tag = data.find(b"Xing")
    first = max(i for i in range(tag) if data[i] == 0xFF and data[i + 1] & 0xE0 == 0xE0)
    second = next(i for i in range(tag + 4, len(data) - 1) if data[i] == 0xFF and data[i + 1] == data[first + 1])
    untagged = tmp_path / "untagged.mp3"
    untagged.write_bytes(data[:first] + data[second:])  # the tag's frame removed
    with sf.SoundFile(untagged) as handle:
        assert handle.frames > 40 * 22050  # the estimate is far off
    with caplog.at_level(logging.WARNING, logger="birdcore"):
        assert decode_audio(untagged, sample_rate=22050).size == pytest.approx(23 * 22050, abs=2000)
        assert sum(len(c) for c in stream_audio(untagged, sample_rate=22050)) == pytest.approx(23 * 22050, abs=2000)
    assert not [r for r in caplog.records if "its header gives" in r.getMessage()]

