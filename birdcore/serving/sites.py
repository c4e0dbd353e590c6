"""Where and when each file of a batch was recorded: a sites table for the location filter.

Field recordings usually come in one folder per recorder deployment.  A sites
CSV gives a place per folder (or per file), so one batch can cover many sites::

    path,lat,lon,date
    north_meadow,42.48,-76.45,2026-05-01
    ridge/2026-06,42.51,-76.40,
    ridge/2026-06/odd.wav,42.52,-76.41,2026-06-14

- ``path``: a folder or a file, relative to the CSV's own folder (or absolute);
  a file takes the row of the deepest folder (or itself) that holds it;
- ``lat`` / ``lon``: degrees;
- optional ``date`` (YYYY-MM-DD) or ``week`` (BirdNET week 1..48); neither, or an
  empty cell, means any time of year.

Errors name the CSV, the line and the reason (``SitesError``).
"""
from __future__ import annotations

import csv
import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from birdcore.serving.birdnet_range import ANY_WEEK, Place, week_of

REQUIRED_COLUMNS = ("path", "lat", "lon")


class SitesError(ValueError):
    """A sites CSV that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class Site:
    """A folder or file (``root``, resolved) and the place its recordings come from."""

    root: Path
    place: Place


def _place(row: dict, where: str) -> Place:
    try:
        lat, lon = float(row["lat"]), float(row["lon"])
    except (TypeError, ValueError):
        raise SitesError(f"{where}: lat and lon must be numbers, got {row.get('lat')!r}, {row.get('lon')!r}") from None
    date, week = (row.get("date") or "").strip(), (row.get("week") or "").strip()
    if date and week:
        raise SitesError(f"{where}: give a date or a week, not both")
    try:
        if date:
            w = week_of(dt.date.fromisoformat(date))
        elif week:
            w = int(week)
        else:
            w = ANY_WEEK
        return Place(lat, lon, w)
    except ValueError as exc:
        raise SitesError(f"{where}: {exc}") from None


def read_sites(path: str | Path) -> list[Site]:
    """The sites of a CSV (see the module docstring); raises ``SitesError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not a UTF-8 text file"
        raise SitesError(f"{path}: cannot read the sites table ({reason})") from None
    try:
        return _parse(text, path)
    except csv.Error as exc:
        raise SitesError(f"{path}: not a readable CSV ({exc})") from None


def _parse(text: str, path: Path) -> list[Site]:
    import io

    base = path.resolve().parent
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise SitesError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                             f"(expected path,lat,lon and optionally date or week)")
        reader.fieldnames = columns
        sites, seen = [], {}
        for line, row in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            name = (row.get("path") or "").strip()
            if not name:
                raise SitesError(f"{where}: empty path")
            root = (base / name).resolve()
            if root in seen:
                raise SitesError(f"{where}: {name} is already given on line {seen[root]}")
            seen[root] = line
            sites.append(Site(root, _place(row, where)))
    if not sites:
        raise SitesError(f"{path}: no sites listed")
    return sites


class SiteTable:
    """Looks up the place of a file: the site whose ``root`` is the file or its deepest parent."""

    def __init__(self, sites: list[Site]):
        self._by_root = {s.root: s.place for s in sites}

    def place_for(self, file: str | Path) -> Place | None:
        """The place of ``file``, or None when no site holds it."""
        p = Path(os.path.abspath(file))
        folder = p.parent.resolve()  # folders as the sites' roots are (resolved); the file's own link not
        target = p.resolve()  # a linked file also counts where its target lies
        for candidate in (folder / p.name, folder, *folder.parents, target, *target.parents):
            if candidate in self._by_root:
                return self._by_root[candidate]
        return None

    @property
    def places(self) -> list[Place]:
        return list(dict.fromkeys(self._by_root.values()))
