"""The backbone's starting weights are checked before any audio is decoded and before any run folder is
made: ImageNet weights that cannot be downloaded, a weights file that is missing or is no weights file,
each stop train_job.py in one line (no network needed: the download points at a closed local port)."""
import hashlib
import inspect
import time

import pytest

from birdcore.models.keras_audio.model import WeightsUnavailable
from birdcore.training import weights as W


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    from birdcore.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("weights") / "data", n_species=3, recordings_per_species=4,
                                  seconds=(1.0, 1.5), sample_rate=16000, seed=5)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Keras's weights cache in ``tmp_path/keras`` (empty) and the ImageNet download at a port nothing listens on."""
    from keras.src.applications import inception_v3

    monkeypatch.setattr(inception_v3, "WEIGHTS_PATH_NO_TOP", "http://127.0.0.1:9/x.h5")
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path / "keras"))
    return tmp_path / "keras" / "models"


def job(small, tmp_path, *extra):
    """train_job.py's ``main`` on the small dataset with the default (InceptionV3) configuration."""
    from train_job import main

    return main(["--data-dir", str(small), "--out", str(tmp_path / "runs"), "--name", "w",
                 "--cache-dir", str(tmp_path / "cache"), "--workers", "1", *map(str, extra)])


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if " ERROR " in line]
    return line


def nothing_decoded_or_made(tmp_path):
    cache = tmp_path / "cache"
    assert not (cache.exists() and any(p.is_file() for p in cache.rglob("*"))), "audio was decoded"
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run folder was made"


def test_unreachable_imagenet_weights_stop_the_job_before_decoding(small, tmp_path, offline, capsys):
    t0 = time.monotonic()
    assert job(small, tmp_path, "--weights", "imagenet") == 2
    assert time.monotonic() - t0 < 60
    nothing_decoded_or_made(tmp_path)
    line = error_line(capsys)
    assert "could not download InceptionV3's ImageNet weights" in line and "127.0.0.1:9" in line
    assert "--weights none" in line and "--weights FILE" in line and "--backbone birdnet" in line
    assert not any(offline.glob("*.h5"))  # no partial download left in Keras's cache


@pytest.mark.parametrize("content, said", [(None, "no such file"), (b"not weights", "not an HDF5 weights file"),
                                           (b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "cannot be read")])
def test_a_bad_weights_file_stops_the_job_before_decoding(small, tmp_path, capsys, content, said):
    path = tmp_path / "inception_notop.h5"
    if content is not None:
        path.write_bytes(content)
    assert job(small, tmp_path, "--weights", path) == 2
    nothing_decoded_or_made(tmp_path)
    line = error_line(capsys)
    assert line.endswith(said) or f"{said} (" in line or f"{said}:" in line, line
    assert f"--weights {path}" in line


def test_small_cnn_with_imagenet_weights_is_refused_before_decoding(small, tmp_path, capsys):
    assert job(small, tmp_path, "--backbone", "small_cnn", "--weights", "imagenet") == 2
    nothing_decoded_or_made(tmp_path)
    assert "--backbone small_cnn is trained from scratch" in error_line(capsys)


def test_imagenet_weights_in_the_keras_cache_need_no_network(offline, monkeypatch):
    offline.mkdir(parents=True)
    cached = offline / W.NOTOP_FILE
    cached.write_bytes(b"stand-in for the weights")
    monkeypatch.setattr(W, "NOTOP_HASH", hashlib.md5(cached.read_bytes()).hexdigest())
    from birdcore.config import RunConfig

    cfg = RunConfig()
    assert cfg.model.backbone == "inception_v3" and cfg.model.weights == "imagenet"
    assert W.check_weights(cfg) == cached


def test_the_fetched_file_is_the_one_keras_looks_for():
    """Same name and hash as InceptionV3(include_top=False, weights="imagenet"), so the model build finds it."""
    from keras.src.applications import inception_v3

    source = inspect.getsource(inception_v3.InceptionV3)
    assert f'"{W.NOTOP_FILE}"' in source and f'"{W.NOTOP_HASH}"' in source


def test_weights_files_keras_loads_pass(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "a.weights.h5")
    model.save(tmp_path / "a.keras")
    assert W.check_weights_file(tmp_path / "a.weights.h5") == tmp_path / "a.weights.h5"
    assert W.check_weights_file(tmp_path / "a.keras") == tmp_path / "a.keras"
    (tmp_path / "a.bin").write_bytes((tmp_path / "a.weights.h5").read_bytes())
    with pytest.raises(WeightsUnavailable, match="Keras loads weights from .h5/.hdf5"):
        W.check_weights_file(tmp_path / "a.bin")
    (tmp_path / "b.keras").write_bytes(b"not a zip")
    with pytest.raises(WeightsUnavailable, match="not a .keras file"):
        W.check_weights_file(tmp_path / "b.keras")
