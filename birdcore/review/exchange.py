"""Detections and labels in and out of the review store.

- ``read_detections``: the CSV that ``python -m birdcore.predict ... --out`` writes
  (``file,start_s,end_s,species,common_name,score``).
- ``reviews_from_labels``: existing annotations (any format ``data.soundscapes.read_rows`` reads)
  as verdicts on the detections they cover: a detection is ``yes`` when a labelled row it overlaps
  names its species, ``no`` when the labelled rows it overlaps do not.
- ``export_raven`` / ``export_labels``: verified detections (``yes``, or the corrected species) as
  Raven selection tables, one per audio file, and as BirdCLEF 2021 soundscape labels
  (``row_id,site,audio_id,seconds,birds``) for the 5 s rows the reviewed detections cover, which
  ``python -m birdcore.soundscapes`` reads.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from birdcore.data.soundscapes import ROW_SECONDS, read_rows
from birdcore.data.species_groups import is_bird
from birdcore.data.species_names import same_species
from birdcore.io.atomic import atomic_write_text
from birdcore.serving.detections import CSV_HEADER, Detection, raven_names, write_raven_table
from birdcore.serving.parquet_results import is_parquet_output, read_parquet_detections


def read_detections(path: Path) -> pd.DataFrame:
    """A detections CSV, or the Parquet output of ``--out X.parquet`` (a dataset folder, or one Parquet
    file); ValueError naming the file when it is not one."""
    parquet = is_parquet_output(Path(path)) or Path(path).is_dir()
    kind = "Parquet dataset" if parquet else "CSV"
    if parquet:
        try:
            table = read_parquet_detections(Path(path))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several kinds
            raise ValueError(f"{path}: not a readable detections Parquet dataset "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        for column in ("file", "species", "common_name"):
            if column in table.columns:  # as the CSV reads them: text, empty where missing
                table[column] = table[column].astype(object).where(table[column].notna(), "").astype(str)
    else:
        try:
            table = pd.read_csv(path, keep_default_na=False)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{path}: not a readable detections CSV ({exc})") from None
    missing = [c for c in ("file", "start_s", "end_s", "species", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a detections {kind} of python -m birdcore.predict --out (columns "
                         f"{','.join(CSV_HEADER)}); missing {', '.join(missing)}")
    for column in ("start_s", "end_s", "score"):
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            first = int(values.isna().to_numpy().nonzero()[0][0])
            where = f"row {first + 1}" if parquet else f"line {first + 2}"
            raise ValueError(f"{path}: {where}: {column} is not a number")
        table[column] = values.astype(float)
    return table


def _key_of(file: str, keys: list[str]) -> str | None:
    """The labels' file key that names an audio path (its stem, or a prefix of its name)."""
    name = Path(file).name
    stem = Path(file).stem
    if stem in keys:
        return stem
    hits = [k for k in keys if name.startswith(k) and name[len(k):len(k) + 1] in ("_", ".", "-")]
    return max(hits, key=len) if hits else None


@dataclass
class LabelReviews:
    """What existing labels say of the detections they cover: ``verdicts`` (detection_id, verdict),
    and ``warning`` (one line, or None) when labels and detections share no species at all."""

    verdicts: pd.DataFrame
    warning: str | None = None
    not_judged: dict[str, int] = field(default_factory=dict)  # non-bird class → covered detections left alone


