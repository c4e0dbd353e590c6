"""Cutting audio into windows (segments): the single definition, for tensors and for streams.

A recording of n samples cut into windows of ``window`` samples every ``hop`` samples has
``n_windows(n, window, hop)`` = 1 + ceil(max(n − window, 0) / hop) windows; window i covers
samples [i × hop, i × hop + window), the last one zero-padded.  A recording of no samples has one
window of zeros.  With hop = window (the Keras audio model's segments) that is
max(1, ceil(n / window)).

- ``frame_segments``: the model's own framing of a batch of waveforms, on tensors (``keras.ops``);
  hop = window, with a mask of the windows that hold sound.
- ``stream_windows``: the same windows from a recording given as consecutive chunks, in bounded
  memory (numpy), any hop: the Keras scorer's streaming path and BirdNET's 3 s windows use it.
- ``sound_mask``: which windows hold any non-zero sample (the padding rule of pooling).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np


def n_windows(n: int, window: int, hop: int) -> int:
    """Windows of ``window`` samples every ``hop`` samples in a recording of ``n`` samples (>= 1)."""
    return 1 + -(-max(int(n) - window, 0) // hop)


def sound_mask(windows: np.ndarray) -> np.ndarray:
    """(W,) float32: 1.0 for a window (W, window) that holds any non-zero sample, else 0.0 (padding)."""
    return (np.abs(windows).max(axis=-1) > 0).astype(np.float32)


def frame_segments(waveform, segment_samples: int):
    """Cut waveforms into non-overlapping, zero-padded segments (hop = window).

    Args:
        waveform: float array or tensor (batch, n_samples), audio at the model rate.
        segment_samples: samples per segment.

    Returns:
        segments: (batch, n_segments, segment_samples), n_segments = ``n_windows(n, L, L)``.
        mask: float (batch, n_segments), 1.0 where the segment holds any non-zero sample.
            Padding added to batch recordings of different lengths is all zeros,
            so it never takes part in pooling.
    """
    from keras import ops  # here, so that numpy-only users (BirdNET's windows) never import Keras

    n = ops.shape(waveform)[1]
    # static lengths (numpy, JAX, known TF shapes) stay Python ints: JAX needs static pad and reshape sizes
    if isinstance(n, int):
        n_segments = n_windows(n, segment_samples, segment_samples)
    else:
        n_segments = ops.maximum((n + segment_samples - 1) // segment_samples, 1)
    pad = n_segments * segment_samples - n
    padded = ops.pad(waveform, [[0, 0], [0, pad]])
    segments = ops.reshape(padded, (ops.shape(waveform)[0], n_segments, segment_samples))
    mask = ops.cast(ops.max(ops.abs(segments), axis=-1) > 0, "float32")
    return segments, mask


def stream_windows(chunks: Iterable[np.ndarray], *, window: int, hop: int) -> Iterator[np.ndarray]:
    """The windows of a recording given as consecutive float32 chunks (any lengths), yielded as
    blocks (k, window) float32 as soon as the chunks cover them; blocks are never empty, and
    their concatenation is ``n_windows(n, window, hop)`` windows.  Only the samples that later
    windows still need are held, so a long recording is never in memory whole."""
    if hop <= 0 or window <= 0:
        raise ValueError(f"window and hop must be positive samples, got {window} and {hop}")
    buf = np.zeros(0, np.float32)  # samples from absolute index `start` on
    start = n = i = 0  # i: the next window to emit
    for chunk in chunks:
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        n += chunk.size
        buf = np.concatenate([buf, chunk]) if buf.size else chunk
        ready = []
        while i * hop + window <= n:
            offset = i * hop - start
            ready.append(buf[offset:offset + window])
            i += 1
        if ready:
            yield np.stack(ready)
        drop = i * hop - start  # samples no later window needs
        if drop > 0:
            buf, start = buf[drop:], start + drop
    count = n_windows(n, window, hop)
    if i < count:
        tail = np.zeros((count - i, window), np.float32)
        for k in range(count - i):
            part = buf[(i + k) * hop - start:(i + k) * hop - start + window]
            tail[k, :len(part)] = part
        yield tail
