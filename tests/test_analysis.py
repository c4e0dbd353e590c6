"""birdcore.analysis.scores on small synthetic score tables (no data, no TensorFlow)."""
import json

import numpy as np
import pandas as pd
import pytest

from birdcore.analysis import scores as A
from birdcore.analysis import comparison as C
from birdcore.analysis import thresholds as T
from birdcore.evaluation.metrics import top_k_accuracy
from birdcore.io.atomic import write_npz


def random_table(seed=0, n=60, c=7, *, ties=False) -> A.ScoreTable:
    rng = np.random.default_rng(seed)
    scores = rng.beta(0.6, 3.0, (n, c)).astype(np.float32)
    if ties:  # coarse scores: many exact ties, with each other and with the thresholds tried
        scores = np.round(scores * 10) / 10
    primary = rng.integers(0, c, n)
    scores[np.arange(n), primary] += 0.3 * rng.random(n).astype(np.float32)
    scores = np.clip(scores, 0, 1).astype(np.float32)
    secondary = rng.random((n, c)) < 0.1
    secondary[0, primary[0]] = True  # a True on a primary pair must be ignored
    return A.ScoreTable(recording_id=[f"XC{i}" for i in range(n)], species=[f"sp{j}" for j in range(c)],
                        primary=primary, scores=scores, secondary=secondary)


def brute(table: A.ScoreTable, thresholds) -> dict:
    """Counts by looping over every (recording, species) pair."""
    n, c = table.scores.shape
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (c,))
    tp = fp = fn = tn = covered = correct = 0
    for i in range(n):
        row = table.scores[i].astype(np.float64)
        for j in range(c):
            positive = j == table.primary[i]
            if table.secondary[i, j] and not positive:
                continue
            hit = row[j] >= t[j]
            tp += hit and positive
            fp += hit and not positive
            fn += (not hit) and positive
            tn += (not hit) and not positive
        top = int(np.argmax(row))
        if row[top] >= t[top]:
            covered += 1
            own = row[table.primary[i]]
            correct += int(sum(row >= own) == 1)
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn, "covered": covered, "correct": correct}


def check_against_brute(got: dict, want: dict, n_recordings: int) -> None:
    for key in ("tp", "fp", "fn", "tn"):
        assert got[key] == want[key], key
    assert got["fpr"] == pytest.approx(want["fp"] / (want["fp"] + want["tn"]))
    assert got["tpr"] == pytest.approx(want["tp"] / (want["tp"] + want["fn"]))
    detections = want["tp"] + want["fp"]
    assert got["precision"] == (pytest.approx(want["tp"] / detections) if detections else None)
    assert got["fp_per_1000"] == pytest.approx(1000 * want["fp"] / n_recordings)
    assert got["coverage"] == pytest.approx(want["covered"] / n_recordings)
    if want["covered"]:
        assert got["accuracy_covered"] == pytest.approx(want["correct"] / want["covered"])
    else:
        assert got["accuracy_covered"] is None


@pytest.mark.parametrize("ties", [False, True])
def test_explorer_matches_brute_force_scalar(ties):
    table = random_table(1, ties=ties)
    ex = T.ThresholdExplorer(table)
    for t in [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0, 1.5, float(table.scores[3, 2])]:
        check_against_brute(ex.at(t), brute(table, t), table.n_recordings)


@pytest.mark.parametrize("ties", [False, True])
def test_explorer_matches_brute_force_per_species(ties):
    table = random_table(2, ties=ties)
    ex = T.ThresholdExplorer(table)
    rng = np.random.default_rng(3)
    for _ in range(8):
        t = rng.random(table.n_species)
        t[0] = table.scores[5, 0]  # exactly a score
        if ties:
            t = np.round(t * 10) / 10
        check_against_brute(ex.at(t), brute(table, t), table.n_recordings)
    # one threshold for all species gives the scalar answer
    assert ex.at(np.full(table.n_species, 0.3)) == ex.at(0.3)


