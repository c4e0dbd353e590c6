"""Waveform augmentations: each changes what it should and nothing else."""
import numpy as np
import pytest

from birdcore.features.augment import WaveAugmenter, add_noise, colored_noise, mix_in, noise_slice, remove_start
from birdcore.config import AugmentConfig


def rms(x):
    return float(np.sqrt(np.mean(np.square(x.astype(np.float64)))))


def wave(n=8000, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32) * 0.1


def test_remove_start_shifts_and_pads():
    x = wave()
    rng = np.random.default_rng(3)
    y = remove_start(x, rng, max_samples=2000)
    k = len(x) - len(np.trim_zeros(y, "b"))
    assert len(y) == len(x) and 0 < k <= 2000
    np.testing.assert_array_equal(y[: len(x) - k], x[k:])
    assert (y[len(x) - k:] == 0).all()


def test_mix_in_adds_scaled_partner():
    x, other = wave(seed=1), wave(seed=2) * 5
    y = mix_in(x, other, gain=0.5)
    added = y - x
    assert rms(added) == pytest.approx(0.5 * rms(x), rel=1e-3)
    np.testing.assert_allclose(added / added.std(), other / other.std(), atol=1e-3)  # it is the partner


def test_add_noise_hits_the_snr():
    x = wave(16000)
    noise = colored_noise(16000, np.random.default_rng(0), exponent=1.0)
    y = add_noise(x, noise, snr_db=10.0)
    assert 20 * np.log10(rms(x) / rms(y - x)) == pytest.approx(10.0, abs=0.05)


def test_colored_noise_slopes():
    rng = np.random.default_rng(0)
    white, brown = colored_noise(2 ** 14, rng, exponent=0.0), colored_noise(2 ** 14, rng, exponent=2.0)
    def low_share(x):
        p = np.abs(np.fft.rfft(x)) ** 2
        return p[: len(p) // 8].sum() / p.sum()
    assert low_share(brown) > 0.9 > low_share(white)


def test_augmenter_disabled_is_identity_and_enabled_changes():
    off = AugmentConfig(start_removal=False, same_species_mix=False, background_noise=False)
    x = wave()
    aug = WaveAugmenter(off, 16000)
    assert aug.steps() == []
    np.testing.assert_array_equal(aug(x, np.random.default_rng(0)), x)
    on = AugmentConfig(same_species_mix_prob=1.0, background_noise_prob=1.0)
    aug = WaveAugmenter(on, 16000)
    assert aug.steps() == ["start_removal", "same_species_mix", "background_noise"]
    y = aug(x, np.random.default_rng(0), same_species=lambda: wave(seed=9))
    assert y.shape == x.shape and y.dtype == np.float32 and not np.allclose(x, y)


def test_noise_slice_wraps_and_has_the_right_length():
    bank = [np.arange(10, dtype=np.float32)]
    out = noise_slice(bank, 25, np.random.default_rng(0))
    assert len(out) == 25
    assert np.all((np.diff(out) == 1) | (np.diff(out) == -9))  # consecutive samples, wrapping


def test_background_noise_only_adds_noise_at_the_snr():
    cfg = AugmentConfig(start_removal=False, same_species_mix=False, background_noise_prob=1.0,
                        background_noise_snr_db=(12.0, 12.0))
    x = wave(16000)
    y = WaveAugmenter(cfg, 16000)(x, np.random.default_rng(1))
    assert 20 * np.log10(rms(x) / rms(y - x)) == pytest.approx(12.0, abs=0.05)
