"""Input pipeline vs training step throughput, and decode-cache build time, on a real dataset.

    python bench/bench_pipeline.py --data-dir ../shared/data/xc-pr20 [--backbone inception_v3] [--steps 5]

Prints one JSON object: cache build seconds (cold and warm), examples/s delivered by the
input pipeline (TrainingBatches with its worker threads) and examples/s consumed by one
training step of the model, measured in the same process on the same batches.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from birdcore.data.cache import DecodeCache  # noqa: E402
from birdcore.config import RunConfig  # noqa: E402
from birdcore.data.metadata import read_metadata  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--backbone", default="inception_v3")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--train-seconds", type=float, default=30.0)
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after 2 warm-up steps)")
    p.add_argument("--pipeline-batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    args = p.parse_args()

    cfg = RunConfig()
    cfg.model.backbone, cfg.model.weights = args.backbone, "none"
    cfg.train.batch_size, cfg.train.train_seconds = args.batch_size, args.train_seconds
    df = read_metadata(args.data_dir)
    out = {"data_dir": str(args.data_dir), "recordings": len(df), "cpu_count": os.cpu_count(),
           "backbone": args.backbone, "batch_size": args.batch_size, "train_seconds": args.train_seconds}
    with tempfile.TemporaryDirectory() as tmp:
        cache = DecodeCache(Path(tmp), sample_rate=cfg.audio.sample_rate)
        t = time.perf_counter()
        report = cache.build(df["path"].tolist(), workers=args.workers)
        out["cache_cold_s"] = time.perf_counter() - t
        out["audio_hours"] = report.audio_seconds / 3600
        out["cache_failed"] = len(report.failed)
        t = time.perf_counter()
        cache.build(df["path"].tolist(), workers=args.workers)
        out["cache_warm_s"] = time.perf_counter() - t
        out["decode_realtime_factor"] = report.audio_seconds / out["cache_cold_s"]

        from birdcore.features.augment import WaveAugmenter
        from birdcore.data.labels import make_targets
        from birdcore.models.keras_audio.batches import TrainingBatches

        ok = df[df["path"].isin(report.ok)].reset_index(drop=True)
        codes = sorted(ok["primary"].unique())
        primary = np.array([codes.index(c) for c in ok["primary"]])
        targets = make_targets(primary, [[]] * len(ok), len(codes), secondary_weight=0, label_smoothing=0)
        paths = ok["path"].tolist()
        batches = TrainingBatches(load=lambda i: cache.load(paths[i]), targets=targets, species=primary,
                                  crop_samples=int(args.train_seconds * cfg.audio.sample_rate),
                                  batch_size=args.batch_size, augmenter=WaveAugmenter(cfg.augment, cfg.audio.sample_rate),
                                  seed=0)
        n = min(args.pipeline_batches, len(batches))
        t = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # as PyDataset(workers=2) does
            got = list(pool.map(batches.__getitem__, range(n)))
        dt = time.perf_counter() - t
        out["pipeline_examples_per_s"] = n * args.batch_size / dt

        import keras

        from birdcore.models.keras_audio.model import build_model
        from birdcore.training.devices import compile_model

        model = build_model(cfg, len(codes))
        compile_model(model, 1e-4)
        x, y = got[0]
        for _ in range(2):
            model.train_on_batch(x, y)
        t = time.perf_counter()
        for i in range(args.steps):
            model.train_on_batch(*got[(i + 1) % len(got)])
        dt = time.perf_counter() - t
        out["train_step_s"] = dt / args.steps
        out["train_examples_per_s"] = args.steps * args.batch_size / dt
        out["segments_per_example"] = int(np.ceil(args.train_seconds / cfg.audio.segment_seconds))
        out["pipeline_over_training"] = out["pipeline_examples_per_s"] / out["train_examples_per_s"]
        out["keras"] = keras.__version__
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
