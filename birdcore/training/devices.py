"""Where and how training computes: the optimizer, mixed precision, GPUs and distribution.

Backend-agnostic: TensorFlow is imported only under the TensorFlow Keras backend.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass

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


class DeviceError(ValueError):
    """``--devices`` asks for what this machine or backend cannot give (one line, for the CLI)."""


@dataclass(frozen=True)
class TrainingDevices:
    """The devices one training run computes on, and the scope that places its model there.

    ``n`` devices share every batch: the batch size of the config is the *global* batch, split into
    ``n`` equal shards (so it must be a multiple of ``n``), and the learning rate applies to that
    global batch, unchanged by ``n``.  Under JAX the distribution is ``keras.distribution.DataParallel``
    (one program over all devices: the same step as on one device); under TensorFlow it is
    ``tf.distribute.MirroredStrategy`` (one replica per device, gradients all-reduced).  ``names`` are
    the devices' names (``gpu:0``, ``cpu:1``); ``kind`` is "GPU", "TPU" or "CPU"."""

    n: int
    names: tuple[str, ...]
    kind: str
    _scope: object = None

    def scope(self):
        """A context inside which models are built, loaded, trained and scored on these devices."""
        return self._scope.scope() if self._scope is not None else contextlib.nullcontext()

    @property
    def mirrored(self) -> bool:
        """TensorFlow replicas on several devices (MirroredStrategy), rather than one SPMD program."""
        return self.n > 1 and keras.backend.backend() == "tensorflow"

    def adopt(self, model: keras.Model) -> keras.Model:
        """Make a model built or loaded in ``scope`` take the same training step as on one device.

        Under JAX's DataParallel the step is one program over the global batch already.  Under
        MirroredStrategy each replica sees its shard alone, so batch normalisation is switched to
        statistics over the global batch (``synchronized``, TensorFlow only); ``portable`` switches
        it back before a model is saved for serving."""
        if self.mirrored:
            for layer in _batch_norms(model):
                layer.synchronized = True
        return model

    @staticmethod
    def portable(model: keras.Model) -> keras.Model:
        """Undo ``adopt`` (a saved ``synchronized`` layer cannot be loaded under JAX)."""
        for layer in _batch_norms(model):
            layer.synchronized = False
        return model

    def fit(self, model: keras.Model, *args, **kwargs):
        """``model.fit``; a failure of TensorFlow's MirroredStrategy inside Keras 3 (keras#21069) becomes
        one line that points to the JAX backend, never a silent fall-back to one device."""
        if not self.mirrored:
            return model.fit(*args, **kwargs)
        try:
            return model.fit(*args, **kwargs)
        except Exception as exc:
            if type(exc).__module__.startswith("birdcore") or isinstance(exc, (OSError, MemoryError)):
                raise  # the pipeline's own errors (data, disk) say what they are
            raise DeviceError(_mirrored_failure(self.n, exc)) from exc

    def check_batch(self, batch_size: int) -> None:
        """Refuse a global batch that does not split evenly over the devices (DeviceError)."""
        if batch_size % self.n:
            lower, upper = batch_size - batch_size % self.n, batch_size + self.n - batch_size % self.n
            options = " or ".join(str(b) for b in (lower, upper) if b > 0)
            raise DeviceError(f"--batch-size {batch_size} is the global batch, split over {self.n} devices: it must be a "
                              f"multiple of {self.n} (e.g. {options})")


def _batch_norms(model: keras.Model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included."""
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization)]


def _mirrored_failure(n: int, exc: BaseException) -> str:
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return (f"training on {n} devices with TensorFlow's MirroredStrategy failed ({type(exc).__name__}: {reason}); "
            "Keras 3 with MirroredStrategy has known fit failures (keras-team/keras#21069): train under JAX "
            "(KERAS_BACKEND=jax, keras.distribution.DataParallel), or with --devices 1")


def _visible(backend: str) -> tuple[list[str], list[str]]:
    """(accelerators, CPU devices) the backend sees, by name."""
    if backend == "jax":
        import jax

        accelerators = [f"{d.platform}:{d.id}" for d in jax.devices() if d.platform != "cpu"]
        return accelerators, [f"cpu:{d.id}" for d in jax.devices("cpu")]
    if backend == "tensorflow":
        import tensorflow as tf

        accelerators = [d.name for kind in ("GPU", "TPU") for d in tf.config.list_logical_devices(kind)]
        return accelerators, [d.name for d in tf.config.list_logical_devices("CPU")]
    return [], ["cpu:0"]


def training_devices(requested: int | str | None = None) -> TrainingDevices:
    """The devices to train on: ``requested`` of them (a number), or every visible accelerator for
    None or "all" (one device on a machine without any).  A number larger than one on a machine
    without accelerators uses that many CPU devices (virtual ones: ``XLA_FLAGS=
    --xla_force_host_platform_device_count=N`` for JAX, logical CPU devices for TensorFlow), which
    is how the tests run it.  Never falls back to fewer devices: asking for more than are visible,
    or for several under a backend without data parallelism, is a DeviceError."""
    backend = keras.backend.backend()
    accelerators, cpus = _visible(backend)
    pool = accelerators or cpus
    kind = ("TPU" if any("tpu" in a.lower() for a in accelerators) else "GPU") if accelerators else "CPU"
    n = max(1, len(accelerators)) if requested in (None, "all") else int(requested)
    if n > len(pool):
        seen = f"{len(pool)} {kind} device{'s' if len(pool) != 1 else ''}" + (f" ({', '.join(pool)})" if pool else "")
        raise DeviceError(f"--devices {requested}: the {backend} backend sees only {seen}")
    if n == 1:
        return TrainingDevices(1, tuple(pool[:1]), kind)
    names = tuple(pool[:n])
    if backend == "jax":
        distribution = keras.distribution.DataParallel(devices=list(names))
    elif backend == "tensorflow":
        import tensorflow as tf

        distribution = tf.distribute.MirroredStrategy(devices=list(names))
    else:
        raise DeviceError(f"--devices {requested}: training on several devices needs the jax or tensorflow Keras "
                          f"backend, not {backend} (set KERAS_BACKEND=jax)")
    log.info("training on %d %s devices (%s) with %s; the batch size is the global batch", n, kind, ", ".join(names),
             type(distribution).__name__)
    return TrainingDevices(n, names, kind, distribution)
