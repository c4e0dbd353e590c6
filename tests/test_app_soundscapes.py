"""The dashboard's Soundscapes page with streamlit.testing: generated soundscapes scored by the tiny
trained run, the numbers of evaluate(), a threshold slider that never scores again, Save, and bad
input as one line."""
import json
import shutil

import pytest

from birdcore.data.soundscapes import read_rows
from birdcore.evaluation.soundscapes import evaluate  # bound to the real score_rows, before scoring_calls patches it
from birdcore.runs.loading import load_run
from test_app import app_at, texts

PAGE = "pages/soundscapes.py"


@pytest.fixture(scope="module")
def shared_runs(trained_run, tmp_path_factory):
    """A runs folder shared by the tests that only read the run (its scores stay cached between them)."""
    folder = tmp_path_factory.mktemp("sc_runs")
    shutil.copytree(trained_run, folder / trained_run.name)
    return folder


@pytest.fixture
def scoring_calls(monkeypatch):
    """Counts the row scorings of the page (the slow step)."""
    from birdcore.evaluation import soundscape_scoring

    calls = []
    real = soundscape_scoring.score_rows

    def counted(*args, **kwargs):
        calls.append(args[1].source)
        return real(*args, **kwargs)

    monkeypatch.setattr(soundscape_scoring, "score_rows", counted)
    return calls


def page(monkeypatch, runs, labels=None, *, env=True):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(runs))
    if env and labels is not None:
        monkeypatch.setenv("BIRDCLEF_SOUNDSCAPES", str(labels))
    else:
        monkeypatch.delenv("BIRDCLEF_SOUNDSCAPES", raising=False)
    at = app_at(PAGE)
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at, first: int = 0, count: int = 8) -> dict:
    return {m.label: m.value for m in list(at.metric)[first:first + count]}


def live(at) -> dict:
    """The threshold section's numbers (the second row of metrics)."""
    return metrics(at, 8, 5)


def test_page_shows_evaluates_metrics_a_timeline_and_plays_a_row(shared_runs, labelled_soundscapes, monkeypatch,
                                                                    scoring_calls):
    d = labelled_soundscapes["dir"]
    at = page(monkeypatch, shared_runs, d / "summary.csv")
    assert not at.error and scoring_calls == [str(d / "summary.csv")]
    expected = evaluate(load_run(next(shared_runs.iterdir())), read_rows(d / "summary.csv"))
    shown = metrics(at)
    assert shown["Row-wise F1"] == f"{expected['row_f1']:.3f}" and shown["cmAP"] == f"{expected['cmap']:.3f}"
    assert shown["False positives / hour"] == f"{expected['fp_per_hour']:.1f}"
    assert shown["Precision"] == f"{expected['precision']:.3f}" and shown["Recall"] == f"{expected['recall']:.3f}"
    assert set(live(at)) == {"Precision", "Recall", "False positives / hour", "Row-wise F1", "Macro F1"}
    assert "2 files, 24 rows of 5 s (5 with birds)" in texts(at)
    per_species = at.dataframe[0].value
    assert {"species", "name", "ap", "auc", "precision", "recall"} <= set(per_species.columns)
    charts = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    timeline = [c for c in charts if any(p.get("name") == "pick" for p in c.get("params", []))]
    assert len(charts) == 2 and len(timeline) == 1
    assert len(at.get("audio")) == 1 and "Plays 0.0–7.0 s of SYN1_" in texts(at)
    assert not at.select_slider  # 1 s segments of a trained model: no window overlap to choose
    at.number_input(key="sc-row-SYN1").set_value(9).run()
    assert not at.exception
    assert "**SYN1_45** · 40–45 s · labelled: **" in texts(at) and "Plays 38.0–47.0 s" in texts(at)
    at.selectbox(key="sc-file").set_value("SYN2").run()
    assert "**SYN2_5** · 0–5 s" in texts(at)
    assert scoring_calls == [str(d / "summary.csv")]  # nothing scored again


def test_slider_changes_the_row_numbers_without_scoring_and_save_writes_them(tmp_path, trained_run,
                                                                              labelled_soundscapes, monkeypatch,
                                                                              scoring_calls):
    runs = tmp_path / "runs"
    shutil.copytree(trained_run, runs / trained_run.name)
    run_dir = runs / trained_run.name
    at = page(monkeypatch, runs, labelled_soundscapes["dir"] / "labels2021.csv")
    saved_row_f1 = metrics(at)["Row-wise F1"]
    at.slider[0].set_value(0.0).run()
    low = live(at)
    at.slider[0].set_value(0.999).run()
    high = live(at)
    assert low["Recall"] != high["Recall"] and low["False positives / hour"] != high["False positives / hour"]
    assert low["Row-wise F1"] != high["Row-wise F1"]
    at.slider[0].set_value(0.65).run()
    chosen = live(at)
    at.toggle[0].set_value(True).run()  # one species' own threshold
    at.selectbox(key="sc-override-species").set_value("synhar1").run()
    at.slider[1].set_value(0.999).run()
    assert live(at) != chosen
    assert len(scoring_calls) == 1  # sliders never score again
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved["chosen_on"] == "dashboard (soundscapes)" and saved["global"]["threshold"] == pytest.approx(0.65)
    assert {c: v["threshold"] for c, v in saved["species"].items()} == pytest.approx(
        {"synchi1": 0.65, "synhar1": 0.999, "syntri1": 0.65})
    assert (run_dir / "thresholds.previous.json").exists() and (run_dir / "thresholds.original.json").exists()
    assert "Saved (global 0.650, synhar1 0.999" in texts(at)
    after = metrics(at)
    assert after["Row-wise F1"] == live(at)["Row-wise F1"] != saved_row_f1  # the metrics now use the saved ones
    assert len(scoring_calls) == 1  # saving thresholds does not score again either


