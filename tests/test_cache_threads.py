"""The decode cache is read by training's worker threads: its entries must load without numpy's
header parser, which evaluates the header with ``ast.literal_eval``.  Under Python 3.11 that call
can fail in one thread while another compiles (``SystemError: AST constructor recursion depth
mismatch``, python/cpython#106905), which killed training in the input pipeline
(``[[{{node PyFunc}}]] [[IteratorGetNext]]``) about once in ten demo runs."""
from __future__ import annotations

import ast
import io
import threading

import numpy as np
import pytest
import soundfile as sf

from birdcore.data.cache import DecodeCache, load_npy_mmap, npy_header

RATE = 16000


@pytest.fixture
def cache_and_sources(tmp_path):
    rng = np.random.default_rng(0)
    sources = []
    for i in range(3):
        path = tmp_path / f"r{i}.wav"
        sf.write(path, (0.3 * rng.standard_normal(4000 + 1000 * i)).astype(np.float32), RATE, subtype="FLOAT")
        sources.append(str(path))
    cache = DecodeCache(tmp_path / "cache", sample_rate=RATE)
    cache.build(sources, workers=1)
    return cache, sources


def _racing_parser(*args, **kwargs):
    raise SystemError("AST constructor recursion depth mismatch (before=57, after=45)")


def test_entries_load_without_evaluating_their_header(cache_and_sources, monkeypatch):
    cache, sources = cache_and_sources
    expected = [np.array(np.load(cache.entry_path(s))) for s in sources]
    with monkeypatch.context() as m:  # what another thread's compile() does to literal_eval under 3.11
        m.setattr(ast, "literal_eval", _racing_parser)
        m.setattr(ast, "parse", _racing_parser)
        loaded, problems = [], []
        for src in sources:
            try:
                loaded.append(cache.load(src))
            except BaseException as exc:  # noqa: BLE001 - asserted below, outside the patch
                problems.append(f"{type(exc).__name__}: {exc}")
        reused = cache.build(sources, workers=1).n_reused
    assert problems == []
    for arr, want in zip(loaded, expected):
        assert isinstance(arr, np.memmap) and not arr.flags.writeable and arr.dtype == np.float16
        np.testing.assert_array_equal(arr, want)
    assert all(cache.entry_path(s).exists() for s in sources)  # a good entry is never deleted
    assert reused == len(sources)


def test_threads_load_the_same_audio(cache_and_sources):
    cache, sources = cache_and_sources
    expected = [np.array(cache.load(s)) for s in sources]
    errors: list[BaseException] = []

    def reader():
        try:
            for _ in range(200):
                for src, want in zip(sources, expected):
                    np.testing.assert_array_equal(cache.load(src), want)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("array", [
    np.arange(7, dtype="<f2"), np.ones((3, 5), dtype="<f4"), np.asfortranarray(np.ones((4, 2), dtype="<f8")),
    np.arange(6, dtype=">i4").reshape(2, 3), np.zeros(1, dtype="|u1"),
], ids=["f2", "f4-2d", "fortran", "big-endian", "u1"])
@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_header_reader_agrees_with_numpy(tmp_path, array, version):
    path = tmp_path / "a.npy"
    with open(path, "wb") as handle:
        np.lib.format.write_array(handle, array, version=version)
    with open(path, "rb") as handle:
        dtype, shape, fortran, offset = npy_header(handle)
        handle.seek(0)
        np_version = np.lib.format.read_magic(handle)
        read = np.lib.format.read_array_header_1_0 if np_version == (1, 0) else np.lib.format.read_array_header_2_0
        assert (shape, fortran, dtype) == read(handle) and offset == handle.tell()
    loaded = load_npy_mmap(path)
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    np.testing.assert_array_equal(loaded, array)


def _npy_bytes(array) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("data", [
    b"", b"\x93NUMPY", b"not an npy file at all",
    _npy_bytes(np.arange(10, dtype="<f2"))[:-3],  # truncated data
    _npy_bytes(np.arange(10, dtype="<f2")) + b"\0\0",  # trailing bytes
    _npy_bytes(np.arange(10, dtype="<f2"))[:20],  # truncated header
    _npy_bytes(np.array([{"a": 1}], dtype=object)),  # pickled objects
    _npy_bytes(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i2")])),  # structured dtype
    _npy_bytes(np.arange(3, dtype="<f2")).replace(b"'shape': (3,)", b"'shape': (x,)"),
    _npy_bytes(np.arange(3, dtype="<f2")).replace(b"'fortran_order'", b"'fortran_ordre'"),
], ids=["empty", "magic-only", "foreign", "short-data", "long-data", "short-header", "object", "structured",
        "bad-shape", "bad-key"])
def test_header_reader_rejects_partial_and_foreign_files(tmp_path, data):
    path = tmp_path / "bad.npy"
    path.write_bytes(data)
    with pytest.raises(ValueError):
        load_npy_mmap(path)


def test_a_partial_entry_still_counts_as_missing_and_is_deleted(cache_and_sources):
    cache, sources = cache_and_sources
    entry = cache.entry_path(sources[0])
    entry.write_bytes(entry.read_bytes()[:-10])
    with pytest.raises(KeyError):
        cache.load(sources[0])
    assert not entry.exists()
    report = cache.build(sources, workers=1)
    assert (report.n_decoded, report.n_reused) == (1, 2)
