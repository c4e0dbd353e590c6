"""Recording labels as arrays in a model's species order: the single definition.

A recording has one primary species (an eBird code) and a list of secondary (background) species
named by the recordist.  C is the number of species of the run (``species.csv`` order).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def label_indices(primary: Sequence[str], secondary: Sequence[Sequence[str]],
                  codes: list[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Primary species index (N,) int64, and per recording the indices of its secondary species
    that are among ``codes`` (its own primary excluded).  KeyError for a primary not in ``codes``."""
    index = {c: i for i, c in enumerate(codes)}
    prim = np.array([index[p] for p in primary], dtype=np.int64)
    sec = [[index[s] for s in dict.fromkeys(row) if s in index and index[s] != p]
           for row, p in zip(secondary, prim)]
    return prim, sec


def secondary_mask(secondary: Sequence[Sequence[int]], n_species: int) -> np.ndarray:
    """(N, C) bool: True where a species is named as a recording's background bird."""
    mask = np.zeros((len(secondary), n_species), dtype=bool)
    for row, cols in enumerate(secondary):
        mask[row, list(cols)] = True
    return mask


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
