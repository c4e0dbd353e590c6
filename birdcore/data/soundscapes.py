"""Annotated field soundscapes: the 5 s rows to predict, their labels, and their audio files.

Formats read (``read_rows`` tells them apart by their columns):

- Cornell 2020 ``example_test_audio_summary.csv``: ``filename_seconds,birds,filename,seconds``; a row
  covers the 5 s that end at ``seconds``; ``filename`` names the audio file without its extension or
  is a prefix of its name (``BLKFR-10-CPL`` for ``BLKFR-10-CPL_20190611_093000.pt540.mp3``).
- Cornell 2020 ``test.csv``: ``site,row_id,seconds,audio_id`` (rows to predict, no labels); a row
  without ``seconds`` (``site_3``) stands for the whole file.
- BirdCLEF 2021 ``train_soundscape_labels.csv``: ``row_id,site,audio_id,seconds,birds``
  (audio ``<audio_id>_<site>_<date>.ogg``).
- Raven Pro selection tables (a ``.txt`` file or a folder of them), the format field teams annotate
  in: ``Begin Time (s)``, ``End Time (s)`` and a species column; a table is matched to the audio
  file its name starts with (``SSW49.Table.1.selections.txt`` → ``SSW49.mp3``), and its selections
  are mapped onto 5 s rows by overlap.

``birds`` is a tuple of species names (eBird codes in the competition files) or empty for
``nocall``; ``None`` when the rows have no labels (``test.csv``).  Times are seconds from the
start of the file.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdcore.io.audio import is_audio_path

ROW_SECONDS = 5.0
NOCALL = "nocall"
RAVEN_BEGIN, RAVEN_END = "Begin Time (s)", "End Time (s)"
RAVEN_SPECIES_COLUMNS = ("Species", "Species Code", "species", "ebird_code", "Common Name", "Label", "label",
                         "Annotation", "Class")


class SoundscapeError(ValueError):
    """An annotation file that cannot be read; the message names it and the reason."""


@dataclass
class SoundscapeRows:
    """The rows of annotated (or to-be-predicted) soundscapes.

    ``table`` columns: ``row_id`` (str), ``file`` (the key naming the audio file), ``site``,
    ``start_s``, ``end_s`` (float seconds; ``end_s`` is inf for a whole-file row) and ``birds``
    (tuple of names, empty for nocall; None without labels).  ``audio`` maps each file key to its
    audio path, or None when no audio file in the folder matches it (``missing``).
    """

    table: pd.DataFrame
    audio: dict[str, Path | None] = field(default_factory=dict)
    source: str = ""
    labelled: bool = True

    @property
    def missing(self) -> list[str]:
        return sorted(k for k, p in self.audio.items() if p is None)

    @property
    def files(self) -> list[str]:
        """File keys in the order of their first row."""
        return list(dict.fromkeys(self.table["file"]))

    def species(self) -> list[str]:
        """Every species name in the labels, sorted."""
        if not self.labelled:
            return []
        return sorted({b for birds in self.table["birds"] for b in birds})

    def with_audio(self) -> "SoundscapeRows":
        """Only the rows whose audio file was found."""
        keep = self.table["file"].map(lambda k: self.audio.get(k) is not None)
        return SoundscapeRows(self.table[keep].reset_index(drop=True), {k: p for k, p in self.audio.items() if p},
                              self.source, self.labelled)

    def hours(self, durations: dict[str, float]) -> float:
        """Hours of audio covered by the rows, given each file's duration in seconds."""
        total = 0.0
        for key, rows in self.table.groupby("file", sort=False):
            end = rows["end_s"].replace(math.inf, durations.get(key, 0.0))
            total += float(min(end.max(), durations.get(key, end.max())) - rows["start_s"].min())
        return total / 3600.0


def parse_birds(text) -> tuple[str, ...]:
    """A ``birds`` cell: space-separated names, or ``nocall`` / empty for none."""
    if not isinstance(text, str):
        return ()
    names = tuple(dict.fromkeys(t for t in text.replace(",", " ").split() if t))
    return tuple(n for n in names if n.lower() != NOCALL)


