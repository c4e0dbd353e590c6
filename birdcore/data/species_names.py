"""Species names: one resolver for every command.

A species may be named by its eBird code (``swaspa``), its scientific name (``Melospiza georgiana``),
its common name (``Swamp Sparrow``) or BirdNET's ``Scientific name_Common name``, in any case.
Runs name their species differently: a trained run by eBird code, BirdNET by scientific name (its
labels carry no codes).  Labels, species lists, detections and datasets are all matched to a run
through this module, so an eBird code in a label file finds BirdNET's ``Melospiza georgiana``.

- ``name_keys(name)``: the lower-cased keys a name is known by: itself, the scientific part of
  ``Scientific_Common``, and through the eBird/Clements taxonomy (``data.taxonomy``, every edition it
  carries) its eBird codes and scientific names.  Two names denote the same species when their keys
  meet (``same_species``).
- ``SpeciesResolver(species)``: the row of a species table (``ebird_code``, ``common_name``,
  ``sci_name``; C rows) a name denotes, or None.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import pandas as pd

from birdcore.data import taxonomy

COLUMNS = ("ebird_code", "common_name", "sci_name")


def _norm(name) -> str:
    return str(name).strip().lower() if name is not None else ""


@lru_cache(maxsize=65536)
def name_keys(name: str) -> frozenset[str]:
    """Lower-cased keys of a species name: the name, the scientific part of ``Scientific_Common``,
    and (eBird/Clements taxonomy) the codes it is the code, scientific or common name of, and those
    codes' scientific names.  Empty for an empty name."""
    key = _norm(name)
    if not key:
        return frozenset()
    given = [key]
    if "_" in key:
        given += [part.strip() for part in key.split("_", 1) if part.strip()]
    keys = set(given)
    raw = [str(name).strip()] + ([p.strip() for p in str(name).split("_", 1)] if "_" in str(name) else [])
    for text in raw:
        if not text:
            continue
        codes = set()
        sci = taxonomy.convert(text, from_type="ebird_code", to_type="scientific_name")
        if sci:
            codes.add(text)
        for kind in ("scientific_name", "common_name"):
            codes.update(taxonomy.convert(text, from_type=kind, to_type="ebird_code"))
        for code in codes:
            keys.add(code.lower())
            keys.update(s.lower() for s in taxonomy.convert(code, from_type="ebird_code", to_type="scientific_name"))
    return frozenset(keys)


def same_species(a: str, b: str) -> bool:
    """Whether two names (any of the forms above) denote the same species."""
    return bool(name_keys(a) & name_keys(b))


class SpeciesResolver:
    """The row of ``species`` (columns ``ebird_code``, ``common_name``, ``sci_name``; C rows) that a
    name denotes: case-insensitive on any of the three columns, BirdNET's ``Scientific_Common``, or
    through the taxonomy (an eBird code for BirdNET's scientific names, a scientific name for a run's
    eBird codes, a code retired by a later edition).  ``resolver(name)`` gives the row index or None."""

    def __init__(self, species: pd.DataFrame):
        self.species = species
        self._direct: dict[str, int] = {}
        columns = [c for c in COLUMNS if c in species.columns]
        for i, row in enumerate(species[columns].itertuples(index=False)):
            for value in row:
                if isinstance(value, str) and value.strip():
                    self._direct.setdefault(_norm(value), i)
        self._by_keys: dict[str, int] | None = None  # the rows' taxonomy keys, built on first need

    def __call__(self, name: str) -> int | None:
        key = _norm(name)
        if not key:
            return None
        if key in self._direct:
            return self._direct[key]
        keys = name_keys(name)
        hit = next((self._direct[k] for k in sorted(keys) if k in self._direct), None)
        if hit is not None:
            return hit
        return next((self._row_keys()[k] for k in sorted(keys) if k in self._row_keys()), None)

    def _row_keys(self) -> dict[str, int]:
        if self._by_keys is None:
            self._by_keys = {}
            for i, row in enumerate(self.species[["ebird_code", "sci_name"]].itertuples(index=False)):
                for value in row:
                    if isinstance(value, str) and value.strip():
                        for k in name_keys(value):
                            self._by_keys.setdefault(k, i)
        return self._by_keys

    def code(self, name: str) -> str | None:
        """The table's ``ebird_code`` of the species ``name`` denotes, or None."""
        i = self(name)
        return None if i is None else str(self.species["ebird_code"].iloc[i])

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """The names (stripped, in order, without repeats) that denote no species of the table."""
        return [n for n in dict.fromkeys(str(n).strip() for n in names) if n and self(n) is None]
