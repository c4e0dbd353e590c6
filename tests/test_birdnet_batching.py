"""``engines.run_batched``: short batches padded so that backends compiling per input shape compile
few times (one shape on a GPU), and JAX's compiled programs kept on disk between processes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdcore.models.birdnet import engines

ROOT = Path(__file__).resolve().parents[1]


def _batch_size_model():
    """(B, 4) → (B, 1): each row's value is the batch size the model was called with, plus its first
    input (so padding rows cannot leak into the rows returned)."""
    import keras

    class BatchSize(keras.layers.Layer):
        def call(self, x):
            rows = keras.ops.cast(keras.ops.shape(x)[0], "float32")
            return x[:, :1] + rows

    inp = keras.Input((4,))
    return keras.Model(inp, BatchSize()(inp))


@pytest.mark.parametrize("full, expected", [(True, [16] * 21), (False, [16] * 16 + [8] * 5)])
def test_short_batches_are_padded(full, expected):
    model = _batch_size_model()
    x = np.zeros((21, 4), np.float32)
    x[:, 0] = np.arange(21) * 100
    out = engines.run_batched(model, x, batch=16, full_batches=full)
    assert out.shape == (21, 1)
    np.testing.assert_array_equal(out[:, 0] - x[:, 0], expected)


def test_on_a_cpu_short_batches_pad_to_a_power_of_two():
    model = _batch_size_model()
    out = engines.run_batched(model, np.zeros((3, 4), np.float32), batch=16)  # this machine has no GPU
    np.testing.assert_array_equal(out[:, 0], [4, 4, 4])


def test_no_disk_cache_outside_jax():
    assert engines.use_compilation_cache() is None  # TensorFlow here


SCRIPT = r"""
import json, sys
import numpy as np
import keras
from birdcore.models.birdnet import engines
inp = keras.Input((8,))
model = keras.Model(inp, keras.layers.Dense(3)(inp))
out = engines.run_batched(model, np.ones((5, 8), np.float32), batch=4)
import jax
first = jax.config.jax_compilation_cache_dir
again = engines.use_compilation_cache(sys.argv[1])  # a folder already configured is kept
print(json.dumps({"dir": first, "again": str(again), "shape": list(out.shape)}))
"""


def test_jax_keeps_compiled_programs_in_the_cache_folder(tmp_path):
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(PYTHONPATH=str(ROOT), KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", BIRDCLEF_CACHE=str(tmp_path / "cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "other")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    folder = tmp_path / "cache" / "jax-compilation"
    assert result == {"dir": str(folder), "again": str(folder), "shape": [5, 3]}
    assert any(folder.iterdir())  # the compiled programs
    assert not (tmp_path / "other").exists()
