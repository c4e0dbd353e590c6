"""Pooling segment scores over time into recording scores (weak labels, Kumar & Raj 2017).

``pool_segments`` is the single definition: the model's ``RecordingPooling`` layer calls it on
tensors, and scoring calls it on numpy arrays, so training and scoring never disagree.  Written
against an array namespace: ``keras.ops`` by default (tensors or arrays), or ``NUMPY_OPS``, the same
operations in NumPy, for BirdNET runs scored without importing Keras (and TensorFlow).
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

POOLING_MODES = ("max", "mean", "attention")
# Logit given to padded segments before max/softmax.  Bounded on purpose: Keras computes the
# loss of a sigmoid output from its logit, so an all-padding example would otherwise cost 1e4.
_MASKED = -30.0


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


# the keras.ops that pool_segments uses, in NumPy
NUMPY_OPS = SimpleNamespace(
    cast=lambda x, dtype: np.asarray(x, dtype), expand_dims=np.expand_dims, where=np.where, max=np.max,
    sum=np.sum, maximum=np.maximum, softmax=_softmax,
    sigmoid=lambda x: (1.0 / (1.0 + np.exp(-x))).astype(np.result_type(x, np.float32)))


def pool_segments(logits, mask, *, mode: str, attention_logits=None, ops=None):
    """Pool segment logits over time into recording scores in [0, 1].

    Args:
        logits: (batch, n_segments, n_species) segment logits.
        mask: (batch, n_segments), 1.0 for real segments, 0.0 for padding.
        mode: "max" (the original system), "mean" (of segment probabilities)
            or "attention" (softmax-weighted mean, weights from ``attention_logits``).
        attention_logits: (batch, n_segments, n_species); only for "attention".
        ops: the array namespace; default ``keras.ops``, ``NUMPY_OPS`` for NumPy without Keras.

    Returns:
        (batch, n_species) recording probabilities.  A recording with no real
        segment (all silence) scores 0.
    """
    if ops is None:
        from keras import ops
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
