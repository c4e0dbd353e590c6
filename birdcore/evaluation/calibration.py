"""Choosing thresholds and post-processing on annotated soundscapes, for a goal the user sets.

Goals: ``f1`` (best row-wise F1), ``precision=P`` (the lowest thresholds whose precision over rows
reaches P) or ``fph=N`` (the lowest global threshold with at most N false positives per hour).
Thresholds are global plus per species; a species with fewer than ``min_positives`` positive rows
keeps the global threshold (for ``fph`` every species does: a per-hour budget is one number).

Post-processing, and whether per-species thresholds are used at all, are chosen by
leave-one-file-out: for each candidate, every file is decided with thresholds calibrated on the
other files, and the pooled held-out decisions are scored (row F1 for ``f1``, recall for the other
goals).  The simplest best candidate wins ties.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from birdcore.evaluation import soundscape_metrics as SM
from birdcore.evaluation.postprocess import PostProcessing, apply

CANDIDATES = np.round(np.concatenate([np.arange(0.01, 0.1, 0.01), np.arange(0.1, 0.951, 0.025),
                                      [0.97, 0.98, 0.99]]), 4)
MIN_POSITIVES = 5


@dataclass(frozen=True)
class Goal:
    kind: str  # "f1" | "precision" | "fph"
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Goal":
        """``f1``, ``precision=P`` (0 < P ≤ 1) or ``fph=N`` (N ≥ 0); ValueError otherwise."""
        name, _, value = text.strip().partition("=")
        if name == "f1" and not value:
            return cls("f1")
        try:
            number = float(value)
        except ValueError:
            number = None
        if name == "precision" and number is not None and 0 < number <= 1:
            return cls("precision", number)
        if name == "fph" and number is not None and number >= 0:
            return cls("fph", number)
        raise ValueError(f"goal {text!r}: expected f1, precision=P (0 < P <= 1) or fph=N (false positives per hour)")

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"


@dataclass
class Labels:
    """What calibration needs of labelled rows: truth (R, C), unknown (R,), the file of each row (R,)
    and the hours each row covers (R,)."""

    truth: np.ndarray
    unknown: np.ndarray
    files: np.ndarray
    row_hours: np.ndarray

    def subset(self, mask: np.ndarray) -> "Labels":
        return Labels(self.truth[mask], self.unknown[mask], self.files[mask], self.row_hours[mask])


def _precision(truth, predicted) -> float | None:
    n = int(predicted.sum())
    return float((truth & predicted).sum() / n) if n else None


def global_threshold(labels: Labels, scores: np.ndarray, goal: Goal) -> float:
    """One threshold for every species, for ``goal`` (see the module docstring)."""
    hours = float(labels.row_hours.sum())
    best_t, best = float(CANDIDATES[-1]), -np.inf
    for t in CANDIDATES:
        predicted = scores >= t
        if goal.kind == "f1":
            value = SM.row_f1(labels.truth, predicted, labels.unknown)
            if value > best + 1e-12:
                best_t, best = float(t), value
        elif goal.kind == "precision":
            p = _precision(labels.truth, predicted)
            if p is not None and p >= goal.value:
                return float(t)
            if p is not None and p > best:  # unreachable goal: the most precise threshold
                best_t, best = float(t), p
        else:
            fph = SM.fp_per_hour(labels.truth, predicted, hours)
            if fph is not None and fph <= goal.value:
                return float(t)
    return best_t


def species_thresholds(labels: Labels, scores: np.ndarray, goal: Goal, base: float, *,
                       min_positives: int = MIN_POSITIVES) -> np.ndarray:
    """(C,) thresholds: ``base`` for every species, refined for species with enough positives."""
    thresholds = np.full(scores.shape[1], base, np.float32)
    if goal.kind == "fph":
        return thresholds
    eligible = np.flatnonzero(labels.truth.sum(axis=0) >= min_positives)
    if goal.kind == "precision":
        for c in eligible:
            t, s = labels.truth[:, c], scores[:, c]
            for cand in CANDIDATES:
                p = _precision(t, s >= cand)
                if p is not None and p >= goal.value:
                    thresholds[c] = cand
                    break
        return thresholds
    predicted = scores >= thresholds[None, :]
    current = SM.row_f1(labels.truth, predicted, labels.unknown)
    for c in eligible:  # one pass of coordinate ascent on row F1
        keep = thresholds[c]
        for cand in CANDIDATES:
            predicted[:, c] = scores[:, c] >= cand
            value = SM.row_f1(labels.truth, predicted, labels.unknown)
            if value > current + 1e-12:
                current, keep = value, cand
        thresholds[c] = keep
        predicted[:, c] = scores[:, c] >= keep
    return thresholds


def calibrate(labels: Labels, scores: np.ndarray, goal: Goal, *, per_species: bool = True,
              min_positives: int = MIN_POSITIVES) -> tuple[float, np.ndarray]:
    """(global threshold, (C,) thresholds) for ``goal`` on these rows."""
    base = global_threshold(labels, scores, goal)
    if not per_species:
        return base, np.full(scores.shape[1], base, np.float32)
    return base, species_thresholds(labels, scores, goal, base, min_positives=min_positives)


def objective(goal: Goal, labels: Labels, predicted: np.ndarray) -> float:
    """What held-out decisions are judged by: row F1 for ``f1``, recall over labelled birds otherwise."""
    if goal.kind == "f1":
        return SM.row_f1(labels.truth, predicted, labels.unknown)
    n = int(labels.truth.sum() + labels.unknown.sum())
    return float((labels.truth & predicted).sum() / n) if n else 0.0


def held_out_decisions(labels: Labels, scores: np.ndarray, goal: Goal, *, per_species: bool = True) -> np.ndarray:
    """(R, C) decisions where each file's rows use thresholds calibrated on the other files."""
    predicted = np.zeros(scores.shape, bool)
    keys = list(dict.fromkeys(labels.files))
    for key in keys:
        out = labels.files == key
        if len(keys) > 1:
            _, thr = calibrate(labels.subset(~out), scores[~out], goal, per_species=per_species)
        else:  # one file: nothing to hold out from; in-sample
            _, thr = calibrate(labels, scores, goal, per_species=per_species)
        predicted[out] = SM.decisions(scores[out], thr)
    return predicted


