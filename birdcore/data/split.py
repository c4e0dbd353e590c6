"""Train / validation / test split by recording (never by segment).

Two methods:

* ``"stratified"``: per primary species, the species' recordings are sorted by
  ``recording_id`` and shuffled with a generator seeded by ``seed`` and the
  species code, then cut into test, val and train.  A species with n >= 3
  recordings gets ``max(1, round(n * fraction))`` val and test recordings
  (for a non-zero fraction; fewer when needed to keep one in train); n = 2
  gives 1 train + 1 test; n = 1 goes to train.  The result depends only on the
  set of recordings, not on the row order of the table.
* ``"xc_hundreds"``: the original system's fixed split: a recording is test
  when the hundreds digit of its xeno-canto number is 0
  (``(xc_id // 100) % 10 == 0``); recordings with an unknown number
  (``xc_id == -1``) are never test.  Validation is then drawn from the rest
  as above, with ``val_fraction`` and no test part (``test_fraction`` unused).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd

METHODS = ("stratified", "xc_hundreds")
SPLITS = ("train", "val", "test")


def split_recordings(df: pd.DataFrame, *, method: str = "stratified", val_fraction: float = 0.1,
                     test_fraction: float = 0.1, seed: int = 1234) -> pd.Series:
    """The split of every recording: a Series of ``"train"`` / ``"val"`` / ``"test"`` indexed like ``df``.

    ``df`` needs columns ``recording_id`` (unique str), ``primary`` (species
    code) and, for ``"xc_hundreds"``, ``xc_id`` (int, -1 if unknown).
    Fractions are of each species' recordings.  Raises ValueError for an
    unknown method, missing columns, duplicate ids, or fractions that leave no
    training set.
    """
    if method not in METHODS:
        raise ValueError(f"unknown split method {method!r}; expected one of {', '.join(METHODS)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not (0.0 <= value < 1.0):
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if method == "stratified" and val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves no training "
                         "set; it must be < 1")
    need = ["recording_id", "primary"] + (["xc_id"] if method == "xc_hundreds" else [])
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"split_recordings: missing column(s) {', '.join(missing)}")
    ids = df["recording_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"split_recordings: duplicate recording_id {ids[ids.duplicated()].iloc[0]!r}")

    out = pd.Series("train", index=df.index, name="split", dtype=object)
    if method == "xc_hundreds":
        xc = df["xc_id"].astype("int64")
        is_test = (xc >= 0) & ((xc // 100) % 10 == 0)
        out[is_test] = "test"
        rest = df.index[~is_test.to_numpy()]
        out[rest] = _stratified(ids[rest], df.loc[rest, "primary"], val_fraction, 0.0, seed)
    else:
        out[:] = _stratified(ids, df["primary"], val_fraction, test_fraction, seed)
    return out


def split_summary(split: pd.Series, df: pd.DataFrame) -> dict:
    """Counts of recordings per split and per species per split (plain ints, JSON-ready).

    ``split`` is aligned with ``df`` by index.  Returns ``{"counts": {split: n},
    "per_species": {code: {split: n}}}``; train/val/test always appear, any
    other label (such as "unused") only when present.
    """
    labels = split.reindex(df.index).fillna("unused").astype(str)
    names = list(SPLITS) + sorted(set(labels) - set(SPLITS))
    counts = {name: int((labels == name).sum()) for name in names}
    table = pd.crosstab(df["primary"].astype(str), labels).reindex(columns=names, fill_value=0)  # one pass
    per_species = {str(code): {name: int(n) for name, n in row.items()} for code, row in table.sort_index().iterrows()}
    return {"counts": counts, "per_species": per_species}


def _stratified(ids: pd.Series, primary: pd.Series, val_fraction: float, test_fraction: float,
                seed: int) -> pd.Series:
    """Per-species seeded shuffle of ids sorted by id; returns split labels indexed like ``ids``."""
    out = pd.Series("train", index=ids.index, dtype=object)
    codes = primary.astype(str)
    rows = codes.groupby(codes, sort=True).indices  # one pass over the table, not one per species
    for code, at in rows.items():
        mine = ids.iloc[at].sort_values(kind="stable")
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(code.encode())])
        order = mine.index[rng.permutation(len(mine))]
        n_val, n_test = _counts(len(mine), val_fraction, test_fraction)
        out[order[:n_test]] = "test"
        out[order[n_test:n_test + n_val]] = "val"
    return out


def _counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for a species with ``n`` recordings; at least one stays in train."""
    if n <= 1:
        return 0, 0
    if n == 2:
        if test_fraction > 0:
            return 0, 1
        return (1, 0) if val_fraction > 0 else (0, 0)
    n_val = max(1, _round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, _round(n * test_fraction)) if test_fraction > 0 else 0
    while n_val + n_test > n - 1:  # keep a training recording; trim the larger part first
        if n_val > n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _round(x: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(x + 0.5))
