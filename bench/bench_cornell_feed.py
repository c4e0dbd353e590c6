"""Is the device kept fed at Cornell lengths?  Examples delivered by the input pipeline against examples
consumed by training steps, on recordings of the real set's durations read from the decode cache.

    python bench/bench_cornell_feed.py [--recordings 400] [--pipeline-threads 1 2 4 8 16]
        [--policies float32 mixed_float16] [--fit-workers 2 8 16] [--json FILE] [--dry-run]

Writes ``--recordings`` synthetic recordings (``birdcore.data.cornell_scale``: log-normal durations,
median 40 s, mean 57 s, a few over 10 minutes; 16-bit WAV at 22,050 Hz) over ``--species`` species,
builds the decode cache from them with one worker process per core (timed), then in one process:

* delivered: ``TrainingBatches`` (the keras_audio kind's pipeline: a random 30 s crop from each
  memory-mapped cache entry, waveform augmentations with same-species mixing) drained by 1, 2, 4 ...
  threads, recordings per second (``bench_gpu_train.pipeline_rate``);
* consumed: ``train_on_batch`` of the real model (InceptionV3, ``weights=None``, 264 outputs) on
  batches of that pipeline, per precision policy, after warm-up steps (``bench_gpu_train.time_policy``);
* fed: ``model.fit`` on the pipeline as a ``PyDataset`` with 2, 8, 16 ... worker threads (float32).

Prints (and with ``--json`` writes) one JSON object, with ``default_workers`` (the worker threads
training uses on this machine) and ``fed_ratio``: delivered by those threads over consumed by the
fastest policy (below 1: the pipeline starves the device).  ``--dry-run``: 12 recordings, the small
CNN, batch 2, one step each, to check the script on a CPU.  Device and backend as ``bench_gpu_train``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", default=None, help="Keras backend (default: KERAS_BACKEND or tensorflow)")
    p.add_argument("--recordings", type=int, default=400)
    p.add_argument("--species", type=int, default=20, help="species of the recordings (the model has 264 outputs)")
    p.add_argument("--policies", nargs="+", default=["float32", "mixed_float16"])
    p.add_argument("--backbone", default="inception_v3")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--train-seconds", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed train_on_batch steps per policy")
    p.add_argument("--batches", type=int, default=4, help="distinct batches cycled through by the steps")
    p.add_argument("--pipeline-threads", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--pipeline-batches", type=int, default=32, help="batches drained per thread count")
    p.add_argument("--fit-workers", type=int, nargs="*", default=[2, 8, 16])
    p.add_argument("--fit-steps", type=int, default=30)
    p.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder, removed at the end")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true", help="a quick check of the script on a CPU")
    args = p.parse_args()
    if args.dry_run:
        args.recordings, args.species, args.backbone, args.batch_size = 12, 4, "small_cnn", 2
        args.warmup, args.steps, args.batches, args.pipeline_batches, args.fit_steps = 1, 1, 2, 4, 2
        args.pipeline_threads, args.fit_workers = args.pipeline_threads[:2], args.fit_workers[:1]
        args.policies = args.policies[:1]
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args.species_outputs = 264

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="cornell-feed-"))
    out: dict = {"python": platform.python_version(), "cpu_count": os.cpu_count(), "dry_run": args.dry_run}
    try:
        run(args, work, out)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


def run(args, work: Path, out: dict) -> None:
    import numpy as np

    from birdcore.data.cache import DecodeCache
    from birdcore.data.cornell_scale import make_cornell_scale_dataset
    from birdcore.data.metadata import read_metadata

    def save() -> None:  # partial results survive a timeout
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))

    species = [(f"sp{j:02d}", f"Species {j}", f"Synthetica species{j}") for j in range(args.species)]
    gen = make_cornell_scale_dataset(work / "data", species=species, recordings=args.recordings, duration_factor=1.0)
    out["data"] = {**gen, "mean_s": round(gen["audio_seconds"] / gen["recordings"], 1)}
    meta = read_metadata(work / "data")
    cache = DecodeCache(work / "cache", sample_rate=22050)
    t = time.perf_counter()
    report = cache.build(meta["path"].tolist(), workers=os.cpu_count())
    seconds = time.perf_counter() - t
    out["decode_cache"] = {"seconds": round(seconds, 1), "workers": os.cpu_count(),
                           "audio_hours": round(report.audio_seconds / 3600, 2),
                           "x_real_time": round(report.audio_seconds / seconds), "failed": len(report.failed)}
    print(json.dumps(out["decode_cache"]), file=sys.stderr, flush=True)
    save()

    import keras

    import bench_gpu_train as G
    from birdcore.config import RunConfig
    from birdcore.data.batches import default_workers
    from birdcore.data.labels import make_targets
    from birdcore.features.augment import WaveAugmenter
    from birdcore.models.keras_audio.batches import TrainingBatches

    cfg = RunConfig()
    cfg.model.backbone, cfg.model.weights = args.backbone, "none"
    cfg.train.batch_size, cfg.train.train_seconds = args.batch_size, args.train_seconds
    sr = cfg.audio.sample_rate
    paths = meta["path"].tolist()
    codes = sorted(meta["primary"].unique())
    species_idx = np.array([codes.index(c) for c in meta["primary"]])
    targets = make_targets(species_idx, [[]] * len(paths), args.species_outputs, secondary_weight=0, label_smoothing=0)

    def make_pipeline(*, seed: int, steps_per_epoch: int | None = None, workers: int | None = None):
        return TrainingBatches(load=lambda i: cache.load(paths[i]), targets=targets, species=species_idx,
                               crop_samples=int(args.train_seconds * sr), batch_size=args.batch_size,
                               augmenter=WaveAugmenter(cfg.augment, sr), seed=seed, steps_per_epoch=steps_per_epoch,
                               workers=workers)

    pipe = make_pipeline(seed=0, steps_per_epoch=max(args.pipeline_batches, args.batches))
    out.update(backend=keras.backend.backend(), keras=keras.__version__, device=G.device_name(),
               backbone=args.backbone, batch_recordings=args.batch_size, train_seconds=args.train_seconds,
               default_workers=default_workers(), pipeline_queue=pipe.max_queue_size)
    batches = [pipe[i] for i in range(args.batches)]  # also builds the augmenter's noise bank
    out["delivered_recordings_per_s"] = {
        n: round(G.pipeline_rate(pipe, threads=n, batches=max(args.pipeline_batches, 2 * n)), 1)
        for n in args.pipeline_threads}
    print(json.dumps(out["delivered_recordings_per_s"]), file=sys.stderr, flush=True)
    save()
    out["consumed"] = []
    for policy in args.policies:
        try:
            out["consumed"].append(G.time_policy(policy, cfg, batches, args.species_outputs, warmup=args.warmup,
                                                 steps=args.steps))
        except Exception as exc:  # report and go on with the other policies
            out["consumed"].append({"policy": policy, "error": f"{type(exc).__name__}: {exc}"[:500]})
        print(json.dumps(out["consumed"][-1]), file=sys.stderr, flush=True)
        save()
    if args.fit_workers:
        fit_args = argparse.Namespace(species=args.species_outputs, fit_steps=args.fit_steps,
                                      batch_size=args.batch_size)
        out["fit"] = G.time_fit(cfg, fit_args, make_pipeline, workers_list=args.fit_workers)
    rates = [r["recordings_per_s"] for r in out["consumed"] if "recordings_per_s" in r]
    if rates:
        near = min(out["delivered_recordings_per_s"], key=lambda n: abs(n - default_workers()))
        out["fed_ratio"] = round(out["delivered_recordings_per_s"][near] / max(rates), 2)
        out["fed_ratio_threads"] = near


if __name__ == "__main__":
    main()
