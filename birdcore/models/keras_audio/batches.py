"""Training batches of the waveform model: cached audio → random crops → augmentation → batches.

Audio comes from the decode cache as memory-mapped arrays, so an epoch reads only the crops it
uses and never decodes an mp3.  Each epoch draws a fresh random crop from anywhere in every
recording (the original used only the first 60 s).
"""
from __future__ import annotations

import numpy as np

from birdcore.data.batches import EpochBatches, Loader, crop_around_sound, default_workers, random_crop
from birdcore.features.augment import WaveAugmenter


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
        workers: threads building batches (``data.batches.default_workers()`` when None: one per core,
            2 to 16).
    """

    def __init__(self, *, load: Loader, targets: np.ndarray, species: np.ndarray, crop_samples: int,
                 batch_size: int, augmenter: WaveAugmenter | None, seed: int,
                 noise_bank: list[np.ndarray] | None = None, steps_per_epoch: int | None = None,
                 workers: int | None = None):
        super().__init__(targets=targets, batch_size=batch_size, seed=seed, steps_per_epoch=steps_per_epoch,
                         workers=default_workers() if workers is None else workers)
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
