"""Adam with a smaller learning rate for the backbone's variables than for the head's.

Scaling gradients would do nothing under Adam (its steps are normalised by the gradients' own
scale), so the learning rate itself is scaled: ``update_step`` is what every Keras backend calls
once per variable (TensorFlow, JAX), with the step's learning rate.  Registered, so checkpoints
resume with it (``load_keras(..., compile=True)``) in safe mode.
"""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="birdcore")
class ScaledAdam(keras.optimizers.Adam):
    """Adam (decoupled weight decay when ``weight_decay`` > 0) whose learning rate is multiplied by
    ``lr_scale`` for the variables of layers whose name starts with one of ``scaled_prefixes`` (a
    variable's path, ``LAYER/kernel``, names its layer)."""

    def __init__(self, *, scaled_prefixes=(), lr_scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.scaled_prefixes = sorted(str(n) for n in scaled_prefixes)
        self.lr_scale = float(lr_scale)

    def is_scaled(self, variable) -> bool:
        """Whether the (Keras) ``variable`` steps at ``lr_scale`` times the learning rate."""
        return any(part.startswith(tuple(self.scaled_prefixes)) for part in str(variable.path).split("/"))

    def build(self, var_list):
        # update_step may get the backend's own variable (TensorFlow), which has no path: remember the
        # indices of the scaled ones, as Adam finds its moments
        super().build(var_list)
        self._scaled_indices = {self._get_variable_index(v) for v in var_list if self.is_scaled(v)}

    def update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in self._scaled_indices:
            learning_rate = keras.ops.multiply(keras.ops.cast(learning_rate, variable.dtype), self.lr_scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "scaled_prefixes": self.scaled_prefixes, "lr_scale": self.lr_scale}
