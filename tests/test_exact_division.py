"""``keras_model.correctly_rounded_quotient``: IEEE float32 division recovered from an approximate one.

BirdNET's Keras front end needs the min-max normalised samples bit for bit.  XLA on NVIDIA GPUs
divides with ``div.full.f32`` (up to 2 ulp off): on an H200, 34 % of the normalised samples of 12
real windows differed from NumPy's and the scores moved by up to 7e-4 (bench/diag_gpu_frontend.py).
The tests feed quotients pushed off by up to 2 ulp, as such a division would give, and check that
the correction returns NumPy's float32 quotient exactly, eagerly and compiled, on TensorFlow and JAX.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _case(seed=0, rows=6, n=20000):
    """(s, d, exact, perturbed): s ≥ 0 (rows at scales 1e-4 .. 2, with zeros, tiny values and the
    row maximum), d = max + 1e-6 as the normalisation has it, NumPy's quotient, and the quotient
    moved by -2..2 ulp at random."""
    rng = np.random.default_rng(seed)
    scale = np.array([1e-4, 3e-3, 0.1, 0.7, 1.3, 2.0][:rows], np.float32)[:, None]
    s = (rng.random((rows, n)) * scale).astype(np.float32)
    s[:, :50] = 0.0
    s[:, 50:100] *= np.float32(1e-6)
    d = (s.max(axis=1, keepdims=True) + np.float32(1e-6)).astype(np.float32)
    exact = s / d
    q0 = exact.copy()
    steps = rng.integers(-2, 3, size=exact.shape)
    for k in (1, 2):
        q0 = np.where(steps >= k, np.nextafter(q0, np.float32(np.inf)), q0)
        q0 = np.where(steps <= -k, np.nextafter(q0, np.float32(-np.inf)), q0)
    q0[:, :50] = 0.0  # 0/d is exact everywhere
    return s, d, exact, q0.astype(np.float32)


def test_quotients_off_by_up_to_two_ulp_are_corrected_exactly():
    from birdcore.models.birdnet.keras_model import correctly_rounded_quotient

    s, d, exact, q0 = _case()
    assert (q0 != exact).mean() > 0.5  # the input really is off
    out = np.asarray(correctly_rounded_quotient(s, d, q0))
    assert out.dtype == np.float32
    assert np.array_equal(out, exact), int((out != exact).sum())


def _near_midpoints(seed, n=1 << 20, within=2.0 ** -14):
    """(s, d, exact, wrong): quotients s/d within ``within`` ulp of the midpoint between two float32s
    (found by search: q·d is exact in float64), NumPy's quotient and the other float32 of the pair."""
    rng = np.random.default_rng(seed)
    d = np.float32(0.5 + 0.5 * rng.random())
    q = (np.float32(0.5) + rng.random(n).astype(np.float32) * np.float32(0.49)).astype(np.float32)
    ulp = np.spacing(q).astype(np.float64)
    product = (q.astype(np.float64) + ulp / 2) * np.float64(d)  # the midpoint × d, exactly
    s = product.astype(np.float32)
    near = np.abs(s.astype(np.float64) - product) / np.float64(d) < within * ulp
    s, q = s[near][None, :], q[near][None, :]
    exact = s / np.array([[d]], np.float32)
    wrong = np.where(exact == q, np.nextafter(q, np.float32(1)), q).astype(np.float32)
    return s, np.array([[d]], np.float32), exact, wrong


def test_exact_even_when_the_correction_divides_inexactly():
    """On a GPU the correction's own division is inexact too; emulate a much worse one (2**-12
    relative) and feed quotients on the wrong side of a nearby midpoint, where a plain Newton step
    rounds to the wrong side."""
    import keras

    from birdcore.models.birdnet.keras_model import correctly_rounded_quotient

    def sloppy(a, b):
        return keras.ops.divide(a, b) * np.float32(1 + 2 ** -12)

    s, d, exact, q0 = _case(seed=5)
    out = np.asarray(correctly_rounded_quotient(s, d, q0, divide=sloppy))
    assert np.array_equal(out, exact), int((out != exact).sum())
    s, d, exact, wrong = _near_midpoints(seed=6)
    assert s.shape[1] >= 20
    out = np.asarray(correctly_rounded_quotient(s, d, wrong, divide=sloppy))
    assert np.array_equal(out, exact), int((out != exact).sum())


def test_a_correct_quotient_is_kept():
    from birdcore.models.birdnet.keras_model import correctly_rounded_quotient

    s, d, exact, _ = _case(seed=1)
    assert np.array_equal(np.asarray(correctly_rounded_quotient(s, d, exact)), exact)


def test_compiled_with_xla_on_tensorflow():
    import tensorflow as tf

    from birdcore.models.birdnet.keras_model import correctly_rounded_quotient

    s, d, exact, q0 = _case(seed=2)
    fn = tf.function(correctly_rounded_quotient, jit_compile=True)
    out = fn(tf.constant(s), tf.constant(d), tf.constant(q0)).numpy()
    assert np.array_equal(out, exact), int((out != exact).sum())


SCRIPT = r"""
import json, sys
import numpy as np
import jax
sys.path.insert(0, "tests")
from test_exact_division import _case
from birdcore.models.birdnet.keras_model import correctly_rounded_quotient
s, d, exact, q0 = _case(seed=3)
fn = jax.jit(correctly_rounded_quotient)
off = int((np.asarray(fn(s, d, q0)) != exact).sum())
kept = int((np.asarray(fn(s, d, exact)) != exact).sum())
recip = jax.jit(lambda s, d: correctly_rounded_quotient(s, d, s * (1.0 / d)))  # a reciprocal's quotient
print(json.dumps({"off": off, "kept": kept, "recip": int((np.asarray(recip(s, d)) != exact).sum()),
                  "recip_raw": int(((s * (np.float32(1) / d)) != exact).sum())}))
"""


def test_compiled_with_xla_on_jax():
    pytest.importorskip("jax")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["recip_raw"] > 0  # multiplying by the reciprocal is off on some samples...
    assert result == {**result, "off": 0, "kept": 0, "recip": 0}, result  # ...and corrected


def test_the_spectrogram_layer_corrects_where_division_is_not_exact(monkeypatch):
    """Where the layer corrects (a GPU), its normalisation is still NumPy's bit for bit; on a CPU the
    backend's division is used as it is."""
    import keras

    from birdcore.models.birdnet import keras_model

    layer = keras_model._layers()["BirdNETSpectrogram"](frame_length=512, frame_step=256, n_mels=8, exponent=0.25)
    rng = np.random.default_rng(4)
    x = np.concatenate([0.2 * rng.standard_normal((3, 4096)), 0.8 + 1e-3 * rng.standard_normal((1, 4096))])
    x = x.astype(np.float32)
    s = x - x.min(axis=1, keepdims=True)
    ref = (s / (s.max(axis=1, keepdims=True) + np.float32(layer.eps)) - np.float32(0.5)) * np.float32(2.0)
    monkeypatch.setattr(keras_model, "division_is_exact", lambda: False)
    assert np.array_equal(keras.ops.convert_to_numpy(layer.normalise(x)), ref)
