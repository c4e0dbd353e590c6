"""Whether the current Keras backend computes on a GPU: what decides mixed precision in training, the
batch padding of BirdNET's Keras engine and whether its front end must correct GPU division.

Keras and the backend are imported only when asked.
"""
from __future__ import annotations


def gpu_visible() -> bool:
    """Whether the current Keras backend sees a GPU (TensorFlow, JAX, PyTorch; False for others)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False
