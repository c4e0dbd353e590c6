"""Where the current Keras backend computes: whether it sees a GPU (mixed precision in training, the
batch padding of BirdNET's Keras engine) and whether it computes on the CPU alone (BirdNET's front
end corrects float32 division elsewhere).  The answers are fixed for a process, so they are
computed once.

Keras and the backend are imported only when asked.
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
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


@lru_cache(maxsize=None)
def cpu_only() -> bool:
    """Whether the current Keras backend computes on CPU kernels: TensorFlow with no GPU or TPU visible,
    JAX whose default backend is the CPU; False for other backends (not known)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    return False


def import_keras_quietly() -> None:
    """Import Keras (and TensorFlow, probing for GPUs, when it is the Keras backend) without the
    C++ start-up log lines."""
    from birdcore.io.native_stderr import quiet_native_stderr

    with quiet_native_stderr():
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
