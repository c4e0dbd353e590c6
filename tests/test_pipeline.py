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
