"""What every kind's training batches share: epoch-seeded shuffling and random crops.

``EpochBatches`` is a ``keras.utils.PyDataset`` whose batches are built by worker threads and
reshuffled each epoch from (seed, epoch), so a resumed epoch draws the same batches.  Each kind
subclasses it (``models.keras_audio.batches``, ``models.birdnet_head.head``).

A batch is new memory at every call, never a view of the stored audio or embeddings: under
MirroredStrategy TensorFlow may write into the arrays a step was given (docs/training.md).
"""
from __future__ import annotations

import os
from typing import Callable

import keras
import numpy as np


Loader = Callable[[int], np.ndarray]
MAX_WORKERS = 16  # threads building waveform batches; more gained nothing on a 16-core GPU machine


def default_workers() -> int:
    """Threads that build training batches: one per core, at least 2 and at most :data:`MAX_WORKERS`.

    A fixed 2 delivered 350 recordings/s on an H200 machine, less than its float32 steps consume at
    batch 32 (531/s) and far less than several GPUs do; 8 threads delivered 933/s, 16 1,221/s
    (BENCHMARKS.md, "GPU training").  On 2 cores this stays 2."""
    return max(2, min(MAX_WORKERS, os.cpu_count() or 2))


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


class EpochBatches(keras.utils.PyDataset):
    """Shuffled batches of recording rows, reshuffled each epoch from (seed, epoch), so an epoch's
    batches are the same after a resume.  Subclasses build a batch from ``self.rows_of(idx)``."""

    def __init__(self, *, targets: np.ndarray, batch_size: int, seed: int, steps_per_epoch: int | None,
                 workers: int):
        # Keras keeps at most max_queue_size batches in flight, so more workers than that would idle
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=max(8, workers))
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
        """Position the pipeline at ``epoch`` (used when resuming).

        Keras 3's ``fit`` calls ``on_epoch_end`` once before its first epoch (``EpochIterator.reset``),
        so fit's epoch e draws the permutation of e + 1, in a fresh run and a resumed one alike.
        """
        self.epoch = int(epoch)
        self._order = self._permutation()

    def on_epoch_end(self) -> None:
        # Called by Keras in the main thread after the worker threads have stopped (the adapter stops
        # its enqueuer first), so no batch is being built while the order changes.  Do not move the
        # reshuffle to on_epoch_begin: Keras calls that after the workers have started.
        self.set_epoch(self.epoch + 1)

    def __len__(self) -> int:
        return self.steps

    def rows_of(self, idx: int) -> tuple[np.ndarray, np.random.Generator]:
        """Recording rows of batch ``idx`` and the batch's own random generator."""
        rng = np.random.default_rng([self.seed, self.epoch, idx])
        return self._order[idx * self.batch_size:(idx + 1) * self.batch_size], rng
