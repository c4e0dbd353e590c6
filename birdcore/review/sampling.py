"""Choosing detections for review, per species: stratified over score bins, random, or the top k.

- ``stratified``: the species' detections are cut into ``bins`` score bins of equal width between
  its lowest and highest score; the N draws are spread evenly over the bins (a bin with fewer
  detections gives all it has, the rest goes to the others).  A sampled detection's weight is its
  bin's population over the bin's draws, so precision can be estimated at every threshold, not only
  at the top (``review.precision``).
- ``random``: N detections uniformly; weight = species population / N.
- ``top``: the N best-scoring detections; weight None (they stand for nothing beyond themselves).

Draws are reproducible from the seed (species and detections are taken in a fixed order), and a
detection already sampled or reviewed is never offered again.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

STRATEGIES = ("stratified", "random", "top")
DEFAULT_BINS = 5


def score_bins(scores: np.ndarray, bins: int) -> np.ndarray:
    """(n,) int stratum of each score: equal-width bins between the lowest and the highest score."""
    lo, hi = float(np.min(scores)), float(np.max(scores))
    if hi <= lo:
        return np.zeros(len(scores), np.int64)
    edges = np.linspace(lo, hi, bins + 1)
    return np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)


def _spread(available: np.ndarray, n: int) -> np.ndarray:
    """Draws per bin: as even as possible, never more than a bin holds, ``n`` in all when possible."""
    take = np.zeros(len(available), np.int64)
    left = min(int(n), int(available.sum()))
    while left > 0:
        open_bins = np.flatnonzero(take < available)
        share = max(1, left // len(open_bins))
        for b in open_bins:
            give = min(share, available[b] - take[b], left)
            take[b] += give
            left -= give
            if left == 0:
                break
    return take


def draw(detections: pd.DataFrame, *, per_species: int, strategy: str, seed: int = 0, bins: int = DEFAULT_BINS,
         exclude: set[int] = frozenset(), population: pd.DataFrame | None = None) -> list[dict]:
    """Rows for ``Store.add_samples``: per species, up to ``per_species`` detections (columns id,
    species, score) not in ``exclude``.  ``population`` (default ``detections``) is what the weights
    stand for: every detection of the species, sampled before or not."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if per_species < 1:
        raise ValueError("--per-species must be at least 1")
    population = detections if population is None else population
    rng = np.random.default_rng(seed)
    out = []
    for species in sorted(detections["species"].unique()):
        everyone = population[population["species"] == species].sort_values("id")
        candidates = everyone[~everyone["id"].isin(exclude)]
        if candidates.empty:
            continue
        if strategy == "top":
            chosen = candidates.sort_values(["score", "id"], ascending=[False, True]).head(per_species)
            out += [{"detection_id": int(i), "species": species, "strategy": strategy, "stratum": 0,
                     "weight": None, "seed": seed} for i in chosen["id"]]
            continue
        if strategy == "random":
            k = min(per_species, len(candidates))
            picked = rng.choice(len(candidates), size=k, replace=False)
            weight = len(everyone) / max(k, 1)
            out += [{"detection_id": int(candidates["id"].iat[j]), "species": species, "strategy": strategy,
                     "stratum": 0, "weight": float(weight), "seed": seed} for j in sorted(picked)]
            continue
        strata_all = score_bins(everyone["score"].to_numpy(float), bins)
        strata = strata_all[everyone["id"].isin(candidates["id"]).to_numpy()]
        available = np.bincount(strata, minlength=bins)
        take = _spread(available, per_species)
        sizes = np.bincount(strata_all, minlength=bins)
        for b in range(bins):
            if take[b] == 0:
                continue
            members = candidates[strata == b]
            picked = rng.choice(len(members), size=int(take[b]), replace=False)
            out += [{"detection_id": int(members["id"].iat[j]), "species": species, "strategy": strategy,
                     "stratum": int(b), "weight": float(sizes[b] / take[b]), "seed": seed} for j in sorted(picked)]
    return out
