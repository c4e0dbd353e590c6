"""Opening a review database: only ``import`` creates one; a missing path, an empty file or someone
else's SQLite file is refused in one line and left exactly as it was; ``--run`` must be a run."""
import json
import sqlite3

import pandas as pd
import pytest

from birdcore.cli.review import main
from birdcore.review import store as S
from birdcore.review.store import StoreError, open_store


def detections_csv(folder):
    path = folder / "detections.csv"
    pd.DataFrame({"file": ["rec.wav"] * 3, "start_s": [0.0, 3.0, 6.0], "end_s": [3.0, 6.0, 9.0],
                  "species": ["Turdus migratorius"] * 3, "score": [0.9, 0.5, 0.2]}).to_csv(path, index=False)
    return path


def fake_run(folder):
    """A folder that passes for a complete run as far as its manifest goes (no model: never loaded here)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.json").write_text(json.dumps({"format": "birdclef-run", "format_version": 1}))
    (folder / "species.csv").write_text("index,ebird_code,common_name,sci_name\n0,amerob,American Robin,Turdus migratorius\n")
    return folder


def commands(tmp_path, db):
    """Every subcommand, each given ``db``."""
    labels = tmp_path / "labels.csv"
    labels.write_text("filename_seconds,birds,filename,seconds\nrec_5,aaa,rec,5\n")
    run = fake_run(tmp_path / "runs" / "good")
    return {
        "import": ["import", str(detections_csv(tmp_path)), "--db", str(db)],
        "import-labels": ["import-labels", "--db", str(db), "--labels", str(labels)],
        "sample": ["sample", "--db", str(db), "--per-species", "2"],
        "report": ["report", "--db", str(db)],
        "thresholds": ["thresholds", "--db", str(db), "--run", str(run), "--target-precision", "0.9"],
        "export": ["export", "--db", str(db), "--labels", str(tmp_path / "verified.csv")],
    }


def one_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def leftovers(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name))


@pytest.mark.parametrize("command", ["import-labels", "sample", "report", "thresholds", "export"])
def test_a_missing_database_is_refused_and_not_created(command, tmp_path, capsys):
    db = tmp_path / "nope.sqlite"
    argv = commands(tmp_path, db)[command]
    assert main(argv) != 0
    assert f"{db}: no such review database" in one_error(capsys)
    assert leftovers(db) == []
    assert not (tmp_path / "verified.csv").exists()


@pytest.mark.parametrize("command", ["import", "import-labels", "sample", "report", "thresholds", "export"])
def test_an_empty_file_is_refused_and_left_empty(command, tmp_path, capsys):
    db = tmp_path / "empty.wav"
    db.write_bytes(b"")
    assert main(commands(tmp_path, db)[command]) != 0
    assert f"{db}: not a review database" in one_error(capsys)
    assert db.read_bytes() == b"" and leftovers(db) == ["empty.wav"]


@pytest.mark.parametrize("command", ["import", "import-labels", "sample", "report", "thresholds", "export"])
def test_someone_elses_sqlite_file_is_refused_and_left_as_it_was(command, tmp_path, capsys):
    db = tmp_path / "birds.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE birds (name TEXT)")
        conn.execute("INSERT INTO birds VALUES ('wren')")
    conn.close()
    before = db.read_bytes()
    assert main(commands(tmp_path, db)[command]) != 0
    assert f"{db}: not a review database" in one_error(capsys)
    assert db.read_bytes() == before and leftovers(db) == ["birds.sqlite"]


def test_readers_open_the_database_read_only(tmp_path):
    db = tmp_path / "review.sqlite"
    open_store(db).import_detections(pd.read_csv(detections_csv(tmp_path)), run="r")
    reader = S.open_existing(db)
    assert len(reader.detections()) == 3
    with pytest.raises(Exception, match="readonly"):
        reader.add_samples([{"detection_id": 1, "species": "aaa", "strategy": "top", "stratum": 0, "weight": 1.0,
                             "seed": 0}])
    writer = S.open_existing(db, write=True)
    assert writer.add_samples([{"detection_id": 1, "species": "aaa", "strategy": "top", "stratum": 0,
                                "weight": 1.0, "seed": 0}]) == 1
    assert len(S.open_existing(db).samples()) == 1


def test_a_reader_leaves_no_wal_or_shm_files_beside_a_quiet_database(tmp_path):
    """With no writer active, a reader opens the file as immutable: it needs no -wal/-shm files (a
    reader who cannot write the folder could not make them) and leaves none behind."""
    db = tmp_path / "review.sqlite"
    store = open_store(db)
    store.import_detections(pd.read_csv(detections_csv(tmp_path)), run="r")
    store.engine.dispose()
    assert sorted(p.name for p in tmp_path.glob("review.sqlite*")) == ["review.sqlite"]
    reader = S.open_existing(db)
    assert len(reader.detections()) == 3
    reader.engine.dispose()
    assert sorted(p.name for p in tmp_path.glob("review.sqlite*")) == ["review.sqlite"]


def test_a_reader_migrates_an_older_schema_then_reads_it(tmp_path):
    from test_review import create_schema_1

    db = tmp_path / "old.sqlite"
    create_schema_1(db)
    store = S.open_existing(db)
    assert store.schema_version() == S.SCHEMA_VERSION and store.detections().empty


def test_a_failed_import_leaves_no_database_behind(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    db = tmp_path / "new" / "review.sqlite"
    assert main(["import", str(bad), "--db", str(db)]) != 0
    assert "bad.csv: not a detections CSV" in one_error(capsys)
    assert not db.exists() and not db.parent.exists()

    from birdcore.review.store import Store

    def broken(self, table, *, run=""):
        raise ValueError("disk full")

    monkeypatch.setattr(Store, "import_detections", broken)  # fails after the database was made
    assert main(["import", str(detections_csv(tmp_path)), "--db", str(db)]) != 0
    assert "disk full" in one_error(capsys)
    assert not db.exists() and not db.parent.exists()

    monkeypatch.undo()
    assert main(["import", str(detections_csv(tmp_path)), "--db", str(db)]) == 0  # a good import makes one
    assert len(S.open_existing(db).detections()) == 3
    capsys.readouterr()
    monkeypatch.setattr(Store, "import_detections", broken)  # an existing database stays on a failure
    assert main(["import", str(detections_csv(tmp_path)), "--db", str(db)]) != 0
    assert len(S.open_existing(db).detections()) == 3


@pytest.mark.parametrize("command", ["import", "thresholds"])
def test_run_must_be_a_run_folder(command, tmp_path, capsys):
    db = tmp_path / "review.sqlite"
    open_store(db)
    csv = str(detections_csv(tmp_path))
    for run, reason in [(tmp_path / "runs" / "nosuch", "no such run folder"),
                        (tmp_path / "runs" / "plain", "not a run")]:
        if run.name == "plain":
            run.mkdir(parents=True)
        argv = (["import", csv, "--db", str(db), "--run", str(run)] if command == "import" else
                ["thresholds", "--db", str(db), "--run", str(run), "--target-precision", "0.9"])
        assert main(argv) != 0
        line = one_error(capsys)
        assert f"{run}: {reason}" in line and "reaches precision" not in line
    assert S.open_existing(db).detections().empty
    assert main(["import", csv, "--db", str(db), "--run", "birdnet"]) == 0  # BirdNET's detections
    assert main(["import", csv, "--db", str(db), "--run", str(fake_run(tmp_path / "runs" / "good"))]) == 0


def test_train_job_refuses_a_missing_review_database_before_training(tmp_path, capsys):
    from train_job import main as train_main

    db = tmp_path / "nonexist.sqlite"
    out = tmp_path / "runs"
    (tmp_path / "data").mkdir()  # an (empty) data folder: the review database is what is wrong
    assert train_main(["--data-dir", str(tmp_path / "data"), "--backbone", "birdnet", "--reviews", str(db),
                       "--out", str(out)]) != 0
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and f"{db}: no such review database" in errors[0] and "Traceback" not in err
    assert not db.exists() and not out.exists()


def test_head_training_examples_never_create_a_database(tmp_path):
    from birdcore.models.birdnet_head.embeddings import review_examples

    db = tmp_path / "nonexist.sqlite"
    with pytest.raises(StoreError, match="no such review database"):
        review_examples(str(db), ["aaa"], None)
    assert not db.exists()
