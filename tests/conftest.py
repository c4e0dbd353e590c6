"""Shared fixtures: a tiny real configuration and generated datasets (no network, no shared data)."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from birdcore.config import AudioConfig, FeatureConfig, ModelConfig, RunConfig, TrainConfig, demo_config


def tiny_config(**train_overrides) -> RunConfig:
    """The real pipeline, shrunk: 1 s segments, 32 mel bins, a narrow CNN."""
    cfg = demo_config()
    cfg.audio = AudioConfig(sample_rate=16000, segment_seconds=1.0)
    cfg.features = FeatureConfig(n_mels=32, fft_length=512, window_lengths=(512, 256, 128), hop_length=256,
                                 fmin=200.0)
    cfg.model = ModelConfig(backbone="small_cnn", weights="none", pooling="max", dropout=0.0, small_cnn_width=8)
    train = dict(epochs=6, batch_size=6, learning_rate=3e-3, train_seconds=2.0, early_stopping_patience=20)
    train.update(train_overrides)
    cfg.train = TrainConfig(**train)
    return cfg


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """3 synthetic species × 8 recordings of 2-4 s, Kaggle 2020 layout."""
    from birdcore.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("synth"), n_species=3, recordings_per_species=8,
                                  seconds=(2.0, 4.0), sample_rate=16000, seed=1)


@pytest.fixture(scope="session")
def holdout_dir(tmp_path_factory):
    """New recordings of the same 3 species (another seed), for held-out evaluation."""
    from birdcore.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("holdout"), n_species=3, recordings_per_species=5,
                                  seconds=(2.0, 4.0), sample_rate=16000, seed=99, audio_format="flac")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, synth_dir):
    """One complete run trained on ``synth_dir`` (shared by the tests that only read it)."""
    from birdcore.training.train import train_run

    out = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    return train_run(data_dir=synth_dir, out_dir=out, name="tiny", cfg=tiny_config(epochs=8), cache_dir=cache,
                     workers=1)


@pytest.fixture(scope="session")
def labelled_soundscapes(trained_run, tmp_path_factory):
    """Two 60 s soundscapes of ``trained_run``'s species with known rows, in every label format
    (``make_synthetic_soundscapes``: {"dir", "rows": [(file, end_s, species or None)]})."""
    from birdcore.data.synthetic import make_synthetic_soundscapes
    from birdcore.runs.loading import load_run

    codes = load_run(trained_run).codes
    return make_synthetic_soundscapes(tmp_path_factory.mktemp("labelled_soundscapes"), species=codes, n_files=2,
                                      seconds=60.0, sample_rate=16000, seed=3)


@pytest.fixture(scope="session")
def listed_run(tmp_path_factory):
    """A zero-shot BirdNET run made from a species list with the CLI (no recordings, no test scores),
    in its own runs folder (``listed_run.parent``)."""
    import subprocess
    import sys
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("listed")
    listing = tmp / "species.txt"
    listing.write_text("amerob\nNorthern Cardinal\nSpinus tristis\n")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, str(root / "train_job.py"), "--baseline", "birdnet", "--species-list",
                          str(listing), "--out", str(tmp / "runs"), "--name", "listed"], cwd=tmp,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "runs" / "listed"


@pytest.fixture(autouse=True)
def _restore_birdcore_logger():
    """A CLI's ``main`` run in a test points the ``birdcore`` logger at that test's captured stderr; later
    tests get the logger back as it was (a handler on a closed capture would fail their logging)."""
    import logging

    logger = logging.getLogger("birdcore")
    saved = list(logger.handlers), logger.level, logger.propagate
    yield
    logger.handlers[:], logger.level, logger.propagate = saved
