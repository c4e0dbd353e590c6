"""The review store, sampling, precision from reviews, and ``python -m birdcore.review``."""
import json
import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from birdcore.review import precision as P
from birdcore.review.sampling import draw, score_bins
from birdcore.review.store import SCHEMA_VERSION, StoreError, engine_for, open_store


def create_schema_1(db: Path) -> None:
    """Create a database at schema 1 (before ``site``/``recorded``), for migration tests."""
    engine = engine_for(db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value VARCHAR(256) NOT NULL)"))
        conn.execute(sa.text("INSERT INTO meta VALUES ('schema_version', '1')"))
        conn.execute(sa.text(
            "CREATE TABLE detections (id INTEGER PRIMARY KEY AUTOINCREMENT, file TEXT NOT NULL, "
            "start_s FLOAT NOT NULL, end_s FLOAT NOT NULL, species VARCHAR(128) NOT NULL, "
            "common_name VARCHAR(256), score FLOAT NOT NULL, run VARCHAR(256) NOT NULL DEFAULT '', "
            "imported_at VARCHAR(32) NOT NULL, CONSTRAINT uq_detection UNIQUE (file, start_s, end_s, species, run))"))
        conn.execute(sa.text(
            "CREATE TABLE reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, detection_id INTEGER NOT NULL "
            "REFERENCES detections(id), verdict VARCHAR(8) NOT NULL, corrected_species VARCHAR(128), note TEXT, "
            "reviewer VARCHAR(128) NOT NULL, reviewed_at VARCHAR(32) NOT NULL, undone BOOLEAN NOT NULL DEFAULT 0, "
            "CONSTRAINT ck_verdict CHECK (verdict IN ('yes', 'no', 'unsure')))"))
        conn.execute(sa.text(
            "CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT, detection_id INTEGER NOT NULL UNIQUE "
            "REFERENCES detections(id), species VARCHAR(128) NOT NULL, strategy VARCHAR(16) NOT NULL, "
            "stratum INTEGER NOT NULL, weight FLOAT, seed INTEGER, created_at VARCHAR(32) NOT NULL)"))



def detections_table(n=300, species=("aaa", "bbb"), seed=0, file="rec1.wav"):
    rng = np.random.default_rng(seed)
    rows = []
    for sp in species:
        for i in range(n):
            start = float(i * 3)
            rows.append({"file": file, "start_s": start, "end_s": start + 3, "species": sp,
                         "common_name": sp.upper(), "score": float(rng.uniform(0.1, 1.0))})
    return pd.DataFrame(rows)


def test_a_schema_1_database_is_migrated_and_a_newer_one_refused(tmp_path):
    db = tmp_path / "old.sqlite"
    create_schema_1(db)
    store = open_store(db)
    assert store.schema_version() == SCHEMA_VERSION
    columns = {c["name"] for c in sa.inspect(store.engine).get_columns("detections")}
    assert {"site", "recorded"} <= columns
    store.import_detections(detections_table(3).assign(site="north"), run="r")
    assert store.detections()["site"].eq("north").all()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError, match="newer than this software"):
        open_store(db)
    other = tmp_path / "other.sqlite"
    with engine_for(other).begin() as conn:
        conn.execute(sa.text("CREATE TABLE detections (x INTEGER)"))
    with pytest.raises(StoreError, match="not a review database"):
        open_store(other)


def test_reimporting_adds_nothing_and_undo_restores_the_previous_verdict(tmp_path):
    store = open_store(tmp_path / "r.sqlite")
    assert store.import_detections(detections_table(5), run="r") == (10, 0)
    assert store.import_detections(detections_table(5), run="r") == (0, 10)
    first = int(store.detections()["id"].iat[0])
    store.add_review(first, "no", reviewer="ana")
    store.add_review(first, "yes", reviewer="ana", note="second look")
    assert store.verdicts().set_index("id").loc[first, "verdict"] == "yes"
    assert store.undo(reviewer="ana") == first
    assert store.verdicts().set_index("id").loc[first, "verdict"] == "no"
    with pytest.raises(ValueError, match="verdict 'maybe'"):
        store.add_review(first, "maybe", reviewer="ana")
    with pytest.raises(ValueError, match="no detection 999999"):
        store.add_review(999999, "yes", reviewer="ana")