def default_grid(*, location: bool = False) -> list[PostProcessing]:
    """The candidate settings, simplest first (ties go to the earlier one)."""
    grid = []
    for smoothing, boost, k, loc in itertools.product((0.0, 0.2, 0.4), (0.0, 0.3, 0.6), (0, 3, 1),
                                                      (False, True) if location else (False,)):
        grid.append(PostProcessing(smoothing=smoothing, file_boost=boost, top_k=k, location=loc))
    return sorted(grid, key=lambda p: (bool(p.smoothing) + bool(p.file_boost) + bool(p.top_k) + p.location))


def choose_postprocessing(labels: Labels, scores: np.ndarray, goal: Goal, grid: list[PostProcessing], *,
                          masks: dict | None = None, per_species: tuple[bool, ...] = (False, True)
                          ) -> tuple[PostProcessing, bool, list[dict]]:
    """The post-processing and threshold scheme (global only, or per species too) with the best
    leave-one-file-out objective, and every candidate's result.  Candidates run simplest first
    (global thresholds before per-species ones), and the first of equals wins."""
    results, candidates = [], [(post, ps) for ps in per_species for post in grid]
    for post, ps in candidates:
        processed = apply(post, scores, labels.files, masks)
        predicted = held_out_decisions(labels, processed, goal, per_species=ps)
        results.append({**post.to_dict(), "per_species": ps,
                        "objective": round(objective(goal, labels, predicted), 5),
                        "row_f1": round(SM.row_f1(labels.truth, predicted, labels.unknown), 5),
                        "precision": _precision(labels.truth, predicted),
                        "fp_per_hour": SM.fp_per_hour(labels.truth, predicted, float(labels.row_hours.sum()))})
    best = max(range(len(candidates)), key=lambda i: (results[i]["objective"], -i))
    return candidates[best][0], candidates[best][1], results
