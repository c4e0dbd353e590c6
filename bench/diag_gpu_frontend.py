"""Where the converted BirdNET's GPU scores leave LiteRT's (issue #15): the spectrogram front end's steps
jitted on the GPU and on the CPU of the same machine (Keras on JAX), against NumPy's IEEE float32.

    KERAS_BACKEND=jax python3 bench/diag_gpu_frontend.py --dir .dev --json $OUT/diag.json

Reports, per spectrogram branch: how many normalised samples differ from NumPy's (bit-exactness is
what the front end relies on), whether the split products are exact, and the largest relative
difference of the branch output (per mel band) between the GPU and the CPU.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    import jax
    import numpy as np

    jax.config.update("jax_default_matmul_precision", "float32")
    import keras

    from birdcore.models.birdnet import keras_model

    custom = keras_model._layers()
    data = np.load(args.dir / "birdnet_windows.npz")
    x = data["windows"].astype(np.float32) / 32767.0
    model = keras.saving.load_model(args.dir / "birdnet.keras", safe_mode=True, compile=False)
    cpu = jax.devices("cpu")[0]
    out = {"devices": [str(d) for d in jax.devices()]}
    for layer in model.layers:
        if not isinstance(layer, custom["BirdNETSpectrogram"]):
            continue
        r = {}
        s = x - x.min(axis=1, keepdims=True)
        ref = (s / (s.max(axis=1, keepdims=True) + np.float32(layer.eps)) - np.float32(layer.offset)) \
            * np.float32(layer.scale)
        norm = jax.jit(layer.normalise)
        g = np.asarray(norm(x))
        with jax.default_device(cpu):
            c = np.asarray(jax.jit(layer.normalise)(jax.device_put(x, cpu)))
        r["normalise_mismatch_gpu"] = int((g != ref).sum())
        r["normalise_mismatch_cpu"] = int((c != ref).sum())
        r["normalise_max_ulps_gpu"] = float(np.max(np.abs(g - ref) / np.spacing(np.abs(ref) + 1e-30)))
        # exactness of an integer matmul like the split products
        rng = np.random.default_rng(0)
        n = layer.frame_step
        a = rng.integers(-256, 257, size=(64, n)).astype(np.float32)
        b = np.asarray(layer.projection_1)[:n, : 2 * layer.n_mels]  # P1 | P2: exact by design
        exact = a.astype(np.float64) @ b.astype(np.float64)
        mg = np.asarray(jax.jit(lambda u, v: keras.ops.matmul(u, v))(a, b))
        r["matmul_exact_gpu"] = bool(np.array_equal(mg.astype(np.float64), exact))
        r["matmul_max_abs_gpu"] = float(np.abs(mg - exact).max())
        call = jax.jit(layer.call)
        sg = np.asarray(call(x))
        with jax.default_device(cpu):
            sc = np.asarray(jax.jit(layer.call)(jax.device_put(x, cpu)))
        rel = np.abs(sg - sc) / (np.abs(sc) + 1e-30)
        r["spec_max_rel_gpu_vs_cpu"] = float(rel.max())
        r["spec_median_rel_gpu_vs_cpu"] = float(np.median(rel))
        r["spec_band_max_rel"] = [float(v) for v in rel.max(axis=(0, 2, 3))]
        out[layer.name] = r
        print(layer.name, json.dumps({k: v for k, v in r.items() if k != "spec_band_max_rel"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
