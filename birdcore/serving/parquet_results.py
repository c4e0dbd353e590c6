"""Batch detections as a Parquet dataset: ``python -m birdcore.predict RUN IN... --out X.parquet``.

``X.parquet/`` is a folder of part files (``part-00000.parquet``, ...) with the columns of the detections
CSV (``detections.CSV_HEADER``), which ``pyarrow.dataset.dataset(X)`` and ``pandas.read_parquet(X)`` read
as one table, plus the run's journal ``X.parquet/_journal`` (same format as ``<csv>.done``: a
``#producer {json}`` line, then one finished file per line).  Readers skip names starting with ``_`` or
``.``, so neither the journal nor a temporary part is read as data.

Crash safety (``ResultsParquet``): rows of several files are buffered, then written as one part under a
hidden temporary name, flushed to disk and renamed to ``.part-NNNNN.parquet.ready``; only then are its
files appended to the journal, and the part renamed to ``part-NNNNN.parquet`` (visible to readers).  On
opening, temporary parts are removed, a ready part whose files are all journaled is made visible, and
any part (ready or visible) holding a file the journal does not list is removed with all its files
taken out of the journal, so after a ``kill -9`` at any moment a rerun gives every file's rows once.

- ``open_results``: ``ResultsCsv`` or ``ResultsParquet`` by the output's suffix;
- ``read_detections_table``: a detections CSV or Parquet dataset (or single file) as a DataFrame;
- ``producer_of_output`` / ``journal_of_output``: an output's recorded producer and its journal's path.
"""
from __future__ import annotations

import csv

import json
import logging
import os
import re
import time
from pathlib import Path

import pandas as pd

from birdcore.io.atomic import atomic_write_text, replacing
from birdcore.serving.detections import (CSV_HEADER, JOURNAL_KEY, Detection, ResultsCsv, check_producer,
                                         producer_of, read_journal)

log = logging.getLogger(__name__)

PARQUET_SUFFIX = ".parquet"
JOURNAL_NAME = "_journal"
PART_RE = re.compile(r"^part-(\d{5,})\.parquet$")
READY_RE = re.compile(r"^\.(part-\d{5,}\.parquet)\.ready$")
TEMP_RE = re.compile(r"^\.(\.?part-\d{5,}\.parquet(\.ready)?|" + re.escape(JOURNAL_NAME) + r")\..*\.tmp$")

MAX_FILES = 500        # files per part (a kill loses at most these files' work)
MAX_ROWS = 200_000     # rows per part (the most the writer holds in memory, besides one file's rows)
MAX_SECONDS = 600.0    # a part at least this often while files keep coming


def arrow_schema():
    """The schema of every part: the CSV's columns, times and scores as float64."""
    import pyarrow as pa

    return pa.schema([("file", pa.string()), ("start_s", pa.float64()), ("end_s", pa.float64()),
                      ("species", pa.string()), ("common_name", pa.string()), ("score", pa.float64())])


def is_parquet_output(path: Path) -> bool:
    """Whether ``--out`` names a Parquet output (by its suffix)."""
    return Path(path).suffix.lower() == PARQUET_SUFFIX


def journal_of_output(path: Path) -> Path:
    """The journal of an output: ``X.parquet/_journal``, or ``<csv>.done``."""
    path = Path(path)
    if is_parquet_output(path) or path.is_dir():
        return path / JOURNAL_NAME
    return path.with_name(path.name + ".done")


def producer_of_output(path: Path) -> dict | None:
    """The producer recorded in an output's journal (a Parquet dataset or a CSV), or None."""
    path = Path(path)
    if is_parquet_output(path) or path.is_dir():
        return read_journal(path / JOURNAL_NAME)[0]
    return producer_of(path)


def open_results(path: Path, *, producer: dict | None = None, overwrite: bool = False):
    """``ResultsParquet`` for a path ending in ``.parquet``, else ``ResultsCsv`` (not opened yet)."""
    cls = ResultsParquet if is_parquet_output(path) else ResultsCsv
    return cls(Path(path), producer=producer, overwrite=overwrite)


