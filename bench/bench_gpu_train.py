"""Training throughput of the project's model on whatever device Keras sees, per precision policy.

    python bench/bench_gpu_train.py [--backend jax] [--policies float32 mixed_float16 mixed_bfloat16]
        [--batch-size 8] [--train-seconds 30] [--steps 20] [--species 264]

Builds the real recording model (``birdcore.models.keras_audio.model.build_model``: log-mel frontend and training-only
augmentations inside the model, InceptionV3 with ``weights=None``, weak-label pooling) and times
``train_on_batch`` on batches made by the real input pipeline (``TrainingBatches`` with the waveform
augmentations) from seeded synthetic recordings held in memory, so no dataset is needed.  The same
batches are used for every policy; the float32 policy is the baseline the others are compared with in
the same process.  Also times the input pipeline alone with several thread counts, and optionally
``model.fit`` fed by it with several worker counts, to see whether a device is kept fed; and projects
the time of one epoch over the Cornell training split (19,151 recordings, one crop each).

The model code uses ``keras.ops`` only, so ``--backend jax`` (or ``KERAS_BACKEND``) runs it where
TensorFlow is not installed.  Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORNELL_TRAIN_RECORDINGS = 19151


def synthetic_recordings(n: int, *, sample_rate: int, seed: int) -> list:
    """n seeded recordings of 10-90 s: chirps at a per-recording pitch in noise, float32 (n_samples,)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        seconds = rng.uniform(10, 90)
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        f0 = rng.uniform(1500, 7000)
        chirp = np.sin(2 * np.pi * (f0 * t + 400 * np.sin(2 * np.pi * 3 * t))) * (np.sin(2 * np.pi * 0.5 * t) > 0)
        out.append((0.3 * chirp + 0.05 * rng.standard_normal(len(t))).astype(np.float32))
    return out


def device_name() -> str:
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return ", ".join(sorted({d.device_kind for d in jax.devices()}))
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus) \
            or f"CPU ({os.cpu_count()} cores)"
    return backend


def time_policy(policy: str, cfg, batches: list, n_species: int, *, warmup: int, steps: int) -> dict:
    import keras
    import numpy as np

    from birdcore.models.keras_audio.model import build_model
    from birdcore.training.devices import compile_model

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(cfg, n_species)
        compile_model(model, cfg.train.learning_rate)
        losses = []
        t0 = time.perf_counter()
        for i in range(warmup):  # compilation happens here
            losses.append(float(np.asarray(model.train_on_batch(*batches[i % len(batches)]))))
        compile_s = time.perf_counter() - t0
        times = []
        for i in range(steps):
            x, y = batches[(warmup + i) % len(batches)]
            t = time.perf_counter()
            loss = model.train_on_batch(x, y)
            losses.append(float(np.asarray(loss)))  # forces the step to finish
            times.append(time.perf_counter() - t)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    step = statistics.median(times)
    batch = len(batches[0][0])
    segments = batch * int(np.ceil(batches[0][0].shape[1] / cfg.audio.segment_samples))
    return {"policy": policy, "warmup_s": round(compile_s, 2), "step_s_median": round(step, 4),
            "step_s_min": round(min(times), 4), "step_s_max": round(max(times), 4),
            "recordings_per_s": round(batch / step, 2), "segments_per_s": round(segments / step, 1),
            "cornell_epoch_min": round(CORNELL_TRAIN_RECORDINGS / batch * step / 60, 2),
            "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
            "losses_finite": bool(np.all(np.isfinite(losses)))}


def pipeline_rate(pipe, *, threads: int, batches: int) -> float:
    """Recordings per second that ``threads`` threads get out of the input pipeline alone."""
    from concurrent.futures import ThreadPoolExecutor

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda i: pipe[i % len(pipe)], range(batches)))
    return batches * pipe.batch_size / (time.perf_counter() - t)


