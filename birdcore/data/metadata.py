"""Dataset folders: recordings metadata in the Kaggle 2020 or the BirdCLEF layout.

* Kaggle 2020 "birdsong-recognition": ``DIR/train.csv`` (``ebird_code``,
  ``filename`` such as ``XC134874.mp3``, ``secondary_labels`` as a Python-list
  string of ``"Scientific_Common"`` names, ``species``, ``sci_name``, ``xc_id``,
  ``duration``); audio at ``DIR/train_audio/<ebird_code>/<filename>``.
* BirdCLEF (2021 and later): ``DIR/train_metadata.csv`` (``primary_label``,
  ``secondary_labels`` as a Python-list string of ebird codes, ``filename``
  such as ``code/XC123.ogg`` relative to ``DIR/train_audio/``,
  ``scientific_name``, ``common_name``).  2021's bare filenames and its
  ``train_short_audio/`` folder are accepted too.

:func:`read_metadata` turns either into one table with the same columns;
:func:`audio_root` is the folder the audio paths start from.
"""
from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pandas as pd

COLUMNS = ("recording_id", "path", "primary", "secondary", "xc_id", "duration",
           "sci_name", "common_name", "exists")


class DatasetError(Exception):
    """A dataset folder or metadata file that cannot be used (one-line message)."""


def audio_root(data_dir: str | Path) -> Path:
    """The folder holding a dataset's audio: ``data_dir/train_audio``, or BirdCLEF 2021's
    ``data_dir/train_short_audio`` when only that one exists (the result need not exist)."""
    root = Path(data_dir).expanduser()
    if not (root / "train_audio").is_dir() and (root / "train_short_audio").is_dir():
        return root / "train_short_audio"
    return root / "train_audio"


def read_metadata(data_dir: str | Path) -> pd.DataFrame:
    """One row per recording of the dataset in ``data_dir``.

    Columns: ``recording_id`` (str ``"<ebird_code>/<file stem>"``, unique),
    ``path`` (str, absolute audio path), ``primary`` (ebird code),
    ``secondary`` (list[str] of ebird codes of other species of this dataset),
    ``xc_id`` (int, -1 if unknown), ``duration`` (float seconds, NaN if
    unknown), ``sci_name``, ``common_name`` (str) and ``exists`` (bool: the
    audio file is there; missing files are kept so the cache can report them).
    """
    root = Path(data_dir).expanduser().resolve()
    if (root / "train_metadata.csv").is_file():
        csv, layout = root / "train_metadata.csv", "birdclef"
        names = {"primary": "primary_label", "sci": "scientific_name", "common": "common_name"}
    elif (root / "train.csv").is_file():
        csv, layout = root / "train.csv", "kaggle2020"
        names = {"primary": "ebird_code", "sci": "sci_name", "common": "species"}
    else:
        raise DatasetError(f"{root}: no train_metadata.csv or train.csv found")
    try:
        raw = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DatasetError(f"{csv}: cannot read CSV ({' '.join(str(exc).split())})") from None
    missing = [c for c in (names["primary"], "filename") if c not in raw.columns]
    if missing:
        raise DatasetError(f"{csv}: missing required column(s) {', '.join(missing)}")

    primary = raw[names["primary"]].str.strip()
    if (primary == "").any():
        raise DatasetError(f"{csv}: {int((primary == '').sum())} row(s) without a species code")
    sci = _column(raw, names["sci"])
    common = _column(raw, names["common"])
    audio_dir = audio_root(root)
    rel = [
        f"{code}/{name}" if layout == "kaggle2020" or "/" not in name else name
        for code, name in zip(primary, raw["filename"].str.strip())
    ]
    paths = [audio_dir / r for r in rel]

    lookup = _label_lookup(primary, sci, common)
    secondary = [
        _secondary_codes(text, own, lookup) for text, own in zip(_column(raw, "secondary_labels"), primary)
    ]
    df = pd.DataFrame({
        "recording_id": [f"{code}/{p.stem}" for code, p in zip(primary, paths)],
        "path": [str(p) for p in paths],
        "primary": primary.tolist(),
        "secondary": secondary,
        "xc_id": [_xc_id(x, p.name) for x, p in zip(_column(raw, "xc_id"), paths)],
        "duration": [_float(d) for d in _column(raw, "duration")],
        "sci_name": sci.tolist(),
        "common_name": common.tolist(),
        "exists": [p.is_file() for p in paths],
    }, columns=list(COLUMNS))
    df = df.drop_duplicates(subset="path").reset_index(drop=True)
    dup = df["recording_id"][df["recording_id"].duplicated()]
    if len(dup):
        raise DatasetError(f"{csv}: duplicate recording id {dup.iloc[0]!r} (two files with one stem)")
    df["xc_id"] = df["xc_id"].astype("int64")
    df["duration"] = df["duration"].astype("float64")
    return df


