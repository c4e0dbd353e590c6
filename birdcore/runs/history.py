"""``history.csv`` of a run: one row per epoch, the single definition of its columns.

Columns: ``epoch`` (1-based), ``loss`` (training), ``val_top1`` and ``val_loss`` (whole validation
recordings, no augmentation) and ``seconds`` (the epoch's whole wall time: training, validation
scoring and checkpoints).  Written by training (``append_epoch``), read by the dashboard
(``read_history``) and by progress reports (``epoch_seconds``).
"""
from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from birdcore.io.atomic import atomic_write_text

HISTORY_FILE = "history.csv"
HISTORY_COLUMNS = ("epoch", "loss", "val_top1", "val_loss", "seconds")


def append_epoch(path: Path, row: dict) -> None:
    """Add epoch ``row["epoch"]`` (1-based), dropping rows of that epoch and later ones (epochs
    redone after a resume); rewritten atomically."""
    path = Path(path)
    rows = []
    if path.exists():
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if _int(r.get("epoch")) < int(row["epoch"])]
    rows.append({k: row.get(k) for k in HISTORY_COLUMNS})
    lines = [",".join(HISTORY_COLUMNS)] + [",".join("" if r.get(k) is None else str(r[k]) for k in HISTORY_COLUMNS)
                                           for r in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_history(path: Path) -> pd.DataFrame:
    """The history as a DataFrame; an empty one with the usual columns when the file is missing."""
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame({k: pd.Series(dtype=float) for k in HISTORY_COLUMNS})
    return pd.read_csv(path)


def epoch_seconds(path: Path) -> list[tuple[int, float]]:
    """(epoch, seconds) rows of the history; unreadable rows are skipped, a missing file gives []."""
    out = []
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            for r in csv.DictReader(handle):
                try:
                    out.append((int(r["epoch"]), float(r["seconds"]) if r.get("seconds") else float("nan")))
                except (KeyError, TypeError, ValueError):
                    continue
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    return out


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 30  # an unreadable row is dropped with the epochs being redone
