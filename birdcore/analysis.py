"""Analysis of a finished run, for the dashboard: score tables, thresholds, confusions, comparisons.

Everything here is plain numpy / pandas (no TensorFlow, no Streamlit), so the
dashboard pages only display what these functions return.

Shapes: N recordings, C species, ΣS segments over all recordings.  Conventions
are those of :mod:`birdcore.metrics`: a species is *detected* when
``score >= threshold``; a recording's primary pair is the only positive of its
row; background (secondary) pairs are neither positive nor negative; top-1 is
*correct* when no other species scores >= the primary species (ties count
against the recording, as in :func:`birdcore.metrics.top_k_accuracy`).

Rates that cannot be computed (no positives, no negatives, no detections) are
None in dicts and NaN in DataFrames.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import metrics as M
from .runfolder import atomic_write_json, atomic_write_text

HISTORY_COLUMNS = ["epoch", "loss", "val_top1", "val_loss", "seconds"]
# threshold_at_fpr returns the float32 step above 1.0 when a negative scores exactly 1.0.
_MAX_THRESHOLD = float(np.nextafter(np.float32(1.0), np.float32(2.0)))


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
    table's test scores).
    """
    per = {row["species"]: row for row in metrics.get("per_species", [])}
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
            "test_recordings": int(len(pos)),
            "auc": _nan(per.get(code, {}).get("auc")),
            "ap": _nan(per.get(code, {}).get("ap")),
            "threshold": _nan(t),
            "recall_at_target_fpr": float(np.mean(pos >= t)) if t is not None and len(pos) else math.nan,
            "test_fpr": float(np.mean(neg >= t)) if t is not None and len(neg) else math.nan,
        })
    columns = ["ebird_code", "common_name", "sci_name", "test_recordings", "auc", "ap", "threshold",
               "recall_at_target_fpr", "test_fpr"]
    return pd.DataFrame(rows, columns=columns).sort_values("ebird_code", ignore_index=True)


# --------------------------------------------------------------------------- thresholds

