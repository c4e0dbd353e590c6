"""Training batches: crops, targets and silence handling."""
import numpy as np

from birdcore.data.batches import random_crop
from birdcore.data.labels import make_targets
from birdcore.models.keras_audio.batches import TrainingBatches


def test_random_crop_positions_and_padding():
    rng = np.random.default_rng(0)
    wave = np.arange(100, dtype=np.float32)
    starts = {int(random_crop(wave, 10, rng)[0]) for _ in range(200)}
    assert min(starts) < 10 and max(starts) > 80  # crops come from anywhere in the recording
    short = random_crop(wave[:5], 10, rng)
    np.testing.assert_array_equal(short, [0, 1, 2, 3, 4, 0, 0, 0, 0, 0])


def test_targets_primary_secondary_and_smoothing():
    y = make_targets([0, 2], [[1], []], 3, secondary_weight=0.3, label_smoothing=0.0)
    np.testing.assert_allclose(y, [[1, 0.3, 0], [0, 0, 1]])
    y = make_targets([1], [[]], 4, secondary_weight=0.0, label_smoothing=0.2)
    np.testing.assert_allclose(y, [[0.05, 0.85, 0.05, 0.05]])


def test_batches_avoid_silent_crops_and_cover_the_data():
    waves = [np.zeros(1000, np.float32) for _ in range(4)]
    for w in waves:
        w[900:] = 0.5  # only the end of each recording has sound
    b = TrainingBatches(load=lambda i: waves[i], targets=np.eye(4, dtype=np.float32), species=np.arange(4),
                        crop_samples=200, batch_size=2, augmenter=None, seed=0, workers=1)
    assert len(b) == 2
    seen = []
    for k in range(len(b)):
        x, y = b[k]
        assert x.shape == (2, 200) and y["recording"].shape == (2, 4)
        assert all(np.any(row) for row in x)
        seen.extend(np.argmax(y["recording"], axis=1))
    assert sorted(seen) == [0, 1, 2, 3]
    b.on_epoch_end()
    assert b.epoch == 1


def test_each_training_batch_is_fresh_memory_that_nothing_else_reads():
    """Under MirroredStrategy TensorFlow may write into the arrays a step was given (in 6 of 16 trials it
    overwrote half the rows: BENCHMARKS.md), so a batch must never share memory with the stored audio
    or embeddings, nor with another batch, nor with the targets."""
    from birdcore.models.birdnet_head.head import EmbeddingBatches

    waves = [np.random.default_rng(i).normal(size=20_000).astype(np.float32) for i in range(4)]
    seqs = [np.random.default_rng(i).normal(size=(6, 8)).astype(np.float32) for i in range(4)]
    targets = np.eye(4, dtype=np.float32)
    audio = TrainingBatches(load=lambda i: waves[i], targets=targets, species=np.arange(4), crop_samples=5_000,
                            batch_size=2, augmenter=None, seed=0)
    embedded = EmbeddingBatches(load=lambda i: seqs[i], targets=targets, windows=3, batch_size=2, seed=0)
    for batches, stored in ((audio, waves), (embedded, seqs)):
        arrays = []
        for idx in (0, 1, 0):  # the same batch asked for twice gets new arrays too
            x, y = batches[idx]
            arrays += [*(x.values() if isinstance(x, dict) else [x]), *y.values()]
        for k, a in enumerate(arrays):
            assert not any(np.shares_memory(a, s) for s in [*stored, batches.targets])
            assert not any(np.shares_memory(a, b) for b in arrays[k + 1:])
