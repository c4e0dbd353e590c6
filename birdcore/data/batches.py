"""Training input pipeline: cached audio → random crops → augmentation → batches.

Audio comes from the decode cache as memory-mapped arrays, so an epoch reads
only the crops it uses and never decodes an mp3.  Each epoch draws a fresh
random crop from anywhere in every recording (the original used only the
first 60 s).  Batches are built by worker threads (``keras.utils.PyDataset``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np

from birdcore.features.augment import WaveAugmenter

Loader = Callable[[int], np.ndarray]


def random_crop(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A float32 crop of ``length`` samples from a random position; short waves are zero-padded at the end."""
    n = len(wave)
    if n >= length:
        start = int(rng.integers(0, n - length + 1))
        return np.asarray(wave[start:start + length], dtype=np.float32)
    out = np.zeros(length, dtype=np.float32)
    out[:n] = wave
    return out


def crop_around_sound(wave: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A crop of ``length`` samples containing a randomly chosen non-zero sample (zeros if there is none)."""
    sound = np.flatnonzero(np.asarray(wave))
    if len(sound) == 0:
        return random_crop(wave, length, rng)
    at = int(sound[rng.integers(len(sound))])
    start = int(np.clip(at - rng.integers(length), 0, max(0, len(wave) - length)))
    return random_crop(wave[start:start + length], length, rng)


def make_targets(primary: Sequence[int], secondary: Sequence[Sequence[int]], n_species: int, *,
                 secondary_weight: float, label_smoothing: float) -> np.ndarray:
    """Recording targets (N, C) float32: 1 for the primary species (minus smoothing),
    ``secondary_weight`` for named background species (soft targets), else smoothing / C."""
    y = np.full((len(primary), n_species), label_smoothing / n_species, dtype=np.float32)
    for i, (p, sec) in enumerate(zip(primary, secondary)):
        for s in sec:
            y[i, s] = max(y[i, s], secondary_weight)
        y[i, p] = 1.0 - label_smoothing + label_smoothing / n_species
    return y


class EpochBatches(keras.utils.PyDataset):
    """Shuffled batches of recording rows, reshuffled each epoch from (seed, epoch), so an epoch's
    batches are the same after a resume.  Subclasses build a batch from ``self.rows_of(idx)``."""

    def __init__(self, *, targets: np.ndarray, batch_size: int, seed: int, steps_per_epoch: int | None,
                 workers: int):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=8)
        self.targets = np.asarray(targets, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.n = len(self.targets)
        self.steps = steps_per_epoch or max(1, int(np.ceil(self.n / self.batch_size)))
        self.epoch = 0
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        reps = int(np.ceil(self.steps * self.batch_size / self.n))
        return np.concatenate([rng.permutation(self.n) for _ in range(reps)])

    def set_epoch(self, epoch: int) -> None:
        """Position the pipeline at ``epoch`` (used when resuming)."""
        self.epoch = int(epoch)
        self._order = self._permutation()

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        return self.steps

    def rows_of(self, idx: int) -> tuple[np.ndarray, np.random.Generator]:
        """Recording rows of batch ``idx`` and the batch's own random generator."""
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        return self._order[idx * self.batch_size:(idx + 1) * self.batch_size], rng


class TrainingBatches(EpochBatches):
    """Batches of (waveforms (B, crop_samples), targets (B, C)) for ``model.fit``.

    Args:
        load: ``load(i)`` returns recording i's cached waveform (n_samples,).
        targets: (N, C) float32 recording targets.
        species: (N,) int primary species index, used to find same-species partners.
        crop_samples: samples per training example.
        augmenter: waveform augmentations, or None for none.
        noise_bank: optional real background-noise waveforms.
        steps_per_epoch: batches per epoch; default one pass over the recordings.
    """

    def __init__(self, *, load: Loader, targets: np.ndarray, species: np.ndarray, crop_samples: int,
                 batch_size: int, augmenter: WaveAugmenter | None, seed: int,
                 noise_bank: list[np.ndarray] | None = None, steps_per_epoch: int | None = None,
                 workers: int = 2):
        super().__init__(targets=targets, batch_size=batch_size, seed=seed, steps_per_epoch=steps_per_epoch,
                         workers=workers)
        self.load = load
        self.species = np.asarray(species)
        self.crop_samples = int(crop_samples)
        self.augmenter = augmenter
        self.noise_bank = noise_bank
        self.by_species = {s: np.flatnonzero(self.species == s) for s in np.unique(self.species)}

    def example(self, i: int, rng: np.random.Generator) -> np.ndarray:
        """One augmented training crop (crop_samples,) of recording i.

        A crop of pure digital silence carries no label information, so it is
        replaced by one placed around a random non-silent sample.
        """
        source = self.load(i)
        wave = random_crop(source, self.crop_samples, rng)
        if not np.any(wave):
            wave = crop_around_sound(source, self.crop_samples, rng)
        if self.augmenter is None:
            return wave
        partners = self.by_species[self.species[i]]

        def same_species() -> np.ndarray | None:
            others = partners[partners != i]
            if len(others) == 0:
                return None
            return random_crop(self.load(int(rng.choice(others))), self.crop_samples, rng)

        return self.augmenter(wave, rng, same_species=same_species, noise_bank=self.noise_bank)

    def __getitem__(self, idx: int):
        rows, rng = self.rows_of(idx)
        x = np.stack([self.example(int(i), rng) for i in rows])
        return x, {"recording": self.targets[rows]}
