import json
import math

import numpy as np
import pytest

from birdcore.evaluation import metrics as M


def one_hot(primary, n_species):
    out = np.zeros((len(primary), n_species), dtype=np.float32)
    out[np.arange(len(primary)), primary] = 1.0
    return out


def test_perfect_scores():
    primary = np.array([0, 1, 2, 3, 4, 5, 0, 1])
    scores = one_hot(primary, 6) * 0.9 + 0.05
    result = M.evaluate_scores(scores, primary, species=[f"sp{i}" for i in range(6)])
    assert result["top1"] == 1.0 and result["top5"] == 1.0
    assert result["macro_auc"] == 1.0 and result["macro_ap"] == 1.0
    assert all(r["auc"] == 1.0 and r["recall_at_threshold"] == 1.0 for r in result["per_species"])
    assert result["global_threshold"]["recall"] == 1.0 and result["global_threshold"]["fpr"] == 0.0


def test_random_scores_give_chance_auc():
    rng = np.random.default_rng(0)
    n, c = 4000, 10
    scores = rng.random((n, c))
    primary = rng.integers(0, c, n)
    result = M.evaluate_scores(scores, primary, species=[str(i) for i in range(c)])
    assert abs(result["macro_auc"] - 0.5) < 0.03
    assert abs(result["top1"] - 0.1) < 0.03
    assert result["top5"] >= result["top1"]
    assert abs(result["top5"] - 0.5) < 0.04


def test_top_k_counts_ties_against_the_recording():
    scores = np.array([[0.5, 0.5, 0.1], [0.9, 0.2, 0.1], [0.1, 0.3, 0.2]])
    primary = np.array([0, 0, 2])
    assert M.top_k_accuracy(scores, primary, 1) == pytest.approx(1 / 3)
    assert M.top_k_accuracy(scores, primary, 2) == 1.0
    assert M.top_k_accuracy(scores, primary, 10) == 1.0
    assert M.top_k_accuracy(np.zeros((0, 3)), np.zeros(0, int), 1) == 0.0


def test_threshold_at_fpr_hand_computed():
    neg = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    # 20% of 10 negatives: 2 may be at or above; the third highest (0.8) must fall below.
    t = M.threshold_at_fpr(neg, 0.2)
    assert t == np.nextafter(0.8, 1.0)
    assert np.mean(neg >= t) == 0.2
    assert np.mean(neg >= np.nextafter(t, 0.0)) > 0.2  # it is the smallest such threshold
    assert M.threshold_at_fpr(neg, 0.25) == t  # 2.5 allowed → 2
    assert M.threshold_at_fpr(neg, 0.29) == np.nextafter(0.8, 1.0)
    assert M.threshold_at_fpr(neg, 0.3) == np.nextafter(0.7, 1.0)


def test_threshold_at_fpr_edge_cases():
    neg = np.array([0.2, 0.7, 0.7, 0.7, 0.1])
    t0 = M.threshold_at_fpr(neg, 0.0)
    assert t0 == np.nextafter(0.7, np.inf) and not (neg >= t0).any()
    # ties: 40% allowed, but the three tied 0.7s go together, so none may pass
    assert M.threshold_at_fpr(neg, 0.4) == t0
    t = M.threshold_at_fpr(neg, 0.6)
    assert t == np.nextafter(0.2, 1.0) and np.mean(neg >= t) == 0.6
    assert M.threshold_at_fpr(np.array([]), 0.01) == 1.0
    assert M.threshold_at_fpr(neg, 1.0) <= neg.min()
    with pytest.raises(ValueError):
        M.threshold_at_fpr(neg, -0.1)


def test_threshold_is_exact_for_float32_scores():
    neg = np.array([0.3, 0.5, 0.5], dtype=np.float32)
    t = M.threshold_at_fpr(neg, 0.0)
    assert isinstance(t, float)
    assert not (neg >= t).any()  # float32 comparison (NumPy 2 keeps the array dtype)
    assert not (neg.astype(np.float64) >= t).any()
    assert (np.array([np.nextafter(np.float32(0.5), np.float32(1))], np.float32) >= t).all()


def test_species_metrics_hand_computed():
    # species 0: positives rows 0, 1; negatives rows 2-5
    scores = np.array([
        [0.9, 0.1], [0.4, 0.2], [0.5, 0.8], [0.3, 0.7], [0.2, 0.6], [0.1, 0.9],
    ])
    primary = np.array([0, 0, 1, 1, 1, 1])
    rows = M.species_metrics(scores, primary, species=["a", "b"], target_fpr=0.25)
    a, b = rows
    assert (a["n_pos"], a["n_neg"]) == (2, 4) and (b["n_pos"], b["n_neg"]) == (4, 2)
    # a's negatives 0.5, 0.3, 0.2, 0.1; 1 of 4 allowed → threshold just above 0.3
    assert a["threshold"] == np.nextafter(0.3, 1.0)
    assert a["recall_at_threshold"] == 1.0 and a["fpr_at_threshold"] == 0.25
    assert a["auc"] == pytest.approx(7 / 8)  # 0.4 < 0.5 is the only misordered pair of 8
    # b's negatives 0.1, 0.2; 25% of 2 → 0 allowed → just above 0.2; all 4 positives above
    assert b["threshold"] == np.nextafter(0.2, 1.0)
    assert b["recall_at_threshold"] == 1.0 and b["fpr_at_threshold"] == 0.0 and b["auc"] == 1.0