def test_labels_are_typed_in_when_no_env_var_is_set(shared_runs, labelled_soundscapes, monkeypatch):
    at = page(monkeypatch, shared_runs, env=False)
    assert "Enter a labels file" in texts(at) and not at.metric
    d = labelled_soundscapes["dir"]
    at.text_input[0].input(str(d / "raven")).run()
    at.text_input[1].input(str(d / "audio")).run()
    assert not at.exception and not at.error
    assert "2 files, 24 rows of 5 s (5 with birds)" in texts(at)


@pytest.mark.parametrize("case", ["missing", "format", "no_audio", "unlabelled", "undecodable"])
def test_bad_input_is_one_line_naming_the_file(case, shared_runs, labelled_soundscapes, tmp_path, monkeypatch):
    d = labelled_soundscapes["dir"]
    labels = {"missing": tmp_path / "nothing.csv", "format": tmp_path / "odd.csv", "unlabelled": d / "test.csv"}.get(
        case, tmp_path / "elsewhere.csv")
    if case == "format":
        labels.write_text("a,b\n1,2\n")
    if case in ("no_audio", "undecodable"):
        shutil.copy(d / "summary.csv", labels)
    if case == "undecodable":  # audio files that are not audio
        (tmp_path / "audio").mkdir()
        for key in ("SYN1", "SYN2"):
            (tmp_path / "audio" / f"{key}_20260601.wav").write_bytes(b"not a wave file at all")
    at = page(monkeypatch, shared_runs, labels)
    assert len(at.error) == 1 and labels.name in at.error[0].value and "\n" not in at.error[0].value
    assert {"missing": "no such file", "format": "unknown soundscape label format", "no_audio": "no audio found",
            "unlabelled": "no labels", "undecodable": "none of the 2 labelled audio files could be scored"}[case] \
        in at.error[0].value
    assert not at.metric


@pytest.fixture(scope="module")
def birdnet_runs(tmp_path_factory):
    """A runs folder with a BirdNET zero-shot run for two real species (no recordings, no soundscape.json)."""
    from birdcore.config import RunConfig
    from birdcore.models.base import kind_for
    from birdcore.training.train import species_run

    folder = tmp_path_factory.mktemp("sc_birdnet_runs")
    listing = folder.parent / "species.txt"
    listing.write_text("amerob\nnorcar\n")
    cfg = RunConfig()
    cfg.model.kind = "birdnet_zero_shot"  # what train_job.py --baseline birdnet sets
    kind_for(cfg.model.kind).configure(cfg)
    species_run(species_list=listing, out_dir=folder, name="bn", cfg=cfg)
    return folder


def test_a_birdnet_run_offers_the_window_overlap(birdnet_runs, trained_run, tmp_path, monkeypatch, scoring_calls):
    from birdcore.data.synthetic import make_synthetic_soundscapes
    from birdcore.evaluation.soundscapes import read_settings
    from birdcore.runs.loading import load_run

    small = make_synthetic_soundscapes(tmp_path / "small", species=load_run(trained_run).codes, n_files=1,
                                       seconds=30.0, sample_rate=16000, call_prob=0.5, seed=3)  # BirdNET scores it twice
    at = page(monkeypatch, birdnet_runs, small["dir"] / "summary.csv")
    default = read_settings(birdnet_runs / "bn")[0].overlap  # a run without soundscape.json: the defaults
    assert not at.error and len(at.select_slider) == 1 and at.select_slider[0].value == default
    assert f"BirdNET windows overlapping by {default:g} s" in texts(at)
    code = next(c for _, _, c in small["rows"] if c)
    n = sum(c == code for _, _, c in small["rows"])
    assert f"{code} ({n} row{'s' if n > 1 else ''})" in texts(at)  # labels BirdNET cannot name
    other = 0.0 if default else 1.5
    at.select_slider[0].set_value(other).run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"BirdNET windows overlapping by {other:g} s" in texts(at) and len(scoring_calls) == 2
    at.select_slider[0].set_value(default).run()
    assert len(scoring_calls) == 2  # each overlap is scored once


def test_fresh_machine_says_how_to_make_a_run(tmp_path, monkeypatch):
    at = page(monkeypatch, tmp_path / "empty", tmp_path / "labels.csv")
    assert "train_job.py --demo" in texts(at) and not at.error
