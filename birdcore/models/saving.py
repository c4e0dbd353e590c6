"""Saving and loading Keras models of runs (``model.keras``, checkpoints).

A ``.keras`` file loads in safe mode (no arbitrary code) with only the project's registered layers
(``birdcore.features.layers``, ``birdcore.models.layers``), under any Keras backend.  Keras (and
with it TensorFlow) is imported by the functions, not by importing this module, so serving code that
needs only ``MODEL_FILE`` (the NumPy head of BirdNET runs) imports no Keras.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from birdcore.io.atomic import replacing

if TYPE_CHECKING:
    import keras

MODEL_FILE = "model.keras"


def _register_layers() -> None:
    from birdcore.features import layers as _features  # noqa: F401  (registers the custom layers for loading)
    from birdcore.models import layers as _models  # noqa: F401


def save_keras(model: keras.Model, path: Path) -> None:
    """Save a ``.keras`` file atomically."""
    with replacing(Path(path), suffix=".keras") as tmp:
        model.save(tmp)


def load_keras(path: Path, *, compile: bool = False) -> keras.Model:
    """A saved model, in safe mode; ``compile`` restores its optimizer state too (resuming)."""
    from birdcore.models.device import import_keras_quietly

    import_keras_quietly()  # TensorFlow's start-up lines, the first time (shown with -v)
    import keras

    _register_layers()
    return keras.models.load_model(path, safe_mode=True, compile=compile)