class ResultsParquet:
    """A detections Parquet dataset written file by file, resumable after an interruption.

    Same interface and guarantees as ``detections.ResultsCsv``: ``open()`` returns the files already
    done (and refuses an output made by another producer, naming the difference, unless ``overwrite``);
    ``add(file, detections)`` records a file; ``close()`` writes what is buffered.  Unlike the CSV, a
    file is marked done when the part holding its rows is on disk (every ``max_files`` files,
    ``max_rows`` rows, ``max_seconds`` seconds, and on ``close()``), so ``add`` may return before the
    file is in the journal; a kill loses at most the buffered files, which a rerun scores again.
    """

    def __init__(self, path: Path, *, producer: dict | None = None, overwrite: bool = False,
                 max_files: int = MAX_FILES, max_rows: int = MAX_ROWS, max_seconds: float = MAX_SECONDS):
        self.path = Path(path)
        self.done_path = self.path / JOURNAL_NAME
        self.producer = None if producer is None else dict(producer)
        self.overwrite = overwrite
        self.max_files, self.max_rows, self.max_seconds = max(1, int(max_files)), max(1, int(max_rows)), max_seconds
        self._done_handle = None
        self._durable: set[str] = set()
        self._pending: list[str] = []
        self._pending_set: set[str] = set()
        self._columns: dict[str, list] = {c: [] for c in CSV_HEADER}
        self._next_part = 0
        self._since = time.monotonic()

    # opening ----------------------------------------------------------------------------------------
    def open(self) -> set[str]:
        """Prepare the folder for appending (repairing what a kill left); returns the files already done."""
        self._check_folder()
        if self.overwrite and self.path.is_dir():
            for entry in self._ours():
                entry.unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        for entry in self.path.iterdir():
            if TEMP_RE.match(entry.name):
                entry.unlink(missing_ok=True)  # a part or journal cut off mid-write
        previous, done_list = read_journal(self.done_path)
        visible, ready = self._parts()
        if self.producer is not None and (done_list or visible or ready):
            self._check_producer(previous)
        done = set(done_list)
        dropped: set[str] = set()
        for part in visible + ready:
            files = _files_in_part(part)
            if files <= done:
                if part in ready:
                    os.replace(part, self.path / READY_RE.match(part.name).group(1))
                continue
            log.warning("%s: removing %s (files not marked done: an interrupted run); they will be redone",
                        self.path, part.name)
            part.unlink()
            dropped |= files
        done_list = [d for d in done_list if d not in dropped]
        key = self.producer if self.producer is not None else previous
        head = "" if key is None else JOURNAL_KEY + json.dumps(key, sort_keys=True) + "\n"
        atomic_write_text(self.done_path, head + "".join(f"{d}\n" for d in done_list))  # drops a half line
        _fsync_dir(self.path)
        visible, _ = self._parts()
        self._next_part = 1 + max((int(PART_RE.match(p.name).group(1)) for p in visible), default=-1)
        self._durable = set(done_list)
        self._done_handle = open(self.done_path, "a", encoding="utf-8")
        self._since = time.monotonic()
        return set(self._durable)

    def _check_folder(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path}: exists and is not a detections Parquet folder (a Parquet output "
                             f"is a folder of part files); choose another --out")
        if not self.path.is_dir():
            return
        foreign = sorted(e.name for e in self.path.iterdir() if not e.name.startswith(".") and
                         e.name != JOURNAL_NAME and not PART_RE.match(e.name))
        if foreign:
            raise ValueError(f"{self.path}: exists and is not a detections Parquet folder (it holds "
                             f"{', '.join(foreign[:3])}{' ...' if len(foreign) > 3 else ''}); choose another --out")

    def _ours(self) -> list[Path]:
        return [e for e in self.path.iterdir() if e.name == JOURNAL_NAME or PART_RE.match(e.name) or
                READY_RE.match(e.name) or TEMP_RE.match(e.name)]

    def _parts(self) -> tuple[list[Path], list[Path]]:
        """Visible parts and ready (written, maybe not journaled) parts, each in name order."""
        names = sorted(e.name for e in self.path.iterdir())
        return ([self.path / n for n in names if PART_RE.match(n)],
                [self.path / n for n in names if READY_RE.match(n)])

    def _check_producer(self, previous: dict | None) -> None:
        check_producer(self.path, previous, self.producer)

    # writing ----------------------------------------------------------------------------------------
    def add(self, file: str, detections: list[Detection]) -> None:
        """Buffer a file's rows; write a part when the buffer is full (then the file is marked done).
        A file already done is ignored (its rows are in the dataset); one added twice before its part is
        written keeps its last rows."""
        if self._done_handle is None:
            raise RuntimeError(f"{self.path}: add() before open() or after close()")
        file = str(file)
        if file in self._durable:
            return
        if file in self._pending_set:
            self._drop_pending(file)
        self._pending.append(file)
        self._pending_set.add(file)
        cols = self._columns
        for d in detections:  # rounded as the CSV writes them (csv_row), so both outputs hold equal rows
            cols["file"].append(file)
            cols["start_s"].append(float(f"{d.start_s:.3f}"))
            cols["end_s"].append(float(f"{d.end_s:.3f}"))
            cols["species"].append(str(d.ebird_code))
            cols["common_name"].append(str(d.common_name))
            cols["score"].append(float(f"{d.score:.4f}"))
        if (len(self._pending) >= self.max_files or len(cols["file"]) >= self.max_rows
                or time.monotonic() - self._since >= self.max_seconds):
            self.flush()

    def _drop_pending(self, file: str) -> None:
        keep = [i for i, f in enumerate(self._columns["file"]) if f != file]
        self._columns = {c: [v[i] for i in keep] for c, v in self._columns.items()}
        self._pending.remove(file)
        self._pending_set.discard(file)

    def flush(self) -> None:
        """Write the buffered files as one part, then mark them done."""
        self._since = time.monotonic()
        if not self._pending:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        name = f"part-{self._next_part:05d}.parquet"
        ready = self.path / f".{name}.ready"
        if self._columns["file"]:
            table = pa.table(self._columns, schema=arrow_schema())
            with replacing(ready) as tmp:  # ..part-NNNNN.parquet.ready.XXXX.tmp, fsynced, then renamed
                pq.write_table(table, tmp, compression="zstd")
            _fsync_dir(self.path)
        self._done_handle.write("".join(f"{f}\n" for f in self._pending))
        self._done_handle.flush()
        os.fsync(self._done_handle.fileno())
        if self._columns["file"]:
            os.replace(ready, self.path / name)
            _fsync_dir(self.path)
            self._next_part += 1
        self._durable.update(self._pending)
        self._pending, self._pending_set = [], set()
        self._columns = {c: [] for c in CSV_HEADER}

    def close(self) -> None:
        """Write what is buffered and close the journal (again: nothing)."""
        if self._done_handle is None:
            return
        try:
            self.flush()
        finally:
            self._done_handle.close()
            self._done_handle = None