def test_undefined_metrics_are_none():
    scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.2, 0.1]])
    primary = np.array([0, 0])
    a, b, c = M.species_metrics(scores, primary, species=["a", "b", "c"])
    assert a["auc"] is None and a["n_neg"] == 0 and a["fpr_at_threshold"] is None and a["threshold"] == 1.0
    assert a["ap"] == 1.0
    assert b["auc"] is None and b["ap"] is None and b["recall_at_threshold"] is None
    result = M.evaluate_scores(scores, primary, species=["a", "b", "c"])
    assert result["macro_auc"] is None and result["macro_ap"] == 1.0


def test_secondary_pairs_are_excluded():
    # species 1 is primary in rows 0-1; row 2 has species 1 in the background and scores it high.
    scores = np.array([[0.1, 0.9], [0.2, 0.8], [0.9, 0.95], [0.8, 0.1]])
    primary = np.array([1, 1, 0, 0])
    secondary = np.zeros_like(scores, dtype=bool)
    secondary[2, 1] = True
    without = M.species_metrics(scores, primary, species=["a", "b"])
    withsec = M.species_metrics(scores, primary, species=["a", "b"], secondary=secondary)
    assert without[1]["auc"] == 0.5 and without[1]["n_neg"] == 2
    assert withsec[1]["auc"] == 1.0 and withsec[1]["n_neg"] == 1
    assert withsec[1]["threshold"] == np.nextafter(0.1, 1.0)
    glob = M.global_threshold(scores, primary, secondary=secondary, target_fpr=0.0)
    assert glob["threshold"] == np.nextafter(0.2, 1.0)  # 0.95 is ignored: the top negative is 0.2
    assert glob["recall"] == 1.0 and glob["fpr"] == 0.0
    # a True on the primary column itself is ignored
    secondary[0, 1] = True
    assert M.species_metrics(scores, primary, species=["a", "b"], secondary=secondary)[1]["n_pos"] == 2


def test_global_threshold_pools_all_pairs():
    scores = np.array([[0.9, 0.3, 0.2], [0.4, 0.7, 0.1], [0.5, 0.6, 0.35]])
    primary = np.array([0, 1, 2])
    # negatives: 0.3, 0.2, 0.4, 0.1, 0.5, 0.6 ; 1/6 allowed → just above 0.5
    glob = M.global_threshold(scores, primary, target_fpr=1 / 6)
    assert glob["threshold"] == np.nextafter(0.5, 1.0)
    assert glob["fpr"] == pytest.approx(1 / 6)
    assert glob["recall"] == pytest.approx(2 / 3)  # 0.35 misses


def test_evaluate_scores_is_json_serialisable():
    rng = np.random.default_rng(1)
    scores = rng.random((30, 7)).astype(np.float32)
    primary = rng.integers(0, 5, 30)  # species 5 and 6 never primary: undefined AUC/AP
    secondary = rng.random((30, 7)) < 0.1
    result = M.evaluate_scores(scores, primary, species=list("abcdefg"), secondary=secondary)
    text = json.dumps(result, allow_nan=False)
    back = json.loads(text)
    assert back["n_recordings"] == 30 and back["n_species"] == 7 and len(back["per_species"]) == 7
    assert back["per_species"][5]["auc"] is None

    def plain(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, list):
            return all(plain(v) for v in x)
        return x is None or type(x) in (int, float, str, bool) and not (type(x) is float and math.isnan(x))

    assert plain(result)


def test_curves_and_input_checks():
    fpr, tpr, thr = M.roc_points([0.9, 0.8, 0.3], [0.1, 0.4])
    assert fpr[0] == 0 and tpr[-1] == 1 and fpr[-1] == 1
    precision, recall, _ = M.pr_points([0.9, 0.8], [0.1])
    assert precision.max() == 1.0 and recall.max() == 1.0
    with pytest.raises(ValueError):
        M.roc_points([], [0.1])
    with pytest.raises(ValueError):
        M.evaluate_scores(np.zeros((2, 2)), np.array([0, 2]), species=["a", "b"])
    with pytest.raises(ValueError):
        M.evaluate_scores(np.full((2, 2), np.nan), np.array([0, 1]), species=["a", "b"])
    with pytest.raises(ValueError):
        M.species_metrics(np.zeros((2, 2)), np.array([0, 1]), species=["a"])


def test_a_species_without_a_positive_validation_recording_takes_the_customary_threshold():
    """Thresholds are chosen on validation; a species none of whose validation recordings is its own
    (BirdNET's thousands of species in an --append run) has only negatives, and just above their
    maximum (near 0) would flag it on nearly every clip.  It takes 0.5 instead; a species with a
    positive keeps the threshold its negatives give."""
    from birdcore.evaluation.scoring import thresholds_from

    scores = np.array([[0.9, 0.02, 0.01], [0.1, 0.8, 0.03]], np.float32)  # 2 recordings x 3 species
    arrays = {"scores": scores, "primary": np.array([0, 1]), "secondary": np.zeros((2, 3), bool),
              "species": np.array(["a", "b", "lacking"])}
    chosen = thresholds_from(arrays, arrays, target_fpr=0.001)["species"]
    assert chosen["lacking"]["threshold"] == 0.5
    assert 0.1 < chosen["a"]["threshold"] < 0.11 and 0.02 < chosen["b"]["threshold"] < 0.021
