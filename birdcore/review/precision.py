"""Precision of a species' detections from reviews, with intervals that account for stratified sampling.

For a threshold t, the detections scoring at least t are split by the score bins of
``review.sampling`` (strata h, N_h(t) detections each); within each bin the reviewed ones are a
random sample, so

    precision(t) = Σ_h W_h · p_h,   W_h = N_h(t) / Σ N_h(t),   p_h = yes_h / (yes_h + no_h)

(post-stratified estimator; ``unsure`` reviews are left out; a bin with detections above t but no
review of them takes the pooled rate of the reviewed bins, and the interval widens for it).  The
variance is Σ W_h² · p̃_h (1 − p̃_h) / n_h · (1 − n_h / N_h) with p̃_h = (yes_h + 1) / (n_h + 2), and
the 95 % interval is Wilson's at the effective sample size p̃ (1 − p̃) / variance (Kish), which keeps
its coverage near 1 where a Wald interval would collapse.  ``logistic`` fits P(correct | score) as a
logistic curve in the score's logit, weighted by the bins, as BirdNET-Analyzer's review does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from birdcore.review.sampling import DEFAULT_BINS, score_bins

Z95 = 1.959963984540054
MIN_REVIEWS = 10  # yes/no reviews a species needs before its precision or threshold is reported


@dataclass
class Estimate:
    precision: float | None
    ci_low: float | None
    ci_high: float | None
    n_reviewed: int  # yes/no reviews among the detections at or above the threshold
    n_detections: int  # detections at or above the threshold


def wilson(p: float, n_eff: float) -> tuple[float, float]:
    if n_eff <= 0:
        return 0.0, 1.0
    denom = 1 + Z95 ** 2 / n_eff
    centre = (p + Z95 ** 2 / (2 * n_eff)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n_eff + Z95 ** 2 / (4 * n_eff ** 2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def estimate(population: np.ndarray, reviewed_scores: np.ndarray, correct: np.ndarray, threshold: float, *,
             bins: int = DEFAULT_BINS) -> Estimate:
    """Precision of the detections scoring at least ``threshold``.

    Args:
        population: (N,) scores of every detection of the species.
        reviewed_scores: (n,) scores of the reviewed ones (yes/no only), a subset of ``population``.
        correct: (n,) bool, True for yes.
    """
    population = np.asarray(population, float)
    reviewed_scores = np.asarray(reviewed_scores, float)
    correct = np.asarray(correct, bool)
    edges_all = score_bins(np.concatenate([population, reviewed_scores]), bins)
    strata_pop, strata_rev = edges_all[:len(population)], edges_all[len(population):]
    above_pop, above_rev = population >= threshold, reviewed_scores >= threshold
    n_total = int(above_pop.sum())
    n_rev = int(above_rev.sum())
    if n_total == 0 or n_rev == 0:
        return Estimate(None, None, None, n_rev, n_total)
    pooled = float(correct[above_rev].mean())
    estimate_sum, variance, missing_weight = 0.0, 0.0, 0.0
    for h in range(bins):
        big_n = int((above_pop & (strata_pop == h)).sum())
        if big_n == 0:
            continue
        w = big_n / n_total
        mask = above_rev & (strata_rev == h)
        n_h = int(mask.sum())
        if n_h == 0:
            estimate_sum += w * pooled
            missing_weight += w
            continue
        y_h = int(correct[mask].sum())
        p_h = y_h / n_h
        p_tilde = (y_h + 1) / (n_h + 2)
        fpc = max(0.0, 1 - n_h / big_n) if big_n > n_h else 0.0
        estimate_sum += w * p_h
        variance += w * w * p_tilde * (1 - p_tilde) / n_h * fpc
    variance += missing_weight ** 2 * 0.25  # an unreviewed bin could hold anything
    p_tilde = (estimate_sum * n_rev + 1) / (n_rev + 2)
    if variance <= 0:  # every bin fully reviewed: the estimate is exact
        return Estimate(estimate_sum, estimate_sum, estimate_sum, n_rev, n_total)
    n_eff = p_tilde * (1 - p_tilde) / variance
    low, high = wilson(estimate_sum, n_eff)
    return Estimate(estimate_sum, low, high, n_rev, n_total)


def curve(population: np.ndarray, reviewed_scores: np.ndarray, correct: np.ndarray, *,
          thresholds: np.ndarray | None = None, bins: int = DEFAULT_BINS) -> pd.DataFrame:
    """Precision with its interval at each threshold (default: each reviewed score, ascending)."""
    grid = np.unique(reviewed_scores) if thresholds is None else np.asarray(thresholds, float)
    rows = []
    for t in grid:
        e = estimate(population, reviewed_scores, correct, float(t), bins=bins)
        rows.append({"threshold": float(t), "precision": e.precision, "ci_low": e.ci_low, "ci_high": e.ci_high,
                     "n_reviewed": e.n_reviewed, "n_detections": e.n_detections})
    return pd.DataFrame(rows, columns=["threshold", "precision", "ci_low", "ci_high", "n_reviewed", "n_detections"])


def threshold_for(population, reviewed_scores, correct, target: float, *, bins: int = DEFAULT_BINS,
                  min_reviews: int = MIN_REVIEWS) -> dict:
    """The lowest threshold whose estimated precision (and that of every higher reviewed score with
    enough reviews above it) reaches ``target``, with the estimate there; ``threshold`` None when it
    cannot be reached.  ``conservative``: the lowest threshold whose interval's lower end reaches it."""
    table = curve(population, reviewed_scores, correct, bins=bins)
    table = table[table["n_reviewed"] >= max(1, min_reviews // 2)]
    ok = table["precision"].fillna(-1) >= target
    chosen = None
    for i in range(len(table)):  # lowest t from which the precision stays at or above target
        if ok.iloc[i:].all():
            chosen = table.iloc[i]
            break
    safe = table[table["ci_low"].fillna(-1) >= target]
    return {"threshold": None if chosen is None else float(chosen["threshold"]),
            "precision_at_threshold": None if chosen is None else float(chosen["precision"]),
            "ci_at_threshold": None if chosen is None else [float(chosen["ci_low"]), float(chosen["ci_high"])],
            "conservative_threshold": float(safe["threshold"].min()) if len(safe) else None}


def logistic(reviewed_scores: np.ndarray, correct: np.ndarray, weights: np.ndarray | None = None) -> dict | None:
    """P(correct | score) = sigmoid(a + b · logit(score)), fitted by weighted logistic regression;
    None without both yes and no reviews.  Returns {"a", "b", "score_at": {p: score}}."""
    from sklearn.linear_model import LogisticRegression

    correct = np.asarray(correct, bool)
    if correct.all() or not correct.any():
        return None
    s = np.clip(np.asarray(reviewed_scores, float), 1e-6, 1 - 1e-6)
    x = np.log(s / (1 - s))[:, None]
    model = LogisticRegression(C=1e4).fit(x, correct, sample_weight=weights)
    a, b = float(model.intercept_[0]), float(model.coef_[0, 0])
    score_at = {}
    for p in (0.5, 0.9, 0.95, 0.99):
        if b > 0:
            logit = (math.log(p / (1 - p)) - a) / b
            score_at[str(p)] = float(1 / (1 + math.exp(-logit)))
    return {"a": a, "b": b, "score_at": score_at}


def species_report(detections: pd.DataFrame, verdicts: pd.DataFrame, *, target: float | None = None,
                   bins: int = DEFAULT_BINS, min_reviews: int = MIN_REVIEWS) -> list[dict]:
    """Per species: reviews, precision of all its detections with the interval, the threshold for
    ``target`` and the logistic calibration; a species with too few reviews says so."""
    out = []
    for species in sorted(detections["species"].unique()):
        pop = detections.loc[detections["species"] == species, "score"].to_numpy(float)
        v = verdicts[(verdicts["species"] == species) & verdicts["verdict"].isin(["yes", "no"])]
        n_unsure = int(((verdicts["species"] == species) & (verdicts["verdict"] == "unsure")).sum())
        scores, correct = v["score"].to_numpy(float), (v["verdict"] == "yes").to_numpy()
        row = {"species": species, "n_detections": int(len(pop)), "n_reviewed": int(len(v)), "n_unsure": n_unsure,
               "precision": None, "ci_low": None, "ci_high": None, "threshold": None, "note": None}
        if len(v) < min_reviews:
            row["note"] = f"too few reviews ({len(v)} yes/no; {min_reviews} needed)"
        else:
            e = estimate(pop, scores, correct, float(pop.min()), bins=bins)
            row.update(precision=e.precision, ci_low=e.ci_low, ci_high=e.ci_high)
            if target is not None:
                chosen = threshold_for(pop, scores, correct, target, bins=bins, min_reviews=min_reviews)
                row.update(chosen)
                if chosen["threshold"] is None:
                    row["note"] = f"precision {target:g} is not reached at any reviewed score"
            strata = score_bins(np.concatenate([pop, scores]), bins)[len(pop):]
            sizes = np.bincount(score_bins(np.concatenate([pop, scores]), bins)[:len(pop)], minlength=bins)
            counts = np.bincount(strata, minlength=bins)
            row["logistic"] = logistic(scores, correct, sizes[strata] / np.maximum(counts[strata], 1))
            if (v.get("strategy") == "top").any():
                row["note"] = "top-k reviews: the estimate holds at the top scores only"
        out.append(row)
    return out
