"""End to end on generated data: a tiny real model learns, the run folder is complete,
exports agree, and --resume continues at the right epoch."""
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from birdcore.io.audio import decode_audio
from birdcore.evaluation.scoring import evaluate_dataset
from birdcore.models.keras_audio.export import load_savedmodel
from birdcore.models.saving import load_keras
from birdcore.runs.loading import load_run
from birdcore.models.keras_audio.scorer import Scorer
from birdcore.runs.progress import read_progress
from birdcore.runs.folder import FORMAT_VERSION, RunFolderError, read_manifest
from birdcore.training.train import train_run

from conftest import tiny_config


def test_tiny_model_learns_three_species(trained_run, holdout_dir, tmp_path):
    result = evaluate_dataset(trained_run, data_dir=holdout_dir, cache_dir=tmp_path / "cache", workers=1)
    assert result["n_recordings"] == 15
    assert result["top1"] >= 0.6  # chance is 1/3
    assert result["macro_auc"] >= 0.75


def test_run_folder_is_complete_and_versioned(trained_run):
    manifest = read_manifest(trained_run)
    assert manifest["format_version"] == FORMAT_VERSION and manifest["status"] == "complete"
    assert manifest["synthetic"] is True
    for name in ("config.json", "species.csv", "data_report.json", "split.csv", "history.csv", "metrics.json",
                 "thresholds.json", "scores.npz", "model.keras", "export/saved_model.pb"):
        assert (trained_run / name).exists(), name
    assert not (trained_run / "checkpoints").exists()
    assert not any(p.name.endswith(".partial") for p in trained_run.parent.iterdir())
    cfg = json.loads((trained_run / "config.json").read_text())
    assert cfg["config"]["model"]["backbone"] == "small_cnn" and "tensorflow" in cfg["versions"]
    split = pd.read_csv(trained_run / "split.csv")
    assert set(split["split"]) == {"train", "val", "test"}
    metrics = json.loads((trained_run / "metrics.json").read_text())
    for key in ("top1", "top5", "macro_auc", "per_species"):
        assert key in metrics
    with np.load(trained_run / "scores.npz", allow_pickle=False) as z:
        n_test = int((split["split"] == "test").sum())
        assert z["scores"].shape == (n_test, 3)
        assert len(z["segment_offsets"]) == n_test + 1
        assert z["segment_scores"].shape[0] == z["segment_offsets"][-1]
    thresholds = json.loads((trained_run / "thresholds.json").read_text())
    assert thresholds["chosen_on"] == "val" and set(thresholds["species"]) == set(split["primary"])
    assert len(pd.read_csv(trained_run / "history.csv")) == 8


def test_exports_give_the_same_scores(trained_run, synth_dir):
    run = load_run(trained_run)
    wav_path = sorted((synth_dir / "train_audio").rglob("*.*"))[0]
    wave = decode_audio(wav_path, sample_rate=run.sample_rate)
    ref = Scorer(run.model).score(wave)
    keras_out = load_keras(trained_run / "model.keras")(wave[None])
    saved = load_savedmodel(trained_run / "export")
    saved_out = saved.serve(tf.constant(wave[None]))
    np.testing.assert_allclose(np.asarray(keras_out["recording"])[0], ref.recording, atol=1e-4)
    np.testing.assert_allclose(np.asarray(saved_out["recording"])[0], ref.recording, atol=1e-4)
    np.testing.assert_allclose(np.asarray(saved_out["segments"])[0], ref.segments, atol=1e-4)
    assert ref.segments.shape[0] == int(np.ceil(len(wave) / run.config.audio.segment_samples))


def test_the_any_backend_scoring_path_matches_the_tf_function_one(trained_run, synth_dir):
    """Scorer(use_tf_function=False) is the path used under JAX (a GPU machine without TensorFlow);
    here, under TensorFlow, it must give the same scores, across several batches and a short last one."""
    run = load_run(trained_run)
    waves = [decode_audio(p, sample_rate=run.sample_rate) for p in sorted((synth_dir / "train_audio").rglob("*.*"))[:5]]
    fast = list(Scorer(run.model, batch_segments=4).score_many(waves))
    generic = list(Scorer(run.model, batch_segments=4, use_tf_function=False).score_many(waves))
    assert sum(len(s.segments) for s in fast) > 4
    for a, b in zip(fast, generic):
        np.testing.assert_allclose(b.segments, a.segments, atol=1e-5)
        np.testing.assert_allclose(b.recording, a.recording, atol=1e-5)
    manifest = read_manifest(trained_run)
    assert manifest["savedmodel"] is True and manifest["keras_backend"] == "tensorflow"


