"""Thresholds of a finished run: detection counts and rates at any threshold, and saving new ones.

``ThresholdExplorer`` answers the dashboard's threshold slider (false-positive rate, recall,
precision, coverage and accuracy when covered, per species or pooled) from scores sorted once;
``save_thresholds`` rewrites the run's ``thresholds.json`` atomically.  Conventions are those of
:mod:`birdcore.analysis.scores` (primary pairs positive, background pairs neither, ties against the
recording); rates that cannot be computed are None.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from birdcore.evaluation import metrics as M
from birdcore.analysis.scores import ScoreTable
from birdcore.runs.thresholds import save_thresholds  # noqa: F401  (defined with the run files; the page saves through here)


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
        (:func:`birdcore.evaluation.metrics.threshold_at_fpr`; pooled negatives when ``species`` is None)."""
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

