"""``python -m birdcore.evaluate`` leaves out the recordings the run trained or validated on (its split.csv)
and says how many; ``--include-training`` keeps them and says the figures include them; a dataset of
nothing but such recordings is one line and exit status 2.  Uses the shared ``trained_run`` (trained on
``synth_dir``), never a new model."""
import json
import shutil

import pandas as pd
import pytest
import soundfile as sf

from birdcore.cli.evaluate import main


def evaluate(run, data, tmp_path, capsys, *extra):
    """(exit status, the --json object or None, the summary line or None, stderr)."""
    status = main([str(run), "--data-dir", str(data), "--json", "--cache-dir", str(tmp_path / "cache"),
                   "--workers", "1", *map(str, extra)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    if status != 0:
        return status, None, None, err
    return status, json.loads(lines[-1]), lines[-2], err


def split_counts(run) -> dict:
    return pd.read_csv(run / "split.csv", keep_default_na=False)["split"].value_counts().to_dict()


def test_the_training_data_itself_leaves_only_the_test_recordings(trained_run, synth_dir, tmp_path, capsys):
    counts = split_counts(trained_run)
    status, result, summary, err = evaluate(trained_run, synth_dir, tmp_path, capsys)
    assert status == 0
    assert result["n_recordings"] == counts["test"]
    assert f"left out {counts['train']} training and {counts['val']} validation recordings" in summary
    assert result["excluded_training"] == counts["train"] and result["excluded_validation"] == counts["val"]
    assert (f"left out {counts['train'] + counts['val']} of the {sum(counts.values())} recordings: the run "
            f"trained on {counts['train']} and validated on {counts['val']} of them") in err


def test_include_training_keeps_them_and_says_so(trained_run, synth_dir, tmp_path, capsys):
    counts = split_counts(trained_run)
    status, result, summary, err = evaluate(trained_run, synth_dir, tmp_path, capsys, "--include-training")
    assert status == 0
    assert result["n_recordings"] == sum(counts.values())
    assert result["excluded_training"] == 0 and result["excluded_validation"] == 0
    assert result["included_training"] == counts["train"] and result["included_validation"] == counts["val"]
    said = f"include {counts['train']} training and {counts['val']} validation recordings"
    assert said in summary
    assert any(" WARNING " in line and said in line for line in err.splitlines())


def test_only_training_recordings_is_one_line_and_exit_2(trained_run, synth_dir, tmp_path, capsys):
    """A copy elsewhere of the run's training and validation recordings (found by content: the synthetic
    datasets all number their files from XC100000, so their names prove nothing)."""
    split = pd.read_csv(trained_run / "split.csv", keep_default_na=False)
    seen = set(split.loc[split["split"].isin(["train", "val"]), "recording_id"])
    copy = tmp_path / "copy"
    shutil.copytree(synth_dir, copy)
    meta = pd.read_csv(copy / "train.csv", dtype=str, keep_default_na=False)
    meta = meta[[f"{c}/{f.rsplit('.', 1)[0]}" in seen for c, f in zip(meta["ebird_code"], meta["filename"])]]
    meta.to_csv(copy / "train.csv", index=False)
    status, _, _, err = evaluate(trained_run, copy, tmp_path, capsys)
    assert status == 2
    (line,) = [line for line in err.splitlines() if " ERROR " in line]
    assert f"all {len(seen)} recordings" in line and "--include-training" in line
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))  # nothing decoded


def test_new_recordings_with_the_same_made_up_names_are_kept(trained_run, holdout_dir, tmp_path, capsys):
    """holdout_dir reuses the synthetic XC numbers of the training data, with other audio."""
    status, result, _, _ = evaluate(trained_run, holdout_dir, tmp_path, capsys)
    assert status == 0 and result["n_recordings"] == 15 and result["excluded_training"] == 0


def test_a_real_runs_recordings_are_known_by_xeno_canto_number_and_by_name(trained_run, synth_dir, tmp_path, capsys):
    """For a run on real recordings (run.json synthetic false), the same recording is the same
    xeno-canto number, or the same species and file name, whatever its format or folder: here the
    training data re-encoded to FLAC, half of it renamed (known by its xc_id column)."""
    run = tmp_path / "runs" / "real"
    shutil.copytree(trained_run, run)
    manifest = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**manifest, "synthetic": False}))
    copy = tmp_path / "recoded"
    meta = pd.read_csv(synth_dir / "train.csv", dtype=str, keep_default_na=False)
    names = []
    for i, (code, name) in enumerate(zip(meta["ebird_code"], meta["filename"])):
        audio, rate = sf.read(synth_dir / "train_audio" / code / name)
        new = f"{name.rsplit('.', 1)[0]}.flac" if i % 2 else f"rec-{i}.flac"
        (copy / "train_audio" / code).mkdir(parents=True, exist_ok=True)
        sf.write(copy / "train_audio" / code / new, audio, rate)
        names.append(new)
    meta["filename"] = names
    meta.to_csv(copy / "train.csv", index=False)
    counts = split_counts(run)
    status, result, _, _ = evaluate(run, copy, tmp_path, capsys)
    assert status == 0 and result["n_recordings"] == counts["test"]
    assert result["excluded_training"] == counts["train"] and result["excluded_validation"] == counts["val"]


def test_a_run_without_a_split_leaves_out_nothing(listed_run, tmp_path, capsys):
    """A zero-shot run made from a species list saw no recordings and has no split.csv."""
    from birdcore.data.synthetic import make_synthetic_dataset

    assert not (listed_run / "split.csv").exists()
    data = make_synthetic_dataset(tmp_path / "d", n_species=1, recordings_per_species=2, seconds=(1.0, 1.5),
                                  sample_rate=48000, seed=8)
    meta = pd.read_csv(data / "train.csv", dtype=str, keep_default_na=False)
    made_up = meta["ebird_code"][0]
    code = pd.read_csv(listed_run / "species.csv", keep_default_na=False)["ebird_code"][0]  # one of the run's species
    (data / "train_audio" / code).mkdir()
    for name in meta["filename"]:
        shutil.move(data / "train_audio" / made_up / name, data / "train_audio" / code / name)
    meta["ebird_code"] = code
    meta.to_csv(data / "train.csv", index=False)
    status, result, _, _ = evaluate(listed_run, data, tmp_path, capsys)
    assert status == 0 and result["n_recordings"] == 2
    assert result["excluded_training"] == 0 and result["excluded_validation"] == 0


def test_help_describes_it(capsys):
    with pytest.raises(SystemExit):
        main(["-h"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--include-training" in out and "split.csv" in out
