"""The Soundscapes page's numbers (birdcore.analysis.soundscapes) and charts, on generated soundscapes
scored once by the tiny trained run: they agree with soundscape_metrics and evaluate()."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from birdcore.analysis.soundscape_charts import ROW_SELECTION, picked_rows, threshold_curve_chart, timeline_chart
from birdcore.analysis.soundscapes import SoundscapeView, row_audio, supports_overlap
from birdcore.data.soundscapes import read_rows
from birdcore.evaluation import soundscape_metrics as SM
from birdcore.evaluation.postprocess import PostProcessing, apply
from birdcore.evaluation.soundscape_scoring import score_rows
from birdcore.evaluation.soundscapes import SoundscapeSettings, evaluate, read_settings
from birdcore.io.audio import AudioError
from birdcore.runs.loading import load_run
from birdcore.runs.thresholds import threshold_vector


@pytest.fixture(scope="module")
def scored(trained_run, labelled_soundscapes, tmp_path_factory):
    """(run, rows, row scores) of the labels with one row naming a species the run lacks."""
    d = labelled_soundscapes["dir"]
    text = (d / "summary.csv").read_text().replace("SYN2_60,nocall,", "SYN2_60,Dodo,")
    labels = tmp_path_factory.mktemp("labels") / "summary.csv"
    labels.write_text(text)
    run = load_run(trained_run)
    rows = read_rows(labels, audio_dir=d / "audio")
    return run, rows, score_rows(run, rows)


@pytest.fixture(scope="module")
def view(scored):
    run, _, row_scores = scored
    return SoundscapeView.build(run, row_scores, read_settings(run.path)[0])


def test_report_is_what_evaluate_says(scored, view):
    run, rows, row_scores = scored
    expected = evaluate(run, rows, scored=row_scores)
    got = view.report(run.thresholds)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (pytest.approx(value, nan_ok=True) if isinstance(value, float) else value), key
    assert got["species_not_in_run"] == {"Dodo": 1} and got["n_rows"] == 24


def test_row_metrics_match_soundscape_metrics_at_any_thresholds(scored, view):
    run = scored[0]
    truth, unknown = view.labels.truth, view.labels.unknown
    rng = np.random.default_rng(0)
    cases = [0.0, 0.3, 0.5, 0.9, 1.0, threshold_vector(run.thresholds, view.codes),
             rng.uniform(0.2, 0.8, len(view.codes)).astype(np.float32)]
    seen = set()
    for thr in cases:
        vector = view.thresholds(thr)
        predicted = SM.decisions(view.scores, vector)
        expected = SM.report(truth, unknown, view.scores, vector, view.codes, hours=view.hours, n_files=2)
        got = view.at(thr)
        for key in ("row_f1", "macro_f1", "precision", "recall", "fp_per_hour"):
            assert got[key] == (None if expected[key] is None else pytest.approx(expected[key])), (thr, key)
        assert got["detections"] == predicted.sum() and got["positives"] == truth.sum() + unknown.sum() == 6
        seen.add(round(got["row_f1"], 6))
    assert len(seen) >= 3  # the thresholds do change the answer
    # at the run's thresholds, the row F1 is evaluate()'s
    assert view.at(run.thresholds)["row_f1"] == pytest.approx(
        evaluate(run, scored[1], scored=scored[2])["row_f1"])
    # the Dodo row is a miss at any threshold: recall never reaches 1
    assert view.at(0.0)["recall"] == pytest.approx(5 / 6)


def test_per_species_numbers_match_soundscape_metrics(view):
    thr = view.with_override(0.5, {view.codes[1]: 0.2})
    predicted = SM.decisions(view.scores, thr)
    expected = SM.per_species(view.labels.truth, view.scores, predicted, thr, view.codes, hours=view.hours)
    got = view.species_at(thr)
    assert got["species"].tolist() == expected["species"].tolist()
    for col in ("threshold", "positives", "detections", "precision", "recall", "fp_per_hour"):
        np.testing.assert_allclose(got[col].to_numpy(float), expected[col].to_numpy(float), equal_nan=True,
                                   err_msg=col)
    assert got.loc[got["species"] == view.codes[1], "threshold"].item() == pytest.approx(0.2)
    others = got.loc[got["species"] != view.codes[1], "threshold"].tolist()
    assert others == pytest.approx([0.5] * len(others))


def test_thresholds_take_a_number_a_vector_or_a_thresholds_file(view):
    c = len(view.codes)
    np.testing.assert_array_equal(view.thresholds(0.25), np.full(c, 0.25, np.float32))
    saved = {"global": {"threshold": 0.4}, "species": {view.codes[0]: {"threshold": 0.9}}}
    assert view.thresholds(saved).tolist() == pytest.approx([0.9] + [0.4] * (c - 1))
    with pytest.raises(ValueError, match="one per species"):
        view.thresholds(np.zeros(c + 1))
    with pytest.raises(ValueError, match="finite"):
        view.thresholds(float("nan"))


def test_curve_is_the_row_metrics_at_each_global_threshold(view):
    curve = view.curve([0.0, 0.5, 0.95])
    assert curve["threshold"].tolist() == [0.0, 0.5, 0.95]
    for t, row in zip(curve["threshold"], curve.itertuples()):
        m = view.at(t)
        assert row.row_f1 == pytest.approx(m["row_f1"]) and row.fp_per_hour == pytest.approx(m["fp_per_hour"])
    grid = view.curve_grid()
    assert grid[0] == 0.0 and grid[-1] == 1.0 and len(grid) > 101 and (np.diff(grid) > 0).all()


def test_the_saved_post_processing_is_applied(scored, tmp_path):
    run, _, row_scores = scored
    plain = SoundscapeView.build(run, row_scores, SoundscapeSettings(postprocessing=PostProcessing()))
    np.testing.assert_array_equal(plain.scores, row_scores.scores)
    folder = tmp_path / "run"
    shutil.copytree(run.path, folder)
    (folder / "soundscape.json").write_text(json.dumps({"settings": {"postprocessing": {"smoothing": 0.5}}}))
    settings = read_settings(folder)[0]
    smoothed = SoundscapeView.build(run, row_scores, settings)
    np.testing.assert_allclose(smoothed.scores, apply(PostProcessing(smoothing=0.5), row_scores.scores,
                                                      row_scores.files))
    assert not np.allclose(smoothed.scores, plain.scores)


def test_timeline_of_a_file_holds_its_top_species_and_its_labels(labelled_soundscapes, view):
    truth = {(f, float(end)): code for f, end, code in labelled_soundscapes["rows"] if code}
    rows = view.rows_of("SYN2")
    assert rows["n"].tolist() == list(range(1, 13)) and rows["start_s"].tolist() == [5.0 * i for i in range(12)]
    lines = view.timeline("SYN2", 0.5, top=1)
    labelled_species = {c for (f, _), c in truth.items() if f == "SYN2"}
    shown = view.timeline_species("SYN2", top=1)
    assert labelled_species <= set(shown) and len(shown) <= len(labelled_species) + 1
    assert len(lines) == 12 * len(shown) and set(lines["species"]) == set(shown)
    for r in lines.itertuples():
        assert r.score == pytest.approx(view.scores[r.row, view.codes.index(r.species)])
        assert r.labelled == (truth.get(("SYN2", r.end_s)) == r.species)
        assert r.detected == (r.score >= 0.5) and r.mid_s == r.start_s + 2.5
    marks = view.label_marks("SYN2", 0.5)
    expected = sorted((end, c) for (f, end), c in truth.items() if f == "SYN2") + [(60.0, "Dodo")]
    assert sorted(zip(marks["end_s"], marks["species"])) == expected
    dodo = marks[marks["species"] == "Dodo"].iloc[0]
    assert not dodo["in_run"] and np.isnan(dodo["score"]) and not dodo["detected"]
    with pytest.raises(KeyError, match="NOPE"):
        view.rows_of("NOPE")


def test_row_summary_names_labels_and_detections(view):
    row = int(view.rows_of("SYN2")["row"].iloc[-1])
    summary = view.row_summary(row, 0.0)
    assert summary["row_id"] == "SYN2_60" and summary["labels"] == ("Dodo",)
    assert (summary["start_s"], summary["end_s"]) == (55.0, 60.0)
    assert list(summary["detected"]) == [view.codes[c] for c in np.argsort(-view.scores[row], kind="stable")]
    assert view.row_summary(row, 1.01)["detected"] == {}


def test_row_audio_is_the_row_with_context_read_in_memory(labelled_soundscapes, tmp_path):
    path = next((labelled_soundscapes["dir"] / "audio").glob("SYN1_*.wav"))
    whole, sr = sf.read(path, dtype="float32")
    clip = row_audio(path, 20.0, 25.0, context_s=2.0)
    assert clip.sample_rate == sr and clip.start_s == 18.0 and clip.end_s == pytest.approx(27.0)
    np.testing.assert_array_equal(clip.wave, whole[18 * sr:27 * sr])
    first = row_audio(path, 0.0, 5.0)  # context clipped at the start ...
    assert first.start_s == 0.0 and len(first.wave) == 7 * sr
    last = row_audio(path, 55.0, 60.0)  # ... and at the end of the file
    assert last.start_s == 53.0 and len(last.wave) == 7 * sr and last.row_end_s == 60.0
    stereo = tmp_path / "stereo.flac"
    sf.write(stereo, np.stack([whole, -whole], axis=1), sr)
    assert np.abs(row_audio(stereo, 20.0, 25.0).wave).max() < 1e-4  # mixed to mono
    with pytest.raises(AudioError, match="missing.wav"):
        row_audio(tmp_path / "missing.wav", 0.0, 5.0)
    with pytest.raises(AudioError, match="shorter"):
        row_audio(path, 100.0, 105.0, context_s=0.0)


def test_a_trained_run_does_not_offer_window_overlap(trained_run):
    assert supports_overlap(trained_run) is False


def test_timeline_chart_links_its_views(view):
    thr = view.with_override(0.5, {view.codes[0]: 0.3})
    lines, marks = view.timeline("SYN1", thr, top=3), view.label_marks("SYN1", thr)
    spec = timeline_chart(lines, marks, threshold=0.5, selected_row=4, title="SYN1").to_dict()
    params = {p["name"]: p for p in spec["params"]}
    assert set(params) == {ROW_SELECTION, "species", "zoom"}
    assert all(len(p["views"]) == 1 for p in params.values())  # one view each, or Vega refuses the spec
    assert params[ROW_SELECTION]["select"]["fields"] == ["row"] and params[ROW_SELECTION]["value"] == [{"row": 4}]
    assert params["species"]["bind"] == "legend"
    datasets = spec["datasets"].values()
    assert any(len(d) == len(lines) and "score" in d[0] for d in datasets)
    assert any(len(d) == len(marks) and "in_run" in d[0] for d in datasets)
    rules = [d for d in datasets if len(d) and set(d[0]) >= {"threshold"} and len(d[0]) <= 3]
    assert [[0.5]] == [[r["threshold"] for r in d] for d in rules if "species" not in d[0]]
    assert [[pytest.approx(0.3)]] == [[r["threshold"] for r in d] for d in rules if "species" in d[0]]
    curve = threshold_curve_chart(view.curve([0.0, 0.5, 1.0]), threshold=0.42).to_dict()
    assert any(d == [{"threshold": 0.42}] for d in curve["datasets"].values())


def test_a_click_in_the_timeline_names_its_row():
    assert picked_rows({"selection": {ROW_SELECTION: [{"row": 12}]}}) == [12]
    assert picked_rows({"selection": {ROW_SELECTION: [{"row": 3.0}, {"row": 7}]}}) == [3, 7]
    for empty in (None, {}, {"selection": {}}, {"selection": {ROW_SELECTION: {}}},
                  {"selection": {"zoom": {"x": [0, 5]}}}, {"selection": {ROW_SELECTION: [{"species": "synchi1"}]}}):
        assert picked_rows(empty) == []


def test_rows_after_a_files_audio_ends_are_left_out_and_named(trained_run, labelled_soundscapes, tmp_path, caplog):
    """A soundscape cut short (its labels go on past its audio): the rows with no audio are left out
    with a warning naming the file, instead of counting as silent misses; a file with no row left
    is reported as failed."""
    import logging

    d = labelled_soundscapes["dir"]
    lines = (d / "summary.csv").read_text().splitlines()
    first = lines[1].split(",")[2]  # filename_seconds,birds,filename,seconds
    own = [line for line in lines[1:] if line.split(",")[2] == first]
    (tmp_path / "labels.csv").write_text("\n".join([lines[0], *own, f"{first}_70,nocall,{first},70",
                                                    f"{first}_75,nocall,{first},75"]) + "\n")
    rows = read_rows(tmp_path / "labels.csv", audio_dir=d / "audio")
    with caplog.at_level(logging.WARNING):
        scored = score_rows(load_run(trained_run), rows)
    assert len(scored.table) == len(own) and scored.failed == {}
    assert f"{first}: the audio ends at 60.0 s; 2 of its {len(own) + 2} rows start after that" in caplog.text
    (tmp_path / "late.csv").write_text("\n".join([lines[0], f"{first}_70,nocall,{first},70"]) + "\n")
    with pytest.raises(ValueError, match="none of the 1 labelled audio files could be scored"):
        score_rows(load_run(trained_run), read_rows(tmp_path / "late.csv", audio_dir=d / "audio"))
