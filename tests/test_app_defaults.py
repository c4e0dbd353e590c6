"""Dashboard defaults: the classify page's model for a visitor, and the species page's audio in every layout."""
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

import ui

ROOT = Path(__file__).resolve().parents[1]


def app_at(page: str | None = None) -> AppTest:
    """The app after its first run, on ``page`` (default: the classify page, where visitors land).
    AppTest reruns only the page script, so the sidebar's run picker acts in the first run only."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    if page:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    return "\n".join(str(e.value) for e in [*at.markdown, *at.caption, *at.info, *at.warning])


@pytest.fixture
def runs_folder(tmp_path, monkeypatch):
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("BIRDCLEF_RUNS", str(folder))
    return folder


def add_run(folder: Path, trained_run: Path, name: str, *, synthetic: bool, age_s: int) -> Path:
    """A copy of the trained run, marked synthetic or trained on real recordings, ``age_s`` seconds old."""
    run = folder / name
    shutil.copytree(trained_run, run)
    manifest = json.loads((run / "run.json").read_text())
    manifest["synthetic"] = synthetic
    (run / "run.json").write_text(json.dumps(manifest))
    stamp = (run / "run.json").stat().st_mtime - age_s
    os.utime(run / "run.json", (stamp, stamp))  # runs are listed newest first by run.json's time
    return run


def test_classify_starts_on_a_real_run_though_a_synthetic_one_is_newer(runs_folder, trained_run):
    real = add_run(runs_folder, trained_run, "real-birds", synthetic=False, age_s=3600)
    add_run(runs_folder, trained_run, "demo", synthetic=True, age_s=0)
    at = app_at()
    assert at.sidebar.selectbox[0].value == str(real)
    assert at.radio[0].value == "run"


def test_classify_starts_on_birdnet_when_every_run_is_synthetic(runs_folder, trained_run):
    demo = add_run(runs_folder, trained_run, "demo", synthetic=True, age_s=0)
    at = app_at()
    assert at.sidebar.selectbox[0].value == str(demo)
    assert at.radio[0].value == "birdnet"


def test_picking_a_run_in_the_sidebar_is_remembered(runs_folder, trained_run):
    real = add_run(runs_folder, trained_run, "real-birds", synthetic=False, age_s=3600)
    demo = add_run(runs_folder, trained_run, "demo", synthetic=True, age_s=0)
    at = AppTest.from_string("import ui\nui.run_picker(prefer_real=True)").run()
    assert at.sidebar.selectbox[0].value == str(real) and ui.PICKED_KEY not in at.session_state
    at.sidebar.selectbox[0].select(str(demo)).run()
    assert at.session_state[ui.RUN_KEY] == str(demo) and at.session_state[ui.PICKED_KEY]


def test_classify_uses_a_synthetic_run_the_visitor_picked(runs_folder, trained_run):
    add_run(runs_folder, trained_run, "real-birds", synthetic=False, age_s=3600)
    demo = add_run(runs_folder, trained_run, "demo", synthetic=True, age_s=0)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[ui.RUN_KEY] = str(demo)  # what picking it in the sidebar leaves (the test above)
    at.session_state[ui.PICKED_KEY] = True
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio[0].value == "run" and at.radio[0].options[0] == "Selected run: demo"


def test_analyst_pages_still_open_on_the_newest_run(runs_folder, trained_run):
    add_run(runs_folder, trained_run, "real-birds", synthetic=False, age_s=3600)
    demo = add_run(runs_folder, trained_run, "demo", synthetic=True, age_s=0)
    at = app_at("pages/overview.py")
    assert at.sidebar.selectbox[0].value == str(demo)


@pytest.fixture
def birdclef2021_dir(tmp_path, synth_dir):
    """The synthetic recordings in BirdCLEF 2021's layout: train_metadata.csv with bare file names,
    audio in train_short_audio/<code>/<file>."""
    out = tmp_path / "birdclef-2021"
    shutil.copytree(synth_dir / "train_audio", out / "train_short_audio")
    rows = pd.read_csv(synth_dir / "train.csv", dtype=str)
    pd.DataFrame({"primary_label": rows["ebird_code"], "secondary_labels": "[]", "filename": rows["filename"],
                  "scientific_name": rows["sci_name"], "common_name": rows["species"]}).to_csv(
        out / "train_metadata.csv", index=False)
    return out


def test_birdclef2021_audio_is_found(birdclef2021_dir):
    from birdcore.data.metadata import audio_root, read_metadata

    assert audio_root(birdclef2021_dir) == birdclef2021_dir / "train_short_audio"
    meta = read_metadata(birdclef2021_dir)
    assert len(meta) == 24 and meta["exists"].all()


def test_species_page_plays_birdclef2021_recordings(runs_folder, trained_run, birdclef2021_dir):
    run = add_run(runs_folder, trained_run, "tiny", synthetic=True, age_s=0)
    report = json.loads((run / "data_report.json").read_text())
    report["data_dir"] = str(birdclef2021_dir)
    (run / "data_report.json").write_text(json.dumps(report))
    at = app_at("pages/species.py")
    assert "Listen to the top-ranked recordings" in texts(at)
    ranked = [d.value for d in at.dataframe if "rank" in d.value.columns][0]
    assert len(at.get("audio")) == min(5, len(ranked)) > 0
