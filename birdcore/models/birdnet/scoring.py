"""What the scorers of BirdNET kinds share: 3 s windows that may overlap, streamed at 48 kHz."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from birdcore.models.base import Scores
from birdcore.models.birdnet import runtime as bn

SPECIES_MAPPING_FILE = "birdnet_species.json"  # in a run: the BirdNET column of each species, the licence


def read_mapping(run_dir: Path) -> dict:
    """A BirdNET run's species mapping (``columns``, ``missing``, and for a head ``prior``...)."""
    return json.loads((Path(run_dir) / SPECIES_MAPPING_FILE).read_text())


def hop_seconds(overlap: float) -> float:
    """Seconds between BirdNET windows overlapping by ``overlap`` seconds; ValueError outside [0, 3)."""
    return bn.hop_samples(overlap) / bn.SAMPLE_RATE


def pool_windows(logits: np.ndarray, *, mode: str, attention_logits: np.ndarray | None = None) -> np.ndarray:
    """Recording probabilities (C,) float32 from one recording's window logits (W, C), every window
    real: ``models.pooling.pool_segments`` on NumPy arrays (``NUMPY_OPS``: no Keras or TensorFlow
    import).  W = 0 scores 0, as there."""
    from birdcore.models.pooling import NUMPY_OPS, pool_segments

    x = np.asarray(logits, np.float32)
    if len(x) == 0:
        return np.zeros(x.shape[1:], np.float32)
    att = None if attention_logits is None else np.asarray(attention_logits, np.float32)[None]
    pooled = pool_segments(x[None], np.ones((1, len(x)), np.float32), mode=mode, attention_logits=att,
                           ops=NUMPY_OPS)
    return np.asarray(pooled[0], np.float32)


def reporting(chunks: Iterable[np.ndarray], progress: Callable[[float], None] | None) -> Iterator[np.ndarray]:
    """The chunks, calling ``progress`` with the seconds of 48 kHz audio consumed after each."""
    done = 0
    for chunk in chunks:
        done += len(chunk)
        yield chunk
        if progress is not None:
            progress(done / bn.SAMPLE_RATE)


class WindowScorer:
    """Base of BirdNET scorers: subclasses set ``overlap`` and implement ``score_stream``."""

    overlap: float = 0.0

    def with_overlap(self, overlap: float):
        """This scorer with BirdNET's windows overlapping by ``overlap`` seconds (0 to <3), sharing
        its interpreter (and head): cheap, and safe to use beside the original from other threads."""
        bn.hop_samples(overlap)  # validates
        twin = copy.copy(self)
        twin.overlap = float(overlap)
        return twin

    def score_stream(self, chunks: Iterable[np.ndarray], *,
                     progress: Callable[[float], None] | None = None) -> Scores:
        raise NotImplementedError

    def score_many(self, waves: Iterable[np.ndarray]) -> Iterator[Scores]:
        for wave in waves:
            yield self.score_stream([wave])

    def score(self, wave: np.ndarray) -> Scores:
        return self.score_stream([wave])
