"""Scoring waveforms with a trained model, batched across recordings.

Recordings of any length are cut into segments (``segments.frame_segments``),
segments from many recordings are scored together in fixed-size batches by
the segment model, and each recording's segment logits are pooled with
``segments.pool_segments`` — the same two functions the model itself uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from .model import SEGMENT_MODEL_NAME
from .segments import frame_segments, pool_segments


@dataclass
class Scores:
    """One recording's scores: ``segments`` (n_segments, C) and ``recording`` (C,), probabilities."""

    segments: np.ndarray
    recording: np.ndarray


class Scorer:
    """Scores waveforms (float32 (n_samples,) at the model rate) with a recording model.

    Args:
        model: the recording model (``birdcore.model.build_model`` or a loaded ``.keras``).
        batch_segments: segments scored per forward pass (a fixed shape: traced once).
    """

    def __init__(self, model: keras.Model, *, batch_segments: int = 32):
        self.segment_model = model.get_layer(SEGMENT_MODEL_NAME)
        self.segment_samples = int(self.segment_model.input_shape[-1])
        self.pooling = model.get_layer("recording").mode
        self.batch_segments = int(batch_segments)
        spec = tf.TensorSpec((self.batch_segments, self.segment_samples), tf.float32)
        self._forward = tf.function(self._call, input_signature=[spec])

    def _call(self, x):
        out = self.segment_model(x, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [tf.cast(o, tf.float32) for o in out]

    def _run(self, segments: np.ndarray) -> list[np.ndarray]:
        """Segment outputs for (n, segment_samples) → list of (n, C) arrays."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(segments), self.batch_segments):
            chunk = segments[start:start + self.batch_segments]
            n = len(chunk)
            if n < self.batch_segments:
                chunk = np.concatenate([chunk, np.zeros((self.batch_segments - n, self.segment_samples), np.float32)])
            parts.append([o.numpy()[:n] for o in self._forward(tf.constant(chunk))])
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def frame(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        segs, mask = frame_segments(np.asarray(wave, np.float32)[None, :], self.segment_samples)
        return np.asarray(segs)[0], np.asarray(mask)[0]

    def pool(self, outputs: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
        att = outputs[1][None] if len(outputs) > 1 else None
        rec = pool_segments(outputs[0][None], mask[None], mode=self.pooling, attention_logits=att)
        return np.asarray(rec)[0]

    def score_many(self, waves: Iterable[np.ndarray]) -> Iterator[Scores]:
        """Yield ``Scores`` for each waveform, in order, batching segments across recordings."""
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        count = 0
        for wave in waves:
            segs, mask = self.frame(wave)
            pending.append((segs, mask))
            count += len(segs)
            if count >= self.batch_segments:
                yield from self._flush(pending)
                pending, count = [], 0
        if pending:
            yield from self._flush(pending)

    def _flush(self, pending: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[Scores]:
        outputs = self._run(np.concatenate([s for s, _ in pending]))
        start = 0
        for segs, mask in pending:
            part = [o[start:start + len(segs)] for o in outputs]
            start += len(segs)
            yield Scores(segments=1.0 / (1.0 + np.exp(-part[0])), recording=self.pool(part, mask))

    def score(self, wave: np.ndarray) -> Scores:
        return next(self.score_many([wave]))
