"""Bad input never crashes: every public path names the file and the reason in one line and goes on."""
from __future__ import annotations

import io
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import AudioError, decode_audio, decode_bytes
from birdcore.data.cache import DecodeCache
from birdcore.serving.detections import read_journal
from birdcore.runs.loading import load_run
from birdcore.cli.predict import main
from birdcore.io.stream import stream_audio

ROOT = Path(__file__).resolve().parents[1]


def tone(seconds: float, rate: int, *, channels: int = 1, freq: float = 2500.0) -> np.ndarray:
    """A seeded tone in noise, float32 (frames,) or (frames, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    x = 0.4 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    x = x.astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def make_mp3(path: Path) -> bytes:
    sf.write(path, tone(2.0, 16000), 16000, format="MP3", subtype="MPEG_LAYER_III")
    return path.read_bytes()


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected reason fragment) for each kind of unreadable file."""
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(7)
    mp3 = make_mp3(d / "source.mp3")
    files = {
        "empty": ("empty.wav", b"", "empty file"),
        "truncated mp3": ("truncated.mp3", mp3[:200], "not a readable audio file"),
        "random bytes": ("random.flac", rng.bytes(6000), "not a readable audio file"),
        "random mp3": ("random.mp3", rng.bytes(6000), "not a readable audio file"),
        "text file": ("notes.wav", b"field notes, not audio\n" * 40, "not a readable audio file"),
    }
    out = {}
    for key, (name, data, reason) in files.items():
        (d / name).write_bytes(data)
        out[key] = (d / name, reason)
    for key, value in (("nan", np.nan), ("inf", np.inf)):
        x = tone(1.5, 16000)
        x[9000] = value
        sf.write(d / f"{key}.wav", x, 16000, subtype="FLOAT")
        out[key] = (d / f"{key}.wav", "NaN or infinite")
    (d / "source.mp3").unlink()
    return out


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, tuple[Path, float]]:
    """name -> (path, seconds): silence, a 0.2 s clip, 8/44.1/192 kHz and 1/2/8 channels, a cut mp3."""
    d = tmp_path_factory.mktemp("good")
    out = {}
    sf.write(d / "silence.wav", np.zeros(32000, np.float32), 16000)
    out["silence"] = (d / "silence.wav", 2.0)
    sf.write(d / "short.wav", tone(0.2, 16000), 16000)
    out["short"] = (d / "short.wav", 0.2)
    for rate in (8000, 44100, 192000):
        for channels in (1, 2, 8):
            name = f"r{rate}_c{channels}" + (".wav" if rate == 192000 else ".flac")
            sf.write(d / name, tone(1.5, rate, channels=channels), rate)
            out[name] = (d / name, 1.5)
    mp3 = make_mp3(d / "whole.mp3")
    (d / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])  # truncated mid-stream: the first half decodes
    (d / "whole.mp3").unlink()
    out["cut mp3"] = (d / "cut.mp3", None)
    return out


def one_line(err: AudioError, path: Path) -> str:
    text = str(err)
    assert "\n" not in text and text.startswith(str(path))
    return text


@pytest.mark.parametrize("case", ["empty", "truncated mp3", "random bytes", "random mp3", "text file", "nan", "inf"])
def test_bad_file_is_one_line_audio_error(bad_files, case):
    path, reason = bad_files[case]
    with pytest.raises(AudioError) as whole:
        decode_audio(path, sample_rate=16000)
    assert reason in one_line(whole.value, path)
    with pytest.raises(AudioError) as streamed:
        list(stream_audio(path, sample_rate=16000))
    assert reason in one_line(streamed.value, path)
    with pytest.raises(AudioError) as upload:
        decode_bytes(path.read_bytes(), sample_rate=16000, name=path.name)
    assert str(upload.value).startswith(path.name) and "\n" not in str(upload.value)


def test_odd_but_valid_files_decode_and_stream_alike(good_files):
    for name, (path, seconds) in good_files.items():
        whole = decode_audio(path, sample_rate=16000)
        streamed = np.concatenate(list(stream_audio(path, sample_rate=16000, chunk_seconds=0.5)))
        np.testing.assert_allclose(streamed, whole, atol=1e-6, err_msg=name)
        assert np.isfinite(whole).all(), name
        if seconds is not None:
            assert abs(whole.size - seconds * 16000) <= 2, name


