"""Streaming decode of long recordings (field recorders: 1-12 h files) in bounded memory.

:func:`stream_audio` yields a recording as consecutive float32 mono chunks of
shape ``(n,)`` at the requested sample rate (Hz).  The file is read block-wise
with libsndfile, channels are averaged block by block, and the signal is
resampled incrementally with ``soxr.ResampleStream`` at the same quality as
:func:`birdcore.io.audio.decode_audio`, so the concatenation of the chunks equals
``decode_audio(path, sample_rate=...)`` (to float tolerance) while only about
one chunk is held in memory at a time.  :func:`stream_bytes` does the same for a
file's bytes held in memory (an upload), without writing them anywhere.

Every failure is raised as :class:`birdcore.io.audio.AudioError` with the same
one-line reasons as ``decode_audio``.  A failure in the middle of a file is
raised when the iteration reaches it, after the chunks before it were yielded.
"""
from __future__ import annotations

import io
import math
import os
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

from birdcore.io.audio import (AudioError, DecoderMessages, _os_reason, _soundfile_reason, check_file, decode_audio,
                               decode_bytes, states_frame_count, warn_if_truncated)

_RESAMPLE_QUALITY = "HQ"  # the quality decode_audio uses


def stream_audio(path: str | os.PathLike, *, sample_rate: int, chunk_seconds: float = 60.0) -> Iterator[np.ndarray]:
    """Yield float32 mono chunks, each of shape ``(n,)`` at ``sample_rate`` Hz.

    Args:
        path: an audio file.
        sample_rate: output rate in Hz (the model rate).
        chunk_seconds: about how many seconds of audio each chunk holds (the
            resampler's delay makes chunks vary by a few samples; the last one
            is shorter).  Memory use is a small multiple of one chunk.

    Raises:
        AudioError: not found, a directory, empty, not readable, NaN/inf
            samples, no samples, or an error while decoding; the message is
            ``"<path>: <reason>"``.
        ValueError: a non-positive ``sample_rate`` or ``chunk_seconds``.

    Formats libsndfile cannot read (m4a, webm, ...) are decoded in one piece
    with ``decode_audio`` (through its audioread fallback) and yielded in
    chunks, so they are not memory-bounded.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not (chunk_seconds > 0 and math.isfinite(chunk_seconds)):
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds!r}")
    # Checks run when iteration starts (a generator), like every other read error.
    return _stream(path, int(sample_rate), float(chunk_seconds))


def stream_bytes(data: bytes, *, sample_rate: int, name: str = "upload",
                 chunk_seconds: float = 60.0) -> Iterator[np.ndarray]:
    """:func:`stream_audio` for in-memory file bytes (an upload): the same chunks, read from memory,
    so the upload never reaches the disk.  Errors name ``name``, which never touches the filesystem.

    Formats libsndfile cannot read (m4a, webm, ...) go through ``decode_bytes`` whole, whose
    fallback decoder (ffmpeg, where installed) needs a temporary file, deleted at once.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
    if not (chunk_seconds > 0 and math.isfinite(chunk_seconds)):
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds!r}")
    return _stream_bytes(bytes(data), str(name), int(sample_rate), float(chunk_seconds))


