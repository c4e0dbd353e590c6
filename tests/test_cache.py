"""Tests for birdcore.data.cache: reuse, invalidation, corruption, failures, parallel builds."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

from birdcore.io.audio import decode_audio
from birdcore.data.cache import CacheReport, DecodeCache, _decode_job, _run_in_pool, default_cache_dir

RATE = 16000


def make_wav(path, seconds=0.5, seed=0, rate=RATE):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    x = 0.4 * np.sin(2 * np.pi * (300 + 2000 * t) * t) + 0.05 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), rate, subtype="FLOAT")
    return path


@pytest.fixture
def sources(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    return [str(make_wav(src / f"r{i}.wav", seed=i)) for i in range(3)]


def test_build_then_reuse(tmp_path, sources):
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    first = cache.build(sources, workers=1)
    assert first.ok == sources and first.failed == {}
    assert (first.n_decoded, first.n_reused) == (3, 0)
    assert first.audio_seconds == pytest.approx(1.5)
    again = cache.build(sources, workers=1)
    assert (again.n_decoded, again.n_reused) == (0, 3) and again.ok == sources
    json.dumps(again.to_dict())

    arr = cache.load(sources[0])
    assert arr.dtype == np.float16 and arr.shape == (8000,)
    assert isinstance(arr, np.memmap) and not arr.flags.writeable
    ref = decode_audio(sources[0], sample_rate=RATE)
    np.testing.assert_allclose(arr.astype(np.float32), ref, rtol=1e-3, atol=1e-4)
    entry = cache.entry_path(sources[0])
    assert entry.parent.name == entry.stem[:2] and entry.parent.parent == tmp_path / "cache"


def test_modified_source_is_redecoded(tmp_path, sources):
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    cache.build(sources, workers=1)
    make_wav(sources[1], seconds=0.25, seed=99)
    st = os.stat(sources[1])
    os.utime(sources[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    report = cache.build(sources, workers=1)
    assert (report.n_decoded, report.n_reused) == (1, 2)
    assert cache.load(sources[1]).shape == (4000,)


def test_settings_change_the_entry(tmp_path, sources):
    a = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    b = DecodeCache(tmp_path / "cache", sample_rate=8000)
    c = DecodeCache(tmp_path / "cache", sample_rate=RATE, max_seconds=0.1)
    assert len({a.entry_path(sources[0]), b.entry_path(sources[0]), c.entry_path(sources[0])}) == 3
    a.build(sources[:1], workers=1)
    with pytest.raises(KeyError):
        b.load(sources[0])
    assert b.build(sources[:1], workers=1).n_decoded == 1
    assert b.load(sources[0]).shape == (4000,)
    c.build(sources[:1], workers=1)
    assert c.load(sources[0]).shape == (1600,)


def test_truncated_entry_is_redecoded(tmp_path, sources):
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    cache.build(sources, workers=1)
    entry = cache.entry_path(sources[2])
    entry.write_bytes(entry.read_bytes()[:-100])
    with pytest.raises(KeyError):
        cache.load(sources[2])
    assert not entry.exists()  # corrupt entries are deleted
    entry.parent.mkdir(exist_ok=True)
    entry.write_bytes(b"\x93NUMPY garbage")  # header that does not parse
    report = cache.build(sources, workers=1)
    assert (report.n_decoded, report.n_reused) == (1, 2)
    assert cache.load(sources[2]).shape == (8000,)


def test_bad_files_are_reported(tmp_path, sources):
    bad = tmp_path / "src" / "bad.mp3"
    bad.write_bytes(b"not audio at all" * 64)
    missing = str(tmp_path / "src" / "gone.wav")
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    report = cache.build([sources[0], str(bad), missing, sources[1]], workers=1)
    assert report.ok == [sources[0], sources[1]]
    assert report.failed[missing] == "file not found"
    assert "not a readable audio file" in report.failed[str(bad)]
    assert "\n" not in report.failed[str(bad)]
    with pytest.raises(KeyError):
        cache.load(missing)


def test_parallel_build(tmp_path, sources):
    bad = tmp_path / "src" / "bad.wav"
    bad.write_text("hello")
    cache = DecodeCache(tmp_path / "cache", sample_rate=22050)
    report = cache.build([*sources, str(bad)], workers=2, progress=True)
    assert report.ok == sources and list(report.failed) == [str(bad)]
    assert report.n_decoded == 3
    assert cache.build(sources, workers=2).n_reused == 3
    assert cache.load(sources[0]).shape == (11025,)


def crash_on_bad(abs_source, entry, sample_rate, max_seconds):
    """Worker task that kills its process for one file, like a decoder segfault."""
    if abs_source.endswith("crash.wav"):
        os._exit(3)
    return _decode_job(abs_source, entry, sample_rate, max_seconds)


def test_worker_crash_only_fails_the_culprit(tmp_path, sources):
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    crash = str(make_wav(tmp_path / "src" / "crash.wav"))
    jobs = [(s, s, str(cache.entry_path(s)), RATE, None) for s in [*sources, crash]]
    results = {}
    _run_in_pool(jobs, 2, lambda src, n, reason: results.setdefault(src, (n, reason)),
                 task=crash_on_bad)
    assert results[crash] == (None, "decoder process crashed")
    assert all(results[s] == (8000, None) for s in sources)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BIRDCLEF_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("BIRDCLEF_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "birdclef")
    assert CacheReport().to_dict()["failed"] == {}


@pytest.mark.parametrize("workers", [1, 2])
def test_a_cache_that_cannot_be_written_stops_the_build(tmp_path, sources, workers):
    """A write failure is the cache's problem, not the recording's: going on would train on part of the data."""
    from birdcore.data.cache import CacheWriteError

    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    blocked = cache.entry_path(sources[1]).parent
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the cache needs a folder")  # a real OS error on write, even as root
    with pytest.raises(CacheWriteError) as err:
        cache.build(sources, workers=workers)
    message = str(err.value)
    assert message.startswith(f"decode cache {tmp_path / 'cache'}: ") and "choose another --cache-dir" in message
    blocked.unlink()
    report = cache.build(sources, workers=1)  # once the cause is gone, the same call finishes
    assert report.ok == sources and report.failed == {}


def test_the_build_refuses_to_start_without_room_for_the_new_entries(tmp_path, sources):
    from birdcore.data.cache import CacheWriteError

    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    assert cache.needed_bytes(sources, {sources[0]: 2.0, sources[1]: float("nan")}) == 2.0 * RATE * 2
    huge = {s: 1e12 for s in sources}  # far more audio than any disk holds
    with pytest.raises(CacheWriteError, match=r"3 recordings need about [\d.]+ [MGT]B .* but only [\d.]+ [MGT]B is free"):
        cache.build(sources, workers=1, durations=huge)
    assert not list((tmp_path / "cache").rglob("*.npy"))  # refused before decoding anything
    assert cache.build(sources, workers=1, durations={s: 0.5 for s in sources}).n_decoded == 3
    assert cache.build(sources, workers=1, durations=huge).n_reused == 3  # cached entries need no room


def test_a_cache_folder_that_is_a_file_is_named(tmp_path, sources):
    from birdcore.data.cache import CacheWriteError

    (tmp_path / "cache").write_text("not a folder")
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    with pytest.raises(CacheWriteError, match="cannot use this folder"):
        cache.build(sources, workers=1, durations={s: 0.5 for s in sources})
