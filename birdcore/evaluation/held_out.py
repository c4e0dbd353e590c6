"""Which recordings of a dataset a run has seen: those its ``split.csv`` put in training or validation.

``python -m birdcore.evaluate`` scores a run on a dataset; recordings the run trained on (or chose its
checkpoint on) make it look better than it is on new recordings, so they are found here and left out
unless asked for.  A recording of the dataset is the run's recording ``species/stem`` (its
``recording_id``) when

* it has the same xeno-canto number (the ``xc_id`` column, else ``XC<digits>`` in the file name), or
* it has the same species and the same file name without its extension (a copy in another folder, or
  the same recording in another format, as BirdCLEF 2021's ``XC123.ogg`` for 2020's ``XC123.mp3``).

Runs on generated data (``run.json`` ``synthetic``) are the exception: their species, names and
xeno-canto numbers are made up, and every generated dataset numbers its files from XC100000, so a name
proves nothing there: such a recording is the run's only when its file has the same bytes as the run's
own copy (in the run's data folder, ``config.json`` ``data_dir``).
"""
from __future__ import annotations

import filecmp
import json
import logging
import re
from pathlib import Path

import pandas as pd

log = logging.getLogger("birdcore")

SEEN = {"train": "training", "val": "validation"}  # split → what the run did with the recording
_XC = re.compile(r"XC(\d+)", re.IGNORECASE)


def read_split(run_dir: Path) -> pd.DataFrame | None:
    """The run's ``split.csv`` (``recording_id``, ``split``, ``primary``), or None where it has none
    (a zero-shot run made from a species list saw no recordings)."""
    path = Path(run_dir) / "split.csv"
    if not path.is_file():
        return None
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"recording_id", "split"} - set(split.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    if "primary" not in split.columns:
        split["primary"] = split["recording_id"].str.partition("/")[0]
    return split


def run_split_of(df: pd.DataFrame, split: pd.DataFrame | None, *, synthetic: bool = False,
                 run_data_dir: Path | None = None) -> pd.Series:
    """For every row of ``df`` (``data.metadata.read_metadata`` columns), the split the run put the same
    recording in (``"train"``, ``"val"``, ``"test"``), or ``""`` for a recording the run never had;
    indexed like ``df``.  ``synthetic``: the run's names are made up, so a match by name counts only
    when the file has the same bytes as the run's copy in ``run_data_dir``."""
    out = pd.Series("", index=df.index, dtype=object)
    if split is None or split.empty or df.empty:
        return out
    by_name, by_xc = {}, {}
    for rid, part, primary in zip(split["recording_id"], split["split"], split["primary"]):
        stem = rid.partition("/")[2] or rid
        by_name.setdefault((primary.lower(), stem.lower()), (rid, part))
        xc = _XC.search(stem)
        if xc:
            by_xc.setdefault(int(xc.group(1)), (rid, part))
    copies = _run_copies(run_data_dir) if synthetic else {}
    for i, path, primary, xc_id in zip(df.index, df["path"], df["primary"], df["xc_id"]):
        found = by_name.get((str(primary).lower(), Path(path).stem.lower()))
        if found is None and int(xc_id) >= 0:
            found = by_xc.get(int(xc_id))
        if found is None:
            continue
        if synthetic and not _same_file(path, copies.get(found[0])):
            continue
        out[i] = found[1]
    return out


def _run_copies(run_data_dir: Path | None) -> dict[str, str]:
    """recording_id → audio path in the run's own data folder ({} when it is gone or unreadable)."""
    if run_data_dir is None or not Path(run_data_dir).is_dir():
        return {}
    from birdcore.data.metadata import read_metadata

    try:
        meta = read_metadata(Path(run_data_dir))
    except Exception as exc:  # DatasetError, an unreadable CSV: names alone cannot be trusted here
        log.debug("the run's data folder %s cannot be read (%s)", run_data_dir, exc)
        return {}
    return dict(zip(meta["recording_id"], meta["path"]))


def _same_file(path: str, other: str | None) -> bool:
    if other is None:
        return False
    a, b = Path(path), Path(other)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


def run_data_dir(run_dir: Path) -> Path | None:
    """The data folder the run was trained on (``config.json`` ``data_dir``, else ``data_report.json``'s)."""
    for name in ("config.json", "data_report.json"):
        try:
            saved = json.loads((Path(run_dir) / name).read_text()).get("data_dir")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(saved, str) and saved:
            return Path(saved)
    return None