class ThresholdExplorer:
    """Detection counts at any threshold in O(C log N) time, from arrays sorted once.

    Construction sorts every valid (recording, species) score once: per species
    (positives and negatives), pooled, and each recording's top score grouped by
    its top species.  Thresholds are then placed with ``np.searchsorted`` only.
    Per-species thresholds are applied exactly (no float offsets): every score
    is replaced by its rank among the distinct scores, and a block key
    ``species * (U + 1) + rank`` keeps each species' scores contiguous and sorted.
    """

    def __init__(self, table: ScoreTable):
        self.table = table
        n, c = table.scores.shape
        self.n_recordings, self.n_species = n, c
        scores = table.scores.astype(np.float64)
        self._uniq, rank = np.unique(scores, return_inverse=True)  # (U,), (N, C)
        rank = rank.reshape(scores.shape)
        self._stride = len(self._uniq) + 1
        cols = np.broadcast_to(np.arange(c), scores.shape)
        pos, ok = table.positives, table.valid
        self._pos_keys, self._pos_start = self._blocks(cols[ok & pos], rank[ok & pos])
        self._neg_keys, self._neg_start = self._blocks(cols[ok & ~pos], rank[ok & ~pos])
        self._pos_vals = self._uniq[self._pos_keys % self._stride]  # sorted within each species block
        self._neg_vals = self._uniq[self._neg_keys % self._stride]
        self._pos_all = np.sort(self._pos_vals)
        self._neg_all = np.sort(self._neg_vals)
        # Each recording's top score, grouped by top species, with the running count of correct top-1.
        top_col = scores.argmax(axis=1) if c else np.zeros(n, np.int64)
        top_rank = rank[np.arange(n), top_col] if c else np.zeros(n, np.int64)
        keys = top_col * self._stride + top_rank
        order = np.argsort(keys, kind="stable")
        self._top_keys = keys[order]
        self._top_start = np.searchsorted(self._top_keys, np.arange(c + 1) * self._stride)
        self._top_vals = self._uniq[self._top_keys % self._stride] if n else np.zeros(0)
        correct = table.top1_correct[order]
        self._top_cum = np.concatenate([[0], np.cumsum(correct)]).astype(np.int64)
        by_score = np.argsort(self._top_vals, kind="stable")
        self._top_all = self._top_vals[by_score]
        self._top_all_cum = np.concatenate([[0], np.cumsum(correct[by_score])]).astype(np.int64)

    def _blocks(self, cols: np.ndarray, ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sorted keys (K,) and the (C+1,) start of each species' block."""
        keys = np.sort(cols.astype(np.int64) * self._stride + ranks)
        return keys, np.searchsorted(keys, np.arange(self.n_species + 1) * self._stride)

    # ---- queries

    def at(self, threshold: float | np.ndarray) -> dict[str, Any]:
        """Rates over all valid pairs at ``threshold``: a float, or (C,) one per species column.

        Keys: fpr, tpr, precision, fp_per_1000 (false detections per 1,000
        recordings), tp, fp, fn, tn, coverage (fraction of recordings whose top
        score >= the threshold of their top species), accuracy_covered (top-1
        accuracy of the covered recordings).
        """
        t = np.asarray(threshold, dtype=np.float64)
        if t.ndim == 0:
            _check_thresholds(t)
            counts = _tally(self._pos_all, self._neg_all, self._top_all, self._top_all_cum, t.reshape(1))
            return _rates({k: int(v[0]) for k, v in counts.items()}, self.n_recordings, self.n_recordings)
        if t.shape != (self.n_species,):
            raise ValueError(f"per-species thresholds must have shape ({self.n_species},), got {t.shape}")
        _check_thresholds(t)
        r = np.searchsorted(self._uniq, t) + np.arange(self.n_species) * self._stride  # (C,) query keys
        tp = int((self._pos_start[1:] - np.searchsorted(self._pos_keys, r)).sum())
        fp = int((self._neg_start[1:] - np.searchsorted(self._neg_keys, r)).sum())
        first = np.searchsorted(self._top_keys, r)
        ends = self._top_start[1:]
        counts = {"tp": tp, "fp": fp, "fn": len(self._pos_keys) - tp, "tn": len(self._neg_keys) - fp,
                  "covered": int((ends - first).sum()),
                  "correct": int((self._top_cum[ends] - self._top_cum[first]).sum())}
        return _rates(counts, self.n_recordings, self.n_recordings)

    def species_at(self, code: str, threshold: float) -> dict[str, Any]:
        """:meth:`at` for one species.  fp_per_1000 is per 1,000 recordings of the table; coverage and
        accuracy_covered are over the recordings whose top-scoring species is ``code`` (None if none):
        the fraction kept at ``threshold``, and the fraction of those kept whose primary is ``code``."""
        t = np.asarray(threshold, dtype=np.float64)
        if t.ndim != 0:
            raise ValueError("species_at takes one threshold")
        _check_thresholds(t)
        pos, neg, top, cum = self._slices(self.table.column(code))
        counts = _tally(pos, neg, top, cum, t.reshape(1))
        return _rates({k: int(v[0]) for k, v in counts.items()}, self.n_recordings, len(top))

    def curve(self, *, species: str | None = None, n_points: int = 200) -> pd.DataFrame:
        """Rates on a threshold grid, pooled or for one species, sorted by threshold.

        The grid (about 4 × ``n_points`` rows) joins ``n_points`` evenly spaced
        values in [0, 1], ``n_points`` exact quantiles of the positive and of the
        negative scores, and the ``n_points`` highest negative scores (where the
        low-FPR end changes fastest).  Columns: threshold, fpr, tpr, precision,
        fp_per_1000, coverage, accuracy_covered, tp, fp.
        """
        if species is None:
            pos, neg, top, cum = self._pos_all, self._neg_all, self._top_all, self._top_all_cum
        else:
            pos, neg, top, cum = self._slices(self.table.column(species))
        k = max(int(n_points), 2)
        q = np.linspace(0.0, 1.0, k)
        parts = [q, neg[-k:]]
        parts += [np.quantile(s, q, method="inverted_cdf") for s in (pos, neg) if len(s)]
        grid = np.unique(np.concatenate(parts))
        counts = _tally(pos, neg, top, cum, grid)
        cover_n = self.n_recordings if species is None else len(top)
        out = pd.DataFrame({"threshold": grid, **_rate_arrays(counts, self.n_recordings, cover_n)})
        out["tp"], out["fp"] = counts["tp"], counts["fp"]
        return out

    def threshold_for_fpr(self, target_fpr: float, *, species: str | None = None) -> float:
        """The smallest threshold whose FPR on the table's negatives is <= ``target_fpr``
        (:func:`birdcore.metrics.threshold_at_fpr`; pooled negatives when ``species`` is None)."""
        neg = self._neg_all if species is None else self._slices(self.table.column(species))[1]
        return M.threshold_at_fpr(neg, target_fpr)

    def _slices(self, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sorted positives, sorted negatives, sorted top scores of species ``c`` and the running correct count."""
        a, b = self._top_start[c], self._top_start[c + 1]
        return (self._pos_vals[self._pos_start[c]:self._pos_start[c + 1]],
                self._neg_vals[self._neg_start[c]:self._neg_start[c + 1]],
                self._top_vals[a:b], self._top_cum[a:b + 1])


def _check_thresholds(t: np.ndarray) -> None:
    if not np.all(np.isfinite(t)):
        raise ValueError("thresholds must be finite")


def _tally(pos: np.ndarray, neg: np.ndarray, top: np.ndarray, cum: np.ndarray,
           thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Counts (K,) at K thresholds from sorted pos (P,), neg (M,), top scores (R,) and cum (R+1,)."""
    tp = len(pos) - np.searchsorted(pos, thresholds)
    fp = len(neg) - np.searchsorted(neg, thresholds)
    first = np.searchsorted(top, thresholds)
    return {"tp": tp, "fp": fp, "fn": len(pos) - tp, "tn": len(neg) - fp,
            "covered": len(top) - first, "correct": cum[-1] - cum[first]}


def _rate_arrays(counts: dict[str, np.ndarray], n_recordings: int, n_cover: int) -> dict[str, np.ndarray]:
    """Rates (K,) as floats with NaN where undefined."""
    def ratio(a, b):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(b > 0, a / np.maximum(b, 1), np.nan)

    tp, fp, fn, tn = counts["tp"], counts["fp"], counts["fn"], counts["tn"]
    return {"fpr": ratio(fp, fp + tn), "tpr": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp),
            "fp_per_1000": ratio(np.asarray(fp) * 1000.0, np.full(np.shape(fp), n_recordings)),
            "coverage": ratio(counts["covered"], np.full(np.shape(fp), n_cover)),
            "accuracy_covered": ratio(counts["correct"], counts["covered"])}


def _rates(counts: dict[str, int], n_recordings: int, n_cover: int) -> dict[str, Any]:
    rates = _rate_arrays({k: np.asarray([v]) for k, v in counts.items()}, n_recordings, n_cover)
    out: dict[str, Any] = {k: None if np.isnan(v[0]) else float(v[0]) for k, v in rates.items()}
    out.update({k: int(counts[k]) for k in ("tp", "fp", "fn", "tn")})
    return out


# --------------------------------------------------------------------------- curves

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


# --------------------------------------------------------------------------- saving thresholds

def save_thresholds(run_dir: Path | str, *, target_fpr: float, global_threshold: float,
                    species_thresholds: dict[str, float] | None, source: str = "dashboard") -> None:
    """Rewrite ``thresholds.json`` atomically with new thresholds.

    The structure is kept: ``target_fpr``, ``chosen_on`` (set to ``source``),
    ``global`` {"threshold", ...}, ``species`` {code: {"threshold", ...}}.  An
    entry whose threshold changes loses its other keys (test_recall / test_fpr
    would be stale); unchanged entries keep them.  With ``species_thresholds``
    None every species entry is kept; otherwise only the codes given are
    replaced (or added).  The first save copies the file to
    ``thresholds.original.json`` (never overwritten afterwards).

    Thresholds must be finite and in [0, 1] (the float32 step just above 1.0
    that :func:`birdcore.metrics.threshold_at_fpr` can return is accepted);
    ``target_fpr`` finite in [0, 1].  ValueError otherwise, before any write.
    """
    run_dir = Path(run_dir)
    _check_unit("target_fpr", target_fpr, 1.0)
    _check_unit("global threshold", global_threshold, _MAX_THRESHOLD)
    for code, t in (species_thresholds or {}).items():
        _check_unit(f"threshold of {code}", t, _MAX_THRESHOLD)
    path = run_dir / "thresholds.json"
    text = path.read_text() if path.is_file() else None
    old = json.loads(text) if text else {}
    original = run_dir / "thresholds.original.json"
    if text is not None and not original.exists():
        atomic_write_text(original, text)
    species = {code: dict(entry) for code, entry in old.get("species", {}).items()}
    for code, t in (species_thresholds or {}).items():
        species[code] = _entry(species.get(code, {}), float(t))
    new = dict(old)
    new.update({"target_fpr": float(target_fpr), "chosen_on": str(source),
                "global": _entry(old.get("global", {}), float(global_threshold)), "species": species})
    atomic_write_json(path, new)


def _entry(old: dict, threshold: float) -> dict:
    return dict(old) if old.get("threshold") == threshold else {"threshold": threshold}


def _check_unit(what: str, value: float, upper: float) -> None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or not 0.0 <= v <= upper:
        raise ValueError(f"{what} must be finite and within [0, 1], got {value!r}")


# --------------------------------------------------------------------------- history and comparisons

MODEL_KINDS = {"birdnet_zero_shot": "BirdNET V2.4 zero-shot", "birdnet_head": "BirdNET V2.4 embeddings + trained head"}


def run_summary(manifest: dict) -> str:
    """One readable line describing a run from its ``run.json``: model, pooling, species, training
    and split, e.g. "inception_v3 (weights none) · max pooling · 20 species · 77 epochs, best 72 ·
    split 157 train / 23 val / 23 test"."""
    kind = manifest.get("model_kind", "keras_audio")
    if kind in MODEL_KINDS:
        model = MODEL_KINDS[kind]
    else:
        model = f"{manifest.get('backbone', '?')} (weights {manifest.get('weights', '?')})"
    parts = [model, f"{manifest.get('pooling', '?')} pooling", f"{manifest.get('n_species', '?')} species"]
    if kind == "birdnet_zero_shot":
        parts.append("no training")
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
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return pd.DataFrame({k: pd.Series(dtype=float) for k in HISTORY_COLUMNS})
    return pd.read_csv(path)


def compare_runs(table_a: ScoreTable, table_b: ScoreTable) -> pd.DataFrame:
    """Per-recording comparison of two runs on the recordings and species they share.

    Recordings are joined on recording_id (in ``table_a``'s order) and kept when
    both runs give them the same primary species and that species is shared.
    Scores are restricted to the shared species codes, so top-1 is judged among
    those only (ties count against the recording).  Columns: recording_id,
    primary (code), a_top1_correct, b_top1_correct, a_score_primary, b_score_primary.
    """
    shared = [code for code in table_a.species if code in set(table_b.species)]
    cols_a = np.array([table_a.column(s) for s in shared], dtype=np.int64)
    cols_b = np.array([table_b.column(s) for s in shared], dtype=np.int64)
    where_b = {rid: i for i, rid in enumerate(table_b.recording_id)}
    rows_a = np.array([i for i, rid in enumerate(table_a.recording_id) if rid in where_b], dtype=np.int64)
    rows_b = np.array([where_b[table_a.recording_id[i]] for i in rows_a], dtype=np.int64)
    code_a = np.asarray(table_a.species, dtype=object)[table_a.primary[rows_a]] if len(rows_a) else np.array([])
    code_b = np.asarray(table_b.species, dtype=object)[table_b.primary[rows_b]] if len(rows_b) else np.array([])
    position = {code: j for j, code in enumerate(shared)}
    keep = np.array([a == b and a in position for a, b in zip(code_a, code_b)], dtype=bool)
    rows_a, rows_b, codes = rows_a[keep], rows_b[keep], code_a[keep]
    prim = np.array([position[c] for c in codes], dtype=np.int64)
    out = {"recording_id": table_a.recording_id[rows_a], "primary": codes.astype(str)}
    for tag, table, rows, cols in (("a", table_a, rows_a, cols_a), ("b", table_b, rows_b, cols_b)):
        scores = table.scores[np.ix_(rows, cols)].astype(np.float64)
        own = scores[np.arange(len(rows)), prim] if len(rows) else np.zeros(0)
        out[f"{tag}_top1_correct"] = (scores >= own[:, None]).sum(axis=1) == 1
        out[f"{tag}_score_primary"] = own
    columns = ["recording_id", "primary", "a_top1_correct", "b_top1_correct", "a_score_primary", "b_score_primary"]
    return pd.DataFrame(out, columns=columns)


def compare_summary(comparison: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers of :func:`compare_runs`: n_shared, a_top1, b_top1 (accuracies; None when
    n_shared is 0), both_right, only_a, only_b, both_wrong (recording counts), and mcnemar_p: the
    exact two-sided McNemar p-value of the top-1 difference (:func:`mcnemar_exact_p`)."""
    a = comparison["a_top1_correct"].to_numpy(dtype=bool)
    b = comparison["b_top1_correct"].to_numpy(dtype=bool)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    return {"n_shared": n, "a_top1": float(a.mean()) if n else None, "b_top1": float(b.mean()) if n else None,
            "both_right": int((a & b).sum()), "only_a": only_a, "only_b": only_b,
            "both_wrong": int((~a & ~b).sum()), "mcnemar_p": mcnemar_exact_p(only_a, only_b)}


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar test on paired outcomes: the chance, if both runs were equally good,
    of a split of the ``only_a + only_b`` discordant recordings at least this uneven
    (binomial, p = 1/2).  1.0 when there are none."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