def test_species_at_matches_brute_force():
    table = random_table(4)
    ex = T.ThresholdExplorer(table)
    for j, code in enumerate(table.species):
        col_pos = table.positives[:, j]
        ok = table.valid[:, j]
        col = table.scores[:, j].astype(np.float64)
        is_top = table.scores.argmax(axis=1) == j
        for t in (0.1, 0.4, 0.8):
            got = ex.species_at(code, t)
            hit = col >= t
            assert got["tp"] == int((hit & col_pos & ok).sum())
            assert got["fp"] == int((hit & ~col_pos & ok).sum())
            assert got["fn"] == int((~hit & col_pos & ok).sum())
            assert got["tn"] == int((~hit & ~col_pos & ok).sum())
            kept = is_top & hit
            if is_top.any():
                assert got["coverage"] == pytest.approx(kept.sum() / is_top.sum())
            else:
                assert got["coverage"] is None
            if kept.any():
                assert got["accuracy_covered"] == pytest.approx(table.top1_correct[kept].mean())


def test_curve_is_monotone_and_consistent():
    table = random_table(5, n=120)
    ex = T.ThresholdExplorer(table)
    for species in (None, "sp3"):
        curve = ex.curve(species=species, n_points=50)
        assert list(curve.columns[:7]) == ["threshold", "fpr", "tpr", "precision", "fp_per_1000", "coverage",
                                           "accuracy_covered"]
        assert np.all(np.diff(curve["threshold"]) > 0)
        for column in ("fpr", "tpr", "coverage", "fp_per_1000"):
            assert np.all(np.diff(curve[column].to_numpy()) <= 0), column
        # exact score quantiles are on the grid
        pos, neg = A.positive_negative_scores(table, species)
        assert np.isin(np.float64(np.max(neg)), curve["threshold"].to_numpy())
        grid = curve["threshold"].to_numpy()
        assert np.isin(pos.astype(np.float64)[[pos.argmin(), pos.argmax()]], grid).all()
        assert np.isin(np.sort(neg.astype(np.float64))[-50:], grid).all()  # the low-FPR end is exact
    pooled = ex.curve(n_points=20)
    row = pooled.iloc[len(pooled) // 2]
    single = ex.at(float(row["threshold"]))
    assert single["fpr"] == pytest.approx(row["fpr"]) and single["coverage"] == pytest.approx(row["coverage"])


def test_threshold_for_fpr_meets_the_target():
    table = random_table(6, n=200)
    ex = T.ThresholdExplorer(table)
    for target in (0.0, 0.001, 0.01, 0.05, 0.2):
        t = ex.threshold_for_fpr(target)
        assert ex.at(t)["fpr"] <= target
        t3 = ex.threshold_for_fpr(target, species="sp3")
        assert ex.species_at("sp3", t3)["fpr"] <= target


def test_explorer_rejects_bad_thresholds():
    ex = T.ThresholdExplorer(random_table(7))
    with pytest.raises(ValueError):
        ex.at(np.zeros(3))
    with pytest.raises(ValueError):
        ex.at(float("nan"))
    with pytest.raises(KeyError):
        ex.species_at("nope", 0.5)


def hand_table() -> A.ScoreTable:
    # species a, b, c; recordings r0-r3 are "a", r4 is "b"
    scores = np.array([
        [0.9, 0.2, 0.1],   # a right; rival b
        [0.3, 0.8, 0.1],   # a wrong; rival b above primary
        [0.5, 0.1, 0.4],   # a right; rival c
        [0.6, 0.7, 0.95],  # a wrong; c is background (secondary), so rival b (above primary)
        [0.2, 0.6, 0.3],   # b right
    ], dtype=np.float32)
    secondary = np.zeros((5, 3), dtype=bool)
    secondary[3, 2] = True
    segs = np.arange(7 * 3, dtype=np.float16).reshape(7, 3) / 32
    return A.ScoreTable(recording_id=["r0", "r1", "r2", "r3", "r4"], species=["a", "b", "c"],
                        primary=np.array([0, 0, 0, 0, 1]), scores=scores, secondary=secondary,
                        segment_scores=segs, segment_offsets=np.array([0, 2, 3, 3, 5, 7]), segment_seconds=5.0)


def test_score_table_basics(tmp_path):
    table = hand_table()
    assert table.n_recordings == 5 and table.n_species == 3
    assert table.segments_of(0).shape == (2, 3) and table.segments_of(0).dtype == np.float32
    assert table.segments_of(2).shape == (0, 3)
    np.testing.assert_array_equal(table.segments_of(4), table.segment_scores[5:7].astype(np.float32))
    assert table.positives.sum() == 5 and not table.valid[3, 2] and table.valid.sum() == 14
    np.testing.assert_array_equal(table.top1_correct, [True, False, True, False, True])
    assert table.top1_correct.mean() == top_k_accuracy(table.scores, table.primary, 1)
    write_npz(tmp_path / "scores.npz", recording_id=table.recording_id, species=np.array(table.species),
              primary=table.primary, scores=table.scores, secondary=table.secondary,
              segment_scores=table.segment_scores, segment_offsets=table.segment_offsets,
              segment_seconds=np.float32(5.0))
    loaded = A.load_score_table(tmp_path)
    assert loaded.species == ["a", "b", "c"] and list(loaded.recording_id) == ["r0", "r1", "r2", "r3", "r4"]
    np.testing.assert_array_equal(loaded.scores, table.scores)
    np.testing.assert_array_equal(loaded.segments_of(3), table.segments_of(3))
    assert loaded.segment_seconds == 5.0
    with pytest.raises(ValueError):
        A.ScoreTable(recording_id=["x"], species=["a"], primary=[0], scores=np.zeros((1, 2)),
                     secondary=np.zeros((1, 2), bool))


def test_confusions_hand_made():
    out = A.confusions(hand_table(), "a")
    assert list(out.columns) == ["ebird_code", "times_top", "times_above_primary", "mean_score"]
    assert out["ebird_code"].tolist() == ["b", "c"]
    assert out["times_top"].tolist() == [3, 1]
    assert out["times_above_primary"].tolist() == [2, 0]  # c's 0.95 on r3 is background: not counted
    assert out["mean_score"].tolist() == pytest.approx([np.mean([0.2, 0.8, 0.1, 0.7]), np.mean([0.1, 0.1, 0.4, 0.95])])
    assert len(A.confusions(hand_table(), "a", top=1)) == 1
    assert A.confusions(hand_table(), "c").empty  # no recording of c


def test_top1_errors_hand_made():
    out = A.top1_errors(hand_table())
    assert out["recording_id"].tolist() == ["r3", "r1"]  # worst (primary ranked 3rd) first
    assert out["primary"].tolist() == ["a", "a"]
    assert out["predicted"].tolist() == ["c", "b"]
    assert out["primary_rank"].tolist() == [3, 2]
    assert out["predicted_score"].tolist() == pytest.approx([0.95, 0.8])
    assert out["primary_score"].tolist() == pytest.approx([0.6, 0.3])
    assert out["predicted_is_background"].tolist() == [True, False]  # r3's c is a named background species


def test_top1_errors_agree_with_top1_accuracy():
    table = random_table(3, ties=True)
    out = A.top1_errors(table)
    assert len(out) == round((1 - top_k_accuracy(table.scores, table.primary, 1)) * table.n_recordings)
    assert (out["predicted"] != out["primary"]).all() and (out["predicted_score"] >= out["primary_score"]).all()
    right = A.ScoreTable(recording_id=["r"], species=["a", "b"], primary=[0], scores=np.array([[0.9, 0.1]]),
                         secondary=np.zeros((1, 2), bool))
    assert A.top1_errors(right).empty and "predicted" in A.top1_errors(right).columns


def test_ranked_recordings_hand_made():
    out = A.ranked_recordings(hand_table(), "b")
    assert out["recording_id"].tolist() == ["r1", "r3", "r4", "r0", "r2"]
    assert out["rank"].tolist() == [1, 2, 3, 4, 5]
    assert out["is_positive"].tolist() == [False, False, True, False, False]
    assert out["primary"].tolist() == ["a", "a", "b", "a", "a"]
    split = pd.DataFrame({"recording_id": ["r0", "r1", "r4"], "split": ["test", "val", "test"]})
    assert A.ranked_recordings(hand_table(), "b", split_df=split)["recording_id"].tolist() == ["r4", "r0"]
    tied = A.ranked_recordings(hand_table(), "c")
    assert tied["rank"].tolist() == [1, 2, 3, 4, 4]  # r0 and r1 both 0.1


def test_positive_negative_scores():
    pos, neg = A.positive_negative_scores(hand_table(), "c")
    assert len(pos) == 0 and sorted(neg.tolist()) == pytest.approx([0.1, 0.1, 0.3, 0.4])  # r3 is background
    pos, neg = A.positive_negative_scores(hand_table(), None)
    assert len(pos) == 5 and len(neg) == 9


def test_species_summary_hand_made():
    metrics = {"per_species": [{"species": "a", "n_pos": 4, "auc": 0.75, "ap": 0.8},
                               {"species": "b", "n_pos": 1, "auc": 0.5, "ap": 0.4},
                               {"species": "c", "n_pos": 0, "auc": None, "ap": None}]}
    thresholds = {"species": {"a": {"threshold": 0.55}, "b": {"threshold": 0.65}, "c": {"threshold": 0.35}}}
    names = pd.DataFrame({"index": [2, 0, 1], "ebird_code": ["c", "a", "b"], "common_name": ["Cee", "Ay", "Bee"],
                          "sci_name": ["C c", "A a", "B b"]})
    table = hand_table()
    out = A.species_summary(table, metrics=metrics, thresholds=thresholds, names=names)
    assert out["ebird_code"].tolist() == ["a", "b", "c"]
    assert out["common_name"].tolist() == ["Ay", "Bee", "Cee"]
    assert out["test_recordings"].tolist() == [4, 1, 0]
    assert out["auc"].tolist()[:2] == [0.75, 0.5] and np.isnan(out["auc"].iloc[2])
    assert out["recall_at_target_fpr"].tolist()[:2] == [0.5, 0.0]  # a: 0.9, 0.5, 0.3, 0.6 >= 0.55 → 2 of 4
    assert np.isnan(out["recall_at_target_fpr"].iloc[2])
    assert out["test_fpr"].iloc[2] == pytest.approx(0.25)  # c negatives 0.1, 0.1, 0.4, 0.3 (r3 background)


def test_roc_det_points_and_probit():
    table = random_table(8)
    pts = A.roc_det_points(table)
    assert list(pts.columns) == ["fpr", "tpr", "fnr", "threshold"]
    assert np.all(np.diff(pts["fpr"]) >= 0) and np.allclose(pts["fnr"], 1 - pts["tpr"])
    assert pts["fpr"].iloc[-1] == 1.0 and pts["tpr"].iloc[-1] == 1.0
    assert A.roc_det_points(hand_table(), species="c").empty
    p = A.probit(np.array([0.0, 0.5, 1.0, 0.841344746]))
    assert np.all(np.isfinite(p)) and p[1] == 0.0 and p[3] == pytest.approx(1.0, abs=1e-6)
    assert p[0] < -4 and p[2] > 4


def write_thresholds(run_dir):
    data = {"target_fpr": 0.001, "chosen_on": "val",
            "global": {"threshold": 0.4, "test_recall": 0.9, "test_fpr": 0.001},
            "species": {"a": {"threshold": 0.5, "test_recall": 1.0, "test_fpr": 0.0},
                        "b": {"threshold": 0.6, "test_recall": 0.5, "test_fpr": 0.01}}}
    (run_dir / "thresholds.json").write_text(json.dumps(data))
    return data


def test_save_thresholds_round_trip(tmp_path):
    original = write_thresholds(tmp_path)
    T.save_thresholds(tmp_path, target_fpr=0.01, global_threshold=0.3, species_thresholds={"a": 0.7, "c": 0.2})
    saved = json.loads((tmp_path / "thresholds.json").read_text())
    assert saved["target_fpr"] == 0.01 and saved["chosen_on"] == "dashboard"
    assert saved["global"] == {"threshold": 0.3}
    assert saved["species"]["a"] == {"threshold": 0.7} and saved["species"]["c"] == {"threshold": 0.2}
    assert saved["species"]["b"] == original["species"]["b"]  # untouched
    assert json.loads((tmp_path / "thresholds.original.json").read_text()) == original
    # a second save keeps the first original; None keeps every species entry
    T.save_thresholds(tmp_path, target_fpr=0.02, global_threshold=0.35, species_thresholds=None, source="test")
    again = json.loads((tmp_path / "thresholds.json").read_text())
    assert again["species"] == saved["species"] and again["chosen_on"] == "test"
    assert again["global"]["threshold"] == 0.35
    assert json.loads((tmp_path / "thresholds.original.json").read_text()) == original
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("kwargs", [
    {"global_threshold": 1.5}, {"global_threshold": -0.1}, {"global_threshold": float("nan")},
    {"species_thresholds": {"a": float("inf")}}, {"species_thresholds": {"a": 2.0}}, {"target_fpr": -0.5},
])
def test_save_thresholds_rejects_invalid(tmp_path, kwargs):
    original = write_thresholds(tmp_path)
    args = {"target_fpr": 0.01, "global_threshold": 0.3, "species_thresholds": None, **kwargs}
    with pytest.raises(ValueError):
        T.save_thresholds(tmp_path, **args)
    assert json.loads((tmp_path / "thresholds.json").read_text()) == original
    assert not (tmp_path / "thresholds.original.json").exists()


def test_load_history(tmp_path):
    assert A.load_history(tmp_path).empty
    (tmp_path / "history.csv").write_text("epoch,loss,val_top1,val_loss,seconds\n1,0.9,0.3,0.8,4.5\n2,0.5,0.5,0.6,0.7\n")
    history = A.load_history(tmp_path)
    assert history["epoch"].tolist() == [1, 2] and history["val_top1"].tolist() == [0.3, 0.5]


def test_compare_runs_hand_made():
    a = A.ScoreTable(recording_id=["r1", "r2", "r3", "r4"], species=["x", "y", "z"], primary=[0, 1, 2, 0],
                     scores=np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.1, 0.2, 0.9], [0.5, 0.4, 0.1]]),
                     secondary=np.zeros((4, 3), bool))
    # b: other order, an extra species w that would beat r1's primary, r4 missing, r5 extra
    b = A.ScoreTable(recording_id=["r5", "r3", "r2", "r1"], species=["y", "w", "x"], primary=[0, 2, 0, 2],
                     scores=np.array([[0.9, 0.1, 0.0], [0.3, 0.9, 0.6], [0.7, 0.0, 0.1], [0.2, 0.95, 0.6]]),
                     secondary=np.zeros((4, 3), bool))
    out = C.compare_runs(a, b)
    # r3's primary z is not a species of b: dropped; r4 and r5 are not shared
    assert out["recording_id"].tolist() == ["r1", "r2"]
    assert out["primary"].tolist() == ["x", "y"]
    assert out["a_top1_correct"].tolist() == [True, False]
    assert out["b_top1_correct"].tolist() == [True, True]  # w is not shared, so it does not count
    assert out["a_score_primary"].tolist() == pytest.approx([0.9, 0.2])
    assert out["b_score_primary"].tolist() == pytest.approx([0.6, 0.7])
    summary = C.compare_summary(out)
    assert summary == {"n_shared": 2, "a_top1": 0.5, "b_top1": 1.0, "both_right": 1, "only_a": 0, "only_b": 1,
                       "both_wrong": 0, "mcnemar_p": 1.0}
    empty = C.compare_runs(a, A.ScoreTable(recording_id=["q"], species=["x"], primary=[0], scores=[[0.5]],
                                           secondary=[[False]]))
    assert empty.empty and C.compare_summary(empty)["a_top1"] is None


