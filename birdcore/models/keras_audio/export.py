"""The TF SavedModel serving artifact of a waveform model (``export/`` in a run folder).

Its ``serve`` takes a raw waveform batch (batch, n_samples) float32 at the run's sample rate, of
any length, and returns ``{"recording": (batch, C), "segments": (batch, S, C)}``; it loads with
plain TensorFlow, without birdcore.  Written only under the TensorFlow Keras backend
(``savedmodel_supported``); ``model.keras`` loads under any.
"""
from __future__ import annotations

from pathlib import Path

import keras

from birdcore.io.atomic import replacing

EXPORT_DIR = "export"


def savedmodel_supported() -> bool:
    """Whether ``export_savedmodel`` can run: it needs the TensorFlow Keras backend."""
    return keras.backend.backend() == "tensorflow"


def export_savedmodel(model: keras.Model, path: Path) -> None:
    """Write the SavedModel (replacing any previous one); TensorFlow backend only."""
    import tensorflow as tf

    with replacing(Path(path), directory=True) as tmp:
        model.export(str(tmp), format="tf_saved_model", verbose=False,
                     input_signature=[tf.TensorSpec((None, None), tf.float32, name="waveform")])


def load_savedmodel(path: Path):
    """The loaded SavedModel; call ``.serve(waveform (batch, n) float32)`` → dict of outputs.

    Keep the returned object alive while using ``serve`` (it owns the variables).
    """
    import tensorflow as tf

    return tf.saved_model.load(str(path))
