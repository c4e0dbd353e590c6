"""Does TensorFlow's MirroredStrategy write into the NumPy batch a training step was given?

Each trial is a fresh process (the device count is fixed when TensorFlow starts): the CPU is split into
2 logical devices, and the small-CNN model (the demo pipeline shrunk: 1 s segments, 32 mel bins, width
8, random augmentation off) takes ``--steps`` steps of plain SGD, once on one device and once on two,
from the same weights, with a ``PyDataset`` that hands the *same* arrays to every step (``--fresh``:
a new copy at each step, as ``birdcore.data.batches.EpochBatches`` does).  Per trial it reports the
rows of the batch that changed during the two-device ``fit`` and the largest weight difference from
one device's.  A summary line counts the trials with overwritten rows and with weights apart > 1e-5.

    KERAS_BACKEND=tensorflow python bench/diag_mirrored_reused_batch.py --trials 8
    KERAS_BACKEND=tensorflow python bench/diag_mirrored_reused_batch.py --trials 8 --fresh
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trial(steps: int, fresh: bool) -> dict:
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np

    from birdcore.config import AudioConfig, FeatureConfig, ModelConfig, TrainConfig, demo_config
    from birdcore.models.base import kind_for
    from birdcore.training.devices import compile_model, training_devices

    cfg = demo_config()
    cfg.audio = AudioConfig(sample_rate=16000, segment_seconds=1.0)
    cfg.features = FeatureConfig(n_mels=32, fft_length=512, window_lengths=(512, 256, 128), hop_length=256,
                                 fmin=200.0)
    cfg.model = ModelConfig(backbone="small_cnn", weights="none", pooling="max", dropout=0.0, small_cnn_width=8)
    cfg.train = TrainConfig(batch_size=8, train_seconds=2.0)
    a = cfg.augment
    a.start_removal = a.time_mask = a.freq_mask = a.db_floor = a.same_species_mix = a.background_noise = False
    kind = kind_for(cfg.model.kind)
    rng = np.random.default_rng(0)
    x = rng.normal(scale=0.1, size=(8, int(cfg.train.train_seconds * cfg.audio.sample_rate))).astype("float32")
    y = {"recording": (rng.random((8, 3)) > 0.5).astype("float32")}

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, idx):
            return (x.copy(), {k: v.copy() for k, v in y.items()}) if fresh else (x, y)

    keras.utils.set_random_seed(1)
    start = kind.build(cfg, 3).get_weights()

    def trained(devices):
        with devices.scope():
            model = devices.adopt(kind.build(cfg, 3))
            model.set_weights(start)
            compile_model(model, 0.1, optimizer=keras.optimizers.SGD(0.1))
            model.fit(Batches(), epochs=1, verbose=0, shuffle=False)
            return [np.asarray(w) for w in model.get_weights()]

    one = trained(training_devices(1))
    before = x.copy()
    two = trained(training_devices(2))
    changed = np.flatnonzero(np.abs(x - before).max(axis=1) > 0).tolist()
    return {"fresh": fresh, "steps": steps, "rows_overwritten": changed,
            "max_weight_diff": max(float(np.abs(p - q).max()) for p, q in zip(one, two))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="a new copy of the batch at every step")
    p.add_argument("--trial", action="store_true", help=argparse.SUPPRESS)  # one trial, in this process
    args = p.parse_args()
    if args.trial:
        print(json.dumps(trial(args.steps, args.fresh)), flush=True)
        return 0
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = []
    for _ in range(args.trials):
        cmd = [sys.executable, __file__, "--trial", "--steps", str(args.steps), *(["--fresh"] if args.fresh else [])]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"trials": len(rows), "fresh": args.fresh, "steps": args.steps,
                      "overwritten": sum(bool(r["rows_overwritten"]) for r in rows),
                      "weights_apart": sum(r["max_weight_diff"] > 1e-5 for r in rows)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