def test_confusion_matrix_hand_made():
    m = A.confusion_matrix(hand_table(), only_confused=False)
    assert list(m.index) == list(m.columns) == ["a", "b", "c"]
    # a: r0, r2 right; r1 → b; r3 → c (its highest other species, background or not, as in top1_errors)
    assert m.loc["a"].tolist() == [2, 1, 1] and m.loc["b"].tolist() == [0, 1, 0] and m.loc["c"].sum() == 0
    small = A.confusion_matrix(hand_table())
    assert list(small.index) == ["a", "b", "c"]  # all three are in an error here
    right = A.ScoreTable(recording_id=["r"], species=["a", "b"], primary=[0], scores=np.array([[0.9, 0.1]]),
                         secondary=np.zeros((1, 2), bool))
    assert A.confusion_matrix(right).empty and A.confusion_matrix(right, only_confused=False).to_numpy().tolist() == [[1, 0], [0, 0]]


def test_confusion_matrix_agrees_with_top1_errors():
    table = random_table(5, c=12, ties=True)
    full = A.confusion_matrix(table, only_confused=False)
    errors = A.top1_errors(table)
    assert full.to_numpy().sum() == table.n_recordings
    assert np.trace(full.to_numpy()) == table.n_recordings - len(errors)
    for row in errors.itertuples():
        assert full.loc[row.primary, row.predicted] >= 1
    small = A.confusion_matrix(table)
    assert set(small.index) == set(errors["primary"]) | set(errors["predicted"])
    assert small.to_numpy().sum() - np.trace(small.to_numpy()) == len(errors)


