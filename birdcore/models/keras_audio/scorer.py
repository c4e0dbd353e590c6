"""Scoring waveforms with a Keras waveform model, batched across recordings.

Recordings of any length are cut into segments (``features.windows``), segments from many
recordings are scored together in fixed-size batches by the segment model, and each recording's
segment logits are pooled with ``models.pooling.pool_segments``: the same definitions the model
itself uses.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

import keras
import numpy as np

from birdcore.models.keras_audio.model import SEGMENT_MODEL_NAME
from birdcore.features.windows import frame_segments, sound_mask, stream_windows
from birdcore.models.base import Scores, sigmoid
from birdcore.models.pooling import pool_segments


class Scorer:
    """Scores waveforms (float32 (n_samples,) at the model rate) with a recording model.

    Args:
        model: the recording model (``birdcore.models.keras_audio.model.build_model`` or a loaded ``.keras``).
        batch_segments: segments scored per forward pass (a fixed shape: traced once).
        use_tf_function: run the segment model through one ``tf.function`` (the fast path under the
            TensorFlow backend); False runs Keras' own compiled ``predict_on_batch``, which works
            under any backend (JAX, say).  Default: True exactly when the backend is TensorFlow.
    """

    def __init__(self, model: keras.Model, *, batch_segments: int = 32, use_tf_function: bool | None = None):
        self.segment_model = model.get_layer(SEGMENT_MODEL_NAME)
        self.segment_samples = int(self.segment_model.input_shape[-1])
        self.pooling = model.get_layer("recording").mode
        self.batch_segments = int(batch_segments)
        if use_tf_function is None:
            use_tf_function = keras.backend.backend() == "tensorflow"
        self._tf_forward = None
        if use_tf_function:
            import tensorflow as tf

            spec = tf.TensorSpec((self.batch_segments, self.segment_samples), tf.float32)
            self._tf_forward = tf.function(self._call, input_signature=[spec])

    def _call(self, x):
        import tensorflow as tf

        out = self.segment_model(x, training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [tf.cast(o, tf.float32) for o in out]

    def _forward(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Segment outputs for one full batch (batch_segments, segment_samples) → list of (batch, C)."""
        if self._tf_forward is not None:
            return [o.numpy() for o in self._tf_forward(chunk)]
        out = self.segment_model.predict_on_batch(chunk)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o, np.float32) for o in out]

    def _run(self, segments: np.ndarray) -> list[np.ndarray]:
        """Segment outputs for (n, segment_samples) → list of (n, C) arrays."""
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(segments), self.batch_segments):
            chunk = segments[start:start + self.batch_segments]
            n = len(chunk)
            if n < self.batch_segments:
                chunk = np.concatenate([chunk, np.zeros((self.batch_segments - n, self.segment_samples), np.float32)])
            parts.append([o[:n] for o in self._forward(np.ascontiguousarray(chunk, np.float32))])
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
            yield Scores(segments=sigmoid(part[0]), recording=self.pool(part, mask))

    def score(self, wave: np.ndarray) -> Scores:
        return next(self.score_many([wave]))

    @property
    def sample_rate(self) -> int | None:
        """The model rate in Hz (from the log-mel frontend), or None when the model has none."""
        for layer in self.segment_model.layers:
            rate = getattr(layer, "sample_rate", None)
            if isinstance(rate, (int, np.integer)) and rate > 0:
                return int(rate)
        return None

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Score one recording given as consecutive waveform chunks, in bounded memory.

        Args:
            chunks: float32 arrays of shape (n_i,) at the model rate, of any lengths
                (e.g. ``birdcore.io.stream.stream_audio``); their concatenation is the recording.
            progress: called after each chunk with the seconds of audio consumed so far (float;
                samples when the model exposes no ``sample_rate``).

        Returns:
            The same ``Scores`` as ``score(np.concatenate(chunks))``: segments (S, C) and
            recording (C,).  The stream is framed exactly as ``frame_segments`` frames the
            whole waveform (the remainder carried between chunks, the last partial segment
            zero-padded, a segment masked out when all its samples are zero); only the
            (S, C) segment outputs are kept, and they are pooled once at the end.
        """
        rate = self.sample_rate if progress is not None else None
        pending: list[np.ndarray] = []  # full segments waiting for a batch, each (k, seg)
        n_pending = n_samples = 0
        outputs: list[list[np.ndarray]] = []  # per forward pass: [(n, C) logits, (n, C) attention?]
        masks: list[np.ndarray] = []

        def flush(final: bool) -> None:
            nonlocal pending, n_pending
            segs = np.concatenate(pending) if len(pending) > 1 else pending[0]
            n_run = len(segs) if final else (len(segs) // self.batch_segments) * self.batch_segments
            outputs.append(self._run(segs[:n_run]))
            masks.append(sound_mask(segs[:n_run]))
            rest = segs[n_run:]
            pending, n_pending = ([rest] if len(rest) else []), len(rest)

        def counted(chunks):
            nonlocal n_samples
            for chunk in chunks:
                n_samples += np.size(chunk)
                yield chunk
                if progress is not None:
                    progress(n_samples / rate if rate else float(n_samples))

        seg = self.segment_samples
        for block in stream_windows(counted(chunks), window=seg, hop=seg):
            pending.append(np.array(block))  # a copy: the chunk it views can go
            n_pending += len(block)
            if n_pending >= self.batch_segments:
                flush(final=False)
        if pending:
            flush(final=True)
        parts = [np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))]
        mask = np.concatenate(masks)
        return Scores(segments=sigmoid(parts[0]), recording=self.pool(parts, mask))

    def with_overlap(self, overlap: float) -> "Scorer":
        """This scorer (segments never overlap: ``overlap`` must be 0)."""
        if overlap:
            raise ValueError("overlapping windows are for BirdNET runs; this model cuts its own fixed segments")
        return self
