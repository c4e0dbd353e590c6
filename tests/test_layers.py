"""Frontend, spectrogram augmentations, framing and pooling: each does what it should and nothing else."""
import numpy as np
import pytest

from birdcore.features import layers as L
from birdcore.features.windows import frame_segments
from birdcore.models.pooling import pool_segments

SR = 16000


def frontend(**kw):
    args = dict(sample_rate=SR, n_mels=48, fft_length=512, window_lengths=(512, 256, 128), hop_length=256,
                fmin=100.0, fmax=None, top_db=80.0)
    args.update(kw)
    return L.LogMelFrontend(**args)


def tone(freq, seconds=1.0, amp=0.5):
    t = np.arange(int(SR * seconds)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_frontend_shape_range_and_pitch():
    layer = frontend()
    low, high = tone(800), tone(4000)
    img = np.asarray(layer(np.stack([low, high])))
    assert img.shape == (2, 48, 1 + SR // 256, 3)
    assert img.min() >= 0.0 and img.max() <= 1.0 + 1e-6
    peak_low = img[0, :, 10:-10, 0].mean(axis=1).argmax()
    peak_high = img[1, :, 10:-10, 0].mean(axis=1).argmax()
    assert peak_high > peak_low + 10  # higher pitch → higher mel bin


def test_frontend_normalises_per_example_not_per_batch():
    layer = frontend()
    rng = np.random.default_rng(0)
    a = tone(1500) + 0.01 * rng.standard_normal(SR).astype(np.float32)
    loud = (rng.standard_normal(SR) * 0.9).astype(np.float32)
    alone = np.asarray(layer(a[None]))[0]
    with_mate = np.asarray(layer(np.stack([a, loud])))[0]
    quieter = np.asarray(layer((a * 0.05)[None]))[0]
    np.testing.assert_allclose(alone, with_mate, atol=1e-5)
    np.testing.assert_allclose(alone, quieter, atol=1e-3)  # gain does not change the image


def spec_batch(seed=0, shape=(4, 40, 60, 3)):
    return np.random.default_rng(seed).uniform(0.05, 1.0, size=shape).astype(np.float32)


@pytest.mark.parametrize("axis", [1, 2])
def test_axis_mask_zeroes_one_band_only(axis):
    x = spec_batch()
    layer = L.AxisMask(axis=axis, max_fraction=0.5)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    masked_any = False
    for _ in range(5):
        y = np.asarray(layer(x, training=True))
        for b in range(len(x)):
            other_axes = tuple(a for a in (0, 1, 2) if a != axis - 1)
            zero = (y[b] == 0).all(axis=other_axes)  # which positions along the axis are masked
            kept = ~zero
            np.testing.assert_array_equal(y[b].take(np.flatnonzero(kept), axis=axis - 1),
                                          x[b].take(np.flatnonzero(kept), axis=axis - 1))
            idx = np.flatnonzero(zero)
            if len(idx):
                masked_any = True
                assert idx[-1] - idx[0] + 1 == len(idx)  # one contiguous band
                assert len(idx) <= int(x.shape[axis] * 0.5)
    assert masked_any


def test_axis_mask_disabled_is_identity():
    x = spec_batch()
    np.testing.assert_array_equal(np.asarray(L.AxisMask(axis=2, max_fraction=0.5, enabled=False)(x, training=True)), x)


def test_db_floor_raise_is_monotonic_and_keeps_range():
    x = spec_batch(1)
    x[:, 0, 0, 0] = 1.0
    layer = L.DbFloorRaise(max_raise=0.5)
    np.testing.assert_array_equal(np.asarray(layer(x, training=False)), x)
    y = np.asarray(layer(x, training=True))
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    for b in range(len(x)):
        order = np.argsort(x[b].ravel())
        assert np.all(np.diff(y[b].ravel()[order]) >= -1e-6)  # order preserved
        assert y[b].max() == pytest.approx(1.0, abs=1e-5)
    assert (y <= x + 1e-6).all()  # raising the floor never brightens a pixel
    assert (y == 0).any()


def test_frame_segments_pads_and_masks():
    wave = np.zeros((2, 25), np.float32)
    wave[0, :25] = 1.0
    wave[1, :7] = 1.0
    segs, mask = frame_segments(wave, 10)
    segs, mask = np.asarray(segs), np.asarray(mask)
    assert segs.shape == (2, 3, 10)
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    np.testing.assert_array_equal(segs[0].ravel()[:25], 1.0)
    assert (segs[0].ravel()[25:] == 0).all()


def test_pooling_modes_ignore_padding():
    logits = np.array([[[0.0, 2.0], [3.0, -1.0], [9.0, 9.0]]], np.float32)  # last segment is padding
    mask = np.array([[1, 1, 0]], np.float32)
    sig = 1 / (1 + np.exp(-logits[0, :2]))
    np.testing.assert_allclose(np.asarray(pool_segments(logits, mask, mode="max"))[0], sig.max(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(pool_segments(logits, mask, mode="mean"))[0], sig.mean(axis=0), rtol=1e-5)
    att = np.zeros_like(logits)
    np.testing.assert_allclose(np.asarray(pool_segments(logits, mask, mode="attention", attention_logits=att))[0],
                               sig.mean(axis=0), rtol=1e-5)
    att[0, 1, 0] = 50.0  # attention on segment 1 for species 0
    out = np.asarray(pool_segments(logits, mask, mode="attention", attention_logits=att))[0]
    assert out[0] == pytest.approx(sig[1, 0], rel=1e-4)
    with pytest.raises(ValueError):
        pool_segments(logits, mask, mode="median")


def test_all_padding_example_has_a_bounded_loss():
    """Keras takes the loss of a sigmoid output from its logit: padding must not cost thousands."""
    import keras

    logits = np.zeros((1, 2, 3), np.float32)
    mask = np.zeros((1, 2), np.float32)
    rec = pool_segments(logits, mask, mode="max")
    loss = float(keras.losses.BinaryCrossentropy()(np.array([[1.0, 0, 0]]), rec))
    assert loss < 20


@pytest.mark.parametrize("n_mels,fft,sr,fmin,fmax", [(48, 512, SR, 100.0, SR / 2), (128, 2048, 22050, 150.0, 11025.0)])
def test_mel_matrix_is_tensorflows(n_mels, fft, sr, fmin, fmax):
    """The numpy filter bank is the one the frontend used when it called tf.signal (old runs load unchanged)."""
    import tensorflow as tf

    ours = L.mel_weight_matrix(n_mels=n_mels, n_bins=fft // 2 + 1, sample_rate=sr, fmin=fmin, fmax=fmax)
    theirs = tf.signal.linear_to_mel_weight_matrix(num_mel_bins=n_mels, num_spectrogram_bins=fft // 2 + 1,
                                                   sample_rate=sr, lower_edge_hertz=fmin, upper_edge_hertz=fmax)
    assert ours.shape == (fft // 2 + 1, n_mels) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, np.asarray(theirs), atol=2e-5)  # TF rounds in float32


@pytest.mark.parametrize("layer", [L.AxisMask(axis=2, max_fraction=0.5), L.DbFloorRaise(max_raise=0.5)],
                         ids=["time_mask", "db_floor"])
def test_augmentations_draw_anew_inside_a_compiled_function(layer):
    """Random ops are seeded from layer state, so a traced/compiled step does not freeze its draws."""
    import tensorflow as tf

    x = spec_batch(2)
    step = tf.function(lambda s: layer(s, training=True))
    draws = [np.asarray(step(x)) for _ in range(4)]
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])
