"""Training under Keras's JAX backend (a GPU machine without TensorFlow), serving under TensorFlow.

The GPU machines lent to this project have JAX but no TensorFlow; a run trained there must be a
normal run folder that the dashboard and ``predict`` (TensorFlow) serve with the same scores.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("jax")  # in requirements-dev.txt: CI always has it


def jax_env(devices: int = 2):
    """JAX on the CPU, split into ``devices`` virtual devices (``train_job.py --devices``)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def test_a_run_trained_under_jax_is_served_by_tensorflow_with_the_same_scores(synth_dir, tmp_path):
    """Trained on two (virtual) devices: the run folder is the same as from one."""
    from conftest import tiny_config

    tiny_config(epochs=1).save(tmp_path / "tiny.json")  # the real pipeline, shrunk (see conftest)
    res = subprocess.run([sys.executable, str(ROOT / "train_job.py"), "--data-dir", str(synth_dir), "--config",
                          str(tmp_path / "tiny.json"), "--out", str(tmp_path / "runs"), "--name", "j",
                          "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--devices", "2"],
                         cwd=tmp_path, env=jax_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "export/ (TF SavedModel) skipped" in res.stderr
    run_dir = tmp_path / "runs" / "j"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["keras_backend"] == "jax" and manifest["savedmodel"] is False and manifest["devices"] == 2
    assert not (run_dir / "export").exists() and (run_dir / "model.keras").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2

    # scores.npz holds the test recordings' scores computed under JAX; TensorFlow must reproduce them
    # from the same cached audio
    from birdcore.data.cache import DecodeCache
    from birdcore.data.metadata import read_metadata
    from birdcore.runs.loading import load_run
    from birdcore.models.keras_audio.scorer import Scorer

    run = load_run(run_dir)  # this process: TensorFlow
    scorer = run.scorer()
    assert isinstance(scorer, Scorer)
    with np.load(run_dir / "scores.npz") as z:
        ids, under_jax, segments_jax = z["recording_id"], z["scores"], z["segment_scores"]
    meta = read_metadata(synth_dir).set_index("recording_id")
    cache = DecodeCache(tmp_path / "cache", sample_rate=run.sample_rate)
    waves = [np.asarray(cache.load(meta.loc[str(r), "path"]), np.float32) for r in ids]
    under_tf = list(scorer.score_many(waves))
    assert len(ids) >= 3 and sum(len(s.segments) for s in under_tf) == len(segments_jax)
    np.testing.assert_allclose(np.stack([s.recording for s in under_tf]), under_jax, atol=1e-4)
    # segment scores are stored as float16 in scores.npz
    np.testing.assert_allclose(np.concatenate([s.segments for s in under_tf]), segments_jax, atol=1e-3)


BLOCK_TENSORFLOW = ("import sys, runpy; sys.modules['tensorflow'] = None; "  # any import of it fails
                    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


def test_the_birdnet_head_trains_and_scores_under_jax_without_importing_tensorflow(tmp_path):
    """The README's GPU machine has JAX and no TensorFlow: ``--backbone birdnet`` must train there, and
    score its validation and test audio through the head's scorer, with no TensorFlow import anywhere
    on that path."""
    from birdcore.data.synthetic import make_synthetic_dataset

    data = make_synthetic_dataset(tmp_path / "data", n_species=2, recordings_per_species=4, seconds=(3.0, 3.5),
                                  sample_rate=48000, seed=5)
    train = [sys.executable, "-c", BLOCK_TENSORFLOW, str(ROOT / "train_job.py"), "--data-dir", str(data),
             "--backbone", "birdnet", "--epochs", "1", "--out", str(tmp_path / "runs"), "--name", "h",
             "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--batch-size", "4", "--devices", "2"]
    res = subprocess.run(train, cwd=tmp_path, env=jax_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "training on 2 CPU devices" in res.stderr
    manifest = json.loads((tmp_path / "runs" / "h" / "run.json").read_text())
    assert manifest["model_kind"] == "birdnet_head" and manifest["keras_backend"] == "jax"
    assert manifest["devices"] == 2
    assert manifest["test"]["n_recordings"] >= 1  # test audio scored under JAX
