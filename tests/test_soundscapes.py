"""Field soundscapes: annotation formats, row scores, competition metrics, post-processing,
calibration, and the ``python -m birdcore.soundscapes`` commands, on generated soundscapes."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from birdcore.data.soundscapes import SoundscapeError, read_rows
from birdcore.data.synthetic import make_synthetic_soundscapes
from birdcore.evaluation import soundscape_metrics as SM
from birdcore.evaluation.calibration import Goal, Labels, calibrate, choose_postprocessing, held_out_decisions
from birdcore.evaluation.postprocess import PostProcessing, apply
from birdcore.evaluation.soundscape_scoring import rows_from_windows
from birdcore.runs.loading import load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def soundscapes(trained_run, tmp_path_factory):
    """Two 60 s soundscapes with calls of the trained run's species in known rows."""
    codes = load_run(trained_run).codes
    return make_synthetic_soundscapes(tmp_path_factory.mktemp("soundscapes"), species=codes, n_files=2,
                                      seconds=60.0, sample_rate=16000, seed=3)


def _triples(rows):
    t = rows.table
    return sorted(zip(t["file"], t["end_s"].round(3), [tuple(sorted(b)) for b in t["birds"]]))


def test_every_label_format_gives_the_same_rows(soundscapes):
    d = soundscapes["dir"]
    summary = read_rows(d / "summary.csv", audio_dir=d / "audio")
    birdclef = read_rows(d / "labels2021.csv", audio_dir=d / "audio")
    raven = read_rows(d / "raven", audio_dir=d / "audio")
    expected = sorted((f, float(e), (c,) if c else ()) for f, e, c in soundscapes["rows"])
    assert _triples(summary) == _triples(birdclef) == _triples(raven) == expected
    assert summary.missing == [] and all(p.name.startswith(k + "_") for k, p in summary.audio.items())
    test = read_rows(d / "test.csv", audio_dir=d / "audio")
    assert not test.labelled and len(test.table) == 24 and test.table["birds"].isna().all()


def test_a_missing_audio_file_is_named_and_bad_labels_say_why(soundscapes, tmp_path):
    d = soundscapes["dir"]
    extra = (d / "summary.csv").read_text() + "GONE_5,nocall,GONE,5\n"
    (tmp_path / "labels.csv").write_text(extra)
    rows = read_rows(tmp_path / "labels.csv", audio_dir=d / "audio")
    assert rows.missing == ["GONE"] and len(rows.with_audio().table) == 24
    (tmp_path / "odd.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SoundscapeError, match="odd.csv: unknown soundscape label format"):
        read_rows(tmp_path / "odd.csv")
    (tmp_path / "bad.csv").write_text("filename_seconds,birds,filename,seconds\nX_5,nocall,X,five\n")
    with pytest.raises(SoundscapeError, match="line 2"):
        read_rows(tmp_path / "bad.csv")


def test_without_audio_dir_the_labels_folder_and_its_audio_subfolder_are_searched(soundscapes, tmp_path):
    """By default the audio is beside the labels or under their audio/ folder; a same-named file in
    some other subfolder (another site's copy, an old export) is not taken."""
    import shutil

    d = soundscapes["dir"]
    shutil.copy(d / "summary.csv", tmp_path / "labels.csv")
    shutil.copytree(d / "audio", tmp_path / "elsewhere")
    rows = read_rows(tmp_path / "labels.csv")
    assert sorted(rows.missing) == sorted(rows.audio) and len(rows.audio) == 2
    shutil.copytree(d / "audio", tmp_path / "audio" / "site-a")
    rows = read_rows(tmp_path / "labels.csv")
    assert rows.missing == [] and all(p.parent == tmp_path / "audio" / "site-a" for p in rows.audio.values())
    first = sorted((tmp_path / "elsewhere").iterdir())[0]
    shutil.move(first, tmp_path / first.name)  # one file beside the labels
    shutil.rmtree(tmp_path / "audio")
    rows = read_rows(tmp_path / "labels.csv")
    assert [p.parent for p in rows.audio.values() if p is not None] == [tmp_path] and len(rows.missing) == 1
    shutil.copytree(tmp_path / "elsewhere", tmp_path / "train_soundscapes")  # BirdCLEF 2021's layout
    rows = read_rows(tmp_path / "labels.csv")
    assert rows.missing == [] and {p.parent.name for p in rows.audio.values()} == {tmp_path.name, "train_soundscapes"}


def test_a_row_takes_the_max_of_the_windows_that_overlap_it_enough():
    windows = np.array([[0.1], [0.9], [0.2], [0.3]], np.float32)  # 3 s windows at 0, 3, 6, 9 s
    rows = rows_from_windows(windows, hop=3.0, length=3.0, starts=np.array([0.0, 5.0, 0.0]),
                             ends=np.array([5.0, 10.0, math.inf]))
    # row 0-5 s: windows 0-3 (3 s) and 3-6 (2 s); row 5-10 s: 3-6 overlaps 1 s, 6-9, 9-12 (1 s)
    np.testing.assert_allclose(rows[:, 0], [0.9, 0.9, 0.9])
    strict = rows_from_windows(windows, hop=3.0, length=3.0, starts=np.array([5.0]), ends=np.array([10.0]),
                               min_overlap=1.5)
    assert strict[0, 0] == pytest.approx(0.2)  # only 6-9 s overlaps by 1.5 s or more
    five = rows_from_windows(np.array([[0.4], [0.6]]), hop=5.0, length=5.0, starts=np.array([5.0]),
                             ends=np.array([10.0]), min_overlap=9.0)
    assert five[0, 0] == pytest.approx(0.6)  # a model whose segments are the rows always counts


def test_row_f1_is_the_competitions_per_row_f1_with_nocall():
    truth = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], bool)
    pred = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 1, 0]], bool)
    # rows: exact (1), nocall-nocall (1), {a,b} vs {a,c} (0.5), nocall vs {b} (0)
    assert SM.row_f1(truth, pred) == pytest.approx((1 + 1 + 0.5 + 0) / 4)
    assert SM.row_f1(truth, np.zeros_like(pred)) == pytest.approx(0.5)  # nocall everywhere
    # a labelled species the run lacks is a miss: {a, unknown} vs {a} gives 2/3
    assert SM.row_f1(truth[:1], pred[:1], np.array([1])) == pytest.approx(2 / 3)


