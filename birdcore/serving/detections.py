"""Detections of a scored file, and the files they are written to.

- ``top_species`` / ``top_kept``: a recording's best species with the run's threshold decisions;
- ``segment_detections``: every (segment, species) scoring at least a minimum, with times in seconds;
- ``ResultsCsv``: the resumable batch CSV (``file,start_s,end_s,species,common_name,score``);
- ``detections_csv`` / ``raven_table``: one file's detections as CSV text or a Raven Pro selection table;
- ``summarize_detections``: per species, over a whole detections CSV (files, segments, best score).

Used by batch scoring (``birdcore.cli.predict``) and the dashboard's classify page alike.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from birdcore.io.atomic import atomic_write_text, replacing
from birdcore.serving.sparse_scores import entries

CSV_HEADER = ("file", "start_s", "end_s", "species", "common_name", "score")
RAVEN_HEADER = ("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                "High Freq (Hz)", "Species Code", "Common Name", "Confidence")
RAVEN_SUFFIX = ".selections.txt"
MAX_TOP = 50  # the most species one answer lists (predict --top, the API's top)

@dataclass
class Prediction:
    """One species' score for a clip."""

    ebird_code: str
    common_name: str
    sci_name: str
    score: float
    threshold: float | None

    @property
    def detected(self) -> bool | None:
        return None if self.threshold is None else self.score >= self.threshold

    @property
    def group(self) -> str:
        """"bird", "other animal" or "sound" (``data.species_groups``: BirdNET's non-bird classes)."""
        from birdcore.data.species_groups import group_of

        return group_of(self.sci_name or self.ebird_code)

    @property
    def label(self) -> str:
        """The species' names, each once: ``Common (Scientific)``, with the code first where it is not
        the scientific name (BirdNET's codes are), and a mark on non-bird classes."""
        names = self.common_name if not self.sci_name or self.sci_name == self.common_name else \
            f"{self.common_name} ({self.sci_name})"
        code = "" if self.ebird_code in (self.sci_name, self.common_name) else f"{self.ebird_code}  "
        mark = "" if self.group == "bird" else f"  [{self.group}, not a bird]"
        return f"{code}{names}{mark}"

    @property
    def decision(self) -> str:
        """"detected", "below threshold", or "no threshold" (a run without thresholds)."""
        if self.threshold is None:
            return "no threshold"
        return "detected" if self.detected else "below threshold"


@dataclass
class Detection:
    """One species scoring >= the minimum in one segment; times in seconds from the file start."""

    start_s: float
    end_s: float
    ebird_code: str
    common_name: str
    score: float


def threshold_for(run, code: str) -> float | None:
    """The run's decision threshold for a species: its own, else the run's global one, else None."""
    fallback = (run.thresholds.get("global") or {}).get("threshold")
    return (run.thresholds.get("species") or {}).get(code, {}).get("threshold", fallback)


def top_species(run, recording_scores: np.ndarray, *, top: int = 5) -> list[Prediction]:
    """The ``top`` highest-scoring species of a (C,) recording-score vector, with the run's thresholds
    (``threshold_for``)."""
    order = np.argsort(-recording_scores)[:top]
    out = []
    for i in order:
        row = run.species.iloc[int(i)]
        out.append(Prediction(row["ebird_code"], row["common_name"], row["sci_name"],
                              float(recording_scores[i]), threshold_for(run, row["ebird_code"])))
    return out


def top_kept(run, recording_scores: np.ndarray, keep=None, *, top: int = 5) -> list[Prediction]:
    """``top_species`` among the species a ``species_mask.SpeciesMask`` keeps (all when ``keep`` is
    None); fewer than ``top`` when it keeps fewer, none when it keeps none."""
    if keep is None:
        return top_species(run, recording_scores, top=top)
    ranked = np.where(keep.keep, recording_scores, -np.inf)
    return top_species(run, ranked, top=min(top, keep.n_kept))


def segment_detections(run, segment_scores: np.ndarray, *, seconds: float, min_score: float,
                       hop_seconds: float | None = None) -> list[Detection]:
    """Detections from (S, C) segment probabilities of a file ``seconds`` long (an array, or
    ``sparse_scores.SparseScores``).

    Segment ``i`` spans ``[i * hop, min(i * hop + segment_seconds, seconds)]``, hop =
    ``hop_seconds`` (overlapping BirdNET windows) or ``segment_seconds``; the last,
    zero-padded segment ends with the file.  A score of 0 (a species a filter dropped)
    is never a detection.  Ordered by time, then by decreasing score.
    """
    seg_s = float(run.config.audio.segment_seconds)
    hop = seg_s if hop_seconds is None else float(hop_seconds)
    codes = run.species["ebird_code"].tolist()
    names = run.species["common_name"].tolist()
    out = []
    for i, (species, score) in enumerate(entries(segment_scores)):
        start = round(i * hop, 6)
        end = max(min(start + seg_s, seconds), start)
        for k in np.argsort(-score, kind="stable"):
            if score[k] < min_score or score[k] == 0.0:
                break
            j = int(species[k])
            out.append(Detection(start, end, codes[j], names[j], float(score[k])))
    return out


