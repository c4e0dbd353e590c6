"""The Streamlit dashboard, page by page, with streamlit.testing (no browser, no network)."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from streamlit.testing.v1 import AppTest

from birdcore.io.atomic import write_npz

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["pages/classify.py", "pages/overview.py", "pages/species.py", "pages/thresholds.py", "pages/compare.py"]


@pytest.fixture
def runs(tmp_path, trained_run, monkeypatch):
    """A runs folder holding a copy of the trained run (pages may write thresholds into it)."""
    folder = tmp_path / "runs"
    shutil.copytree(trained_run, folder / trained_run.name)
    monkeypatch.setenv("BIRDCLEF_RUNS", str(folder))
    return folder


def app_at(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def top_table(at):
    """The classify page's top-species table (the one with a score column)."""
    return [d.value for d in at.dataframe if "score" in d.value.columns][0]


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [i.value for i in at.info] + [e.value for e in at.error]
    parts += [w.value for w in at.warning] + [s.value for s in at.success] + [c.value for c in at.caption]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", PAGES)
def test_fresh_machine_pages_say_how_to_make_a_run(page, tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at(page)
    assert "train_job.py --demo" in texts(at)


def wav_bytes(seconds=2.5, sr=16000, seed=0):
    from birdcore.data.synthetic import make_call

    wave = make_call("synchi1", seconds=seconds, sample_rate=sr, rng=np.random.default_rng(seed))
    buf = io.BytesIO()
    sf.write(buf, wave, sr, format="WAV")
    return buf.getvalue()


def test_classify_upload_shows_species_with_scores_and_keeps_a_few_mb(runs):
    """The answer, and what the session keeps of it: neither the upload (the field empties and Streamlit's
    copy goes) nor decoded audio, only its kept clip (scores, spectrogram, a compressed listening copy),
    bounded whatever the clip's length (``serving.kept_clip``)."""
    import pickle

    from birdcore.serving.kept_clip import max_kept_bytes

    at = app_at()
    at.radio[0].set_value("run").run()  # the run is synthetic: BirdNET is preselected (tests/test_app_defaults.py)
    assert "synthetic" in texts(at)
    call, sr = sf.read(io.BytesIO(wav_bytes(seconds=2.5)), dtype="float32")
    buf = io.BytesIO()
    sf.write(buf, np.tile(call, 52), sr, format="WAV")  # 130 s, 4.2 MB
    at.file_uploader[0].set_value(("long.wav", buf.getvalue(), "audio/wav")).run()
    assert not at.exception, [e.value for e in at.exception]
    table = top_table(at)
    assert len(table) == 3 and {"species", "score", "decision"} <= set(table.columns)
    assert table["score"].is_monotonic_decreasing
    assert not at.error
    assert not at.select_slider  # fixed 5 s segments: no window overlap to offer
    assert "Species this model knows (3)" in [e.label for e in at.expander]
    assert at.file_uploader[0].value is None and "Showing **long.wav**" in texts(at)
    assert at.get("audio") and "The first 2 minutes" in texts(at)
    kept = at.session_state["last_clip"]
    held = {k: len(pickle.dumps(v)) for k, v in at.session_state.items()}  # user state and keyed widgets
    assert sum(held.values()) < max_kept_bytes(3, kept.spectrogram.shape) < 3 * 2**20, held


@pytest.mark.parametrize("name,content", [("noise.mp3", np.random.default_rng(1).bytes(5000)),
                                          ("notes.wav", b"just some text, not audio"),
                                          ("empty.flac", b"")])
def test_classify_bad_upload_shows_an_error(runs, name, content):
    at = app_at()
    at.file_uploader[0].set_value((name, content, "application/octet-stream")).run()
    assert not at.exception
    assert at.error and name in at.error[0].value


def test_overview_shows_headline_metrics(runs):
    at = app_at("pages/overview.py")
    labels = [m.label for m in at.metric]
    assert "Top-1" in labels and "Macro ROC-AUC" in labels
    assert len(at.get("plotly_chart")) >= 1
    assert "Misclassified test recordings" in [h.value for h in at.subheader]
    model_line = [m.value for m in at.markdown if str(m.value).startswith("**Model**")][0]
    assert "small_cnn (weights none)" in model_line and " train / " in model_line and "{" not in model_line


def test_overview_without_history_says_so_instead_of_an_empty_chart(runs):
    run = next(runs.iterdir())
    (run / "history.csv").unlink()
    at = app_at("pages/overview.py")
    assert not at.exception, [e.value for e in at.exception]
    assert "No training curves: this run has no history.csv." in texts(at)


def test_overview_lists_misclassified_recordings(runs):
    """A recording whose top-1 is a named background species is listed and counted as such."""
    run = next(runs.iterdir())
    with np.load(run / "scores.npz") as z:
        arrays = {k: z[k] for k in z.files}
    first, other = arrays["primary"][0], (arrays["primary"][0] + 1) % arrays["scores"].shape[1]
    arrays["scores"][0, other] = 1.0
    arrays["secondary"][0, other] = True
    write_npz(run / "scores.npz", **arrays)
    at = app_at("pages/overview.py")
    shown = [d.value for d in at.dataframe if "predicted" in d.value.columns]
    assert len(shown) == 1
    row = shown[0][shown[0]["recording_id"] == arrays["recording_id"][0]].iloc[0]
    assert row["predicted"] == arrays["species"][other] and row["primary"] == arrays["species"][first]
    assert bool(row["predicted_is_background"])
    assert "the predicted species is one the recordist named" in texts(at)
    traces = [json.loads(c.proto.spec)["data"] for c in at.get("plotly_chart")]
    heatmaps = [t[0] for t in traces if t and t[0].get("type") == "heatmap"]
    counts = [int(v) for row in heatmaps[0]["text"] for v in row if v] if heatmaps else []
    assert len(heatmaps) == 1 and sum(counts) == len(arrays["primary"])  # few species: the full matrix


def test_species_page_table_and_curves(runs):
    at = app_at("pages/species.py")
    assert len(at.dataframe[0].value) == 3
    assert len(at.get("plotly_chart")) >= 3
    at.text_input[0].input("zzz-no-such-bird").run()
    assert "No species matches" in texts(at)


def test_thresholds_slider_changes_numbers_and_saves(runs):
    at = app_at("pages/thresholds.py")
    values = lambda: {m.label: m.value for m in at.metric}
    at.slider[0].set_value(0.0).run()
    low = values()
    at.slider[0].set_value(0.999).run()
    high = values()
    assert low["Coverage"] != high["Coverage"] and low["False-positive rate"] != high["False-positive rate"]
    at.button[0].click().run()
    assert not at.exception
    run_dir = next(runs.iterdir())
    saved = json.loads((run_dir / "thresholds.json").read_text())
    assert saved["global"]["threshold"] == pytest.approx(0.999)
    assert (run_dir / "thresholds.original.json").exists()


def test_compare_two_runs(runs):
    first = next(runs.iterdir())
    second = runs / "copy-of-run"
    shutil.copytree(first, second)
    for run, right in ((first, True), (second, False)):  # the runs disagree on recording 0 only
        with np.load(run / "scores.npz") as z:
            arrays = {k: z[k] for k in z.files}
        primary = arrays["primary"][0]
        arrays["scores"][0] = 0.0
        arrays["scores"][0, primary if right else (primary + 1) % arrays["scores"].shape[1]] = 1.0
        write_npz(run / "scores.npz", **arrays)
    at = app_at("pages/compare.py")
    assert {"Shared recordings", "Top-1 of A", "Only B right"} <= {m.label for m in at.metric}
    assert {"A top-1 correct", "B score primary"} <= set(at.dataframe[0].value.columns)
    assert "exact McNemar) on the 1 recording only one run gets right: p = 1" in texts(at)
    assert at.toggle[0].value  # starts on: just the disagreement
    assert at.dataframe[0].value["recording_id"].tolist() == [str(arrays["recording_id"][0])]
    at.toggle[0].set_value(False).run()
    assert len(at.dataframe[0].value) == len(arrays["primary"])


def test_fresh_machine_classifies_with_birdnet(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at()
    assert at.radio[0].value == "birdnet"
    assert "CC BY-NC-SA" in texts(at)
    at.file_uploader[0].set_value(("chirp.wav", wav_bytes(seconds=4.0, sr=48000), "audio/wav")).run()
    assert not at.exception, [e.value for e in at.exception]
    table = top_table(at)
    assert len(table) == 5
    links = [u for u in table["eBird"] if isinstance(u, str)]  # BirdNET's names found in the taxonomy
    assert all(u.startswith("https://ebird.org/species/") and " " not in u for u in links), links
    known = [e for e in at.expander if e.label.startswith("Species this model knows")]
    assert known and known[0].label == "Species this model knows (6,522)"
    listed = [d.value for d in at.dataframe if "scientific name" in d.value.columns and len(d.value) == 6522]
    assert listed and "code" not in listed[0].columns  # BirdNET's labels have no eBird codes


def test_location_filter_keeps_only_species_expected_there(tmp_path, monkeypatch):
    from birdcore.serving.birdnet_range import Place, species_filter

    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at()
    clip = ("chirp.wav", wav_bytes(seconds=4.0, sr=48000), "audio/wav")
    at.file_uploader[0].set_value(clip).run()
    unfiltered = top_table(at)["scientific name"].tolist()
    at.number_input[0].set_value(18.2)
    at.number_input[1].set_value(-66.5)
    at.toggle[0].set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = top_table(at)["scientific name"].tolist()
    assert "species expected at 18.200, -66.500, any time of year" in texts(at)
    kept = species_filter(pd.DataFrame({"ebird_code": shown, "sci_name": shown}), Place(18.2, -66.5))
    assert kept.keep.all() and shown != unfiltered
    occurrence = top_table(at)["occurrence here"].tolist()
    assert occurrence == pytest.approx(kept.occurrence.round(3).tolist(), abs=1e-3) and min(occurrence) >= 0.03


def test_species_list_narrows_the_answer_and_names_a_typo(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at()
    at.file_uploader[0].set_value(("chirp.wav", wav_bytes(seconds=4.0, sr=48000), "audio/wav"))
    at.text_area[0].set_value("Coereba flaveola\n\nTurdus migratorius\n").run()
    assert not at.exception, [e.value for e in at.exception]
    assert sorted(top_table(at)["scientific name"]) == ["Coereba flaveola", "Turdus migratorius"]
    assert "your list: 2 species" in texts(at)
    at.text_area[0].set_value("Turdus migratorius\nDodo").run()
    assert not at.exception
    assert "Dodo" in at.error[0].value and len(top_table(at)) == 5


def test_filter_changes_reuse_the_clips_scores(tmp_path, monkeypatch):
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at()
    at.file_uploader[0].set_value(("chirp.wav", wav_bytes(seconds=4.0, sr=48000), "audio/wav")).run()
    first = at.session_state["last_clip"]
    at.text_area[0].set_value("Coereba flaveola").run()
    assert not at.exception
    assert at.session_state["last_clip"] is first  # the same kept clip: nothing re-scored
    at.file_uploader[0].set_value(("other.wav", wav_bytes(seconds=4.0, sr=48000, seed=5), "audio/wav")).run()
    assert at.session_state["last_clip"].digest != first.digest  # a new clip is scored anew


def birdnet_clip_scored(tmp_path, monkeypatch):
    """A fresh machine (BirdNET as the model) with a 7 s clip scored and detections down to 0.01."""
    monkeypatch.setenv("BIRDCLEF_RUNS", str(tmp_path / "empty"))
    at = app_at()
    at.file_uploader[0].set_value(("chirp.wav", wav_bytes(seconds=7.0, sr=48000), "audio/wav")).run()
    low = [n for n in at.number_input if n.label.startswith("Lowest segment score")][0]
    low.set_value(0.01).run()
    return at


def test_classify_offers_the_clips_detections_for_download(tmp_path, monkeypatch):
    from birdcore.serving.detections import CSV_HEADER, detections_csv, segment_detections

    at = birdnet_clip_scored(tmp_path, monkeypatch)
    assert not at.exception, [e.value for e in at.exception]
    buttons = at.get("download_button")
    assert len(buttons) == 2
    result = at.session_state["last_clip"].result
    dets = segment_detections(ui_run(), result.segments, seconds=result.seconds, min_score=0.01)
    assert f"Detections CSV ({len(dets)} rows)" == buttons[0].proto.label and len(dets) > 0
    rows = detections_csv("chirp.wav", dets).splitlines()
    assert rows[0] == ",".join(CSV_HEADER) and len(rows) == len(dets) + 1
    assert {float(r.split(",")[1]) for r in rows[1:]} == {0.0, 3.0, 6.0}  # three 3 s BirdNET segments


def test_birdnet_window_overlap_gives_finer_detection_times(tmp_path, monkeypatch):
    at = birdnet_clip_scored(tmp_path, monkeypatch)
    first = at.session_state["last_clip"]
    at.select_slider[0].set_value(1.5).run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["last_clip"].result
    assert result is not first.result and result.hop_seconds == 1.5 and len(result.segments) == 4
    x = json.loads(at.get("plotly_chart")[-1].proto.spec)["data"][0]["x"]
    if isinstance(x, dict):  # plotly's typed-array encoding
        import base64

        x = np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]).tolist()
    assert x == pytest.approx([1.5, 3.0, 4.5, 6.0])  # window centres, every 1.5 s
    assert "every 1.5 s" in texts(at)


def test_other_settings_once_the_server_dropped_the_clip_ask_for_it_again(tmp_path, monkeypatch):
    """With no uploads kept for scoring again (BIRDCLEF_KEEP_UPLOADS_MB=0), another overlap after the answer
    asks for the clip again instead of showing scores made with the old one."""
    import ui

    monkeypatch.setenv("BIRDCLEF_KEEP_UPLOADS_MB", "0")
    ui._recent_uploads.clear()
    try:
        at = birdnet_clip_scored(tmp_path, monkeypatch)
        at.select_slider[0].set_value(1.5).run()
        assert not at.exception, [e.value for e in at.exception]
        assert "upload it again" in texts(at) and not [d for d in at.dataframe if "score" in d.value.columns]
        assert at.session_state["last_clip"].result.hop_seconds == 3.0
    finally:
        ui._recent_uploads.clear()


def ui_run():
    from birdcore.runs.loading import birdnet_run as global_birdnet_run

    return global_birdnet_run()


def test_sidebar_lists_unfinished_runs_with_their_progress(runs):
    import os
    import socket

    from test_progress import fake_partial

    fake_partial(runs, "gpu-job", lock={"pid": os.getpid(), "host": socket.gethostname()})
    fake_partial(runs, "killed-job")
    at = app_at()
    assert not at.exception, [e.value for e in at.exception]
    shown = [c.value for c in at.sidebar.caption]
    assert "Unfinished runs" in [m.value.strip("*") for m in at.sidebar.markdown]
    live = [c for c in shown if c.startswith("`gpu-job`")][0]
    assert "training · epoch 4 of 10 · best val top-1 0.650 (epoch 3) · about 0m30s left" in live
    stopped = [c for c in shown if c.startswith("`killed-job`")][0]
    assert "stopped" in stopped and "--resume --name killed-job" in stopped
    assert len(at.selectbox) >= 1 and all("job" not in o for o in at.sidebar.selectbox[0].options)  # not pickable


@pytest.mark.parametrize("page", ["pages/overview.py", "pages/species.py", "pages/thresholds.py"])
def test_a_run_without_recordings_says_so_instead_of_failing(page, listed_run, monkeypatch):
    """A zero-shot run made from a species list has no test scores; the analysis pages say why."""
    monkeypatch.setenv("BIRDCLEF_RUNS", str(listed_run.parent))
    at = app_at(page)
    assert "no recording-level test scores" in texts(at)