def test_padded_cmap_and_fp_per_hour():
    rng = np.random.default_rng(0)
    truth = rng.random((40, 3)) < 0.3
    truth[:, 2] = False  # a species without positives takes no part
    scores = rng.random((40, 3)).astype(np.float32)
    pad_t = np.concatenate([truth[:, :2], np.ones((5, 2), bool)])
    pad_s = np.concatenate([scores[:, :2], np.ones((5, 2), np.float32)])
    assert SM.padded_cmap(truth, scores) == pytest.approx(average_precision_score(pad_t, pad_s, average="macro"))
    assert SM.cmap(truth, scores) == pytest.approx(average_precision_score(truth[:, :2], scores[:, :2], average="macro"))
    pred = scores >= 0.5
    assert SM.fp_per_hour(truth, pred, 0.5) == pytest.approx((pred & ~truth).sum() / 0.5)


def test_post_processing_steps():
    files = np.array(["a"] * 3 + ["b"] * 2)
    s = np.array([[0.0, 0.1], [0.8, 0.1], [0.0, 0.1], [0.2, 0.9], [0.1, 0.1]], np.float32)
    smoothed = apply(PostProcessing(smoothing=0.5), s, files)
    assert smoothed[0, 0] == pytest.approx(0.5 * 0.0 + 0.25 * (0.0 + 0.8))  # edge uses itself
    assert smoothed[3, 0] == pytest.approx(0.5 * 0.2 + 0.25 * (0.2 + 0.1))  # never across files
    boosted = apply(PostProcessing(file_boost=0.5, boost_min=0.7), s, files)
    assert boosted[3, 0] == pytest.approx(0.2) and boosted[4, 1] == pytest.approx(0.1 ** 0.5)  # b: species 1 only
    assert boosted[0, 0] == 0.0 and boosted[2, 1] == pytest.approx(0.1)  # a: species 0 confident, 0 stays 0
    top = apply(PostProcessing(top_k=1), s, files)
    assert (top > 0).sum(axis=1).max() == 1 and top[3, 1] == pytest.approx(0.9)
    masked = apply(PostProcessing(location=True), s, files, {"a": np.array([True, False])})
    assert (masked[:3, 1] == 0).all() and masked[3, 1] == pytest.approx(0.9)


def test_goals_parse_and_reject_with_a_reason():
    assert Goal.parse("f1") == Goal("f1") and Goal.parse("precision=0.9") == Goal("precision", 0.9)
    assert Goal.parse("fph=2").value == 2.0
    for bad in ("f2", "precision=1.5", "fph=-1", "precision"):
        with pytest.raises(ValueError, match="expected f1"):
            Goal.parse(bad)


def _labels(rng, n_files=3, rows=200, species=4):
    truth = rng.random((n_files * rows, species)) < 0.1
    scores = np.clip(truth * rng.uniform(0.3, 1.0, truth.shape) + rng.uniform(0, 0.5, truth.shape), 0, 1)
    files = np.repeat([f"f{k}" for k in range(n_files)], rows)
    return Labels(truth, np.zeros(len(truth), np.int64), files, np.full(len(truth), 5 / 3600)), scores.astype(np.float32)


