"""One training step of the tiny keras_audio model on 1 and on N devices, from the same weights and the
same global batch; prints one JSON line: the largest weight difference and both losses.

Run in a subprocess (the device count is fixed when the backend starts): under JAX with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; under TensorFlow with ``--logical-cpus N``.
Used by ``test_devices.py``.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--logical-cpus", type=int, default=0, help="TensorFlow: split the CPU into this many devices")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--no-augment", action="store_true",
                   help="leave out the model's random augmentation (under MirroredStrategy each replica draws its own)")
    args = p.parse_args()
    if args.logical_cpus:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    import keras
    import numpy as np

    from conftest import tiny_config
    from birdcore.models.base import kind_for
    from birdcore.training.devices import compile_model, training_devices

    cfg = tiny_config(batch_size=4 * args.devices)
    if args.no_augment:
        a = cfg.augment
        a.start_removal = a.time_mask = a.freq_mask = a.db_floor = a.same_species_mix = a.background_noise = False
    kind = kind_for(cfg.model.kind)
    rng = np.random.default_rng(0)
    n = cfg.train.batch_size
    x = rng.normal(scale=0.1, size=(n, int(cfg.train.train_seconds * cfg.audio.sample_rate))).astype("float32")
    y = {"recording": (rng.random((n, 3)) > 0.5).astype("float32")}

    class OneBatch(keras.utils.PyDataset):  # fit's own input path, as in training
        def __len__(self):
            return 1

        def __getitem__(self, idx):
            # fresh arrays for every step, as the training batches are: under MirroredStrategy TensorFlow
            # may write into the arrays a step was given (docs/training.md); handing the same x to the next
            # step fed one replica overwritten audio in about 1 run in 5
            return x.copy(), {k: v.copy() for k, v in y.items()}

    keras.utils.set_random_seed(1)
    start = kind.build(cfg, 3).get_weights()

    def trained(devices):
        keras.utils.set_random_seed(2)  # the same augmentation draws on every device count
        with devices.scope():
            model = devices.adopt(kind.build(cfg, 3))
            model.set_weights(start)  # the same starting point on every device count
            # plain SGD: Adam's steps are about lr wherever a gradient is near zero, whatever its rounding
            compile_model(model, 0.1, optimizer=keras.optimizers.SGD(0.1))
            history = model.fit(OneBatch(), epochs=args.steps, verbose=0, shuffle=False)
            return [np.asarray(w) for w in model.get_weights()], [float(v) for v in history.history["loss"]]

    one, loss_one = trained(training_devices(1))
    many_devices = training_devices(args.devices)
    many, loss_many = trained(many_devices)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(one, many))
    moved = max(float(np.max(np.abs(a - np.asarray(s)))) for a, s in zip(one, start))
    print(json.dumps({"devices": many_devices.n, "backend": keras.backend.backend(), "max_weight_diff": diff,
                      "max_weight_moved": moved, "loss_one": loss_one, "loss_many": loss_many}))


if __name__ == "__main__":
    main()
