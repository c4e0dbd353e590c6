"""Fine-tuning BirdNET (``--backbone birdnet --fine-tune N``) step by step on any Keras backend and
device: training steps of the real training model (the trainable tail of BirdNET's last N blocks +
the head, ``birdnet_finetune.network.training_model``, ScaledAdam) on cached cut activations, and the
whole served network (``whole_model``) on raw windows; for issue #15 ("on a GPU or a CPU").

Needs only Keras, NumPy and the folder ``bench/bench_birdnet_gpu.py prepare`` writes (the converted
model and real 3 s windows), so it runs on the lent GPU machine (JAX, no TensorFlow, no LiteRT):

    KERAS_BACKEND=jax python3 bench/bench_finetune_gpu.py --dir .dev --blocks 2 5 --json $OUT/finetune.json
    python bench/bench_finetune_gpu.py --dir .dev --blocks 2 --steps 5      # here, TensorFlow on the CPU

Batches have ``--batch`` recordings of ``--windows`` 3 s windows each (the head's training crops),
activations computed by BirdNET's frozen front from the real windows; targets are random (speed only).
Reports the median step time after 2 compiling steps, recordings and windows per second, and checks
that the frozen part did not move while the trained blocks did.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dir", type=Path, required=True, help="folder from bench_birdnet_gpu.py prepare")
    p.add_argument("--blocks", type=int, nargs="+", default=[2, 5], help="N: BirdNET's last N blocks trained")
    p.add_argument("--batch", type=int, default=8, help="recordings per step")
    p.add_argument("--windows", type=int, default=8, help="3 s windows per recording crop")
    p.add_argument("--species", type=int, default=20)
    p.add_argument("--steps", type=int, default=20, help="timed steps after 2 compiling ones")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    import keras
    import numpy as np

    from birdcore.config import RunConfig
    from birdcore.models.base import kind_for
    from birdcore.models.birdnet import runtime as bn
    from birdcore.models.birdnet_finetune import network
    from birdcore.models.birdnet_head.head import build_head
    from birdcore.training.devices import compile_model

    network.register_layers()
    data = np.load(args.dir / "birdnet_windows.npz")
    x = data["windows"].astype(np.float32) / 32767.0
    rng = np.random.default_rng(0)
    result = {"backend": keras.backend.backend(), "keras": keras.__version__, "batch": args.batch,
              "windows": args.windows, "species": args.species, "runs": []}
    try:
        import jax

        result["devices"] = [str(d) for d in jax.devices()]
    except ImportError:
        pass
    kind = kind_for("birdnet_finetune")
    for n in args.blocks:
        birdnet = keras.saving.load_model(args.dir / "birdnet.keras", safe_mode=True, compile=False)
        cfg = bn.birdnet_config(RunConfig())
        cfg.model.kind, cfg.model.backbone, cfg.model.fine_tune = "birdnet_finetune", "birdnet", n
        sources = [[int(c)] for c in rng.choice(6522, size=args.species, replace=False)]
        front, tail = network.split_birdnet(birdnet, n, sources if cfg.model.birdnet_prior else None)
        model = network.training_model(tail, build_head(cfg, args.species))
        compile_model(model, cfg.train.learning_rate, optimizer=kind.optimizer(cfg))
        acts = np.asarray(front.predict_on_batch(x))  # (31, D)
        need = args.batch * args.windows
        idx = rng.integers(0, len(acts), size=need)
        batch = {"embeddings": acts[idx].reshape(args.batch, args.windows, -1),
                 "mask": np.ones((args.batch, args.windows), np.float32)}
        target = {"recording": (rng.random((args.batch, args.species)) < 0.1).astype(np.float32)}
        frozen = [w.copy() for w in front.get_weights()]
        trained_before = [np.asarray(v).copy() for v in tail.trainable_weights]
        t = time.perf_counter()
        model.train_on_batch(batch, target)
        first = time.perf_counter() - t
        model.train_on_batch(batch, target)
        times, losses = [], []
        for _ in range(args.steps):
            t = time.perf_counter()
            loss = model.train_on_batch(batch, target)
            losses.append(float(np.asarray(loss if np.ndim(loss) == 0 else np.ravel(loss)[0])))
            times.append(time.perf_counter() - t)
        step = float(np.median(times))
        frozen_same = all(np.array_equal(a, b) for a, b in zip(frozen, front.get_weights()))
        moved = sum(not np.array_equal(a, np.asarray(b)) for a, b in zip(trained_before, tail.trainable_weights))
        whole = network.whole_model(front, tail, model.get_layer(network.HEAD))
        audio = {"windows": x[None, :args.windows], "mask": np.ones((1, args.windows), np.float32)}
        whole.predict_on_batch(audio)
        t = time.perf_counter()
        for _ in range(3):
            whole.predict_on_batch(audio)
        serve = (time.perf_counter() - t) / 3
        row = {"blocks": n, "trained_variables": len(tail.trainable_weights), "activation_size": int(acts.shape[1]),
               "first_step_s": round(first, 2), "median_step_s": round(step, 4),
               "recordings_per_s": round(args.batch / step, 1), "windows_per_s": round(need / step, 1),
               "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)], "frozen_unchanged": frozen_same,
               "trained_variables_moved": int(moved), "whole_model_one_recording_s": round(serve, 4)}
        result["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
