"""Annotated field soundscapes in the dashboard: the numbers of its Soundscapes page.

``SoundscapeView.build(run, scored, settings)`` takes the row scores of a run on labelled
soundscapes (``evaluation.soundscape_scoring.RowScores``: R rows of 5 s, C species) once, applies
the run's saved post-processing (``evaluation.soundscapes.processed_scores``) and matches the labels
to the run's species (``evaluation.soundscapes.labels_for``).  Every answer after that is a few
vectorised passes over the (R, C) arrays, so a threshold slider never scores audio again:

- ``report(thresholds)``: the metrics of ``python -m birdcore.soundscapes evaluate`` (the same dict);
- ``at(thresholds)``: row-wise F1, macro F1, precision, recall and false positives per hour at one
  global threshold or one threshold per species, and ``species_at`` the same per species;
- ``curve(grid)``: those metrics against a global threshold;
- ``timeline(file, thresholds, top=N)``: one file's rows × its top N species' scores (long format,
  for a chart) and ``label_marks(file)`` its labelled rows.

``row_audio(path, start_s, end_s, context_s=2)`` reads one row of a file with a few seconds of
context, decoded in memory at the file's own rate.  Definitions (decisions: score ≥ threshold;
a labelled species the run lacks is a miss; hours of audio the rows cover) are those of
``evaluation.soundscape_metrics``.  Times are seconds from the start of the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from birdcore.evaluation import soundscape_metrics as SM
from birdcore.evaluation.calibration import Labels
from birdcore.evaluation.soundscape_scoring import RowScores
from birdcore.evaluation.soundscapes import SoundscapeSettings, labels_for, processed_scores
from birdcore.runs.thresholds import threshold_vector

CONTEXT_SECONDS = 2.0  # audio played on each side of a row
MAX_SLICE_SECONDS = 60.0  # the longest span row_audio reads (a whole-file row is cut there)
CURVE_GRID = np.round(np.linspace(0.0, 1.0, 101), 4)


@dataclass
class SoundscapeView:
    """Labelled rows scored by a run, post-processed, with their truth in the run's species.

    ``table``: the scored rows (``RowScores.table``: row_id, file, site, start_s, end_s, birds);
    ``scores`` (R, C) float32 post-processed scores over ``codes`` (common names ``names``);
    ``labels``: truth (R, C), unknown (R,), files (R,), row_hours (R,);
    ``row_labels``: each row's labels as the run's codes, or the annotation's own name for a species
    the run lacks; ``species_not_in_run``: {name: rows}; ``files_not_scored``: {file: reason};
    ``seconds``: {file: length in seconds}.
    """

    table: pd.DataFrame
    scores: np.ndarray
    labels: Labels
    codes: list[str]
    names: list[str]
    row_labels: list[tuple[str, ...]]
    species_not_in_run: dict[str, int] = field(default_factory=dict)
    files_not_scored: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: SoundscapeSettings = field(default_factory=SoundscapeSettings)

    @classmethod
    def build(cls, run, scored: RowScores, settings: SoundscapeSettings) -> "SoundscapeView":
        """``run``: the ``LoadedRun`` that scored ``scored`` (its species are read, not its model)."""
        from birdcore.data.species_names import SpeciesResolver

        labels, missing = labels_for(scored, run)
        scores = processed_scores(run, scored, settings)
        match = SpeciesResolver(run.species)
        codes = list(scored.codes)
        row_labels = []
        for birds in scored.table["birds"]:
            shown = []
            for name in birds:
                col = match(name)
                shown.append(codes[col] if col is not None else str(name))
            row_labels.append(tuple(dict.fromkeys(shown)))
        names = run.species["common_name"].astype(str).tolist() if "common_name" in run.species else codes
        return cls(scored.table.reset_index(drop=True), np.asarray(scores, np.float32), labels, codes,
                   [n or c for n, c in zip(names, codes)], row_labels, dict(missing), dict(scored.failed),
                   dict(scored.seconds), settings)

    # ---- shapes

    @property
    def n_rows(self) -> int:
        return len(self.table)

    @property
    def hours(self) -> float:
        """Hours of audio the rows cover (fp per hour divides by this)."""
        return float(self.labels.row_hours.sum())

    @property
    def files(self) -> list[str]:
        """Scored files in the order of their first row."""
        return list(dict.fromkeys(self.table["file"]))

    def thresholds(self, value) -> np.ndarray:
        """(C,) float32 thresholds from a number (every species), a (C,) array, or a thresholds.json
        dict (``runs.thresholds.threshold_vector``: the global threshold for species without one)."""
        if isinstance(value, dict):
            return threshold_vector(value, self.codes)
        out = np.asarray(value, np.float32)
        if out.ndim == 0:
            out = np.full(len(self.codes), out, np.float32)
        if out.shape != (len(self.codes),):
            raise ValueError(f"thresholds must be one number or {len(self.codes)} (one per species), got {out.shape}")
        if not np.isfinite(out).all():
            raise ValueError("thresholds must be finite")
        return out

    def with_override(self, global_threshold: float, overrides: dict[str, float] | None = None) -> np.ndarray:
        """(C,) thresholds: ``global_threshold`` for every species but those in ``overrides`` {code: t}."""
        out = self.thresholds(float(global_threshold)).copy()
        for code, t in (overrides or {}).items():
            out[self.codes.index(code)] = float(t)
        return out

    # ---- metrics

    def report(self, thresholds) -> dict:
        """The metrics dict of ``evaluation.soundscapes.evaluate`` (``soundscape_metrics.report`` on
        these rows, plus species_not_in_run, files_not_scored, postprocessing, overlap)."""
        thr = self.thresholds(thresholds)
        result = SM.report(self.labels.truth, self.labels.unknown, self.scores, thr, self.codes, hours=self.hours,
                           n_files=len(self.seconds))
        result.update({"species_not_in_run": self.species_not_in_run, "files_not_scored": self.files_not_scored,
                       "postprocessing": self.settings.postprocessing.describe(), "overlap": self.settings.overlap})
        return result

    def at(self, thresholds) -> dict:
        """Metrics on the 5 s rows at ``thresholds`` (a number or (C,)): row_f1, macro_f1, precision
        (of the (row, species) detections), recall (of the labelled (row, species) pairs, species the
        run lacks included), fp_per_hour, and the counts detections, true_positives, false_positives,
        positives.  Rates that cannot be computed are None."""
        thr = self.thresholds(thresholds)
        truth, unknown = self.labels.truth, self.labels.unknown
        predicted = SM.decisions(self.scores, thr)
        return {"row_f1": SM.row_f1(truth, predicted, unknown), "macro_f1": SM.macro_f1(truth, predicted),
                "fp_per_hour": SM.fp_per_hour(truth, predicted, self.hours), **SM.pooled(truth, unknown, predicted)}

    def species_at(self, thresholds) -> pd.DataFrame:
        """Per species with positives or detections at ``thresholds``: species, name, threshold,
        positives, detections, precision, recall, fp_per_hour (the threshold-dependent columns of
        ``soundscape_metrics.per_species``, in one vectorised pass)."""
        thr = self.thresholds(thresholds)
        truth = self.labels.truth
        predicted = SM.decisions(self.scores, thr)
        pos, det = truth.sum(axis=0), predicted.sum(axis=0)
        tp = (truth & predicted).sum(axis=0)
        keep = np.flatnonzero((pos > 0) | (det > 0))
        hours = self.hours
        with np.errstate(invalid="ignore", divide="ignore"):
            out = pd.DataFrame({
                "species": np.array(self.codes, dtype=object)[keep], "name": np.array(self.names, dtype=object)[keep],
                "threshold": thr[keep].astype(float), "positives": pos[keep].astype(int),
                "detections": det[keep].astype(int),
                "precision": np.where(det[keep] > 0, tp[keep] / np.maximum(det[keep], 1), np.nan),
                "recall": np.where(pos[keep] > 0, tp[keep] / np.maximum(pos[keep], 1), np.nan),
                "fp_per_hour": (det[keep] - tp[keep]) / hours if hours > 0 else np.nan})
        return out.astype({"precision": float, "recall": float, "fp_per_hour": float})

    def curve_grid(self, n_points: int = 50) -> np.ndarray:
        """0, 0.01, ..., 1 joined with ``n_points`` quantiles of the scores of the labelled pairs and of
        the scores above 0.01 (where the metrics change fastest), rounded to 4 decimals."""
        q = np.linspace(0.0, 1.0, n_points)
        parts = [CURVE_GRID]
        for values in (self.scores[self.labels.truth], self.scores[self.scores > 0.01]):
            if values.size:
                parts.append(np.quantile(values, q))
        return np.unique(np.round(np.clip(np.concatenate(parts), 0.0, 1.0), 4))

    def curve(self, grid=None) -> pd.DataFrame:
        """``at`` for one global threshold at each value of ``grid`` (default ``curve_grid()``):
        columns threshold, row_f1, macro_f1, precision, recall, fp_per_hour (NaN where undefined)."""
        grid = self.curve_grid() if grid is None else np.asarray(grid, float)
        keys = ("row_f1", "macro_f1", "precision", "recall", "fp_per_hour")
        rows = []
        for t in grid:
            m = self.at(float(t))
            rows.append({"threshold": float(t), **{k: np.nan if m[k] is None else float(m[k]) for k in keys}})
        return pd.DataFrame(rows)

    # ---- one file

    def rows_of(self, file: str) -> pd.DataFrame:
        """The rows of ``file`` in time order: ``row`` (index into this view's rows), ``n`` (1-based
        number within the file), row_id, start_s, end_s (capped at the file's length), labels (the
        ``row_labels`` joined by spaces, "" for nocall)."""
        idx = np.flatnonzero(self.table["file"].to_numpy() == file)
        if not len(idx):
            raise KeyError(f"{file}: no scored rows of this file")
        part = self.table.iloc[idx]
        order = np.argsort(part["start_s"].to_numpy(float), kind="stable")
        idx = idx[order]
        length = self.seconds.get(file, math.inf)
        return pd.DataFrame({"row": idx, "n": np.arange(1, len(idx) + 1),
                             "row_id": self.table["row_id"].to_numpy()[idx],
                             "start_s": self.table["start_s"].to_numpy(float)[idx],
                             "end_s": np.minimum(self.table["end_s"].to_numpy(float)[idx], length),
                             "labels": [" ".join(self.row_labels[i]) for i in idx]})

    def timeline_species(self, file: str, *, top: int = 5) -> list[str]:
        """The species a file's timeline shows: the ``top`` with the highest score in the file, and
        every species of the run labelled in it, ordered by that highest score (ties: run order)."""
        idx = self.rows_of(file)["row"].to_numpy()
        best = self.scores[idx].max(axis=0)
        labelled = self.labels.truth[idx].any(axis=0)
        order = np.argsort(-best, kind="stable")
        keep = np.zeros(len(self.codes), bool)
        keep[order[:max(0, int(top))]] = True
        keep |= labelled
        return [self.codes[c] for c in order if keep[c]]

    def timeline(self, file: str, thresholds, *, top: int = 5, species: list[str] | None = None) -> pd.DataFrame:
        """Long format, one line per (row of ``file``, shown species): row, n, row_id, start_s, end_s,
        mid_s, species, name, score (post-processed), threshold, detected (score ≥ threshold),
        labelled (the species is labelled in the row).  ``species``: those to show (default
        ``timeline_species(file, top=top)``)."""
        thr = self.thresholds(thresholds)
        rows = self.rows_of(file)
        codes = species if species is not None else self.timeline_species(file, top=top)
        cols = [self.codes.index(c) for c in codes]
        idx = rows["row"].to_numpy()
        n_rows, n_cols = len(idx), len(cols)
        scores = self.scores[np.ix_(idx, cols)]
        rep = lambda a: np.repeat(np.asarray(a), n_cols)  # noqa: E731 - row-major (row, species) order
        tile = lambda a: np.tile(np.asarray(a, dtype=object), n_rows)  # noqa: E731
        return pd.DataFrame({
            "row": rep(idx), "n": rep(rows["n"]), "row_id": rep(rows["row_id"]), "start_s": rep(rows["start_s"]),
            "end_s": rep(rows["end_s"]), "mid_s": rep((rows["start_s"] + rows["end_s"]) / 2),
            "species": tile(codes), "name": tile([self.names[c] for c in cols]),
            "score": scores.reshape(-1).astype(float), "threshold": np.tile(thr[cols].astype(float), n_rows),
            "detected": (scores >= thr[cols][None, :]).reshape(-1),
            "labelled": self.labels.truth[np.ix_(idx, cols)].reshape(-1)})

    def label_marks(self, file: str, thresholds) -> pd.DataFrame:
        """One line per labelled (row, species) of ``file``: row, n, row_id, start_s, end_s, species
        (the run's code, or the annotation's name for a species the run lacks), in_run, score (NaN
        when the run lacks it), detected (False when it does)."""
        thr = self.thresholds(thresholds)
        out = []
        for r in self.rows_of(file).itertuples(index=False):
            for name in self.row_labels[r.row]:
                col = self.codes.index(name) if name in self.codes else None
                score = None if col is None else float(self.scores[r.row, col])
                out.append({"row": r.row, "n": r.n, "row_id": r.row_id, "start_s": r.start_s, "end_s": r.end_s,
                            "species": name, "in_run": col is not None, "score": score,
                            "detected": col is not None and bool(np.float32(score) >= thr[col])})
        return pd.DataFrame(out, columns=["row", "n", "row_id", "start_s", "end_s", "species", "in_run", "score",
                                          "detected"])

    def row_summary(self, row: int, thresholds) -> dict:
        """One row: row_id, file, start_s, end_s, labels (tuple), detected {code: score} at the
        thresholds (best first)."""
        thr = self.thresholds(thresholds)
        s = self.scores[row]
        hit = np.flatnonzero(s >= thr)
        hit = hit[np.argsort(-s[hit], kind="stable")]
        rec = self.table.iloc[row]
        return {"row_id": str(rec["row_id"]), "file": str(rec["file"]), "start_s": float(rec["start_s"]),
                "end_s": float(min(rec["end_s"], self.seconds.get(rec["file"], math.inf))),
                "labels": self.row_labels[row], "detected": {self.codes[c]: float(s[c]) for c in hit}}


# --------------------------------------------------------------------------- audio of a row

@dataclass
class AudioSlice:
    """``wave`` float32 mono at ``sample_rate`` Hz, starting ``start_s`` seconds into the file; the row
    itself spans ``row_start_s`` to ``row_end_s`` (file times)."""

    wave: np.ndarray
    sample_rate: int
    start_s: float
    row_start_s: float
    row_end_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.wave) / self.sample_rate


def row_audio(path: Path, start_s: float, end_s: float, *, context_s: float = CONTEXT_SECONDS,
              fallback_rate: int = 32000) -> AudioSlice:
    """The audio of [start_s, end_s) with ``context_s`` seconds on each side (clipped to the file),
    decoded in memory: libsndfile seeks to the start and reads only that span, at the file's own
    rate; a format it does not read (m4a, ...) is decoded up to the end of the span by
    ``io.audio.decode_audio`` at ``fallback_rate``.  At most ``MAX_SLICE_SECONDS`` are read.
    Raises ``AudioError`` ("<path>: <reason>")."""
    import soundfile as sf

    from birdcore.io.audio import AudioError, DecoderMessages, check_file, decode_audio

    label = str(path)
    if not (math.isfinite(start_s) and start_s >= 0 and end_s > start_s):
        raise ValueError(f"a row needs 0 <= start < end, got {start_s}..{end_s}")
    check_file(path, label)
    begin = max(0.0, start_s - context_s)
    stop = min(end_s + context_s, begin + MAX_SLICE_SECONDS)
    decoder = DecoderMessages(label)
    try:
        with decoder.capture():
            try:
                handle = sf.SoundFile(str(path))
            except sf.LibsndfileError as exc:
                if "not recognised" not in (exc.error_string or "").lower():
                    raise
                handle = None
            if handle is not None:
                with handle:
                    rate = int(handle.samplerate)
                    first = int(round(begin * rate))
                    first = min(first, handle.frames) if handle.frames > 0 else first
                    handle.seek(first)
                    data = handle.read(frames=max(0, int(round(stop * rate)) - first), dtype="float32", always_2d=True)
                begin = first / rate
    except AudioError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile errors on open, seek or read
        decoder.report(failed=True)
        raise AudioError(label, f"cannot read the audio ({exc})") from None
    decoder.report()
    if handle is None:
        whole = decode_audio(path, sample_rate=fallback_rate, max_seconds=stop)
        rate, first = fallback_rate, int(round(begin * fallback_rate))
        data, begin = whole[first:, None], first / fallback_rate
    if data.shape[0] == 0:
        raise AudioError(label, f"no audio at {start_s:g}-{end_s:g} s (the file is shorter)")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(label, "contains NaN or infinite samples")
    return AudioSlice(np.ascontiguousarray(mono, np.float32), rate, float(begin), float(start_s),
                      float(min(end_s, begin + len(mono) / rate)))


def supports_overlap(run_dir: Path) -> bool:
    """Whether a run folder's kind of model scores overlapping windows (BirdNET runs), read from its
    files without loading the model."""
    import json

    from birdcore.config import RunConfig
    from birdcore.models.base import kind_for, kind_name

    manifest = json.loads((Path(run_dir) / "run.json").read_text())
    cfg = RunConfig.load(Path(run_dir) / "config.json")
    return bool(kind_for(kind_name(manifest, cfg.to_dict())).supports_overlap)
