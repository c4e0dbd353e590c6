"""train_job.py refuses bad input before any training: one line naming the option or file and the reason,
exit status 2, and no run folder (not even a ``.NAME.partial``) left behind."""
import json
import logging

import pytest

from birdcore.config import RunConfig
from conftest import tiny_config


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A tiny dataset and a tiny config.json, so that a check that is missing costs one short epoch, not a run."""
    from birdcore.data.synthetic import make_synthetic_dataset

    tmp = tmp_path_factory.mktemp("input")
    data = make_synthetic_dataset(tmp / "data", n_species=3, recordings_per_species=4, seconds=(1.0, 1.5),
                                  sample_rate=16000, seed=5)
    tiny_config(epochs=1).save(tmp / "cfg.json")
    return {"data": data, "cfg": tmp / "cfg.json"}


def job(small, tmp_path, *extra):
    """``main`` on the small dataset (with the tiny config); returns its exit status."""
    from train_job import main

    return main(["--data-dir", str(small["data"]), "--config", str(small["cfg"]), "--out", str(tmp_path / "runs"),
                 "--cache-dir", str(tmp_path / "cache"), "--workers", "1", *map(str, extra)])


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if " ERROR " in line]


def test_a_missing_data_dir_says_no_such_folder_and_leaves_nothing(tmp_path, capsys):
    from train_job import main

    assert main(["--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "runs"), "--name", "x"]) == 2
    (line,) = errors(capsys)
    assert line.endswith(f"--data-dir {tmp_path / 'nope'}: no such folder")
    assert not (tmp_path / "runs").exists()


def test_train_run_refuses_a_missing_data_dir_before_making_the_run_folder(tmp_path):
    from birdcore.training.train import train_run

    with pytest.raises(ValueError, match="nope: no such folder"):
        train_run(data_dir=tmp_path / "nope", out_dir=tmp_path / "runs", name="x", cfg=tiny_config())
    assert not (tmp_path / "runs").exists()


def test_a_failure_while_preparing_data_leaves_no_partial_run(small, tmp_path):
    """Past the up-front checks (every audio file unreadable): the new run's folder goes too."""
    import shutil

    from birdcore.training.train import train_run

    broken = tmp_path / "broken"
    shutil.copytree(small["data"], broken)
    for path in (broken / "train_audio").rglob("*.wav"):
        path.write_bytes(b"not audio")
    for resume in (False, True):  # --resume of a run killed before its folder existed starts a new one
        with pytest.raises(ValueError, match="no recording could be decoded"):
            train_run(data_dir=broken, out_dir=tmp_path / "runs", name="b", cfg=tiny_config(epochs=1),
                      cache_dir=tmp_path / "cache", workers=1, resume=resume)
        assert not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("value", ["0", "-3"])
def test_epochs_below_one_are_refused_when_parsing_in_one_line(value, capsys):
    from train_job import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--demo", "--epochs", value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err and "must be ≥ 1" in err


@pytest.mark.parametrize("args, message", [
    (["--set", "model.dropout=5"], "--set model.dropout=5: must be in [0, 1)"),
    (["--set", "train.learning_rate=0"], "--set train.learning_rate=0: must be > 0"),
    (["--set", "train.batch_size=0"], "--set train.batch_size=0: must be a whole number ≥ 1"),
    (["--set", "train.epochs=0"], "--set train.epochs=0: must be a whole number ≥ 1"),
    (["--lr", "0"], "--lr 0: must be > 0"),
    (["--target-fpr", "1.5"], "--target-fpr 1.5: must be in (0, 1)"),
])
def test_out_of_range_config_values_name_the_option(args, message, small, tmp_path, capsys):
    assert job(small, tmp_path, "--name", "bad", *args) == 2
    (line,) = errors(capsys)
    assert line.endswith(message)
    assert not (tmp_path / "runs").exists()


def test_a_config_file_with_a_bad_value_names_the_file_and_the_field(small, tmp_path, capsys):
    from train_job import main

    cfg = tiny_config()
    cfg.train.batch_size = 0
    cfg.save(tmp_path / "bad.json")
    assert main(["--data-dir", str(small["data"]), "--config", str(tmp_path / "bad.json"), "--out",
                 str(tmp_path / "runs")]) == 2
    (line,) = errors(capsys)
    assert line.endswith(f"{tmp_path / 'bad.json'}: train.batch_size=0: must be a whole number ≥ 1")


def test_config_check_covers_the_numeric_fields():
    from birdcore.config import ConfigValueError

    RunConfig().check()
    tiny_config().check()
    for setting, key in [("model.dropout=1.0", "model.dropout"), ("model.dropout=null", "model.dropout"),
                         ("split.val_fraction=0.95", "split.test_fraction"), ("eval.target_fpr=0", "eval.target_fpr"),
                         ("augment.time_mask_max=2", "augment.time_mask_max"), ("tune.max_trials=0", "tune.max_trials"),
                         ("augment.background_noise_snr_db=[30, 3]", "augment.background_noise_snr_db"),
                         ("train.early_stopping_patience=0", "train.early_stopping_patience")]:
        with pytest.raises(ConfigValueError) as bad:
            RunConfig().override([setting]).check()
        assert bad.value.key == key, setting


