"""Streaming long recordings: stream_audio equals decode_audio, score_stream equals score."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import AudioError, decode_audio
from birdcore.models.keras_audio.scorer import Scorer
from birdcore.models.keras_audio.model import build_model
from birdcore.io.stream import stream_audio

from conftest import tiny_config

# Keras warns that attention pooling over a single segment is a softmax over one value: true and harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:You are using a softmax over axis 1:UserWarning")


def chirps(seconds: float, rate: int, *, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Seeded rising chirps in noise: float32 (frames,) or (frames, channels), in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f = 1000 + 1500 * (t % 0.5)  # Hz, a chirp every 0.5 s
    x = 0.4 * np.sin(2 * np.pi * np.cumsum(f) / rate) + 0.02 * rng.standard_normal(t.size)
    x = x.astype(np.float32)
    if channels == 1:
        return x
    gains = np.linspace(1.0, 0.3, channels, dtype=np.float32)
    return x[:, None] * gains[None, :]


@pytest.mark.parametrize("fmt,rate,channels", [
    ("wav", 16000, 1),  # no resampling
    ("wav", 44100, 2),
    ("flac", 8000, 1),
    ("flac", 192000, 8),
    ("ogg", 22050, 2),
    ("mp3", 44100, 1),
])
def test_stream_concatenation_equals_decode(tmp_path, fmt, rate, channels):
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, chirps(3.3, rate, channels=channels), rate)
    whole = decode_audio(path, sample_rate=16000)
    chunks = list(stream_audio(path, sample_rate=16000, chunk_seconds=0.7))
    assert len(chunks) >= 4
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in chunks)
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_stream_chunk_length_follows_chunk_seconds(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, chirps(10.0, 16000), 16000)
    sizes = [c.size for c in stream_audio(path, sample_rate=16000, chunk_seconds=2.5)]
    assert sizes == [40000] * 4


@pytest.mark.parametrize("make,reason", [
    (lambda p: None, "file not found"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.mkdir(), "directory"),
    (lambda p: p.write_bytes(np.random.default_rng(1).bytes(3000)), "not a readable audio file"),
])
def test_stream_errors_match_decode(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=reason) as streamed:
        list(stream_audio(path, sample_rate=16000))
    with pytest.raises(AudioError) as whole:
        decode_audio(path, sample_rate=16000)
    assert str(streamed.value) == str(whole.value)
    assert str(path) in str(streamed.value) and "\n" not in str(streamed.value)


def test_nan_in_the_middle_is_an_audio_error(tmp_path):
    x = chirps(4.0, 16000)
    x[50000] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        list(stream_audio(path, sample_rate=16000, chunk_seconds=1.0))


def test_bad_options_are_value_errors(tmp_path):
    with pytest.raises(ValueError):
        stream_audio(tmp_path / "x.wav", sample_rate=0)
    with pytest.raises(ValueError):
        stream_audio(tmp_path / "x.wav", sample_rate=16000, chunk_seconds=0)


@pytest.fixture(scope="module", params=["max", "attention", "mean"])
def scorer(request):
    """A freshly built (untrained) tiny model: 16 kHz, 1 s segments, small batches to force several flushes."""
    cfg = tiny_config()
    cfg.model.pooling = request.param
    return Scorer(build_model(cfg, 3), batch_segments=4)


def split_into_chunks(wave: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """Cut ``wave`` at cycling chunk lengths (samples), including empty chunks."""
    out, start, k = [], 0, 0
    while start < wave.size:
        n = sizes[k % len(sizes)]
        out.append(wave[start:start + n])
        start += n
        k += 1
    return out


@pytest.mark.parametrize("seconds", [0.2, 1.0, 3.0, 11.37])
def test_score_stream_equals_score(scorer, seconds):
    wave = chirps(seconds, 16000, seed=3)
    if seconds > 5:
        wave[16000 * 2:16000 * 5] = 0.0  # whole silent segments: masked out of pooling
    ref = scorer.score(wave)
    seen = []
    got = scorer.score_stream(split_into_chunks(wave, [5923, 0, 16000, 811, 40000]), progress=seen.append)
    assert got.segments.shape == ref.segments.shape == (max(1, int(np.ceil(wave.size / 16000))), 3)
    np.testing.assert_allclose(got.segments, ref.segments, atol=1e-5)
    np.testing.assert_allclose(got.recording, ref.recording, atol=1e-5)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(wave.size / 16000)


def test_score_stream_of_nothing_is_one_silent_segment(scorer):
    ref = scorer.score(np.zeros(0, np.float32))
    got = scorer.score_stream([])
    np.testing.assert_allclose(got.recording, ref.recording, atol=1e-5)
    assert got.segments.shape == (1, 3) and np.isfinite(got.recording).all()


def test_stream_then_score_stream_equals_decode_then_score(tmp_path, scorer):
    path = tmp_path / "rec.flac"
    sf.write(path, chirps(6.5, 44100, channels=2, seed=4), 44100)
    ref = scorer.score(decode_audio(path, sample_rate=16000))
    got = scorer.score_stream(stream_audio(path, sample_rate=16000, chunk_seconds=0.9))
    np.testing.assert_allclose(got.segments, ref.segments, atol=1e-5)
    np.testing.assert_allclose(got.recording, ref.recording, atol=1e-5)
    assert scorer.sample_rate == 16000