def test_thresholds_meet_a_precision_or_false_positive_goal():
    labels, scores = _labels(np.random.default_rng(1))
    _, thr = calibrate(labels, scores, Goal("precision", 0.9))
    pred = SM.decisions(scores, thr)
    for c in range(scores.shape[1]):
        assert (labels.truth[:, c] & pred[:, c]).sum() / max(pred[:, c].sum(), 1) >= 0.9
    glob, thr = calibrate(labels, scores, Goal("fph", 3.0))
    assert (thr == glob).all()
    assert SM.fp_per_hour(labels.truth, SM.decisions(scores, thr), labels.row_hours.sum()) <= 3.0
    f1_glob, f1_thr = calibrate(labels, scores, Goal("f1"))
    assert SM.row_f1(labels.truth, SM.decisions(scores, f1_thr)) >= \
        SM.row_f1(labels.truth, scores >= f1_glob) - 1e-9  # per species never worse in sample


def test_held_out_decisions_never_see_the_file_they_decide():
    labels, scores = _labels(np.random.default_rng(2))
    base = held_out_decisions(labels, scores, Goal("f1"))
    changed = labels.truth.copy()
    changed[labels.files == "f0"] = ~changed[labels.files == "f0"]  # other labels for file f0 only
    other = held_out_decisions(Labels(changed, labels.unknown, labels.files, labels.row_hours), scores, Goal("f1"))
    f0 = labels.files == "f0"
    np.testing.assert_array_equal(base[f0], other[f0])  # f0 is decided by thresholds from f1 and f2


def test_post_processing_choice_prefers_the_simplest_of_equals():
    labels, scores = _labels(np.random.default_rng(3))
    grid = [PostProcessing(), PostProcessing(top_k=4)]  # top 4 of 4 species changes nothing
    best, per_species, results = choose_postprocessing(labels, scores, Goal("f1"), grid, per_species=(False,))
    assert best == PostProcessing() and results[0]["objective"] == results[1]["objective"]
    assert per_species is False and len(results) == 2


def _cli(*args):
    from birdcore.cli.soundscapes import main

    return main([str(a) for a in args])


def test_evaluate_calibrate_submit_from_the_command_line(trained_run, soundscapes, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    d = soundscapes["dir"]
    assert _cli("evaluate", run, "--labels", d / "summary.csv", "--audio-dir", d / "audio", "--json") == 0
    before = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("row_f1", "cmap", "macro_auc", "n_rows", "n_files", "fp_per_hour"):
        assert key in before
    assert before["n_rows"] == 24 and before["n_files"] == 2 and before["macro_auc"] > 0.7
    old_thresholds = (run / "thresholds.json").read_text()
    assert _cli("calibrate", run, "--labels", d / "raven", "--audio-dir", d / "audio", "--json") == 0
    chosen = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "thresholds.previous.json").read_text() == old_thresholds
    saved = json.loads((run / "soundscape.json").read_text())
    assert saved["goal"] == "f1" and saved["settings"] == chosen["settings"]
    assert json.loads((run / "thresholds.json").read_text())["chosen_on"].startswith("soundscapes: ")
    assert _cli("evaluate", run, "--labels", d / "labels2021.csv", "--audio-dir", d / "audio", "--json") == 0
    after = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert after["row_f1"] == pytest.approx(chosen["in_sample"]["row_f1"])  # the saved choice is what evaluate uses
    assert after["row_f1"] >= before["row_f1"]
    test = tmp_path / "test.csv"
    test.write_text((d / "test.csv").read_text() + "site_1,GONE_5,5,GONE\n")
    out = tmp_path / "submission.csv"
    assert _cli("submit", run, "--test", test, "--audio-dir", d / "audio", "--out", out) == 0
    sub = pd.read_csv(out)
    assert list(sub.columns) == ["row_id", "birds"] and len(sub) == 25
    assert sub.set_index("row_id").loc["GONE_5", "birds"] == "nocall"
    assert "GONE" in capsys.readouterr().err


def test_bad_input_is_one_line_without_a_traceback(trained_run, tmp_path):
    res = subprocess.run([sys.executable, "-m", "birdcore.soundscapes", "calibrate", str(trained_run), "--labels",
                          str(tmp_path / "nothing.csv"), "--goal", "precision=2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "goal 'precision=2'" in res.stderr


def test_a_zero_shot_run_from_a_species_list_needs_no_recordings(listed_run):
    run_dir = listed_run  # train_job.py --baseline birdnet --species-list FILE (conftest)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["model_kind"] == "birdnet_zero_shot" and "test" not in manifest
    assert not (run_dir / "metrics.json").exists()  # recording-level metrics are absent, not zero
    run = load_run(run_dir)
    assert run.codes == ["amerob", "norcar", "amegfi"]
    scores = run.scorer().score(np.zeros(48000 * 3, np.float32))
    assert scores.recording.shape == (3,)