def _files_in_part(part: Path) -> set[str]:
    """The distinct files a part holds rows of; ValueError naming it when it cannot be read."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        column = pq.read_table(part, columns=["file"]).column("file")
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
        raise ValueError(f"{part}: a damaged part of the detections ({exc}); give --overwrite to score "
                         f"again, or remove it and the journal's lines of its files") from None
    return {str(v) for v in pc.unique(column).to_pylist()}


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (where the platform allows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# reading --------------------------------------------------------------------------------------------
def empty_detections() -> pd.DataFrame:
    """A detections table without rows (the CSV's columns)."""
    return pd.DataFrame({"file": pd.Series(dtype=str), "start_s": pd.Series(dtype=float),
                         "end_s": pd.Series(dtype=float), "species": pd.Series(dtype=str),
                         "common_name": pd.Series(dtype=str), "score": pd.Series(dtype=float)})


def parquet_dataset(path: Path):
    """``pyarrow.dataset`` of a Parquet file or folder (which skips ``_journal`` and hidden files); None when
    the folder is an output that holds no part yet (it has a journal).  Raises OSError / pyarrow errors
    when it cannot be read, FileNotFoundError for a folder with neither parts nor journal."""
    import pyarrow.dataset as ds

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    dataset = ds.dataset(str(path), format="parquet")
    if dataset.files:
        return dataset
    if (path / JOURNAL_NAME).is_file():
        return None
    raise FileNotFoundError(f"no Parquet files in {path}")


def read_parquet_detections(path: Path) -> pd.DataFrame:
    """A Parquet detections file or dataset folder as a DataFrame (parts in name order), its columns as
    stored; the CSV's empty columns when the folder holds no part.  Errors are pyarrow's / OSError."""
    dataset = parquet_dataset(path)
    if dataset is None:
        return empty_detections()
    return dataset.to_table().to_pandas()


def read_detections_table(path: Path) -> pd.DataFrame:
    """A detections output as a DataFrame (columns ``CSV_HEADER``): a CSV, or a Parquet dataset folder or
    file (path ending in ``.parquet``, or a folder).  ValueError naming it when it is neither."""
    path = Path(path)
    if is_parquet_output(path) or path.is_dir():
        try:
            table = read_parquet_detections(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise ValueError(f"{path}: not a readable detections Parquet dataset ({exc})") from None
    else:
        try:
            table = pd.read_csv(path, keep_default_na=False, dtype={"file": str, "species": str,
                                                                     "common_name": str})
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{path}: not a readable detections CSV ({exc})") from None
    missing = [c for c in CSV_HEADER if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a detections output of python -m birdcore.predict --out (columns "
                         f"{','.join(CSV_HEADER)}); missing {', '.join(missing)}")
    return table[list(CSV_HEADER)]


def detection_rows(path: Path, *, batch_rows: int = 200_000):
    """The rows of a detections output (``CSV_HEADER`` order), a Parquet dataset read batch by batch so
    memory does not grow with the archive; a CSV through ``csv``."""
    path = Path(path)
    if not (is_parquet_output(path) or path.is_dir()):
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            yield from (row for row in reader if len(row) == len(CSV_HEADER))
        return
    dataset = parquet_dataset(path)
    if dataset is None:
        return
    for batch in dataset.to_batches(columns=list(CSV_HEADER), batch_size=batch_rows):
        yield from zip(*(batch.column(c).to_pylist() for c in CSV_HEADER))
