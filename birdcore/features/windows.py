"""Cutting waveforms into segments and pooling segment scores into recording scores.

These two functions are the single definition of weak-label framing and
pooling (Kumar & Raj 2017): the model's layers call them on tensors, and
batched evaluation calls them on numpy arrays, so training and scoring can
never disagree.  Written with ``keras.ops`` so they accept either.
"""
from __future__ import annotations

from keras import ops

POOLING_MODES = ("max", "mean", "attention")
# Logit given to padded segments before max/softmax.  Bounded on purpose: Keras computes the
# loss of a sigmoid output from its logit, so an all-padding example would otherwise cost 1e4.
_MASKED = -30.0


def frame_segments(waveform, segment_samples: int):
    """Cut waveforms into non-overlapping, zero-padded segments.

    Args:
        waveform: float array (batch, n_samples), audio at the model rate.
        segment_samples: samples per segment.

    Returns:
        segments: (batch, n_segments, segment_samples), n_segments = max(1, ceil(n / segment_samples)).
        mask: float (batch, n_segments), 1.0 where the segment holds any non-zero sample.
            Padding added to batch recordings of different lengths is all zeros,
            so it never takes part in pooling.
    """
    n = ops.shape(waveform)[1]
    n_segments = (n + segment_samples - 1) // segment_samples
    # static lengths (numpy, JAX, known TF shapes) stay Python ints: JAX needs static pad and reshape sizes
    n_segments = max(n_segments, 1) if isinstance(n_segments, int) else ops.maximum(n_segments, 1)
    pad = n_segments * segment_samples - n
    padded = ops.pad(waveform, [[0, 0], [0, pad]])
    segments = ops.reshape(padded, (ops.shape(waveform)[0], n_segments, segment_samples))
    mask = ops.cast(ops.max(ops.abs(segments), axis=-1) > 0, "float32")
    return segments, mask


def pool_segments(logits, mask, *, mode: str, attention_logits=None):
    """Pool segment logits over time into recording scores in [0, 1].

    Args:
        logits: (batch, n_segments, n_species) segment logits.
        mask: (batch, n_segments), 1.0 for real segments, 0.0 for padding.
        mode: "max" (the original system), "mean" (of segment probabilities)
            or "attention" (softmax-weighted mean, weights from ``attention_logits``).
        attention_logits: (batch, n_segments, n_species); only for "attention".

    Returns:
        (batch, n_species) recording probabilities.  A recording with no real
        segment (all silence) scores 0.
    """
    logits = ops.cast(logits, "float32")
    m = ops.expand_dims(ops.cast(mask, "float32"), -1)
    if mode == "max":
        masked = ops.where(m > 0, logits, _MASKED)
        return ops.sigmoid(ops.max(masked, axis=1))
    probs = ops.sigmoid(logits) * m
    if mode == "mean":
        return ops.sum(probs, axis=1) / ops.maximum(ops.sum(m, axis=1), 1.0)
    if mode == "attention":
        if attention_logits is None:
            raise ValueError("attention pooling needs attention_logits")
        att = ops.where(m > 0, ops.cast(attention_logits, "float32"), _MASKED)
        weights = ops.softmax(att, axis=1) * m
        weights = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1e-6)
        return ops.sum(weights * probs, axis=1)
    raise ValueError(f"unknown pooling mode {mode!r}; choose one of {POOLING_MODES}")