def test_a_missing_noise_folder_is_an_error(small, tmp_path, capsys):
    assert job(small, tmp_path, "--name", "n", "--noise-dir", tmp_path / "nonoise") == 2
    (line,) = errors(capsys)
    assert line.endswith(f"--noise-dir {tmp_path / 'nonoise'}: no such folder")
    assert not (tmp_path / "runs").exists()


def test_a_noise_folder_without_audio_is_warned_about_before_the_run_starts(small, tmp_path, caplog):
    from birdcore.training.train import check_inputs

    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "notes.txt").write_text("no audio here")
    cfg = tiny_config()
    cfg.augment.background_noise_dir = str(tmp_path / "noise")
    logger = logging.getLogger("birdcore")
    logger.addHandler(caplog.handler)
    try:
        check_inputs(data_dir=small["data"], out_dir=tmp_path / "runs", name="n", cfg=cfg, resume=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert any(r.levelname == "WARNING" and "has no audio files" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "runs").exists()


def test_resume_needs_a_name_and_starts_a_run_killed_before_its_folder_existed(small, tmp_path, capsys):
    """``--resume`` needs ``--name``.  A run with that name that has no folder yet (the job was killed
    before it made one) is started by the same command, as ``bench/bench_kill_resume.py`` relies on;
    without a data folder to start it from, that is one line saying so."""
    from birdcore.training.train import check_inputs
    from train_job import main

    assert job(small, tmp_path, "--resume") == 2
    assert errors(capsys)[0].endswith("--resume needs --name NAME (the run to continue)")
    assert main(["--resume", "--name", "ghost", "--out", str(tmp_path / "runs")]) == 2
    (line,) = errors(capsys)
    assert f"no run ghost to resume in {tmp_path / 'runs'}" in line and "give --data-dir DIR" in line
    assert not (tmp_path / "runs").exists()
    check_inputs(data_dir=small["data"], out_dir=tmp_path / "runs", name="ghost", cfg=tiny_config(), resume=True)


def test_two_recordings_per_species_are_refused_saying_how_many_are_needed(tmp_path, capsys):
    from birdcore.data.synthetic import make_synthetic_dataset
    from train_job import main

    two = make_synthetic_dataset(tmp_path / "two", n_species=3, recordings_per_species=2, seconds=(1.0, 1.5),
                                 sample_rate=16000, seed=6)
    tiny_config(epochs=1).save(tmp_path / "cfg.json")
    assert main(["--data-dir", str(two), "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "runs"),
                 "--cache-dir", str(tmp_path / "cache"), "--workers", "1"]) == 2
    (line,) = errors(capsys)
    assert "validation split would be empty" in line and "at least 3 recordings" in line and "more than 2" in line
    assert not (tmp_path / "runs").exists()


def test_resume_uses_the_saved_data_folder_or_asks_for_one(tmp_path):
    from train_job import build_parser, check_args

    runs = tmp_path / "runs"
    (runs / ".saved.partial").mkdir(parents=True)
    (runs / ".saved.partial" / "config.json").write_text(json.dumps({"config": {}, "data_dir": str(tmp_path)}))
    (runs / ".early.partial").mkdir()
    parse = build_parser().parse_args
    assert check_args(parse(["--resume", "--name", "saved", "--out", str(runs)])) == tmp_path
    assert check_args(parse(["--resume", "--name", "saved", "--out", str(runs), "--data-dir", str(runs)])) == runs
    with pytest.raises(ValueError, match="give --data-dir DIR"):
        check_args(parse(["--resume", "--name", "early", "--out", str(runs)]))


def test_resume_names_the_options_its_saved_configuration_overrides(tmp_path):
    """``--resume`` goes on with the run's saved configuration: an option that asks for another value
    (``--epochs 32`` for a run saved with 300) is named as ignored, not dropped in silence; options
    that agree with the saved run, or are not given, are not named."""
    from train_job import build_parser

    from birdcore.cli.train import ignored_on_resume

    runs = tmp_path / "runs"
    (runs / ".r.partial").mkdir(parents=True)
    cfg = RunConfig()
    cfg.train.epochs, cfg.train.batch_size = 300, 16
    (runs / ".r.partial" / "config.json").write_text(json.dumps({"config": cfg.to_dict(), "data_dir": str(tmp_path)}))
    parse = build_parser().parse_args
    base = ["--resume", "--name", "r", "--out", str(runs)]
    assert ignored_on_resume(parse(base)) == []
    assert ignored_on_resume(parse(base + ["--batch-size", "16"])) == []
    assert ignored_on_resume(parse(base + ["--epochs", "32"])) == ["train.epochs: 300 (given 32)"]
    assert ignored_on_resume(parse(base[:3] + ["--out", str(tmp_path / "none"), "--epochs", "32"])) == []