class _Interrupt(Exception):
    pass


def test_resume_continues_at_the_right_epoch(synth_dir, tmp_path, caplog):
    import keras

    class StopAfter(keras.callbacks.Callback):
        def __init__(self, at):
            super().__init__()
            self.at = at

        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.at:  # after the epoch's checkpoint and state are written
                raise _Interrupt()

    cfg = tiny_config(epochs=4)
    kwargs = dict(data_dir=synth_dir, out_dir=tmp_path / "runs", name="r", cache_dir=tmp_path / "cache", workers=1)
    with pytest.raises(_Interrupt):
        train_run(cfg=cfg, extra_callbacks=[StopAfter(1)], **kwargs)
    partial = tmp_path / "runs" / ".r.partial"
    assert partial.is_dir() and not (tmp_path / "runs" / "r").exists()
    assert json.loads((partial / "train_state.json").read_text())["epoch"] == 1
    progress = read_progress(partial)  # what the dashboard shows of the interrupted run
    assert (progress.state, progress.epochs_done, progress.epochs_total) == ("stopped", 2, 4)
    assert "`train_job.py --resume --name r` (and the same --out)" in progress.describe()
    from train_job import build_parser, check_args

    # that command, without --data-dir, finds the data folder the run saved
    assert check_args(build_parser().parse_args(["--resume", "--name", "r", "--out", str(tmp_path / "runs")])) \
        == synth_dir
    with pytest.raises(RunFolderError, match="--resume"):
        train_run(cfg=cfg, **kwargs)
    saved = json.loads((partial / "config.json").read_text())
    saved["started"] = "2020-01-02T03:04:05+0000"  # stands for the first start, hours before a resume
    (partial / "config.json").write_text(json.dumps(saved))
    with caplog.at_level("INFO", logger="birdcore"):
        with pytest.raises(_Interrupt):  # killed again, this time after the last epoch
            train_run(cfg=cfg, resume=True, extra_callbacks=[StopAfter(3)], **kwargs)
        assert any(r.getMessage() == "resuming at epoch 3 of 4" for r in caplog.records)
        caplog.clear()
        final = train_run(cfg=cfg, resume=True, **kwargs)
    messages = [r.getMessage() for r in caplog.records]
    assert not any(m.startswith("resuming at epoch") for m in messages), messages  # not "epoch 5 of 4"
    assert any("training had finished (4 of 4 epochs) before the interruption" in m for m in messages), messages
    assert not (final / "checkpoints").exists() and not (final / "train_state.json").exists()
    assert train_run(cfg=cfg, resume=True, **kwargs) == final  # resuming a finished job: nothing to do
    history = pd.read_csv(final / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4]
    assert (history["seconds"] > 0).all()
    manifest = read_manifest(final)
    assert manifest["epochs_trained"] == 4
    assert manifest["created"] == "2020-01-02T03:04:05+0000"


def test_existing_complete_run_is_never_overwritten(trained_run, synth_dir, tmp_path):
    with pytest.raises(RunFolderError, match="exists"):
        train_run(data_dir=synth_dir, out_dir=trained_run.parent, name=trained_run.name, cfg=tiny_config(),
                  cache_dir=tmp_path / "c", workers=1)


def test_best_checkpoint_ties_on_top1_go_to_the_lower_validation_loss(tmp_path):
    import keras

    from birdcore.runs.folder import RunBuilder
    from birdcore.training.callbacks import RunKeeper

    run = RunBuilder.open(tmp_path, "keeper", resume=False)
    try:
        keeper = RunKeeper(run, epochs=6, patience=2, state={})
        keeper.set_model(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]))
        history = [(0.70, 0.30), (0.80, 0.25), (0.80, 0.20), (0.80, 0.22), (0.75, 0.10), (0.80, 0.21)]
        for epoch, (top1, loss) in enumerate(history):
            keeper.on_epoch_begin(epoch)
            keeper.on_epoch_end(epoch, {"loss": 0.1, "val_top1": top1, "val_loss": loss})
            if getattr(keeper.model, "stop_training", False):
                break
        # epoch 3 (index 2) ties epoch 2 on top-1 with a lower loss; two epochs without improvement stop it
        assert keeper.state["best_epoch"] == 2 and epoch == 4
        assert (run.file("checkpoints") / "best.keras").exists()
    finally:
        run.release()
