"""Detections per species × site × day of a batch output (CSV or Parquet dataset), computed streaming.

``site_day_summary`` reads the detections in chunks (``pandas.read_csv(chunksize=...)``, or the Parquet
dataset's record batches), so memory grows with the number of (species, site, day) rows of the summary,
not with the archive.  By default a file's site is the name of its folder and its day the date in its
name as field recorders write it (``day_of``); both can be replaced by functions of the file path.

Columns (``SITE_DAY_HEADER``): ``species, site, day, detections, detections_at_threshold``:
detections = segment detections of that species in the files of that site and day;
at threshold = those scoring >= the species' threshold (empty where the species has no threshold, and
in every row when no thresholds are given).
"""
from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from birdcore.io.atomic import atomic_write_text

SITE_DAY_HEADER = ("species", "site", "day", "detections", "detections_at_threshold")
CHUNK_ROWS = 200_000
_COLUMNS = ("file", "species", "score")

# A date in a recorder's file name: AudioMoth / Song Meter ``YYYYMMDD_HHMMSS`` (``SITE_20190611_093000``),
# ISO basic ``20240501T053000``, or separated ``2024-05-01`` / ``2024_05_01``; not inside a longer number.
_DATE_RES = (
    re.compile(r"(?<!\d)((?:19|20)\d{2})(\d{2})(\d{2})(?=$|\D|\d{4}(?!\d)|\d{6}(?!\d))"),
    re.compile(r"(?<!\d)((?:19|20)\d{2})([-_.])(\d{2})\2(\d{2})(?!\d)"),
)


def _name_of(file: str) -> str:
    return re.split(r"[\\/]", str(file))[-1]


def site_of_file(file: str) -> str:
    """The name of the folder holding ``file`` ("" when the path names no folder); ``/`` or ``\\``."""
    parts = [p for p in re.split(r"[\\/]", str(file)) if p]
    return parts[-2] if len(parts) >= 2 else ""


def day_of_file(file: str) -> str:
    """The date in a file's name as ``YYYY-MM-DD`` (the recorder's clock: AudioMoth names are UTC unless
    set otherwise), or "" when its name holds no valid date.  The first valid date in the name wins."""
    name = _name_of(file)
    found = []
    for pattern in _DATE_RES:
        for m in pattern.finditer(name):
            groups = m.groups()
            y, mo, d = (groups[0], groups[1], groups[2]) if len(groups) == 3 else (groups[0], groups[2], groups[3])
            try:
                day = dt.date(int(y), int(mo), int(d))
            except ValueError:
                continue
            found.append((m.start(), day.isoformat()))
    return min(found)[1] if found else ""


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The detections' file, species and score columns, ``chunk_rows`` rows at a time."""
    from birdcore.serving.parquet_results import is_parquet_output, parquet_dataset

    path = Path(path)
    if is_parquet_output(path) or path.is_dir():
        try:
            dataset = parquet_dataset(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise ValueError(f"{path}: not a readable detections Parquet dataset ({exc})") from None
        if dataset is None:
            return
        _check_columns(path, dataset.schema.names)
        for batch in dataset.to_batches(columns=list(_COLUMNS), batch_size=chunk_rows):
            yield batch.to_pandas()
        return
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: not a readable detections CSV ({exc})") from None
    _check_columns(path, list(header))
    yield from pd.read_csv(path, usecols=list(_COLUMNS), chunksize=chunk_rows, keep_default_na=False,
                           dtype={"file": str, "species": str, "score": float})


def _check_columns(path: Path, names: list[str]) -> None:
    missing = [c for c in _COLUMNS if c not in names]
    if missing:
        raise ValueError(f"{path}: not a detections output of python -m birdcore.predict --out; "
                         f"missing {', '.join(missing)}")


def site_day_summary(detections_path: Path, *, thresholds: dict[str, float | None] | None = None,
                     site_of: Callable[[str], str] = site_of_file, day_of: Callable[[str], str] = day_of_file,
                     chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Detections per (species, site, day) of a detections CSV or Parquet dataset (columns
    ``SITE_DAY_HEADER``, sorted by species, site, day).  ``thresholds``: species → threshold; a species
    it lacks (or maps to None or NaN) gets an empty ``detections_at_threshold``, as every row does without
    ``thresholds``.  ValueError naming the file when it is not a detections output."""
    known = {str(k): float(v) for k, v in (thresholds or {}).items() if v is not None and not np.isnan(float(v))}
    counts: dict[tuple[str, str, str], list[int]] = {}
    for chunk in _chunks(Path(detections_path), chunk_rows):
        if chunk.empty:
            continue
        files = chunk["file"].astype(str)
        unique = pd.unique(files)  # each file's site and day once per chunk (its rows are contiguous)
        site = files.map(dict(zip(unique, (str(site_of(f)) for f in unique))))
        day = files.map(dict(zip(unique, (str(day_of(f)) for f in unique))))
        species = chunk["species"].astype(str)
        score = pd.to_numeric(chunk["score"], errors="coerce").to_numpy(dtype=float)
        if known:
            limit = species.map(known).astype(float).to_numpy()
            at = (score >= limit).astype(np.int64)  # NaN limit: False here, but reported as unknown below
        else:
            at = np.zeros(len(chunk), dtype=np.int64)
        frame = pd.DataFrame({"species": species.to_numpy(dtype=object), "site": site.to_numpy(dtype=object),
                              "day": day.to_numpy(dtype=object), "n": 1, "at": at})
        grouped = frame.groupby(["species", "site", "day"], sort=False)[["n", "at"]].sum()
        for key, n, k in zip(grouped.index, grouped["n"].to_numpy(), grouped["at"].to_numpy()):
            entry = counts.setdefault(key, [0, 0])
            entry[0] += int(n)
            entry[1] += int(k)
    rows = sorted(counts.items())
    out = pd.DataFrame({
        "species": pd.Series([k[0] for k, _ in rows], dtype=object),
        "site": pd.Series([k[1] for k, _ in rows], dtype=object),
        "day": pd.Series([k[2] for k, _ in rows], dtype=object),
        "detections": pd.Series([v[0] for _, v in rows], dtype="int64"),
        "detections_at_threshold": pd.Series(
            [v[1] if k[0] in known else pd.NA for k, v in rows], dtype="Int64"),
    })
    return out[list(SITE_DAY_HEADER)]


def write_site_day_summary(detections_path: Path, out_path: Path, *,
                           thresholds: dict[str, float | None] | None = None,
                           site_of: Callable[[str], str] = site_of_file, day_of: Callable[[str], str] = day_of_file,
                           chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """``site_day_summary`` written atomically as CSV to ``out_path`` (unknown values empty); returns it."""
    table = site_day_summary(detections_path, thresholds=thresholds, site_of=site_of, day_of=day_of,
                             chunk_rows=chunk_rows)
    atomic_write_text(Path(out_path), table.to_csv(index=False, lineterminator="\n"))
    return table
