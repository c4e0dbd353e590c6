"""Segment scores of a clip kept small: only the scores at or above a floor, at most a fixed number of them.

A clip's segment scores are (S, C): S segments (one per 3 s BirdNET window, more with overlapping
windows) by C species, 4 bytes each: 26 KB per BirdNET segment, 16 MB for 30 minutes, six times that
with 0.5 s hops.  Almost all are near 0 (BirdNET: 4 to 12 of its 6,522 species score 0.01 or more in a
window of real recordings), so a dashboard session keeps them as ``SparseScores``: the (segment,
species, score) triples at or above ``floor``, 12 bytes each.  When more than ``max_entries`` scores
pass the floor, the floor rises to keep the highest ``max_entries`` (ties at the new floor may be cut
too), and ``floor`` says which scores were kept: a page must not offer a lower minimum score.

Everything that reads a clip's segment scores takes either form through ``entries`` (each segment's
nonzero scores and their species) or ``columns`` ((S, k) for k species).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np


@dataclass(frozen=True)
class SparseScores:
    """(S, C) segment scores with only those >= ``floor`` kept; the others read as 0.

    ``segment``, ``species`` (int32) and ``score`` (float32) are the kept triples, ordered by segment."""

    shape: tuple[int, int]
    segment: np.ndarray
    species: np.ndarray
    score: np.ndarray
    floor: float

    @classmethod
    def from_dense(cls, scores: np.ndarray, *, floor: float, max_entries: int) -> "SparseScores":
        """Keep the scores of ``scores`` (S, C) at or above ``floor``; at most ``max_entries`` of them
        (the floor rises to the ``max_entries``-th highest score when more pass)."""
        scores = np.asarray(scores, dtype=np.float32)
        if scores.ndim != 2:
            raise ValueError(f"segment scores must be (S, C), got shape {scores.shape}")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        floor = float(floor)
        segment, species = np.nonzero(scores >= floor)
        if len(segment) > max_entries:
            passed = scores[segment, species]
            floor = float(-np.partition(-passed, max_entries - 1)[max_entries - 1])  # the max_entries-th highest
            if np.count_nonzero(passed >= floor) > max_entries:  # ties at that score: leave them all out
                floor = float(np.nextafter(np.float32(floor), np.float32(np.inf)))
            segment, species = np.nonzero(scores >= floor)
        return cls(shape=(int(scores.shape[0]), int(scores.shape[1])), segment=segment.astype(np.int32),
                   species=species.astype(np.int32), score=scores[segment, species].astype(np.float32), floor=floor)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self.segment.nbytes + self.species.nbytes + self.score.nbytes)

    def dense(self) -> np.ndarray:
        """The (S, C) float32 array (scores below ``floor`` as 0): for tests and small clips only."""
        out = np.zeros(self.shape, np.float32)
        out[self.segment, self.species] = self.score
        return out

    def columns(self, species: list[int] | np.ndarray) -> np.ndarray:
        """(S, k) float32: the scores of the k given species (indices into C), in that order."""
        species = np.asarray(species, dtype=np.int64)
        out = np.zeros((self.shape[0], len(species)), np.float32)
        for k, c in enumerate(species):
            hit = self.species == c
            out[self.segment[hit], k] = self.score[hit]
        return out

    def keeping(self, keep: np.ndarray) -> "SparseScores":
        """The scores of the species ``keep`` (C,) bool marks; the others dropped (read as 0)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (self.shape[1],):
            raise ValueError(f"a mask of {keep.shape} for {self.shape[1]} species")
        hit = keep[self.species]
        return SparseScores(self.shape, self.segment[hit], self.species[hit], self.score[hit], self.floor)

    def entries(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Each segment's kept (species indices, scores) in turn, species ascending."""
        bounds = np.searchsorted(self.segment, np.arange(self.shape[0] + 1))
        for i in range(self.shape[0]):
            yield self.species[bounds[i]:bounds[i + 1]], self.score[bounds[i]:bounds[i + 1]]


def entries(scores) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Each segment's nonzero (species indices, scores), species ascending, from segment scores given as
    an (S, C) array or as ``SparseScores`` (without building a dense row of the sparse form)."""
    if isinstance(scores, SparseScores):
        yield from scores.entries()
        return
    for row in np.asarray(scores):
        species = np.flatnonzero(row)
        yield species, row[species]


def columns(scores, species: list[int]) -> np.ndarray:
    """(S, k) scores of the k given species, from an (S, C) array or ``SparseScores``."""
    if isinstance(scores, SparseScores):
        return scores.columns(species)
    return np.asarray(scores)[:, list(species)]
