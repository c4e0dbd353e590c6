"""Waveform augmentations applied by the training input pipeline (numpy).

Spectrogram augmentations (time mask, frequency mask, dB floor) live in the
model as training-only layers (``birdcore.features.layers``).  The ones here need
other recordings or happen before the model: start removal, same-species
mixing and background noise.  Each is a plain function of a waveform and a
``numpy.random.Generator``; ``WaveAugmenter`` applies the enabled ones in a
fixed, named order.  Evaluation never calls any of them.

All waveforms are float32 arrays of shape (n_samples,) at the model rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from birdcore.config import AugmentConfig


def remove_start(wave: np.ndarray, rng: np.random.Generator, *, max_samples: int) -> np.ndarray:
    """Drop k ~ U[0, max_samples] samples from the start; pad zeros at the end to keep the length."""
    k = int(rng.integers(0, max(0, min(max_samples, len(wave) - 1)) + 1))
    if k == 0:
        return wave
    return np.concatenate([wave[k:], np.zeros(k, dtype=wave.dtype)])


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def mix_in(wave: np.ndarray, other: np.ndarray, *, gain: float) -> np.ndarray:
    """Add ``other`` (tiled or cut to ``wave``'s length), scaled to ``gain`` × the RMS of ``wave``."""
    if len(other) == 0:
        return wave
    if len(other) < len(wave):
        other = np.resize(other, len(wave))
    other = other[: len(wave)]
    r_w, r_o = _rms(wave), _rms(other)
    if r_o == 0 or r_w == 0:
        return wave
    return (wave + other * (gain * r_w / r_o)).astype(np.float32)


def colored_noise(n: int, rng: np.random.Generator, *, exponent: float) -> np.ndarray:
    """Noise with power spectrum ∝ 1/f^exponent (0 white, 1 pink, 2 brown), unit RMS, shape (n,)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.arange(n // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / freqs ** (exponent / 2), n=n)
    rms = _rms(noise)
    return (noise / rms if rms > 0 else noise).astype(np.float32)


def add_noise(wave: np.ndarray, noise: np.ndarray, *, snr_db: float) -> np.ndarray:
    """Add ``noise`` at the given signal-to-noise ratio (dB) relative to ``wave``'s RMS."""
    r_w = _rms(wave)
    if r_w == 0:
        return wave
    return mix_in(wave, noise, gain=10 ** (-snr_db / 20))


def noise_slice(bank: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """A random (n,) slice of a random bank entry, wrapping around its end."""
    src = bank[int(rng.integers(len(bank)))]
    start = int(rng.integers(len(src)))
    idx = (start + np.arange(n)) % len(src)
    return src[idx]


def synthetic_noise_bank(sample_rate: int, *, seconds: float = 60.0, seed: int = 0) -> list[np.ndarray]:
    """Coloured noise (exponents 0, 0.5, 1, 1.5, 2), ``seconds`` long each, generated once:
    slicing it is ~40x cheaper than synthesising noise for every example."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    return [colored_noise(n, rng, exponent=e) for e in (0.0, 0.5, 1.0, 1.5, 2.0)]


@dataclass
class WaveAugmenter:
    """Applies the enabled waveform augmentations in order: start removal,
    same-species mix, background noise.

    ``same_species`` is a callable returning another waveform of the same
    species (or None); ``noise_bank`` an optional list of real background
    recordings to draw noise from (otherwise slices of a coloured-noise bank
    made once per augmenter).
    """

    cfg: AugmentConfig
    sample_rate: int
    _synthetic_noise: list[np.ndarray] | None = field(default=None, init=False, repr=False)

    def _noise(self, n: int, rng: np.random.Generator, bank: list[np.ndarray] | None) -> np.ndarray:
        if not bank:
            if self._synthetic_noise is None:
                self._synthetic_noise = synthetic_noise_bank(self.sample_rate)
            bank = self._synthetic_noise
        return noise_slice(bank, n, rng)

    def steps(self) -> list[str]:
        c = self.cfg
        names = []
        if c.start_removal and c.start_removal_max_seconds > 0:
            names.append("start_removal")
        if c.same_species_mix and c.same_species_mix_prob > 0:
            names.append("same_species_mix")
        if c.background_noise and c.background_noise_prob > 0:
            names.append("background_noise")
        return names

    def __call__(self, wave: np.ndarray, rng: np.random.Generator, *,
                 same_species: Callable[[], np.ndarray | None] | None = None,
                 noise_bank: list[np.ndarray] | None = None) -> np.ndarray:
        c = self.cfg
        out = wave
        for step in self.steps():
            if step == "start_removal":
                out = remove_start(out, rng, max_samples=int(c.start_removal_max_seconds * self.sample_rate))
            elif step == "same_species_mix" and same_species is not None and rng.random() < c.same_species_mix_prob:
                other = same_species()
                if other is not None:
                    out = mix_in(out, other, gain=float(rng.uniform(*c.same_species_mix_gain)))
            elif step == "background_noise" and rng.random() < c.background_noise_prob:
                noise = self._noise(len(out), rng, noise_bank)
                out = add_noise(out, noise, snr_db=float(rng.uniform(*c.background_noise_snr_db)))
        return out.astype(np.float32, copy=False)
