"""Analysis of a finished run, for the dashboard: score tables, per-species summaries, curves, confusions.

Thresholds are in :mod:`birdcore.analysis.thresholds`, two-run comparisons in :mod:`birdcore.analysis.comparison`.

Everything here is plain numpy / pandas (no TensorFlow, no Streamlit), so the
dashboard pages only display what these functions return.

Shapes: N recordings, C species, ΣS segments over all recordings.  Conventions
are those of :mod:`birdcore.evaluation.metrics`: a species is *detected* when
``score >= threshold``; a recording's primary pair is the only positive of its
row; background (secondary) pairs are neither positive nor negative; top-1 is
*correct* when no other species scores >= the primary species (ties count
against the recording, as in :func:`birdcore.evaluation.metrics.top_k_accuracy`).

Rates that cannot be computed (no positives, no negatives, no detections) are
None in dicts and NaN in DataFrames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from birdcore.evaluation import metrics as M
from birdcore.models.base import kind_for, kind_name
from birdcore.runs.folder import added_marks
from birdcore.runs.history import HISTORY_FILE, read_history



# --------------------------------------------------------------------------- score table

@dataclass(eq=False)
class ScoreTable:
    """The arrays of a run's ``scores.npz`` (test recordings only).

    ``recording_id`` (N,) str; ``species`` C eBird codes in model order;
    ``primary`` (N,) int64 column of the primary species; ``scores`` (N, C)
    float32 in [0, 1]; ``secondary`` (N, C) bool background species;
    ``segment_scores`` (ΣS, C) float16 (empty when None); ``segment_offsets``
    (N+1,) int64, recording i owning rows ``offsets[i]:offsets[i+1]``;
    ``segment_seconds`` length of one segment in seconds.
    """

    recording_id: np.ndarray
    species: list[str]
    primary: np.ndarray
    scores: np.ndarray
    secondary: np.ndarray
    segment_scores: np.ndarray | None = None
    segment_offsets: np.ndarray | None = None
    segment_seconds: float = 5.0
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.recording_id = np.asarray(self.recording_id).astype(str)
        self.species = [str(s) for s in self.species]
        self.primary = np.asarray(self.primary, dtype=np.int64)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        self.secondary = np.asarray(self.secondary, dtype=bool)
        n, c = len(self.recording_id), len(self.species)
        if self.scores.shape != (n, c) or self.secondary.shape != (n, c) or self.primary.shape != (n,):
            raise ValueError(f"inconsistent shapes: {n} recordings, {c} species, scores {self.scores.shape}, "
                             f"secondary {self.secondary.shape}, primary {self.primary.shape}")
        if n and (self.primary.min() < 0 or self.primary.max() >= c):
            raise ValueError(f"primary indices must lie in [0, {c})")
        if self.segment_scores is None:
            self.segment_scores = np.zeros((0, c), np.float16)
            self.segment_offsets = np.zeros(n + 1, np.int64)
        self.segment_scores = np.asarray(self.segment_scores)
        self.segment_offsets = np.asarray(self.segment_offsets, dtype=np.int64)
        if self.segment_offsets.shape != (n + 1,):
            raise ValueError(f"segment_offsets must have shape ({n + 1},), got {self.segment_offsets.shape}")
        self.segment_seconds = float(self.segment_seconds)
        self._index = {code: i for i, code in enumerate(self.species)}

    @property
    def n_recordings(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_species(self) -> int:
        return int(self.scores.shape[1])

    def column(self, code: str) -> int:
        """Column of species ``code``; KeyError names an unknown code."""
        try:
            return self._index[code]
        except KeyError:
            raise KeyError(f"unknown species {code!r}") from None

    def segments_of(self, i: int) -> np.ndarray:
        """Segment scores (S_i, C) float32 of recording ``i``."""
        start, end = self.segment_offsets[i], self.segment_offsets[i + 1]
        return np.asarray(self.segment_scores[start:end], dtype=np.float32)

    @cached_property
    def positives(self) -> np.ndarray:
        """(N, C) bool: True on each recording's primary pair."""
        out = np.zeros(self.scores.shape, dtype=bool)
        out[np.arange(self.n_recordings), self.primary] = True
        return out

    @cached_property
    def valid(self) -> np.ndarray:
        """(N, C) bool: pairs that count as positive or negative (not secondary; primary always)."""
        return ~self.secondary | self.positives

    @cached_property
    def top1_correct(self) -> np.ndarray:
        """(N,) bool: no other species scores >= the primary species."""
        own = self.scores[np.arange(self.n_recordings), self.primary]
        return (self.scores >= own[:, None]).sum(axis=1) == 1