def time_fit(cfg, args, make_pipeline, *, workers_list: list[int]) -> list[dict]:
    """Recordings per second of ``model.fit`` fed by the real pipeline (PyDataset worker threads), float32."""
    import keras

    from birdcore.models.keras_audio.model import build_model
    from birdcore.training.devices import compile_model

    keras.backend.clear_session()
    model = build_model(cfg, args.species)
    compile_model(model, cfg.train.learning_rate)
    rows = []
    for i, workers in enumerate([workers_list[0], *workers_list]):  # the first pass only compiles
        pipe = make_pipeline(seed=i, steps_per_epoch=args.fit_steps if i else 3, workers=workers)
        t = time.perf_counter()
        model.fit(pipe, epochs=1, verbose=0)
        if i:
            seconds = time.perf_counter() - t
            rows.append({"workers": workers, "steps": args.fit_steps, "seconds": round(seconds, 2),
                         "recordings_per_s": round(args.fit_steps * args.batch_size / seconds, 1)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=None, help="Keras backend (default: KERAS_BACKEND or tensorflow)")
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_float16", "mixed_bfloat16"])
    p.add_argument("--backbone", default="inception_v3")
    p.add_argument("--batch-size", type=int, default=8, help="recordings per step (the training default)")
    p.add_argument("--train-seconds", type=float, default=30.0, help="crop per recording (6 segments of 5 s)")
    p.add_argument("--species", type=int, default=264)
    p.add_argument("--recordings", type=int, default=48, help="synthetic recordings held in memory")
    p.add_argument("--batches", type=int, default=4, help="distinct batches cycled through")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--pipeline-threads", type=int, nargs="+", default=[1, 2],
                   help="time the input pipeline alone with these thread counts")
    p.add_argument("--fit-workers", type=int, nargs="*", default=[],
                   help="also time model.fit fed by the input pipeline with these worker-thread counts (float32)")
    p.add_argument("--fit-steps", type=int, default=40)
    args = p.parse_args()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import keras
    import numpy as np

    from birdcore.features.augment import WaveAugmenter
    from birdcore.config import RunConfig
    from birdcore.data.labels import make_targets
    from birdcore.models.keras_audio.batches import TrainingBatches

    cfg = RunConfig()
    cfg.model.backbone, cfg.model.weights = args.backbone, "none"
    cfg.train.batch_size, cfg.train.train_seconds = args.batch_size, args.train_seconds
    sr = cfg.audio.sample_rate
    waves = synthetic_recordings(args.recordings, sample_rate=sr, seed=0)
    species = np.arange(args.recordings) % args.species
    targets = make_targets(species, [[]] * args.recordings, args.species, secondary_weight=0, label_smoothing=0)

    def make_pipeline(*, seed: int, steps_per_epoch: int | None = None, workers: int = 2) -> TrainingBatches:
        return TrainingBatches(load=lambda i: waves[i], targets=targets, species=species,
                               crop_samples=int(args.train_seconds * sr), batch_size=args.batch_size,
                               augmenter=WaveAugmenter(cfg.augment, sr), seed=seed,
                               steps_per_epoch=steps_per_epoch, workers=workers)

    pipe = make_pipeline(seed=0)
    batches = [pipe[i % len(pipe)] for i in range(args.batches)]  # also builds the augmenter's noise bank

    out = {"backend": keras.backend.backend(), "keras": keras.__version__, "device": device_name(),
           "python": platform.python_version(), "cpu_count": os.cpu_count(), "backbone": args.backbone,
           "batch_recordings": args.batch_size, "train_seconds": args.train_seconds, "species": args.species,
           "policies": []}
    for policy in args.policies:
        try:
            out["policies"].append(time_policy(policy, cfg, batches, args.species,
                                               warmup=args.warmup, steps=args.steps))
        except Exception as exc:  # report and go on with the other policies
            out["policies"].append({"policy": policy, "error": f"{type(exc).__name__}: {exc}"[:500]})
        print(json.dumps(out["policies"][-1]), file=sys.stderr, flush=True)
    out["pipeline_recordings_per_s"] = {
        n: round(pipeline_rate(pipe, threads=n, batches=max(4, 2 * n)), 1) for n in args.pipeline_threads}
    if args.fit_workers:
        out["fit"] = time_fit(cfg, args, make_pipeline, workers_list=args.fit_workers)
    base = next((r for r in out["policies"] if r["policy"] == "float32" and "step_s_median" in r), None)
    for r in out["policies"]:
        if base and "step_s_median" in r:
            r["speedup_vs_float32"] = round(base["step_s_median"] / r["step_s_median"], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