def read_rows(labels: Path, *, audio_dir: Path | None = None, row_seconds: float = ROW_SECONDS) -> SoundscapeRows:
    """The rows of ``labels`` (any format above) with their audio files found in ``audio_dir``
    (default: the labels' folder, and its ``audio/`` subfolder).  Raises ``SoundscapeError``."""
    labels = Path(labels)
    if not labels.exists():
        raise SoundscapeError(f"{labels}: no such file or folder")
    if labels.is_dir() or labels.suffix.lower() == ".txt":
        tables = sorted(labels.glob("*.txt")) if labels.is_dir() else [labels]
        if not tables:
            raise SoundscapeError(f"{labels}: no Raven selection tables (*.txt) in this folder")
        audio_files = _audio_files(audio_dir, labels if labels.is_dir() else labels.parent)
        return _raven_rows(tables, audio_files, row_seconds, source=str(labels))
    try:
        raw = pd.read_csv(labels, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SoundscapeError(f"{labels}: not a readable CSV ({exc})") from None
    cols = set(raw.columns)
    if {"filename_seconds", "birds", "filename", "seconds"} <= cols:
        table = pd.DataFrame({"row_id": raw["filename_seconds"], "file": raw["filename"], "site": "",
                              "end_s": _seconds(raw["seconds"], labels), "birds": raw["birds"].map(parse_birds)})
    elif {"row_id", "audio_id", "seconds", "birds"} <= cols:
        table = pd.DataFrame({"row_id": raw["row_id"], "file": raw["audio_id"], "site": raw.get("site", ""),
                              "end_s": _seconds(raw["seconds"], labels), "birds": raw["birds"].map(parse_birds)})
    elif {"row_id", "audio_id", "seconds"} <= cols:  # the 2020 test.csv: rows to predict
        table = pd.DataFrame({"row_id": raw["row_id"], "file": raw["audio_id"], "site": raw.get("site", ""),
                              "end_s": _seconds(raw["seconds"], labels, allow_empty=True), "birds": None})
    else:
        raise SoundscapeError(f"{labels}: unknown soundscape label format (columns {', '.join(raw.columns)}); "
                              "expected the 2020 summary (filename_seconds,birds,filename,seconds), the 2020 "
                              "test.csv (site,row_id,seconds,audio_id), the 2021 labels "
                              "(row_id,site,audio_id,seconds,birds) or Raven selection tables")
    if table.empty:
        raise SoundscapeError(f"{labels}: no rows")
    whole = table["end_s"].isna()
    table["start_s"] = (table["end_s"] - row_seconds).clip(lower=0.0).where(~whole, 0.0)
    table["end_s"] = table["end_s"].where(~whole, math.inf)
    table["file"] = table["file"].astype(str)
    table = table[["row_id", "file", "site", "start_s", "end_s", "birds"]]
    audio_files = _audio_files(audio_dir, labels.parent)
    audio = {key: match_audio(key, audio_files) for key in dict.fromkeys(table["file"])}
    return SoundscapeRows(table.reset_index(drop=True), audio, str(labels), labelled=not table["birds"].isna().any())


def _seconds(column: pd.Series, path: Path, *, allow_empty: bool = False) -> pd.Series:
    values = pd.to_numeric(column.replace("", None), errors="coerce")
    bad = values.isna() & (column != "" if allow_empty else True)
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        raise SoundscapeError(f"{path}: line {first + 2}: seconds {column.iat[first]!r} is not a number")
    return values.astype(float)


# where the audio sits beside the labels in the layouts analysts have (ours, and the 2020-2021
# competitions': example_test_audio/, test_audio/, train_soundscapes/, test_soundscapes/)
AUDIO_FOLDERS = ("audio", "example_test_audio", "test_audio", "train_soundscapes", "test_soundscapes")


def _audio_files(audio_dir: Path | None, default: Path) -> list[Path]:
    """Audio files for the rows: everything under ``audio_dir`` (subfolders too), or, by default,
    the files in ``default`` (the labels' folder; not its other subfolders, which may hold anything
    such as another site's copies) and everything under its ``AUDIO_FOLDERS``."""
    if audio_dir is not None and not Path(audio_dir).is_dir():
        raise SoundscapeError(f"{audio_dir}: no such audio folder")
    if audio_dir is not None:
        candidates = list(Path(audio_dir).rglob("*"))
    else:
        candidates = [*Path(default).glob("*"), *(p for name in AUDIO_FOLDERS for p in (Path(default) / name).rglob("*"))]
    return sorted(p for p in candidates if p.is_file() and is_audio_path(p))


def match_audio(key: str, files: list[Path]) -> Path | None:
    """The audio file a label's file key names: the same stem, else the shortest name starting with
    the key followed by ``_``, ``.`` or ``-`` (competition files carry site and date after the id)."""
    exact = [p for p in files if p.stem == key]
    if exact:
        return exact[0]
    prefixed = [p for p in files if p.name.startswith(key) and p.name[len(key):len(key) + 1] in ("_", ".", "-")]
    return min(prefixed, key=lambda p: len(p.name)) if prefixed else None


def audio_seconds(path: Path) -> float | None:
    """A file's duration from its header (seconds), or None when libsndfile cannot tell."""
    try:
        import soundfile as sf

        info = sf.info(str(path))
        return info.frames / info.samplerate if info.samplerate else None
    except Exception:  # noqa: BLE001 - unreadable header: scoring reports the file's real error
        return None


def _raven_key(table: Path) -> str:
    name = table.name
    for marker in (".Table.", ".selections", ".txt"):
        if marker in name:
            return name[:name.index(marker)]
    return table.stem


def read_raven(path: Path) -> pd.DataFrame:
    """A Raven selection table as ``begin_s``, ``end_s``, ``species`` rows; SoundscapeError naming
    the file when it lacks the time or species columns."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SoundscapeError(f"{path}: not a readable selection table ({exc})") from None
    header = set(rows[0]) if rows else set()
    species_col = next((c for c in RAVEN_SPECIES_COLUMNS if c in header), None)
    if rows and (RAVEN_BEGIN not in header or RAVEN_END not in header or species_col is None):
        raise SoundscapeError(f"{path}: a Raven selection table needs '{RAVEN_BEGIN}', '{RAVEN_END}' and a "
                              f"species column ({', '.join(RAVEN_SPECIES_COLUMNS[:4])}...)")
    out = []
    for line, row in enumerate(rows, start=2):
        try:
            begin, end = float(row[RAVEN_BEGIN]), float(row[RAVEN_END])
        except (TypeError, ValueError):
            raise SoundscapeError(f"{path}: line {line}: begin/end time is not a number") from None
        species = (row.get(species_col) or "").strip()
        if species and species.lower() != NOCALL:
            out.append((begin, end, species))
    return pd.DataFrame(out, columns=["begin_s", "end_s", "species"])


def _raven_rows(tables: list[Path], audio_files: list[Path], row_seconds: float, *, source: str) -> SoundscapeRows:
    parts, audio = [], {}
    for table in tables:
        key = _raven_key(table)
        selections = read_raven(table)
        path = match_audio(key, audio_files)
        audio[key] = path
        seconds = audio_seconds(path) if path is not None else None
        if seconds is None:  # no audio: rows up to the last selection, so the labels are still listed
            seconds = float(selections["end_s"].max()) if len(selections) else row_seconds
        n = max(1, math.ceil(seconds / row_seconds - 1e-9))
        starts = [i * row_seconds for i in range(n)]
        birds = []
        for start in starts:
            end = start + row_seconds
            hit = selections[(selections["begin_s"] < end) & (selections["end_s"] > start)]
            birds.append(tuple(dict.fromkeys(hit["species"])))
        parts.append(pd.DataFrame({"row_id": [f"{key}_{int(round(s + row_seconds))}" for s in starts], "file": key,
                                   "site": "", "start_s": starts, "end_s": [s + row_seconds for s in starts],
                                   "birds": birds}))
    return SoundscapeRows(pd.concat(parts, ignore_index=True), audio, source, labelled=True)