def _reviewer(db, name, ids):
    store = open_store(db)
    for i in ids:
        store.add_review(int(i), "yes" if i % 2 else "no", reviewer=name)


def test_two_reviewers_writing_at_once_lose_nothing(tmp_path):
    db = tmp_path / "shared.sqlite"
    store = open_store(db)
    store.import_detections(detections_table(60), run="r")
    ids = store.detections()["id"].tolist()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_reviewer, args=(db, name, ids[k::2])) for k, name in enumerate(("ana", "ben"))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert all(w.exitcode == 0 for w in workers)
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM reviews")).scalar() == len(ids)
    assert len(store.verdicts()) == len(ids)


def test_sampling_is_reproducible_never_repeats_and_weights_the_bins():
    det = detections_table(400, species=("aaa",)).reset_index(names="id")
    a = draw(det, per_species=50, strategy="stratified", seed=3)
    b = draw(det, per_species=50, strategy="stratified", seed=3)
    assert a == b and len(a) == 50
    bins = score_bins(det["score"].to_numpy(), 5)
    for row in a:
        stratum = row["stratum"]
        drawn = sum(r["stratum"] == stratum for r in a)
        assert row["weight"] == pytest.approx((bins == stratum).sum() / drawn)
    assert len({r["stratum"] for r in a}) == 5  # every score bin is sampled
    again = draw(det, per_species=50, strategy="stratified", seed=3, exclude={r["detection_id"] for r in a})
    assert not {r["detection_id"] for r in again} & {r["detection_id"] for r in a}
    top = draw(det, per_species=10, strategy="top")
    assert sorted(det.set_index("id").loc[[r["detection_id"] for r in top], "score"]) == \
        sorted(det["score"].nlargest(10))


def test_the_precision_interval_covers_the_truth_under_stratified_sampling():
    """Synthetic detections with a known truth (P(correct | score) = score²): 95 % intervals from
    50 stratified reviews should cover the true precision about 95 % of the time."""
    rng = np.random.default_rng(7)
    scores = rng.uniform(0.1, 1.0, 3000)
    truth = rng.random(3000) < scores ** 2
    det = pd.DataFrame({"id": np.arange(3000), "species": "aaa", "score": scores})
    hits, tries = 0, 0
    for trial in range(150):
        sample = draw(det, per_species=50, strategy="stratified", seed=trial)
        idx = np.array([r["detection_id"] for r in sample])
        for t in (0.1, 0.5, 0.8):
            e = P.estimate(scores, scores[idx], truth[idx], t)
            true = truth[scores >= t].mean()
            tries += 1
            hits += e.ci_low <= true <= e.ci_high
    assert hits / tries >= 0.9, hits / tries


def test_a_threshold_for_a_target_precision_and_the_logistic_curve():
    rng = np.random.default_rng(1)
    scores = rng.uniform(0, 1, 400)
    correct = rng.random(400) < scores
    chosen = P.threshold_for(scores, scores, correct, 0.8)
    assert chosen["threshold"] is not None and correct[scores >= chosen["threshold"]].mean() >= 0.8 - 1e-9
    assert P.threshold_for(scores, scores, correct, 1.0)["threshold"] is None or \
        correct[scores >= P.threshold_for(scores, scores, correct, 1.0)["threshold"]].all()
    fit = P.logistic(scores, correct)
    assert fit["b"] > 0 and 0.5 < fit["score_at"]["0.9"] < 1.0