def _stream_bytes(data: bytes, label: str, sample_rate: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    if not data:
        raise AudioError(label, "empty file")
    yield from _stream_source(io.BytesIO(data), label, sample_rate, chunk_seconds,
                              whole=lambda: decode_bytes(data, sample_rate=sample_rate, name=label))


def _stream(path, sample_rate: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    label = str(path)
    check_file(path, label)
    yield from _stream_source(path, label, sample_rate, chunk_seconds,
                              whole=lambda: decode_audio(path, sample_rate=sample_rate))


def _stream_source(source, label: str, sample_rate: int, chunk_seconds: float, *, whole) -> Iterator[np.ndarray]:
    """Chunks of ``source`` (a path or a file object) read block-wise with libsndfile; a format it
    does not recognise is decoded in one piece by ``whole()`` and yielded in chunks."""
    decoder = DecoderMessages(label)  # libmpg123's complaints: one log line for the whole file
    try:
        handle = _open(source, label, decoder)
        if handle is None:
            yield from _in_chunks(whole(), sample_rate, chunk_seconds)
            return
        with handle:
            stated = handle.frames if states_frame_count(source, handle.format) else 0
            yield from _read_blocks(handle, label, sample_rate, chunk_seconds, decoder, stated_frames=stated)
    except AudioError:
        decoder.report(failed=True)
        raise
    finally:
        decoder.report()


def _open(source, label: str, decoder: DecoderMessages) -> sf.SoundFile | None:
    """The file (a path or a file object) opened with libsndfile; None for a format libsndfile
    does not recognise."""
    try:
        with decoder.capture():
            return sf.SoundFile(source)
    except sf.LibsndfileError as exc:
        if "not recognised" in (exc.error_string or "").lower():
            return None
        raise AudioError(label, _soundfile_reason(exc)) from None
    except OSError as exc:
        raise AudioError(label, _os_reason(exc)) from None
    except Exception as exc:
        raise AudioError(label, _soundfile_reason(exc)) from None


def _read_blocks(handle: sf.SoundFile, label: str, sample_rate: int, chunk_seconds: float,
                 decoder: DecoderMessages, *, stated_frames: int = 0) -> Iterator[np.ndarray]:
    """Read (block, channels) float32 blocks at the file rate, mix to mono, resample, yield; warn
    when fewer frames decode than the file states (``stated_frames``; 0: not stated)."""
    rate = int(handle.samplerate)
    if rate <= 0:
        raise AudioError(label, "not a readable audio file (invalid sample rate)")
    block = max(1, int(math.ceil(chunk_seconds * rate)))
    resampler = None
    if rate != sample_rate:
        try:
            resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality=_RESAMPLE_QUALITY)
        except Exception as exc:
            raise AudioError(label, f"cannot resample from {rate} Hz ({exc})") from None
    n_in = n_out = 0
    while True:
        try:
            with decoder.capture():
                data = handle.read(block, dtype="float32", always_2d=True)
        except OSError as exc:
            raise AudioError(label, _os_reason(exc)) from None
        except Exception as exc:  # libsndfile errors mid-stream (corrupt or truncated data)
            raise AudioError(label, _soundfile_reason(exc)) from None
        if data.shape[0] == 0:
            break
        n_in += data.shape[0]
        mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
        del data
        if not np.isfinite(mono).all():
            raise AudioError(label, "contains NaN or infinite samples")
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        out = mono if resampler is None else _resample(resampler, mono, label, rate, last=False)
        if out.size:
            n_out += out.size
            yield out
    if n_in == 0:
        raise AudioError(label, "no audio samples")
    warn_if_truncated(label, header_frames=stated_frames, decoded_frames=n_in, rate=rate)
    if resampler is not None:
        tail = _resample(resampler, np.zeros(0, np.float32), label, rate, last=True)
        if tail.size:
            n_out += tail.size
            yield tail
    if n_out == 0:
        raise AudioError(label, "no audio samples")


def _resample(resampler, mono: np.ndarray, label: str, rate: int, *, last: bool) -> np.ndarray:
    try:
        out = resampler.resample_chunk(mono, last=last)
    except Exception as exc:
        raise AudioError(label, f"cannot resample from {rate} Hz ({exc})") from None
    return np.ascontiguousarray(out, dtype=np.float32)


def _in_chunks(wave: np.ndarray, sample_rate: int, chunk_seconds: float) -> Iterator[np.ndarray]:
    """Fallback for formats libsndfile does not stream: the whole decoded wave, yielded in chunks."""
    step = max(1, int(round(chunk_seconds * sample_rate)))
    for start in range(0, wave.size, step):
        yield wave[start:start + step]


_END = object()


def stream_files(paths, *, sample_rate: int, chunk_seconds: float = 60.0, ahead: int = 2):
    """``(path, chunks)`` for each of ``paths`` in order, ``chunks`` being ``stream_audio(path, ...)``'s
    chunks, decoded by a background thread up to ``ahead`` chunks ahead of the consumer, across file
    boundaries: the next file is read while the model scores this one (LiteRT and libsndfile/soxr
    release the GIL).  Memory: about ``ahead`` + 1 chunks.

    Each ``chunks`` must be iterated (fully or partly) before the next pair is asked for; what a
    consumer leaves of a file is skipped.  A file's ``AudioError`` is raised by its ``chunks`` at
    the point ``stream_audio`` would raise it; the other files go on.
    """
    import queue
    import threading

    paths = list(paths)
    items: queue.Queue = queue.Queue(maxsize=max(1, int(ahead)))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        for path in paths:
            try:
                for chunk in stream_audio(path, sample_rate=sample_rate, chunk_seconds=chunk_seconds):
                    if not put(chunk):
                        return
                end = _END
            except BaseException as exc:  # handed to the consumer, raised where stream_audio raises it
                end = exc
            if not put(end):
                return

    def chunks_of(state: dict):
        while True:
            item = items.get()
            if item is _END:
                state["done"] = True
                return
            if isinstance(item, BaseException):
                state["done"] = True
                raise item
            yield item

    worker = threading.Thread(target=produce, name="stream_files", daemon=True)
    worker.start()
    try:
        for path in paths:
            state = {"done": False}
            yield path, chunks_of(state)
            if not state["done"]:  # the consumer stopped early: skip the rest of this file
                try:
                    for _ in chunks_of(state):
                        pass
                except Exception:
                    pass
    finally:
        stop.set()
        worker.join()
