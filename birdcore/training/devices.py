"""Where and how training computes: the optimizer, mixed precision, GPUs and distribution.

Backend-agnostic: TensorFlow is imported only under the TensorFlow Keras backend.
"""
from __future__ import annotations

import contextlib
import logging
import os

import keras

from birdcore.models.device import gpu_visible

log = logging.getLogger("birdcore")


def compile_model(model: keras.Model, lr: float, *, weight_decay: float = 0.0, optimizer=None) -> None:
    """Adam (AdamW when ``weight_decay`` > 0), or the kind's own ``optimizer`` (``ModelKind.optimizer``),
    on the recording-level binary cross-entropy."""
    optimizer = optimizer or (keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)
                              if weight_decay > 0 else keras.optimizers.Adam(learning_rate=lr))
    model.compile(optimizer=optimizer,
                  loss={"recording": keras.losses.BinaryCrossentropy()})


PRECISION_MODES = ("auto", "on", "bf16", "off")


def configure_precision(mode: str, *, kind_allows: bool = True) -> str:
    """Set the global Keras dtype policy; returns the policy name used.

    mode "auto" turns on mixed_float16 only when a GPU is visible and the kind of model allows it
    (``kind_allows``: ``ModelKind.mixed_precision``); "on" is
    mixed_float16, "bf16" mixed_bfloat16 (no loss scaling; for GPUs with
    bfloat16 tensor cores, A100 and newer), "off" float32.
    """
    if mode not in PRECISION_MODES:
        raise ValueError(f"mixed precision {mode!r}: choose one of {', '.join(PRECISION_MODES)}")
    if mode == "bf16":
        policy = "mixed_bfloat16"
    else:
        use = mode == "on" or (mode == "auto" and kind_allows and gpu_visible())
        policy = "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def is_tuning_worker() -> bool:
    """True in a keras-tuner distributed worker (KERASTUNER_TUNER_ID set to anything but "chief")."""
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief"


class _NoStrategy:
    """Stands in for a tf.distribute strategy under other Keras backends: one device, plain scope."""

    def scope(self):
        return contextlib.nullcontext()


def distribution_strategy():
    """MirroredStrategy over all local GPUs when there are several (multi-node: set TF_CONFIG
    and use MultiWorkerMirroredStrategy — see README); the default strategy otherwise.  Under a
    non-TensorFlow Keras backend (JAX, say), an object whose ``scope()`` does nothing."""
    if keras.backend.backend() != "tensorflow":
        return _NoStrategy()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        log.info("training on %d GPUs with MirroredStrategy", len(gpus))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
