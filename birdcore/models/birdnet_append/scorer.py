"""Scoring with an append run: BirdNET's own scores for its species, the added layer's for the others."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from birdcore.models.base import Scores, sigmoid
from birdcore.models.birdnet import runtime as bn
from birdcore.models.birdnet.engines import birdnet_engine
from birdcore.models.birdnet.scoring import WindowScorer, pool_windows, reporting
from birdcore.models.birdnet_append.head import AddedHead
from birdcore.models.birdnet_zero_shot.scorer import ZeroShotScorer


class AppendScorer(WindowScorer):
    """One BirdNET pass per recording gives both parts: the known species' columns of its logits, taken
    exactly as zero-shot takes them (``ZeroShotScorer``: the same engine call, restriction, sigmoid and
    max pooling, so those scores equal a zero-shot run's bit for bit), and the added species' logits
    from the window embeddings (``AddedHead``), appended after them.

    ``columns``: the run's BirdNET column per species, None for the added ones (which come last).
    """

    def __init__(self, columns: list[int | None], head: AddedHead, *, overlap: float = 0.0,
                 birdnet: bn.BirdNET | None = None):
        known = [c for c in columns if c is not None]
        if columns[:len(known)] != known or len(columns) - len(known) != head.bias.shape[0]:
            raise ValueError(f"an append run's species are its {len(known)} BirdNET species, then its "
                             f"{head.bias.shape[0]} added ones; its mapping has {len(columns)} rows")
        self.birdnet = birdnet or birdnet_engine(embeddings=True)
        self.known = ZeroShotScorer(known, overlap=overlap, birdnet=self.birdnet)
        self.head, self.overlap = head, overlap

    def logits(self, out: bn.BirdNETOutput) -> tuple[np.ndarray, np.ndarray]:
        """Window logits of one BirdNET pass's outputs: the known species' (W, K), the added ones' (W, A)."""
        return self.known._restrict(out.logits), self.head.logits(out.embeddings)

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        """Scores of one recording given as consecutive 48 kHz chunks, equal to ``score(np.concatenate(chunks))``.
        Each part is scored on its own array, the known part exactly as ``ZeroShotScorer`` does, then joined."""
        out = self.birdnet.analyze_stream(reporting(chunks, progress), overlap=self.overlap)
        parts = [Scores(segments=sigmoid(x).astype(np.float32), recording=pool_windows(x, mode="max"))
                 for x in self.logits(out)]
        return Scores(segments=np.concatenate([p.segments for p in parts], axis=1),
                      recording=np.concatenate([p.recording for p in parts]))