def test_review_commands_from_import_to_thresholds_and_export(trained_run, tmp_path, capsys):
    from birdcore.cli.review import main
    from birdcore.data.soundscapes import read_rows
    from birdcore.runs.loading import load_run

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    codes = load_run(run).codes
    det = detections_table(40, species=codes[:2], file=str(tmp_path / "SYN1_20260601.wav"))
    det.to_csv(tmp_path / "detections.csv", index=False)
    db = str(tmp_path / "review.sqlite")
    assert main(["import", str(tmp_path / "detections.csv"), "--db", db, "--run", str(run)]) == 0
    assert main(["sample", "--db", db, "--per-species", "20", "--strategy", "stratified", "--seed", "1"]) == 0
    store = open_store(db)
    assert len(store.queue()) == 40
    # annotations: every 3 s detection of the first species in the first 60 s is right
    labels = ["filename_seconds,birds,filename,seconds"]
    for end in range(5, 125, 5):
        labels.append(f"SYN1_{end},{codes[0] if end <= 60 else 'nocall'},SYN1,{end}")
    (tmp_path / "labels.csv").write_text("\n".join(labels) + "\n")
    assert main(["import-labels", "--db", db, "--labels", str(tmp_path / "labels.csv")]) == 0
    verdicts = store.verdicts()
    assert len(verdicts) == 80 and (verdicts["reviewer"] == "labels:labels.csv").all()
    assert main(["report", "--db", db, "--target-precision", "0.9", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    first = {r["species"]: r for r in report["species"]}[codes[0]]
    assert set(first) >= {"species", "n_reviewed", "precision", "ci_low", "ci_high", "threshold"}
    assert first["n_reviewed"] == 40 and 0.4 < first["precision"] < 0.6
    assert main(["thresholds", "--db", db, "--run", str(run), "--target-precision", "0.3"]) == 0
    assert (run / "thresholds.previous.json").exists()
    assert json.loads((run / "thresholds.json").read_text())["chosen_on"].startswith("reviews in")
    assert main(["export", "--db", db, "--raven", str(tmp_path / "verified")]) == 0
    assert main(["export", "--db", db, "--labels", str(tmp_path / "verified.csv")]) == 0
    rows = read_rows(tmp_path / "verified.csv")
    assert rows.labelled and {codes[0]} == set(rows.species())
    raven = read_rows(tmp_path / "verified", audio_dir=tmp_path)
    assert set(raven.species()) == {codes[0]}


def test_bad_input_is_one_line(tmp_path, capsys):
    from birdcore.cli.review import main

    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    assert main(["import", str(tmp_path / "x.csv"), "--db", str(tmp_path / "r.sqlite")]) == 2
    assert not (tmp_path / "r.sqlite").exists()  # a failed import leaves no database behind
    open_store(tmp_path / "r.sqlite")  # a review database with nothing in it
    assert main(["sample", "--db", str(tmp_path / "r.sqlite"), "--per-species", "5"]) == 2
    err = capsys.readouterr().err
    assert "x.csv: not a detections CSV" in err and "no detections yet" in err and "Traceback" not in err


def test_verified_clips_become_head_training_examples(tmp_path):
    """yes → a positive of its species, a corrected species → a positive of that one, no → all zeros;
    the head's training batches then draw from them beside the training split."""
    import soundfile as sf

    from birdcore.data.synthetic import make_call
    from birdcore.models.birdnet_head.embeddings import review_examples
    from birdcore.models.birdnet_head.head import EmbeddingBatches

    wave = make_call("synchi1", seconds=9.0, sample_rate=48000, rng=np.random.default_rng(0))
    sf.write(tmp_path / "clip.wav", wave, 48000)
    store = open_store(tmp_path / "r.sqlite")
    table = pd.DataFrame({"file": str(tmp_path / "clip.wav"), "start_s": [0.0, 3.0, 6.0, 6.0],
                          "end_s": [3.0, 6.0, 9.0, 9.0], "species": ["aaa", "aaa", "bbb", "zzz"],
                          "score": [0.9, 0.4, 0.3, 0.2]})
    store.import_detections(table, run="r")
    ids = store.detections()["id"].tolist()
    store.add_review(ids[0], "yes", reviewer="ana")
    store.add_review(ids[1], "no", reviewer="ana")
    store.add_review(ids[2], "no", reviewer="ana", corrected_species="aaa")
    store.add_review(ids[3], "yes", reviewer="ana")  # a species outside the run: skipped
    examples = review_examples(str(tmp_path / "r.sqlite"), ["aaa", "bbb"], None)
    assert len(examples) == 3 and all(x.shape == (1, 1024) for x, _ in examples)
    np.testing.assert_array_equal(np.stack([t for _, t in examples]), [[1, 0], [0, 0], [1, 0]])
    batches = EmbeddingBatches(load=lambda i: examples[i][0], targets=np.stack([t for _, t in examples]), windows=1,
                               batch_size=3, seed=0)
    x, y = batches[0]
    assert x["embeddings"].shape == (3, 1, 1024) and sorted(y["recording"].sum(axis=1)) == [0, 1, 1]
