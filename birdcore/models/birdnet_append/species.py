"""The species of an append run: BirdNET's own (all 6,522, or those of a species list) then the training
species BirdNET lacks, marked ``added``.

A training species is known to BirdNET when ``data.species_names`` resolves its eBird code or its
scientific name to one of BirdNET's labels (so a code finds BirdNET's scientific name); only the others
are added.
"""
from __future__ import annotations

import logging

import pandas as pd

from birdcore.data.species_names import COLUMNS, SpeciesResolver
from birdcore.models.birdnet import runtime as bn

log = logging.getLogger("birdcore")


def birdnet_column(resolve: SpeciesResolver, row) -> int | None:
    """BirdNET's column of a species row (``ebird_code``, ``sci_name``), or None when BirdNET lacks it."""
    for name in (row["ebird_code"], row.get("sci_name")):
        if isinstance(name, str) and name.strip():
            col = resolve(name)
            if col is not None:
                return int(col)
    return None


def append_species(data_species: pd.DataFrame, species_list: str | None = None,
                   labels: list[str] | None = None) -> tuple[pd.DataFrame, list[int | None], dict[str, str]]:
    """The run's species table (index, ebird_code, common_name, sci_name, added), each row's BirdNET
    column (None for an added species), and the run's code of each training species (by its code).

    ``data_species``: the training data's species (ebird_code, common_name, sci_name).
    ``species_list``: a species list file (``data.species_lists``) narrowing BirdNET's species; names
    BirdNET lacks are left out of the known part (logged), and training species BirdNET knows that the
    list leaves out are kept, so that the run names every species it was trained on.
    Raises ValueError (naming the list) for an unreadable list."""
    bird = bn.species_table(labels)
    resolve = SpeciesResolver(bird[list(COLUMNS)])
    cols = [birdnet_column(resolve, row) for _, row in data_species.iterrows()]
    if species_list:
        from birdcore.data.species_lists import species_table

        listed = species_table(species_list)
        listed_cols = [birdnet_column(resolve, row) for _, row in listed.iterrows()]
        lacking = [c for c, col in zip(listed["ebird_code"], listed_cols) if col is None]
        if lacking:
            log.warning("%s: BirdNET does not know %d listed species; they are scored only if the training data "
                        "has them: %s", species_list, len(lacking), ", ".join(lacking[:10]))
        keep = [i for i, col in enumerate(listed_cols) if col is not None]
        known = listed.iloc[keep][list(COLUMNS)].reset_index(drop=True)
        known_cols = [listed_cols[i] for i in keep]
        known, known_cols = _dedupe(known, known_cols)
        extra = [i for i, col in enumerate(cols) if col is not None and col not in set(known_cols)]
        if extra:
            log.info("training species BirdNET knows that %s leaves out are kept: %s", species_list,
                     ", ".join(data_species["ebird_code"].iloc[extra]))
            known = pd.concat([known, data_species.iloc[extra][list(COLUMNS)]], ignore_index=True)
            known_cols += [cols[i] for i in extra]
    else:
        known, known_cols = bird[list(COLUMNS)], list(range(len(bird)))
    added = data_species[[col is None for col in cols]][list(COLUMNS)]
    table = pd.concat([known.assign(added=False), added.assign(added=True)], ignore_index=True)
    table.insert(0, "index", range(len(table)))
    code_of_col = dict(zip(known_cols, known["ebird_code"]))
    rename = {code: (code if col is None else str(code_of_col[col])) for code, col in zip(data_species["ebird_code"], cols)}
    return table, known_cols + [None] * len(added), rename


def _dedupe(table: pd.DataFrame, cols: list[int]) -> tuple[pd.DataFrame, list[int]]:
    """Rows of ``table`` whose BirdNET column appeared before (two names of one species) dropped."""
    seen, keep = set(), []
    for i, c in enumerate(cols):
        if c not in seen:
            seen.add(c)
            keep.append(i)
    return table.iloc[keep].reset_index(drop=True), [cols[i] for i in keep]