def load_score_table(run_dir: Path | str) -> ScoreTable:
    """Read ``scores.npz`` of a run folder (no pickled objects)."""
    with np.load(Path(run_dir) / "scores.npz", allow_pickle=False) as z:
        return ScoreTable(recording_id=z["recording_id"], species=list(z["species"]), primary=z["primary"],
                          scores=z["scores"], secondary=z["secondary"], segment_scores=z["segment_scores"],
                          segment_offsets=z["segment_offsets"], segment_seconds=float(z["segment_seconds"]))


def positive_negative_scores(table: ScoreTable, code: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Scores (P,) of positive and (M,) of negative valid pairs of species ``code`` (None: all species pooled)."""
    pos, ok, scores = table.positives, table.valid, table.scores
    if code is not None:
        c = table.column(code)
        pos, ok, scores = pos[:, c], ok[:, c], scores[:, c]
    return scores[ok & pos], scores[ok & ~pos]


# --------------------------------------------------------------------------- summary

def species_summary(table: ScoreTable, *, metrics: dict, thresholds: dict, names: pd.DataFrame) -> pd.DataFrame:
    """One row per species, sorted by ebird_code.

    Columns: ebird_code, common_name, sci_name (from ``names``, i.e. species.csv;
    "" when missing), test_recordings (positives in the table), auc, ap (from
    ``metrics["per_species"]``), threshold (thresholds.json's per-species one),
    recall_at_target_fpr and test_fpr (rates of ``score >= threshold`` on the
    table's test scores).  With an ``added`` column in ``names`` (an append run's species.csv: the
    species BirdNET lacks, which the run learnt) a bool column ``added`` follows sci_name.
    """
    per = {row["species"]: row for row in metrics.get("per_species", [])}
    marks = added_marks(names)
    chosen = thresholds.get("species", {})
    lookup = names.set_index("ebird_code") if len(names) and "ebird_code" in names else pd.DataFrame()
    rows = []
    for c, code in enumerate(table.species):
        pos, neg = positive_negative_scores(table, code)
        t = chosen.get(code, {}).get("threshold")
        name = lookup.loc[code] if code in lookup.index else {}
        rows.append({
            "ebird_code": code,
            "common_name": str(name.get("common_name", "")),
            "sci_name": str(name.get("sci_name", "")),
            **({"added": marks.get(code, False)} if marks is not None else {}),
            "test_recordings": int(len(pos)),
            "auc": _nan(per.get(code, {}).get("auc")),
            "ap": _nan(per.get(code, {}).get("ap")),
            "threshold": _nan(t),
            "recall_at_target_fpr": float(np.mean(pos >= t)) if t is not None and len(pos) else math.nan,
            "test_fpr": float(np.mean(neg >= t)) if t is not None and len(neg) else math.nan,
        })
    columns = ["ebird_code", "common_name", "sci_name", *(["added"] if marks is not None else []), "test_recordings",
               "auc", "ap", "threshold", "recall_at_target_fpr", "test_fpr"]
    return pd.DataFrame(rows, columns=columns).sort_values("ebird_code", ignore_index=True)


def roc_det_points(table: ScoreTable, *, species: str | None = None) -> pd.DataFrame:
    """ROC / DET points (K rows): fpr, tpr, fnr = 1 - tpr, threshold (decreasing; the first is +inf).

    Pooled over all valid pairs when ``species`` is None; empty (with the
    columns) without a positive or a negative.
    """
    pos, neg = positive_negative_scores(table, species)
    if not len(pos) or not len(neg):
        return pd.DataFrame({k: pd.Series(dtype=float) for k in ("fpr", "tpr", "fnr", "threshold")})
    fpr, tpr, thr = M.roc_points(pos, neg)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "fnr": 1.0 - tpr, "threshold": thr})


def probit(p: np.ndarray | float, *, eps: float = 1e-6) -> np.ndarray:
    """Normal deviate of probabilities ``p`` (any shape), clipped to [eps, 1 - eps] so it stays finite."""
    from scipy.special import ndtri

    return ndtri(np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps))


# --------------------------------------------------------------------------- per-species views

def confusions(table: ScoreTable, code: str, *, top: int = 5) -> pd.DataFrame:
    """Species most often mistaken for ``code`` on the recordings whose primary is ``code``.

    For each such recording, the *rival* is its highest-scoring species other
    than the primary, among valid pairs (named background species are not
    confusions).  Columns: ebird_code, times_top (recordings where it was the
    rival), times_above_primary (recordings where it scored >= the primary,
    i.e. it cost the top-1), mean_score (its mean score over all of ``code``'s
    recordings).  The ``top`` species with times_top > 0, by times_top then
    mean_score, descending.
    """
    c = table.column(code)
    rows = np.flatnonzero(table.primary == c)
    columns = ["ebird_code", "times_top", "times_above_primary", "mean_score"]
    if not len(rows) or table.n_species < 2:
        return pd.DataFrame({k: pd.Series(dtype=object if k == "ebird_code" else float) for k in columns})
    scores = table.scores[rows].astype(np.float64)
    rivals = np.where(table.valid[rows], scores, -np.inf)
    rivals[:, c] = -np.inf
    times_top = np.bincount(rivals.argmax(axis=1), minlength=table.n_species)
    above = (rivals >= scores[:, [c]]).sum(axis=0)
    out = pd.DataFrame({"ebird_code": table.species, "times_top": times_top,
                        "times_above_primary": above, "mean_score": scores.mean(axis=0)})
    out = out[out["times_top"] > 0].sort_values(["times_top", "mean_score"], ascending=False)
    return out.head(top).reset_index(drop=True)


def ranked_recordings(table: ScoreTable, code: str, *, split_df: pd.DataFrame | None = None) -> pd.DataFrame:
    """The table's recordings ranked by their score for ``code`` (rank 1 = highest; ties share a rank).

    scores.npz holds test recordings only; with ``split_df`` (split.csv) the
    rows are further limited to recordings listed there with split "test".
    Columns: recording_id, score, is_positive (primary is ``code``),
    is_secondary (``code`` named as a background species), primary (code), rank.
    """
    c = table.column(code)
    out = pd.DataFrame({
        "recording_id": table.recording_id,
        "score": table.scores[:, c].astype(np.float64),
        "is_positive": table.primary == c,
        "is_secondary": table.secondary[:, c] & (table.primary != c),
        "primary": np.asarray(table.species, dtype=object)[table.primary] if table.n_recordings else [],
    })
    if split_df is not None:
        test_ids = set(split_df.loc[split_df["split"] == "test", "recording_id"].astype(str))
        out = out[out["recording_id"].isin(test_ids)]
    out = out.sort_values("score", ascending=False, kind="stable", ignore_index=True)
    out["rank"] = out["score"].rank(method="min", ascending=False).astype(np.int64)
    return out


def top1_errors(table: ScoreTable) -> pd.DataFrame:
    """The recordings whose primary species is not the top-1 (ties count as errors), worst first.

    Columns: recording_id, primary (code), predicted (the highest-scoring other
    species, code), primary_score, predicted_score, primary_rank (1 + the
    number of other species scoring >= the primary), predicted_is_background
    (the recordist named the predicted species as a background species: the
    model may have heard a bird that is really there).
    """
    columns = ["recording_id", "primary", "predicted", "primary_score", "predicted_score", "primary_rank",
               "predicted_is_background"]
    wrong = np.flatnonzero(~table.top1_correct)
    if not len(wrong):
        return pd.DataFrame({k: pd.Series(dtype=object) for k in columns})
    prim = table.primary[wrong]
    own = table.scores[wrong, prim].astype(np.float64)
    rivals = _rival_scores(table.scores[wrong], prim)
    predicted = rivals.argmax(axis=1)
    codes = np.asarray(table.species, dtype=object)
    out = pd.DataFrame({
        "recording_id": table.recording_id[wrong], "primary": codes[prim], "predicted": codes[predicted],
        "primary_score": own, "predicted_score": rivals[np.arange(len(wrong)), predicted],
        "primary_rank": 1 + (rivals >= own[:, None]).sum(axis=1),
        "predicted_is_background": table.secondary[wrong, predicted].astype(bool),
    }, columns=columns)
    return out.sort_values(["primary_rank", "predicted_score"], ascending=[False, False], ignore_index=True)


def _rival_scores(scores: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """(N, C) float64 copy of ``scores`` with each row's primary species at -inf."""
    rivals = np.asarray(scores, dtype=np.float64).copy()
    rivals[np.arange(len(rivals)), primary] = -np.inf
    return rivals


def top1_predictions(table: ScoreTable) -> np.ndarray:
    """(N,) int: each recording's top-1 species column; on a tie with the primary, the rival
    (ties count as errors, as in ``ScoreTable.top1_correct`` and ``top1_errors``)."""
    rivals = _rival_scores(table.scores, table.primary)
    return np.where(table.top1_correct, table.primary, rivals.argmax(axis=1) if table.n_species > 1 else 0)


def confusion_matrix(table: ScoreTable, *, only_confused: bool = True) -> pd.DataFrame:
    """Counts of test recordings by primary species (rows) and top-1 species (columns).

    Rows and columns hold the same species, sorted by code: all of them, or with
    ``only_confused`` just those in at least one error (as the primary or as the
    prediction), so a 264-species run shows a readable matrix.  The diagonal sums
    to the top-1 hits among the rows kept; the whole matrix sums to the recordings
    whose primary is kept.
    """
    predicted = top1_predictions(table)
    codes = np.asarray(table.species, dtype=object)
    keep = np.ones(table.n_species, bool)
    if only_confused:
        wrong = predicted != table.primary
        keep = np.zeros(table.n_species, bool)
        keep[table.primary[wrong]] = True
        keep[predicted[wrong]] = True
    cols = np.flatnonzero(keep)
    cols = cols[np.argsort(codes[cols], kind="stable")]
    position = {c: k for k, c in enumerate(cols)}
    counts = np.zeros((len(cols), len(cols)), np.int64)
    for p, q in zip(table.primary, predicted):
        if p in position and q in position:
            counts[position[p], position[q]] += 1
    labels = [str(c) for c in codes[cols]]
    return pd.DataFrame(counts, index=pd.Index(labels, name="primary"), columns=pd.Index(labels, name="top-1"))


# --------------------------------------------------------------------------- run description and history

def run_summary(manifest: dict) -> str:
    """One readable line describing a run from its ``run.json``: model, pooling, species, training
    and split, e.g. "inception_v3 (weights none) · max pooling · 20 species · 77 epochs, best 72 ·
    split 157 train / 23 val / 23 test"."""
    kind = kind_for(kind_name(manifest))
    parts = [kind.describe(manifest), f"{manifest.get('pooling', '?')} pooling", f"{manifest.get('n_species', '?')} species"]
    if not kind.trains:
        parts.append("no training")
    elif not kind.trained_by_loop:  # fitted while its inputs were prepared (an append run's layer): no epochs
        parts.append("trained without epochs")
    else:
        epochs, best = manifest.get("epochs_trained"), manifest.get("best_epoch")
        training = f"{epochs} epoch{'' if epochs == 1 else 's'}, best {best}" if epochs is not None else "epochs ?"
        if manifest.get("tuned"):
            training += ", tuned"
        parts.append(training)
    backend = manifest.get("keras_backend")
    if backend and backend != "tensorflow":
        parts.append(f"trained under Keras on {backend}")
    split = manifest.get("split")
    if isinstance(split, dict) and split:
        parts.append("split " + " / ".join(f"{n} {name}" for name, n in split.items()))
    return " · ".join(parts)


def load_history(run_dir: Path | str) -> pd.DataFrame:
    """``history.csv`` (one row per epoch); an empty DataFrame with the usual columns when missing."""
    return read_history(Path(run_dir) / HISTORY_FILE)


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
