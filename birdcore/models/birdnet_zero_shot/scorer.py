"""BirdNET V2.4's own scores for a run's species (the ``birdnet_zero_shot`` kind)."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from birdcore.models.base import Scores, sigmoid
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import WindowScorer, pool_windows, reporting


class ZeroShotScorer(WindowScorer):
    """BirdNET's own scores for the given BirdNET columns (None: a species BirdNET lacks, scored 0),
    recording score = max over 3 s windows (``scoring.pool_windows``, ``models.pooling.pool_segments``'s
    "max" in NumPy: no Keras import)."""

    def __init__(self, columns: list[int | None], *, overlap: float = 0.0, birdnet: bn.BirdNET | None = None):
        self.birdnet = birdnet or birdnet_engine()
        self.columns = columns
        self.overlap = overlap
        self._known = np.array([c is not None for c in columns])
        self._index = np.array([c if c is not None else 0 for c in columns])

    def _restrict(self, raw: np.ndarray) -> np.ndarray:
        out = raw[:, self._index]
        out[:, ~self._known] = -30.0
        return out

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks, equal to ``score(np.concatenate(chunks))``."""
        raw = self.birdnet.analyze_stream(reporting(chunks, progress), overlap=self.overlap).logits
        logits = self._restrict(raw)
        return Scores(segments=sigmoid(logits).astype(np.float32), recording=pool_windows(logits, mode="max"))
