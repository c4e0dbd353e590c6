"""Species lists: the names a user gives, and a run's species table made from them.

A list is a text file with one name per line (an eBird code, a scientific or common name, or
BirdNET's ``Scientific name_Common name``; ``#`` starts a comment), or a CSV with an ``ebird_code``
or ``scientific_name`` (or ``sci_name``) column, such as the Cornell competition's species table or
a Cornell ``train.csv``.  ``species_table`` gives the run's species: ``ebird_code``,
``common_name``, ``sci_name``, with codes and names completed from the eBird/Clements taxonomy.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from birdcore.data import taxonomy

CODE_COLUMNS = ("ebird_code", "primary_label")
SCI_COLUMNS = ("scientific_name", "sci_name")
COMMON_COLUMNS = ("common_name", "species")


FORMATS = ("one name per line (eBird code, scientific or common name, or BirdNET's Scientific_Common; '#' "
           "comments), or a CSV with an ebird_code, primary_label, scientific_name or sci_name column")


def read_species_list(path: str | Path) -> list[str]:
    """The names of a species list file (``names_from_text``).

    Raises ``ValueError`` naming the file when it cannot be read or lists nothing.
    """
    names = names_from_text(_read_text(Path(path)))
    if not names:
        raise ValueError(f"{path}: the species list is empty (expected {FORMATS})")
    return names


def names_from_text(text: str) -> list[str]:
    """The names of a species list's text: one per line, blank lines and ``#`` comments skipped; or,
    for a CSV with a code or scientific-name column (``_csv_columns``), that column of each row.

    The one reading of a list, whether it comes from a file (``read_species_list``), the classify
    page's box, the API's ``species`` field or ``train_job.py --species-list`` (``species_table``)."""
    columns = _csv_columns(text)
    if columns is not None:
        raw = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, keep_default_na=False)
        column = next(c for c in CODE_COLUMNS + SCI_COLUMNS if c in raw.columns)
        return [v.strip() for v in raw[column] if v.strip()]
    names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [n for n in names if n]


def _read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the species list ({exc.__class__.__name__})") from None


def _csv_columns(text: str) -> list[str] | None:
    """The header of a CSV species list, or None when the text is a plain list of names."""
    first = text.lstrip("\ufeff").splitlines()[0] if text.strip() else ""
    if "," not in first:
        return None
    header = [h.strip() for h in next(csv.reader([first]))]
    return header if any(c in header for c in CODE_COLUMNS + SCI_COLUMNS) else None


def species_table(path: str | Path) -> pd.DataFrame:
    """The species of a list file (see the module docstring) in the list's order, without repeats:
    ``ebird_code`` (the eBird code, or the scientific name for a species the taxonomy lacks),
    ``common_name``, ``sci_name``.  Raises ValueError naming the file and the names it cannot resolve."""
    text = _read_text(Path(path))
    columns = _csv_columns(text)
    entries: list[tuple[str | None, str | None, str | None]] = []  # (code, common, sci) as given
    if columns is not None:
        raw = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), dtype=str, keep_default_na=False)
        pick = lambda names: next((c for c in names if c in raw.columns), None)  # noqa: E731
        code_c, sci_c, common_c = pick(CODE_COLUMNS), pick(SCI_COLUMNS), pick(COMMON_COLUMNS)
        for _, row in raw.iterrows():
            entries.append(tuple((row[c].strip() or None) if c else None for c in (code_c, common_c, sci_c)))
    else:
        for name in names_from_text(text):
            entries.append(_resolve(name))
    rows, unresolved, seen = [], [], set()
    for given, entry in zip(names_from_text(text) if columns is None else [None] * len(entries), entries):
        code, common, sci = entry
        if code and not (common and sci):
            tax_common, tax_sci = taxonomy.names_of(code)
            common, sci = common or tax_common, sci or tax_sci
        if sci and not code:
            code = taxonomy.ebird_code(sci)
        if not sci and not code:
            unresolved.append(given or "?")
            continue
        code = code or sci
        if code in seen:
            continue
        seen.add(code)
        rows.append({"ebird_code": code, "common_name": common or code, "sci_name": sci or ""})
    if unresolved:
        shown = ", ".join(unresolved[:5]) + (f" and {len(unresolved) - 5} more" if len(unresolved) > 5 else "")
        raise ValueError(f"{path}: {len(unresolved)} name(s) are neither an eBird code nor a species name "
                         f"the eBird taxonomy knows: {shown}")
    if not rows:
        raise ValueError(f"{path}: the species list is empty")
    return pd.DataFrame(rows, columns=["ebird_code", "common_name", "sci_name"])


def _resolve(name: str) -> tuple[str | None, str | None, str | None]:
    """(code, common, sci) a name from a plain list denotes, by the taxonomy; BirdNET's
    ``Scientific_Common`` gives both names."""
    if "_" in name:
        sci, common = (part.strip() for part in name.split("_", 1))
        return taxonomy.ebird_code(sci), common, sci
    common, sci = taxonomy.names_of(name)
    if sci:
        return name, common, sci
    code = taxonomy.ebird_code(name)
    if code:
        common, sci = taxonomy.names_of(code)
        return code, common, sci
    return None, None, None
