"""Keeping only some of a run's species when scoring: by a species list or by place (``birdnet_range``).

A ``SpeciesMask`` holds a (C,) bool ``keep`` over the run's C species (the
order of ``species.csv``).  Applying it sets the scores of dropped species to 0
and keeps array shapes, so every output (top species, detections, Raven
tables) stays aligned with the run's species.

A species list may name species by eBird code even when the run's own codes are
something else (BirdNET's are scientific names): codes that match nothing directly
are looked up in the eBird/Clements taxonomy (the ``birdnames`` package, every
yearly edition it carries, newest first) and matched by scientific name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import pandas as pd

from birdcore.data.species_lists import FORMATS, names_from_text, read_species_list  # noqa: F401  (the readers of lists)
from birdcore.data.species_names import SpeciesResolver
from birdcore.serving.sparse_scores import SparseScores


@dataclass
class SpeciesMask:
    """``keep`` (C,) bool over a run's species; ``description`` says why (one line)."""

    keep: np.ndarray
    description: str

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    def apply(self, scores):
        """Scores (..., C) with the dropped species set to 0 (a copy; the shape is unchanged); a
        ``sparse_scores.SparseScores`` stays sparse (the dropped species' scores left out)."""
        if isinstance(scores, SparseScores):
            return scores.keeping(self.keep)
        out = np.array(scores, dtype=np.float32, copy=True)
        out[..., ~self.keep] = 0.0
        return out

    def summary(self) -> str:
        return f"{self.n_kept} of {len(self.keep)} species kept ({self.description})"

    def __and__(self, other: "SpeciesMask") -> "SpeciesMask":
        return SpeciesMask(self.keep & other.keep, f"{self.description}; {other.description}")


def combine(masks: Iterable[SpeciesMask | None]) -> SpeciesMask | None:
    """The species every given mask keeps (None entries ignored); None when no mask is given."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for mask in present[1:]:
        out = out & mask
    return out


def birds_only(species: pd.DataFrame) -> SpeciesMask:
    """Keep the birds of a run's species (``data.species_groups``: BirdNET's sounds and other animals dropped)."""
    from birdcore.data.species_groups import is_bird

    names = species["sci_name"].where(species["sci_name"].astype(str).str.strip() != "", species["ebird_code"])
    keep = np.array([is_bird(n) for n in names.astype(str)], bool)
    return SpeciesMask(keep, f"birds only: {len(keep) - int(keep.sum())} non-bird classes left out")


def from_names(species: pd.DataFrame, names: Iterable[str], *, source: str = "species list") -> SpeciesMask:
    """Keep the run's species (``ebird_code``, ``common_name``, ``sci_name``; C rows) named in ``names``.

    Names are matched by ``data.species_names.SpeciesResolver`` (eBird code, scientific or common
    name, BirdNET's ``Scientific_Common``, through the eBird/Clements taxonomy).  Raises ``ValueError``
    listing names that match no species of the run (a typo should not pass silently).
    """
    match = SpeciesResolver(species)
    keep = np.zeros(len(species), bool)
    unmatched = []
    for name in names:
        if not name.strip():
            continue
        i = match(name)
        if i is None:
            unmatched.append(name.strip())
        else:
            keep[i] = True
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
        raise ValueError(f"{source}: {len(unmatched)} name(s) match no species of this model: {shown} "
                         f"(a species list is {FORMATS})")
    return SpeciesMask(keep, f"{source}: {int(keep.sum())} species")
