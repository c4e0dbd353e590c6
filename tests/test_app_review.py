"""The dashboard's Review page with streamlit.testing: a review database made with the CLI from
detections of a generated recording; yes, undo, another species, the filters and bad databases."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from birdcore.cli.review import main as review_cli
from birdcore.review.store import open_store
from test_app import ROOT, texts

PAGE = "pages/review.py"


def make_review_db(folder, *, per_species=3):
    """A 30 s recording of synthetic calls, 10 detections of 3 s for each of two species at two
    sites, imported and sampled with ``python -m birdcore.review``.  Returns the database path."""
    from birdcore.data.synthetic import make_call

    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "dawn.wav"
    sf.write(wav, make_call("synchi1", seconds=30.0, sample_rate=16000, rng=np.random.default_rng(3)), 16000)
    rows = [{"file": str(wav), "start_s": 3.0 * i, "end_s": 3.0 * i + 3, "species": code, "common_name": name,
             "score": round(0.3 + 0.06 * i, 3), "site": "north" if i % 2 else "south",
             "recorded": f"2024-05-{i + 1:02d}"}
            for code, name in (("synchi1", "Synthetic Chirper"), ("syntri1", "Synthetic Triller")) for i in range(10)]
    pd.DataFrame(rows).to_csv(folder / "detections.csv", index=False)
    db = folder / "review.sqlite"
    assert review_cli(["import", str(folder / "detections.csv"), "--db", str(db)]) == 0  # synthetic species: no run names them
    assert review_cli(["sample", "--db", str(db), "--per-species", str(per_species), "--strategy", "top"]) == 0
    return db


@pytest.fixture
def review_db(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "no_runs"))  # the page needs no run
    return make_review_db(tmp_path / "review")


def review_page() -> AppTest:
    """The app opened straight at the Review page (a bookmark of /review; the classify page never runs)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Review detections"
    return at


def page(db, reviewer="ana"):
    at = review_page()
    at.text_input(key="review_db_input").set_value(str(db)).run()
    if reviewer:
        at.text_input(key="review_reviewer_input").set_value(reviewer).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at) -> int:
    """The id of the detection the page shows (its caption starts "detection N")."""
    caption = next(c.value for c in at.caption if str(c.value).startswith("detection "))
    return int(caption.split(" · ")[0].split()[1])


def test_yes_then_undo_then_another_species(review_db):
    store = open_store(review_db)
    first, second = (int(i) for i in store.queue()["id"].iloc[:2])
    at = page(review_db)
    assert shown(at) == first and not at.error
    assert len(at.get("plotly_chart")) == 1 and len(at.get("audio")) == 1
    assert "Synthetic Chirper (synchi1)" in [h.value for h in at.subheader]
    assert "Keyboard" in texts(at)

    at.text_input(key="review_note").set_value("clear chirps").run()
    at.button(key="review_yes").click().run()
    assert not at.exception, [e.value for e in at.exception]
    verdicts = store.verdicts().set_index("id")
    assert verdicts.loc[first, ["verdict", "reviewer", "note"]].tolist() == ["yes", "ana", "clear chirps"]
    assert shown(at) == second and at.text_input(key="review_note").value == ""
    assert "1 of 6 sampled detections reviewed" in at.get("progress")[0].proto.text

    at.button(key="review_undo").click().run()
    assert first not in set(store.verdicts()["id"]) and shown(at) == first

    at.selectbox(key="review_other").set_value("syntri1").run()
    at.button(key="review_other_button").click().run()
    assert not at.exception, [e.value for e in at.exception]
    row = store.verdicts().set_index("id").loc[first]
    assert (row["verdict"], row["corrected_species"]) == ("no", "syntri1")
    assert shown(at) == second
    table = [d.value for d in at.dataframe if "left" in d.value.columns][0].set_index("species")
    assert table.loc["synchi1", ["sampled", "no", "corrected", "left"]].tolist() == [3, 1, 1, 2]

    at.button(key="review_other_button").click().run()  # no species chosen: nothing recorded
    assert len(store.verdicts()) == 1 and at.error and "Choose the species" in at.error[0].value


def test_a_name_is_needed_and_the_filters_narrow_the_queue(review_db):
    at = page(review_db, reviewer="")
    assert at.button(key="review_yes").disabled and "Type your name" in texts(at)
    at.text_input(key="review_reviewer_input").set_value("bo").run()
    assert not at.button(key="review_yes").disabled
    at.multiselect(key="review_species").set_value(["syntri1"]).run()
    triller = [int(i) for i in open_store(review_db).queue(species="syntri1")["id"]]
    assert shown(at) == triller[0]
    at.multiselect(key="review_sites").set_value(["south"]).run()
    only = open_store(review_db).queue(species="syntri1")
    south = [int(i) for i, s in zip(only["id"], only["site"]) if s == "south"]
    assert shown(at) == south[0]
    for _ in south:
        at.button(key="review_no").click().run()
    assert "Nothing left to review with these filters" in texts(at)
    assert len(open_store(review_db).verdicts()) == len(south)


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.sqlite", "no such review database"),
    (lambda d: d, "is a folder"),
    (lambda d: (d / "notes.txt").write_text("just words\n" * 50) and d / "notes.txt", "cannot open"),
])
def test_a_bad_database_is_one_line_naming_it(make, message, tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "no_runs"))
    target = make(tmp_path)
    at = page(target)
    assert len(at.error) == 1 and message in at.error[0].value and str(target) in at.error[0].value
    assert not (tmp_path / "missing.sqlite").exists()


def test_an_empty_queue_says_how_to_fill_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "no_runs"))
    db = tmp_path / "review.sqlite"
    open_store(db)  # a review database with nothing sampled
    monkeypatch.setenv("BIRDCLEF_REVIEW_DB", str(db))
    at = review_page()
    assert at.text_input(key="review_db_input").value == str(db)
    assert f"python -m birdcore.review sample --db {db} --per-species 50" in texts(at)


def test_another_database_starts_with_its_own_filters(review_db, tmp_path):
    at = page(review_db)
    at.multiselect(key="review_species").set_value(["syntri1"]).run()
    other = tmp_path / "other"
    db = make_review_db(other)
    store = open_store(db)
    store.add_review(int(store.queue()["id"].iat[0]), "yes", reviewer="ana")
    at.text_input(key="review_db_input").set_value(str(db)).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.multiselect(key="review_species").value == [] and shown(at) == int(store.queue()["id"].iat[0])