def reviews_from_labels(detections: pd.DataFrame, labels: Path, *, audio_dir: Path | None = None) -> LabelReviews:
    """Verdicts for the detections whose file and time the labels cover.  Species are matched by
    ``data.species_names`` (eBird code, scientific or common name), so BirdNET's detections, named by
    scientific name, meet labels that use eBird codes.  Detections of classes that are not birds
    (``data.species_groups``: BirdNET's Engine, frogs, ...) are left alone unless the labels name that
    class: labels of birds say nothing of them."""
    rows = read_rows(labels, audio_dir=audio_dir)
    if not rows.labelled:
        raise ValueError(f"{labels}: these rows have no labels")
    table = rows.table
    keys = list(dict.fromkeys(table["file"]))
    labelled = {b for birds in table["birds"] for b in birds}
    out = []
    not_judged: dict[str, int] = {}
    for det in detections.itertuples(index=False):
        key = _key_of(det.file, keys)
        if key is None:
            continue
        covered = table[(table["file"] == key) & (table["start_s"] < det.end_s) & (table["end_s"] > det.start_s)]
        if covered.empty:
            continue
        named = {b for birds in covered["birds"] for b in birds}
        names = [n for n in (str(det.species), str(getattr(det, "common_name", "") or "")) if n]
        if not is_bird(str(det.species)) and not any(same_species(n, b) for n in names for b in labelled):
            not_judged[str(det.species)] = not_judged.get(str(det.species), 0) + 1  # labels of birds say nothing
            continue
        hit = any(same_species(n, b) for n in names for b in named)
        out.append({"detection_id": int(det.id), "verdict": "yes" if hit else "no"})
    verdicts = pd.DataFrame(out, columns=["detection_id", "verdict"])
    warning = _no_shared_species(table, detections, labels) if out and not (verdicts["verdict"] == "yes").any() else None
    return LabelReviews(verdicts, warning, not_judged)


def _no_shared_species(table: pd.DataFrame, detections: pd.DataFrame, labels: Path) -> str | None:
    """A warning when no detected species is named anywhere in the labels (after resolving names)."""
    labelled = sorted({b for birds in table["birds"] for b in birds})
    detected = sorted(set(detections["species"].astype(str)))
    if any(same_species(d, b) for d in detected for b in labelled):
        return None
    show = lambda names: ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")  # noqa: E731
    return (f"{labels}: the labels and the detections share no species (labels name {show(labelled)}; detections "
            f"name {show(detected)}), so every covered detection is 'no': check that they come from the same "
            f"species set")


def verified(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The detections people confirmed: verdict yes, or a corrected species (which replaces it)."""
    keep = verdicts[(verdicts["verdict"] == "yes") | verdicts["corrected_species"].notna()].copy()
    keep["species"] = keep["corrected_species"].where(keep["corrected_species"].notna(), keep["species"])
    return keep


def export_raven(verdicts: pd.DataFrame, folder: Path) -> int:
    """One Raven selection table of verified detections per audio file; returns the files written."""
    good = verified(verdicts)
    folder.mkdir(parents=True, exist_ok=True)
    files = [Path(f) for f in dict.fromkeys(good["file"])]
    names = raven_names(files)
    for f in files:
        rows = good[good["file"] == str(f)].sort_values("start_s")
        dets = [Detection(float(r.start_s), float(r.end_s), str(r.species), str(r.common_name or r.species),
                          float(r.score)) for r in rows.itertuples(index=False)]
        write_raven_table(folder / names[f], dets, sample_rate=48000)
    return len(files)


def export_labels(verdicts: pd.DataFrame, path: Path, *, row_seconds: float = ROW_SECONDS) -> int:
    """Soundscape labels of the 5 s rows reviewed detections overlap: the verified species of the row,
    or ``nocall`` when every reviewed detection in it was rejected; returns the rows written."""
    decided = verdicts[verdicts["verdict"].isin(["yes", "no"]) | verdicts["corrected_species"].notna()]
    good = verified(verdicts)
    rows = {}
    for det in decided.itertuples(index=False):
        first, last = int(det.start_s // row_seconds), int(math.ceil(det.end_s / row_seconds)) - 1
        for r in range(first, max(first, last) + 1):
            rows.setdefault((det.file, r), set())
    for det in good.itertuples(index=False):
        first, last = int(det.start_s // row_seconds), int(math.ceil(det.end_s / row_seconds)) - 1
        for r in range(first, max(first, last) + 1):
            rows[(det.file, r)].add(str(det.species))
    lines = ["row_id,site,audio_id,seconds,birds"]
    for (file, r), birds in sorted(rows.items()):
        audio_id, end = Path(file).stem, int(round((r + 1) * row_seconds))
        lines.append(f"{audio_id}_{end},,{audio_id},{end},{' '.join(sorted(birds)) or 'nocall'}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return len(rows)
