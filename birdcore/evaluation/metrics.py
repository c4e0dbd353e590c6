"""Recording-level metrics and detection thresholds.

Conventions shared by every function here:

* ``scores``: float array (N recordings, C species) of recording scores in
  [0, 1], one independent sigmoid output per species (not a softmax).
* ``primary``: int array (N,), the column of each recording's primary species.
* ``secondary``: optional bool array (N, C); True marks a background species
  named by the recordist.  Those (recording, species) pairs are ignored —
  neither positive nor negative — in the per-species and pooled ROC / AP /
  threshold computations.  A True on a recording's own primary column is
  ignored (the primary pair is always a positive).
* A species is *detected* when ``score >= threshold``.

Everything returned is made of plain Python types (float, int, str, None,
list, dict), so ``json.dumps`` works; undefined values are None, never NaN.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve


def top_k_accuracy(scores: np.ndarray, primary: np.ndarray, k: int) -> float:
    """Fraction of recordings whose primary species is among their ``k`` best-scored species.

    Ties count against the recording: it is a hit only when fewer than ``k``
    *other* species score >= its primary species (so a constant model scores
    0 for k < C).  ``k >= C`` gives 1.0; no recordings give 0.0.
    """
    scores, primary, _ = _check(scores, primary, None)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n = len(primary)
    if n == 0:
        return 0.0
    own = scores[np.arange(n), primary]
    rivals = (scores >= own[:, None]).sum(axis=1) - 1  # other species at least as high
    return float(np.mean(rivals < k))


def threshold_at_fpr(negative_scores: np.ndarray, target_fpr: float) -> float:
    """The smallest threshold t with ``mean(negative_scores >= t) <= target_fpr``.

    ``negative_scores``: (M,) scores of negative (recording, species) pairs.
    With the negatives sorted high to low as s[0] >= s[1] >= ..., and m the
    largest count of false positives allowed (m / M <= target_fpr), the answer
    is the next representable number above s[m]: every tie with s[m] is then
    below the threshold.  ``target_fpr = 0`` gives just above the largest
    negative.  The step is taken in the scores' own float dtype (float32 for
    float32 scores), so comparing float32 scores with the returned Python
    float gives the same result in float32 or float64 arithmetic.

    No negatives (M = 0): returns 1.0 (nothing to bound; the top of the score
    range).  ``target_fpr >= 1``: every threshold qualifies; returns
    ``min(0.0, min(negative_scores))``.
    """
    if not 0.0 <= target_fpr:
        raise ValueError(f"target_fpr must be >= 0, got {target_fpr}")
    neg = np.asarray(negative_scores).ravel()
    if neg.size == 0:
        return 1.0
    if not np.issubdtype(neg.dtype, np.floating):
        neg = neg.astype(np.float64)
    if not np.all(np.isfinite(neg)):
        raise ValueError("negative_scores contain NaN or infinite values")
    n = neg.size
    m = _allowed_false_positives(n, target_fpr)
    if m >= n:
        return float(min(0.0, float(neg.min())))
    ordered = np.sort(neg)[::-1]
    pivot = ordered[m]
    return float(np.nextafter(pivot, np.array(np.inf, dtype=neg.dtype)))


def _allowed_false_positives(n: int, target_fpr: float) -> int:
    """The largest integer m in [0, n] with m / n <= target_fpr (as computed in floats)."""
    m = min(n, int(np.floor(target_fpr * n)))
    while m < n and (m + 1) / n <= target_fpr:
        m += 1
    while m > 0 and m / n > target_fpr:
        m -= 1
    return m


def species_metrics(scores: np.ndarray, primary: np.ndarray, *, species: Sequence[str],
                    secondary: np.ndarray | None = None, target_fpr: float = 0.001) -> list[dict]:
    """Per-species detection metrics, one dict per column of ``scores`` in column order.

    Keys: ``species`` (code), ``n_pos`` / ``n_neg`` (recordings counted as
    positive / negative for this species, secondary pairs left out), ``auc``
    (ROC-AUC; None without a positive or without a negative), ``ap`` (average
    precision; None without a positive), ``threshold`` (:func:`threshold_at_fpr`
    of this species' negatives), ``recall_at_threshold`` (None without a
    positive) and ``fpr_at_threshold`` (None without a negative).
    """
    scores, primary, secondary = _check(scores, primary, secondary)
    if len(species) != scores.shape[1]:
        raise ValueError(f"{len(species)} species names for {scores.shape[1]} score columns")
    positive, valid = _masks(primary, secondary, scores.shape)
    rows = []
    for c, code in enumerate(species):
        col, pos, ok = scores[:, c], positive[:, c], valid[:, c]
        pos_s, neg_s = col[ok & pos], col[ok & ~pos]
        t = threshold_at_fpr(neg_s, target_fpr)
        both = len(pos_s) > 0 and len(neg_s) > 0
        labels = np.concatenate([np.ones(len(pos_s)), np.zeros(len(neg_s))])
        values = np.concatenate([pos_s, neg_s]).astype(np.float64)
        rows.append({
            "species": str(code),
            "n_pos": int(len(pos_s)),
            "n_neg": int(len(neg_s)),
            "auc": float(roc_auc_score(labels, values)) if both else None,
            "ap": float(average_precision_score(labels, values)) if len(pos_s) else None,
            "threshold": t,
            "recall_at_threshold": _rate(pos_s, t),
            "fpr_at_threshold": _rate(neg_s, t),
        })
    return rows


def global_threshold(scores: np.ndarray, primary: np.ndarray, *, secondary: np.ndarray | None = None,
                     target_fpr: float = 0.001) -> dict:
    """One threshold for every species, from all negative (recording, species) pairs pooled.

    Returns ``threshold``, ``recall`` (over all N primary pairs; None when N = 0)
    and ``fpr`` (over the pooled negatives; None when there are none).
    """
    scores, primary, secondary = _check(scores, primary, secondary)
    positive, valid = _masks(primary, secondary, scores.shape)
    pos_s, neg_s = scores[valid & positive], scores[valid & ~positive]
    t = threshold_at_fpr(neg_s, target_fpr)
    return {"threshold": t, "recall": _rate(pos_s, t), "fpr": _rate(neg_s, t)}


def evaluate_scores(scores: np.ndarray, primary: np.ndarray, *, species: Sequence[str],
                    secondary: np.ndarray | None = None, target_fpr: float = 0.001) -> dict:
    """All recording-level metrics as one JSON-serialisable dict.

    Keys: ``n_recordings``, ``n_species``, ``top1``, ``top5``, ``macro_auc`` /
    ``macro_ap`` (means over the species where they are defined; None when
    none is), ``target_fpr``, ``global_threshold`` (:func:`global_threshold`)
    and ``per_species`` (:func:`species_metrics`).
    """
    scores, primary, secondary = _check(scores, primary, secondary)
    per = species_metrics(scores, primary, species=species, secondary=secondary, target_fpr=target_fpr)
    return {
        "n_recordings": int(scores.shape[0]),
        "n_species": int(scores.shape[1]),
        "top1": top_k_accuracy(scores, primary, 1),
        "top5": top_k_accuracy(scores, primary, 5),
        "macro_auc": _mean([r["auc"] for r in per]),
        "macro_ap": _mean([r["ap"] for r in per]),
        "target_fpr": float(target_fpr),
        "global_threshold": global_threshold(scores, primary, secondary=secondary, target_fpr=target_fpr),
        "per_species": per,
    }


def roc_points(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve of positives (P,) against negatives (M,): ``(fpr, tpr, thresholds)``, each (K,).

    Both sets must be non-empty.  ``thresholds`` are decreasing; the first is +inf.
    """
    labels, values = _labelled(pos_scores, neg_scores)
    fpr, tpr, thr = roc_curve(labels, values, drop_intermediate=True)
    return fpr, tpr, thr