@pytest.mark.parametrize("only_a,only_b,p", [(0, 0, 1.0), (0, 1, 1.0), (0, 10, 2 / 1024), (10, 0, 2 / 1024),
                                             (2, 8, 2 * (1 + 10 + 45) / 1024), (5, 5, 1.0)])
def test_mcnemar_exact_p_hand_values(only_a, only_b, p):
    assert C.mcnemar_exact_p(only_a, only_b) == pytest.approx(p)


def test_run_summary_reads_like_a_sentence():
    from birdcore.analysis.scores import run_summary

    trained = {"model_kind": "keras_audio", "backbone": "inception_v3", "weights": "none", "pooling": "max",
               "n_species": 20, "epochs_trained": 77, "best_epoch": 72, "tuned": False, "keras_backend": "jax",
               "split": {"train": 157, "val": 23, "test": 23}}
    assert run_summary(trained) == ("inception_v3 (weights none) · max pooling · 20 species · 77 epochs, best 72 · "
                                    "trained under Keras on jax · split 157 train / 23 val / 23 test")
    zero_shot = {"model_kind": "birdnet_zero_shot", "pooling": "max", "n_species": 20, "epochs_trained": 0,
                 "best_epoch": 0, "split": {"train": 157, "val": 23, "test": 23}}
    summary = run_summary(zero_shot)
    assert summary.startswith("BirdNET V2.4 zero-shot · max pooling") and "no training" in summary
    assert "epoch" not in summary and "{" not in summary
    old = {"backbone": "small_cnn", "weights": "none", "pooling": "attention", "n_species": 3, "epochs_trained": 1,
           "best_epoch": 1, "tuned": True}  # a format-1 run without model_kind or keras_backend
    assert run_summary(old) == "small_cnn (weights none) · attention pooling · 3 species · 1 epoch, best 1, tuned"
