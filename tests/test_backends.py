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

JAX_SCORE = """
import json, sys
import numpy as np
from birdcore.export import load_run
run = load_run(sys.argv[1])
wave = np.random.default_rng(0).standard_normal(int(7.5 * run.sample_rate)).astype(np.float32) * 0.1
s = run.scorer().score(wave)
print(json.dumps({"recording": s.recording.tolist(), "segments": s.segments.tolist()}))
"""


def jax_env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}


def test_a_run_trained_under_jax_is_served_by_tensorflow_with_the_same_scores(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "train_job.py"), "--demo", "--epochs", "2", "--out",
                          str(tmp_path / "runs"), "--name", "j", "--cache-dir", str(tmp_path / "cache")],
                         cwd=tmp_path, env=jax_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr and "export/ (TF SavedModel) skipped" in res.stderr
    run_dir = tmp_path / "runs" / "j"
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["keras_backend"] == "jax" and manifest["savedmodel"] is False
    assert not (run_dir / "export").exists() and (run_dir / "model.keras").exists()
    assert len((run_dir / "history.csv").read_text().splitlines()) == 3

    under_jax = subprocess.run([sys.executable, "-c", JAX_SCORE, str(run_dir)], env=jax_env(),
                               capture_output=True, text=True, timeout=300)
    assert under_jax.returncode == 0, under_jax.stderr[-2000:]
    ref = json.loads(under_jax.stdout.strip().splitlines()[-1])

    from birdcore.export import load_run
    from birdcore.inference import Scorer

    run = load_run(run_dir)  # this process: TensorFlow
    wave = np.random.default_rng(0).standard_normal(int(7.5 * run.sample_rate)).astype(np.float32) * 0.1
    scores = run.scorer().score(wave)
    assert isinstance(run.scorer(), Scorer) and scores.segments.shape[1] == 6 and len(scores.segments) > 1
    np.testing.assert_allclose(scores.recording, ref["recording"], atol=1e-4)
    np.testing.assert_allclose(scores.segments, ref["segments"], atol=1e-4)