def test_silence_and_short_clips_score_finite(trained_run, good_files):
    run = load_run(trained_run)
    scorer = run.scorer()
    silence = scorer.score_stream(stream_audio(good_files["silence"][0], sample_rate=16000))
    assert silence.segments.shape == (2, 3)
    assert np.isfinite(silence.segments).all() and np.isfinite(silence.recording).all()
    short = scorer.score_stream(stream_audio(good_files["short"][0], sample_rate=16000))
    assert short.segments.shape == (1, 3) and np.isfinite(short.recording).all()  # one zero-padded segment
    ref = scorer.score(decode_audio(good_files["short"][0], sample_rate=16000))
    np.testing.assert_allclose(short.recording, ref.recording, atol=1e-5)


def test_predict_scores_good_files_and_reports_bad_ones(trained_run, good_files, bad_files, tmp_path, capsys):
    good = [p for p, _ in good_files.values()]
    bad = [p for p, _ in bad_files.values()]
    mixed = [p for pair in zip(good, bad) for p in pair] + good[len(bad):]
    out = tmp_path / "results.csv"
    status = main([str(trained_run), *map(str, mixed), "--json", "--out", str(out), "--min-score", "0"])
    captured = capsys.readouterr()
    assert status == 1
    assert "Traceback" not in captured.err
    objs = [json.loads(line) for line in captured.out.splitlines()]
    assert [o["file"] for o in objs] == [str(p) for p in mixed if p in good]
    for o in objs:
        assert all(np.isfinite(t["score"]) for t in o["top"]) and o["seconds"] > 0
    error_lines = [line for line in captured.err.splitlines() if " ERROR " in line]
    assert len(error_lines) == len(bad)
    for (path, reason), line in zip(bad_files.values(), error_lines):
        assert str(path) in line and reason in line
    assert read_journal(out.with_name("results.csv.done"))[1] == [str(p) for p in mixed if p in good]


def test_predict_subprocess_has_no_traceback(trained_run, bad_files, good_files):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "birdcore.predict", str(trained_run), str(bad_files["nan"][0]),
                          str(good_files["short"][0]), "--top", "1"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{bad_files['nan'][0]}: contains NaN or infinite samples" in res.stderr
    assert res.stdout.startswith(str(good_files["short"][0]))


def test_decode_cache_build_skips_bad_files(bad_files, good_files, tmp_path):
    cache = DecodeCache(tmp_path / "cache", sample_rate=16000)
    good = [str(p) for p, _ in good_files.values()]
    bad = {str(p): reason for p, reason in bad_files.values()}
    report = cache.build([*bad, *good, str(tmp_path / "missing.wav")], workers=1)
    assert report.ok == good
    assert set(report.failed) == {*bad, str(tmp_path / "missing.wav")}
    for path, reason in bad.items():
        assert reason in report.failed[path] and "\n" not in report.failed[path]
    assert report.failed[str(tmp_path / "missing.wav")] == "file not found"
    assert all(np.isfinite(np.asarray(cache.load(p), np.float32)).all() for p in good)


def test_upload_limit_is_at_least_200_mb():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] >= 200


def test_large_upload_decodes_in_memory():
    rate = 16000
    n = 12_500_000  # float32 samples: a ~50 MB WAV (13 min at 16 kHz)
    audio = np.zeros(n, np.float32)
    audio[-rate * 2:] = tone(2.0, rate)  # silence, then a tone at the very end
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV", subtype="FLOAT")
    del audio
    data = buf.getbuffer().tobytes()
    buf.close()
    assert len(data) > 49_000_000
    wave = decode_bytes(data, sample_rate=rate, name="field.wav")
    assert wave.shape == (n,) and wave.dtype == np.float32
    assert not wave[:-rate * 2].any() and np.abs(wave[-rate:]).max() > 0.3


def test_a_log_line_written_while_native_output_is_hidden_still_reaches_stderr():
    """predict decodes in a thread while the main one imports TensorFlow with its native chatter hidden
    (fd 2 pointed at a temp file); an error logged meanwhile used to vanish with that chatter, now and
    then (it once failed the test above).  Here the log line is written inside such a block, in a
    real process: it must reach stderr, and the native chatter must not."""
    import subprocess
    import sys

    code = ("import os, logging\n"
            "from birdcore.cli.common import setup_logging\n"
            "from birdcore.io.native_stderr import quiet_native_stderr\n"
            "setup_logging()\n"
            "with quiet_native_stderr():\n"
            "    os.write(2, b'native chatter\\n')\n"
            "    logging.getLogger('birdcore').error('bad.wav: contains NaN or infinite samples')\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ERROR bad.wav: contains NaN or infinite samples" in res.stderr
    assert "native chatter" not in res.stderr
