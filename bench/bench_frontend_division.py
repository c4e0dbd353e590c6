"""What correcting the division costs: the converted BirdNET scored with the spectrogram layers'
normalisation using the backend's division alone ("old", what a CPU runs) and corrected by
``keras_model.correctly_rounded_quotient`` ("new", what a GPU runs), passes interleaved in one
process, on the current Keras backend.  Reports seconds per pass (median, best), the ratio
new / old, and the largest logit difference (0 on JAX's CPU; TensorFlow's CPU kernels are not
deterministic to the last bit from one call to the next, about 1e-5).

    python bench/bench_frontend_division.py --windows 32 --repeats 7
    KERAS_BACKEND=jax python bench/bench_frontend_division.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    import keras
    import numpy as np

    from birdcore.models.birdnet import keras_model

    def variant(name):  # read when the model is traced
        keras_model.division_is_exact = (lambda: True) if name == "old" else (lambda: False)

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((args.windows, 144000))).astype(np.float32)
    fns = {}
    for name in ("old", "new"):
        model = keras_model.load_model()  # cached per process: rebuild the traced function per variant
        model = keras.models.clone_model(model)
        model.set_weights(keras_model.load_model().get_weights())
        fns[name] = model
    outs, times = {}, {k: [] for k in fns}
    for name, model in fns.items():  # compile
        variant(name)
        outs[name] = np.concatenate([np.asarray(model.predict_on_batch(x[i:i + args.batch])[0])
                                     for i in range(0, len(x), args.batch)])
    for _ in range(args.repeats):
        for name, model in fns.items():
            variant(name)
            t = time.perf_counter()
            for i in range(0, len(x), args.batch):
                np.asarray(model.predict_on_batch(x[i:i + args.batch])[0])
            times[name].append(time.perf_counter() - t)
    res = {"backend": keras.backend.backend(), "windows": args.windows,
           **{f"{k}_median_s": round(statistics.median(v), 3) for k, v in times.items()},
           **{f"{k}_best_s": round(min(v), 3) for k, v in times.items()},
           "ratio_median": round(statistics.median(times["new"]) / statistics.median(times["old"]), 3),
           "ratio_best": round(min(times["new"]) / min(times["old"]), 3),
           "identical_outputs": bool(np.array_equal(outs["old"], outs["new"])),
           "max_abs_logit_diff": float(np.abs(outs["old"] - outs["new"]).max())}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
