"""Keras layers after the backbone: segment outputs back to recordings, pooling, the BirdNET head's
feature slicing and prior weight.

Registered under the ``birdcore`` package like ``birdcore.features.layers``, so a saved ``.keras``
model loads in safe mode; ``keras.ops`` only, so they run under any Keras backend.
"""
from __future__ import annotations

import keras
from keras import ops

from birdcore.models.pooling import pool_segments

_PACKAGE = "birdcore"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SegmentUnflatten(keras.layers.Layer):
    """(batch × n_segments, C) segment outputs → (batch, n_segments, C), using the mask's shape."""

    def call(self, flat, mask):
        shape = ops.shape(mask)
        return ops.reshape(flat, (shape[0], shape[1], ops.shape(flat)[-1]))

    def compute_output_spec(self, flat, mask):
        return keras.KerasTensor((mask.shape[0], mask.shape[1], flat.shape[-1]), dtype=flat.dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RecordingPooling(keras.layers.Layer):
    """Segment logits (batch, n_segments, C) → recording scores (batch, C); see ``pooling.pool_segments``."""

    def __init__(self, *, mode: str, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mode = mode

    def call(self, logits, mask, attention_logits=None):
        return pool_segments(logits, mask, mode=self.mode, attention_logits=attention_logits)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Sigmoid(keras.layers.Layer):
    """Segment logits → segment probabilities, in float32."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, logits):
        return ops.sigmoid(ops.cast(logits, "float32"))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SliceFeatures(keras.layers.Layer):
    """Features [start:stop] of the last axis: (..., F) → (..., stop - start)."""

    def __init__(self, *, start: int, stop: int, **kwargs):
        super().__init__(**kwargs)
        self.start, self.stop = int(start), int(stop)

    def call(self, x):
        return x[..., self.start:self.stop]

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PriorScale(keras.layers.Layer):
    """A learned per-species weight on prior logits (B, W, C), initialised to 1."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, prior):
        return prior * ops.cast(self.scale, prior.dtype)
