"""Metrics of row scores on annotated soundscapes, the way the BirdCLEF competitions scored them.

Arrays: R rows, C species (the run's).  ``truth`` (R, C) bool; ``unknown`` (R,) int, the labelled
species of each row that the run does not have (they count as misses: the model cannot name
them); ``scores`` (R, C) in [0, 1]; ``thresholds`` (C,).

- ``row_f1``: Cornell 2020 / BirdCLEF 2021: per row, the F1 between the predicted and the true
  species sets, ``nocall`` standing for an empty set, averaged over rows.
- ``macro_f1``: BirdCLEF 2022: F1 per species over rows, averaged over species with positives.
- ``cmap``: class-mean average precision of the rows (segment level): AP per species with
  positives, averaged.
- ``padded_cmap``: BirdCLEF 2023: the same after appending 5 rows in which every species is present
  with score 1 (which lifts every species' AP, rare ones most).
- ``macro_auc``: BirdCLEF 2024–2025: ROC-AUC per species with positives and negatives, averaged.
- ``fp_per_hour``: (row, species) decisions that are false, per hour of audio.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

CMAP_PADDING = 5


def label_matrix(birds, codes: list[str], match) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Truth (R, C) bool and unknown (R,) int from each row's names (``birds``: sequence of tuples);
    ``match(name)`` gives a name's column or None.  Also {name the run lacks: rows it labels}."""
    truth = np.zeros((len(birds), len(codes)), bool)
    unknown = np.zeros(len(birds), np.int64)
    missing: dict[str, int] = {}
    for r, names in enumerate(birds):
        for name in names:
            col = match(name)
            if col is None:
                unknown[r] += 1
                missing[name] = missing.get(name, 0) + 1
            else:
                truth[r, col] = True
    return truth, unknown, missing


def decisions(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(R, C) bool: score >= the species' threshold."""
    return np.asarray(scores) >= np.asarray(thresholds, np.float32)[None, :]


def row_f1(truth: np.ndarray, predicted: np.ndarray, unknown: np.ndarray | None = None) -> float:
    """Mean over rows of 2·|P∩T| / (|P| + |T|), with ``nocall`` as the label of an empty set."""
    unknown = np.zeros(len(truth), np.int64) if unknown is None else unknown
    n_true = truth.sum(axis=1) + unknown
    n_pred = predicted.sum(axis=1)
    hits = (truth & predicted).sum(axis=1)
    nocall_t, nocall_p = n_true == 0, n_pred == 0
    hits = hits + (nocall_t & nocall_p)
    size = np.maximum(n_true, 1) + np.maximum(n_pred, 1)
    return float(np.mean(2.0 * hits / size)) if len(truth) else float("nan")


def _species_f1(t: np.ndarray, p: np.ndarray) -> float:
    tp = float((t & p).sum())
    denom = float(t.sum() + p.sum())
    return 2 * tp / denom if denom else 0.0


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float | None:
    cols = np.flatnonzero(truth.any(axis=0))
    return float(np.mean([_species_f1(truth[:, c], predicted[:, c]) for c in cols])) if len(cols) else None


def cmap(truth: np.ndarray, scores: np.ndarray) -> float | None:
    cols = np.flatnonzero(truth.any(axis=0))
    return float(average_precision_score(truth[:, cols], scores[:, cols], average="macro")) if len(cols) else None


def padded_cmap(truth: np.ndarray, scores: np.ndarray, *, padding: int = CMAP_PADDING) -> float | None:
    cols = np.flatnonzero(truth.any(axis=0))
    if not len(cols):
        return None
    t = np.concatenate([truth[:, cols], np.ones((padding, len(cols)), bool)])
    s = np.concatenate([scores[:, cols], np.ones((padding, len(cols)), np.float32)])
    return float(average_precision_score(t, s, average="macro"))


def macro_auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    cols = [c for c in np.flatnonzero(truth.any(axis=0)) if not truth[:, c].all()]
    return float(np.mean([roc_auc_score(truth[:, c], scores[:, c]) for c in cols])) if cols else None


def fp_per_hour(truth: np.ndarray, predicted: np.ndarray, hours: float) -> float | None:
    return float((predicted & ~truth).sum() / hours) if hours > 0 else None


def per_species(truth: np.ndarray, scores: np.ndarray, predicted: np.ndarray, thresholds: np.ndarray,
                codes: list[str], *, hours: float) -> pd.DataFrame:
    """One row per species with positives or detections: positives, detections, AP, ROC-AUC,
    precision and recall at its threshold, false positives per hour."""
    rows = []
    for c in np.flatnonzero(truth.any(axis=0) | predicted.any(axis=0)):
        t, s, p = truth[:, c], scores[:, c], predicted[:, c]
        tp = int((t & p).sum())
        rows.append({
            "species": codes[c], "positives": int(t.sum()), "detections": int(p.sum()),
            "ap": float(average_precision_score(t, s)) if t.any() else None,
            "auc": float(roc_auc_score(t, s)) if t.any() and not t.all() else None,
            "threshold": float(thresholds[c]),
            "precision": tp / int(p.sum()) if p.any() else None,
            "recall": tp / int(t.sum()) if t.any() else None,
            "fp_per_hour": float((p & ~t).sum() / hours) if hours > 0 else None,
        })
    return pd.DataFrame(rows, columns=["species", "positives", "detections", "ap", "auc", "threshold", "precision",
                                       "recall", "fp_per_hour"])


def pooled(truth: np.ndarray, unknown: np.ndarray, predicted: np.ndarray) -> dict:
    """Counts and rates over every (row, species) pair: detections, true_positives, false_positives,
    positives (labelled pairs, species the run lacks included), precision and recall (None when
    they cannot be computed)."""
    tp = int((truth & predicted).sum())
    n_pred, n_pos = int(predicted.sum()), int(truth.sum() + unknown.sum())
    return {"detections": n_pred, "true_positives": tp, "false_positives": n_pred - tp, "positives": n_pos,
            "precision": tp / n_pred if n_pred else None, "recall": tp / n_pos if n_pos else None}


def report(truth: np.ndarray, unknown: np.ndarray, scores: np.ndarray, thresholds: np.ndarray, codes: list[str], *,
           hours: float, n_files: int) -> dict:
    """All the metrics above in one dict (``per_species`` as a list of dicts)."""
    predicted = decisions(scores, thresholds)
    counts = pooled(truth, unknown, predicted)
    return {
        "row_f1": row_f1(truth, predicted, unknown),
        "nocall_f1": row_f1(truth, np.zeros_like(predicted), unknown),  # answering nocall everywhere
        "macro_f1": macro_f1(truth, predicted),
        "cmap": cmap(truth, scores),
        "padded_cmap": padded_cmap(truth, scores),
        "macro_auc": macro_auc(truth, scores),
        "precision": counts["precision"],
        "recall": counts["recall"],
        "fp_per_hour": fp_per_hour(truth, predicted, hours),
        "n_rows": int(len(truth)), "n_rows_with_birds": int(((truth.sum(axis=1) + unknown) > 0).sum()),
        "n_files": int(n_files), "hours": round(hours, 4),
        "per_species": per_species(truth, scores, predicted, thresholds, codes, hours=hours).to_dict("records"),
    }