def species_table(df: pd.DataFrame) -> pd.DataFrame:
    """Columns ``ebird_code``, ``common_name``, ``sci_name``; one row per primary species,
    sorted by code (names from the first recording that has them)."""
    rows = []
    for code, group in df.groupby("primary", sort=True):
        common = next((c for c in group["common_name"] if c), "")
        sci = next((s for s in group["sci_name"] if s), "")
        rows.append((code, common, sci))
    return pd.DataFrame(rows, columns=["ebird_code", "common_name", "sci_name"])


def load_species_names(csv_path: str | Path) -> dict[str, tuple[str, str]]:
    """Read ``ebird_code,common_name,scientific_name`` → {code: (common, scientific)}."""
    path = Path(csv_path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: species file not found") from None
    except Exception as exc:
        raise DatasetError(f"{path}: cannot read CSV ({' '.join(str(exc).split())})") from None
    need = ["ebird_code", "common_name", "scientific_name"]
    missing = [c for c in need if c not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing required column(s) {', '.join(missing)}")
    return {
        code.strip(): (common.strip(), sci.strip())
        for code, common, sci in zip(table["ebird_code"], table["common_name"], table["scientific_name"])
        if code.strip()
    }


def _column(raw: pd.DataFrame, name: str) -> pd.Series:
    """A stripped string column, or empty strings when the CSV lacks it."""
    if name not in raw.columns:
        return pd.Series([""] * len(raw), index=raw.index, dtype=object)
    return raw[name].astype(str).str.strip()


def _label_lookup(primary: pd.Series, sci: pd.Series, common: pd.Series) -> dict[str, str]:
    """Lower-cased code / scientific name / "Sci_Common" name → ebird code."""
    lookup: dict[str, str] = {}
    for code, s, c in zip(primary, sci, common):
        if s:
            lookup.setdefault(s.lower(), code)
            if c:
                lookup.setdefault(f"{s}_{c}".lower(), code)
    for code in primary:  # codes win over any name that happens to collide
        lookup[code.lower()] = code
    return lookup


def _secondary_codes(text: str, own: str, lookup: dict[str, str]) -> list[str]:
    """Parse a Python-list string safely and map its entries to ebird codes.

    Entries may be codes or "Scientific_Common" names; unknown entries and the
    recording's own primary species are dropped; order is kept, no repeats.
    """
    if not text or text in ("[]", "nan"):
        return []
    try:
        items = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return []
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, (list, tuple)):
        return []
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            continue
        key = item.strip().lower()
        code = lookup.get(key) or lookup.get(key.split("_", 1)[0])
        if code and code != own and code not in out:
            out.append(code)
    return out


def _xc_id(value: str, filename: str) -> int:
    """The xeno-canto id from the column, else from ``XC<digits>`` in the filename, else -1."""
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError):
        pass
    match = re.search(r"XC(\d+)", filename, flags=re.IGNORECASE)
    return int(match.group(1)) if match else -1


def _float(value: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan
