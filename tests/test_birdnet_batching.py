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


@pytest.mark.parametrize("gpu, expected", [(False, 4), (True, 16)])
def test_short_batches_pad_to_a_power_of_two_on_a_cpu_and_to_the_batch_on_a_gpu(monkeypatch, gpu, expected):
    from birdcore.models import device

    monkeypatch.setattr(device, "gpu_visible", lambda: gpu)  # the device decides; the run itself is real
    monkeypatch.setattr(engines, "use_compilation_cache", lambda: None)
    out = engines.run_batched(_batch_size_model(), np.zeros((3, 4), np.float32), batch=16)
    np.testing.assert_array_equal(out[:, 0], [expected] * 3)


def test_no_disk_cache_outside_jax():
    assert engines.use_compilation_cache() is None  # TensorFlow here


SCRIPT = r"""
import json, sys
import numpy as np
import keras
from birdcore.models.birdnet import engines
first = engines.use_compilation_cache()
again = engines.use_compilation_cache(sys.argv[1])  # a folder already configured is kept
inp = keras.Input((8,))
model = keras.Model(inp, keras.layers.Dense(3)(inp))
out = engines.run_batched(model, np.ones((5, 8), np.float32), batch=4)
print(json.dumps({"dir": str(first), "again": str(again), "shape": list(out.shape)}))
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
