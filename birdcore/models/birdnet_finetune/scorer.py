"""Scoring with a fine-tuned BirdNET: windows (or cached activations) → embeddings + prior → the head.

Both scorers run the parts of the model they are given (``network.FRONT``, ``TAIL``, ``HEAD``) in
turn: the per-window parts in batches of 16 windows (bounded memory for long recordings), then the
head over the whole recording (``birdnet_head.head.EmbeddingScorer``).  The result equals calling the
whole model on all the recording's windows at once.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator

import keras
import numpy as np

from birdcore.models.base import Scores
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import run_batched
from birdcore.models.birdnet.scoring import WindowScorer, reporting
from birdcore.models.birdnet_finetune.network import FRONT, HEAD, TAIL
from birdcore.models.birdnet_head.head import EmbeddingScorer


class ActivationScorer:
    """Recordings as cached cut activations (W, D) → ``Scores``, with a training model (validation, test)."""

    def __init__(self, model: keras.Model, *, batch: int = 16):
        self.tail = model.get_layer(TAIL)
        self.head = EmbeddingScorer(model.get_layer(HEAD))
        self.batch = int(batch)
        self._lock = threading.Lock()  # one forward pass at a time through the shared model

    def features(self, activations: np.ndarray) -> np.ndarray:
        """(W, D) activations → (W, 1024 [+ C]) head input."""
        with self._lock:
            return run_batched(self.tail, activations, batch=self.batch)

    def score_many(self, items: Iterable[np.ndarray]) -> Iterator[Scores]:
        for x in items:
            yield self.head.score(self.features(np.asarray(x, np.float32)))

    def score(self, activations: np.ndarray) -> Scores:
        return next(self.score_many([activations]))


class FineTunedScorer(WindowScorer):
    """Waveforms at 48 kHz → BirdNET's windows (overlapping by ``overlap`` s) → the run's whole model."""

    def __init__(self, model: keras.Model, *, overlap: float = 0.0, batch: int = 16):
        self.front = model.get_layer(FRONT)
        self.tails = ActivationScorer(model, batch=batch)
        self.overlap, self.batch = float(overlap), int(batch)

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks, equal to
        ``score(np.concatenate(chunks))``; ``progress`` gets the seconds consumed so far."""
        parts = []
        for block in bn.stream_windows(reporting(chunks, progress), overlap=self.overlap):
            with self.tails._lock:
                parts.append(run_batched(self.front, block, batch=self.batch))
        return self.tails.score(np.concatenate(parts))