def pr_points(pos_scores: np.ndarray, neg_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve: ``(precision, recall, thresholds)``; precision and recall are (K+1,),
    thresholds (K,) increasing (scikit-learn's convention: the last point is recall 0, precision 1)."""
    labels, values = _labelled(pos_scores, neg_scores)
    return precision_recall_curve(labels, values)


def _labelled(pos_scores, neg_scores) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError("a curve needs at least one positive and one negative score")
    return np.concatenate([np.ones(pos.size), np.zeros(neg.size)]), np.concatenate([pos, neg])


def _check(scores, primary, secondary) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate shapes and values; returns (scores, primary int64, secondary bool or None)."""
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (recordings, species), got shape {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    primary = np.asarray(primary)
    if primary.shape != (scores.shape[0],):
        raise ValueError(f"primary must have shape ({scores.shape[0]},), got {primary.shape}")
    primary = primary.astype(np.int64)
    if primary.size and (primary.min() < 0 or primary.max() >= scores.shape[1]):
        raise ValueError(f"primary indices must lie in [0, {scores.shape[1]})")
    if secondary is not None:
        secondary = np.asarray(secondary, dtype=bool)
        if secondary.shape != scores.shape:
            raise ValueError(f"secondary must have shape {scores.shape}, got {secondary.shape}")
    return scores, primary, secondary


def _masks(primary: np.ndarray, secondary: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(positive, valid) bool masks of shape (N, C); secondary pairs are invalid, primary pairs always valid."""
    positive = np.zeros(shape, dtype=bool)
    positive[np.arange(shape[0]), primary] = True
    valid = np.ones(shape, dtype=bool) if secondary is None else ~secondary | positive
    return positive, valid


def _rate(values: np.ndarray, threshold: float) -> float | None:
    """Fraction of ``values`` >= ``threshold``; None when there are none."""
    return float(np.mean(values >= threshold)) if len(values) else None


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None