def detection_count(segment_scores, *, min_score: float) -> int:
    """How many rows ``segment_detections`` gives at ``min_score``, without making them."""
    return sum(int(np.count_nonzero((score >= min_score) & (score != 0.0))) for _, score in entries(segment_scores))


JOURNAL_KEY = "#producer "  # the first line of a journal: what made its detections (JSON)


class ResultsCsv:
    """A detections CSV written file by file, resumable after an interruption.

    Rows of a file are appended and flushed first; then the file's path is appended to the journal
    ``<csv>.done``.  On opening, rows of files not listed as done (a file cut off mid-write) are
    removed, so redoing them never duplicates rows.  Files are identified by their path as given.

    The journal's first line records ``producer``: the run and every setting that changes the
    detections (a flat dict of JSON values).  Opening an output made by another producer raises
    ValueError naming the difference, so a rerun with other settings never mixes its detections with
    the old ones; ``overwrite=True`` starts the output again instead.
    """

    def __init__(self, path: Path, *, producer: dict | None = None, overwrite: bool = False):
        self.path = Path(path)
        self.done_path = self.path.with_name(self.path.name + ".done")
        self.producer = None if producer is None else dict(producer)
        self.overwrite = overwrite
        self._csv = self._done = None
        self._writer = None

    def open(self) -> set[str]:
        """Prepare both files for appending; returns the paths already done."""
        self._check_header()
        if self.overwrite:
            for p in (self.path, self.done_path):
                p.unlink(missing_ok=True)
        previous, done = read_journal(self.done_path)
        if self.producer is not None and (done or _has_rows(self.path)):
            self._check_producer(previous)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._rewrite_csv(set(done))
        key = self.producer if self.producer is not None else previous
        head = "" if key is None else JOURNAL_KEY + json.dumps(key, sort_keys=True) + "\n"
        atomic_write_text(self.done_path, head + "".join(f"{d}\n" for d in done))  # drops a half-written line
        self._csv = open(self.path, "a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._csv, lineterminator="\n")
        self._done = open(self.done_path, "a", encoding="utf-8")
        return set(done)

    def _check_producer(self, previous: dict | None) -> None:
        check_producer(self.path, previous, self.producer)

    def _check_header(self) -> None:
        if not self.path.is_file():
            return
        with open(self.path, newline="", encoding="utf-8") as old:
            header = next(csv.reader(old), None)
        if header is not None and tuple(header) != CSV_HEADER:
            raise ValueError(f"{self.path}: exists and is not a detections file "
                             f"(header {','.join(header)[:80]!r}); choose another --out")

    def _rewrite_csv(self, done: set[str]) -> None:
        with replacing(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(CSV_HEADER)
            if self.path.exists():
                with open(self.path, newline="", encoding="utf-8") as old:
                    reader = csv.reader(old)
                    next(reader, None)
                    for row in reader:
                        if len(row) == len(CSV_HEADER) and row[0] in done:
                            writer.writerow(row)

    def add(self, file: str, detections: list[Detection]) -> None:
        """Append a file's rows, flush them, then mark the file done."""
        for d in detections:
            self._writer.writerow(csv_row(file, d))
        _flush(self._csv)
        self._done.write(f"{file}\n")
        _flush(self._done)

    def close(self) -> None:
        for handle in (self._csv, self._done):
            if handle is not None:
                handle.close()
        self._csv = self._done = self._writer = None


def read_journal(path: Path) -> tuple[dict | None, list[str]]:
    """A journal's producer (None when it records none) and the files it lists as done, in order."""
    lines = _complete_lines(Path(path))
    if lines and lines[0].startswith(JOURNAL_KEY):
        try:
            producer = json.loads(lines[0][len(JOURNAL_KEY):])
        except ValueError:
            raise ValueError(f"{path}: damaged first line (the settings that made the detections)") from None
        return producer, lines[1:]
    return None, lines


def producer_of(detections_csv: Path) -> dict | None:
    """The producer recorded in a detections CSV's journal (``<csv>.done``), or None."""
    return read_journal(Path(detections_csv).with_name(Path(detections_csv).name + ".done"))[0]


def check_producer(output: Path, previous: dict | None, producer: dict) -> None:
    """ValueError (one line naming ``output``) unless an output that already holds detections was made by
    ``producer``: its journal recorded ``previous`` (None: nothing recorded)."""
    if previous is None:
        raise ValueError(f"{output}: already holds detections whose settings were not recorded (an older "
                         f"version or another program wrote it); give --overwrite to replace them, or choose "
                         f"another --out")
    diff = producer_difference(previous, producer)
    if diff:
        raise ValueError(f"{output}: holds detections made with other settings ({diff}); rerun with the "
                         f"same settings to continue it, give --overwrite to replace them, or choose another --out")


def producer_difference(old: dict, new: dict) -> str:
    """The settings in which two producers differ, as ``name: old → new`` joined by "; " ("" if none)."""
    def show(value) -> str:
        return "none" if value is None else str(value)

    keys = sorted(set(old) | set(new))
    return "; ".join(f"{k}: {show(old.get(k))} → {show(new.get(k))}" for k in keys if old.get(k) != new.get(k))


def _has_rows(path: Path) -> bool:
    """Whether a detections CSV holds any line after its header."""
    if not path.is_file():
        return False
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for _ in zip(range(2), fh)) > 1


def raven_names(paths: list[Path]) -> dict[Path, str]:
    """``<stem>.selections.txt`` per file; a repeated stem gets ``<stem>-2``, ``-3``... in list order."""
    used: dict[str, int] = {}
    out = {}
    for p in paths:
        n = used.get(p.stem, 0) + 1
        used[p.stem] = n
        out[p] = f"{p.stem}{'' if n == 1 else f'-{n}'}{RAVEN_SUFFIX}"
    return out


def csv_row(file: str, d: Detection) -> list[str]:
    """One row of the detections CSV (columns ``CSV_HEADER``)."""
    return [file, f"{d.start_s:.3f}", f"{d.end_s:.3f}", d.ebird_code, d.common_name, f"{d.score:.4f}"]


def detections_csv(file: str, detections: list[Detection]) -> str:
    """The detections of one file as the text of a detections CSV (header included)."""
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows(csv_row(file, d) for d in detections)
    return out.getvalue()


def raven_table(detections: list[Detection], *, sample_rate: int) -> str:
    """A Raven Pro selection table (tab-separated text), one selection per detection, numbered from 1."""
    lines = ["\t".join(RAVEN_HEADER)]
    for k, d in enumerate(detections, start=1):
        lines.append("\t".join([str(k), "Spectrogram 1", "1", f"{d.start_s:.3f}", f"{d.end_s:.3f}", "0",
                                f"{sample_rate / 2:g}", d.ebird_code, d.common_name, f"{d.score:.4f}"]))
    return "\n".join(lines) + "\n"


def write_raven_table(path: Path, detections: list[Detection], *, sample_rate: int) -> None:
    """``raven_table`` written atomically to ``path``."""
    atomic_write_text(Path(path), raven_table(detections, sample_rate=sample_rate))


def _complete_lines(path: Path) -> list[str]:
    """Lines of ``path`` that end with a newline (a half-written last line is dropped)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete (or empty)
    return list(dict.fromkeys(line for line in lines if line))


def _flush(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())


SUMMARY_HEADER = ("species", "common_name", "files", "detections", "max_score", "max_file", "max_start_s")


def summarize_detections(path: Path) -> list[dict]:
    """Per species of a detections CSV (``CSV_HEADER``): ``summarize_rows`` of its rows.  Raises
    ValueError naming the file if it is not a detections CSV."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        if tuple(next(reader, ())) != CSV_HEADER:
            raise ValueError(f"{path}: not a detections CSV (expected the header {','.join(CSV_HEADER)})")
        return summarize_rows(row for row in reader if len(row) == len(CSV_HEADER))


def summarize_rows(rows) -> list[dict]:
    """Per species of detection rows (``CSV_HEADER`` order, numbers as text or numbers): how many files
    and segments it was detected in, and its best score with where it was (file, start in seconds).
    Best-scoring species first (ties: more files, then name).  Memory grows with species, not rows."""
    by_species: dict[str, dict] = {}
    for file, start, _end, code, name, score in rows:
        entry = by_species.setdefault(code, {"species": code, "common_name": name, "files": set(),
                                             "detections": 0, "max_score": -1.0})
        entry["files"].add(file)
        entry["detections"] += 1
        if float(score) > entry["max_score"]:
            entry.update(max_score=float(score), max_file=file, max_start_s=float(start))
    rows = [{**e, "files": len(e["files"])} for e in by_species.values()]
    return sorted(rows, key=lambda r: (-r["max_score"], -r["files"], r["species"]))


def summary_csv(rows: list[dict]) -> str:
    """``summarize_detections`` rows as CSV text (columns ``SUMMARY_HEADER``)."""
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SUMMARY_HEADER)
    for r in rows:
        writer.writerow([r["species"], r["common_name"], r["files"], r["detections"], f"{r['max_score']:.4f}",
                         r["max_file"], f"{r['max_start_s']:.3f}"])
    return out.getvalue()
